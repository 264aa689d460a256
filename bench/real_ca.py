"""CA of classifiers trained on REAL CIFAR-10 train and tested on CIFAR-10 test: the non-private ceiling,
and the check of each CA recipe on real data before it scores synthetic data.

On a 2-core CPU we train on a random subset for few epochs and may test on a random subset of the test
split (all printed); the table gives the accuracy and wall time, so a synthetic-data CA can be read
against it. `--plain` adds each classifier trained WITHOUT the recipe's warm-up, label smoothing and
augmentation (the recipe before 2026-12-04: ResNet-9 diverged at lr 0.1 from a cold start).

    nice .venv/bin/python bench/real_ca.py --classifier cnn --n-train 10000 --epochs 5
    .venv/bin/python bench/real_ca.py --classifier resnet9 --n-train 2000 --n-test 2000 --epochs 4 --plain
    .venv/bin/python bench/real_ca.py --classifier resnet9 --device cuda      # the full recipe (GPU: >= 0.90)
"""

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from privimage.data import load_images
from privimage.evaluate.ca import classification_accuracy
from privimage.evaluate.classifiers import CLASSIFIERS

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpg.tar.xz"
PLAIN = dict(warmup=0.0, label_smoothing=0.0, crop_padding=0, flip=False)  # the recipe without its additions


def subset(images, n: int, seed: int):
    """A random subset of n images (all if n >= len), chosen with a fixed public seed."""
    index = np.sort(np.random.default_rng(seed).choice(len(images), size=min(n, len(images)), replace=False))
    return images.subset(index)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(os.environ.get("PRIVIMAGE_DATA") or DATA.parent) / DATA.name),
                        help="CIFAR-10 archive or folder (default: $PRIVIMAGE_DATA or ../shared/data)")
    parser.add_argument("--classifier", action="append", help="classifier(s) to train (repeatable; default cnn)")
    parser.add_argument("--n-train", type=int, default=50_000, help="random train subset size (seed 0)")
    parser.add_argument("--n-test", type=int, default=10_000, help="random test subset size (seed 1)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs (default: the recipe's)")
    parser.add_argument("--batch-size", type=int, default=None, help="images per step (default: the recipe's)")
    parser.add_argument("--plain", action="store_true", help="also train without warm-up / smoothing / augmentation")
    parser.add_argument("--device", default=None)
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args()

    train = subset(load_images(args.data, split="train"), args.n_train, seed=0)
    test = subset(load_images(args.data, split="test"), args.n_test, seed=1)
    names = args.classifier or ["cnn"]
    if args.batch_size:  # registered in this process only
        for name in names:
            CLASSIFIERS[name] = dataclasses.replace(CLASSIFIERS[name], batch_size=args.batch_size)
    if args.plain:  # registered in this process only
        for name in list(names):
            CLASSIFIERS[f"{name}-plain"] = dataclasses.replace(CLASSIFIERS[name], **PLAIN)
            names.append(f"{name}-plain")
    rows = []
    for name in names:
        start = time.perf_counter()
        acc = classification_accuracy(train, test, classifier=name, epochs=args.epochs, seed=0, device=args.device)
        r = CLASSIFIERS[name]
        rows.append({"classifier": name, "n_train": len(train), "n_test": len(test),
                     "epochs": args.epochs or r.epochs, "batch_size": r.batch_size, "warmup": r.warmup,
                     "label_smoothing": r.label_smoothing,
                     "augment": f"crop {r.crop_padding}, flip {r.flip}", "ca": round(acc, 4),
                     "seconds": round(time.perf_counter() - start, 1)})
    load = os.getloadavg()[0]
    if args.json:
        print(json.dumps({"threads": torch.get_num_threads(), "load_average": load, "rows": rows}, indent=1))
        return
    print(f"| classifier | n train | n test | epochs | batch | warm-up | label smoothing | augmentation | CA | seconds "
          f"(threads={torch.get_num_threads()}, load average {load:.1f}) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['classifier']} | {r['n_train']} | {r['n_test']} | {r['epochs']} | {r['batch_size']} | "
              f"{r['warmup']} | {r['label_smoothing']} | {r['augment']} | {r['ca']:.4f} | {r['seconds']:.0f} |")


if __name__ == "__main__":
    main()
