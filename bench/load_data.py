"""Load time of the shared tarballs, cold (decode + write cache) and from the cache, with peak memory.

Each measurement runs in a fresh subprocess, so ru_maxrss is that load's own peak. A second table
compares decode strategies (serial, threads, processes) on the CIFAR-10 test JPEGs, to back the
choice of a thread pool in privimage/data/decode.py.

    .venv/bin/python bench/load_data.py            # both tables
    .venv/bin/python bench/load_data.py --skip-decode
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CASES = [
    ("cifar10-jpg.tar.xz", "train"),
    ("cifar10-jpg.tar.xz", "test"),
    ("tinyimagenet32-jpg.tar.xz", "train"),
    ("tinyimagenet32-jpg.tar.xz", "val"),
]


def measure_one(path: str, split: str) -> dict:
    """Runs inside the subprocess: one load_images call, its seconds, CPU seconds and peak RSS."""
    from privimage.data import load_images

    t, cpu = time.perf_counter(), time.process_time()
    images = load_images(path, split=split, progress=False)
    return {
        "seconds": time.perf_counter() - t,
        "cpu_seconds": time.process_time() - cpu,
        "n": len(images),
        "cached": "cache" in images.meta,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_subprocess(path: Path, split: str, cache_dir: str) -> dict:
    env = dict(os.environ, PRIVIMAGE_CACHE=cache_dir)
    out = subprocess.run(
        [sys.executable, __file__, "--one", str(path), split], env=env, check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout)


def load_table() -> None:
    print(f"{'dataset':<28} {'split':<6} {'n':>7} {'cold s':>8} {'cold cpu':>9} {'cold MB':>8} "
          f"{'cached s':>9} {'cached MB':>10}")
    with tempfile.TemporaryDirectory() as cache_dir:
        for name, split in CASES:
            path = SHARED / name
            if not path.is_file():
                print(f"{name:<28} {split:<6} (missing: {path})")
                continue
            cold = run_subprocess(path, split, cache_dir)
            warm = run_subprocess(path, split, cache_dir)
            assert not cold["cached"] and warm["cached"], (cold, warm)
            print(f"{name:<28} {split:<6} {cold['n']:>7} {cold['seconds']:>8.1f} {cold['cpu_seconds']:>9.1f} "
                  f"{cold['peak_mb']:>8.0f} {warm['seconds']:>9.2f} {warm['peak_mb']:>10.0f}")


def _decode_chunk(blobs: list[bytes]) -> int:
    from privimage.data.decode import decode_one

    return len([decode_one(b, "bench", resolution=None, channels=None) for b in blobs])


def decode_table() -> None:
    from privimage.data.tree import open_tree

    path = SHARED / "cifar10-jpg.tar.xz"
    if not path.is_file():
        return
    tree = open_tree(path, keep=lambda n: n.startswith("test/"), progress=False)
    blobs = list(tree.data.values())
    chunks = [blobs[i : i + 256] for i in range(0, len(blobs), 256)]
    workers = os.cpu_count() or 1
    strategies = {
        "serial": lambda: sum(map(_decode_chunk, chunks)),
        f"threads({workers})": lambda: _pooled(ThreadPoolExecutor, workers, chunks),
        f"processes({workers})": lambda: _pooled(ProcessPoolExecutor, workers, chunks),
    }
    print(f"\ndecode {len(blobs)} CIFAR-10 test JPEGs (32x32), best of 3, load average {os.getloadavg()[0]:.1f}")
    print(f"{'strategy':<14} {'seconds':>8} {'images/s':>9}")
    for label, run in strategies.items():
        best = min(_timed(run) for _ in range(3))
        print(f"{label:<14} {best:>8.2f} {len(blobs) / best:>9.0f}")


def _pooled(executor, workers: int, chunks: list) -> int:
    with executor(workers) as pool:
        return sum(pool.map(_decode_chunk, chunks))


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one", nargs=2, metavar=("PATH", "SPLIT"), help=argparse.SUPPRESS)
    parser.add_argument("--skip-decode", action="store_true", help="only the load table")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure_one(*args.one)))
        return
    print(f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f} at start")
    load_table()
    if not args.skip_decode:
        decode_table()


if __name__ == "__main__":
    main()
