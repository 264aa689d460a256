"""CA of classifiers trained on REAL CIFAR-10 train and tested on CIFAR-10 test: the non-private ceiling.

On a 2-core CPU we train on a random subset for few epochs (both printed); the table gives the
accuracy and wall time, so a synthetic-data CA can be read against it.

    nice .venv/bin/python bench/real_ca.py --classifier cnn --n-train 10000 --epochs 5
"""

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from privimage.data import load_images
from privimage.evaluate.ca import classification_accuracy

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpg.tar.xz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA), help="CIFAR-10 archive or folder")
    parser.add_argument("--classifier", action="append", help="classifier(s) to train (repeatable; default cnn)")
    parser.add_argument("--n-train", type=int, default=50_000, help="random train subset size (seed 0)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs (default: the recipe's)")
    parser.add_argument("--device", default=None)
    args = parser.parse_args()

    train = load_images(args.data, split="train")
    test = load_images(args.data, split="test")
    index = np.sort(np.random.default_rng(0).choice(len(train), size=min(args.n_train, len(train)), replace=False))
    train = train.subset(index)
    rows = []
    for name in args.classifier or ["cnn"]:
        start = time.perf_counter()
        acc = classification_accuracy(train, test, classifier=name, epochs=args.epochs, seed=0, device=args.device)
        rows.append((name, len(train), len(test), args.epochs or "recipe", acc, time.perf_counter() - start))
    print(f"| classifier | n train | n test | epochs | CA | seconds (threads={torch.get_num_threads()}) |")
    print("|---|---|---|---|---|---|")
    for name, n_train, n_test, epochs, acc, seconds in rows:
        print(f"| {name} | {n_train} | {n_test} | {epochs} | {acc:.4f} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
