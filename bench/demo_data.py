"""Benchmark of the embedded demo data: glyph rendering time, and whether font glyphs can stand in for
the handwritten digits (the premise of the demo's pre-training).

A tiny CNN is trained on the digit glyphs 0-9 of the public set and tested on the held-out real digits
(transfer); the same CNN trained on the real digit train split gives the upper bound. Prints a table.

    .venv/bin/python bench/demo_data.py                # about 1-2 minutes on one CPU core
    .venv/bin/python bench/demo_data.py --seeds 3      # accuracy as mean (min-max) over 3 training seeds
    .venv/bin/python bench/demo_data.py --grid /tmp/demo_grid.png   # also save real | glyph images
"""

import argparse
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from privimage.data.demo import DIGIT_CLASSES, load_digits_split, render_glyphs
from privimage.data.imageset import ImageSet


@dataclass
class BenchConfig:
    per_class: int = 300  # glyph images per public class
    resolution: int = 16  # image side in pixels
    epochs: int = 15  # passes over the training images
    batch_size: int = 64  # images per optimiser step
    lr: float = 2e-3  # Adam learning rate
    seed: int = 0  # rendering and split seed; training seeds are seed, seed + 1, ...
    seeds: int = 1  # how many training seeds each accuracy is measured over


class TinyCNN(nn.Module):
    """Two conv blocks and a linear head: enough for 16x16 digits, fast on a CPU."""

    def __init__(self, resolution: int, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(64 * (resolution // 4) ** 2, 128), nn.ReLU(),
                                  nn.Linear(128, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (B, 1, R, R) -> (B, num_classes)


def to_tensor(images: ImageSet) -> torch.Tensor:
    """(N, H, W, 1) uint8 -> (N, 1, H, W) float in [-1, 1]."""
    return torch.from_numpy(images.x).permute(0, 3, 1, 2).float() / 127.5 - 1


def train_and_test(train: ImageSet, test: ImageSet, config: BenchConfig, seed: int) -> float:
    """Accuracy on `test` of a TinyCNN trained on `train` from initialisation and order `seed`."""
    torch.manual_seed(seed)
    model = TinyCNN(config.resolution, len(DIGIT_CLASSES))
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    x, y = to_tensor(train), torch.from_numpy(train.y)
    for _ in range(config.epochs):
        for batch in torch.randperm(len(x)).split(config.batch_size):
            loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    with torch.no_grad():
        predicted = model(to_tensor(test)).argmax(dim=1)
    return float((predicted == torch.from_numpy(test.y)).float().mean())


def save_grid(real: ImageSet, glyphs: ImageSet, path: str, per_row: int = 10) -> None:
    """One row per digit: `per_row` real digits | `per_row` digit glyphs, enlarged 4x."""
    from PIL import Image

    rows = []
    for c in range(len(DIGIT_CLASSES)):
        left = np.concatenate(list(real.x[real.y == c][:per_row, ..., 0]), axis=1)
        right = np.concatenate(list(glyphs.x[glyphs.y == c][:per_row, ..., 0]), axis=1)
        rows.append(np.concatenate([left, np.full((left.shape[0], 4), 128, np.uint8), right], axis=1))
    grid = np.concatenate(rows, axis=0)
    Image.fromarray(grid).resize((grid.shape[1] * 4, grid.shape[0] * 4), Image.Resampling.NEAREST).save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=BenchConfig.per_class)
    parser.add_argument("--resolution", type=int, default=BenchConfig.resolution)
    parser.add_argument("--epochs", type=int, default=BenchConfig.epochs)
    parser.add_argument("--seed", type=int, default=BenchConfig.seed)
    parser.add_argument("--seeds", type=int, default=BenchConfig.seeds)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the cores are shared)")
    parser.add_argument("--grid", help="save a PNG of real digits beside digit glyphs here")
    args = parser.parse_args()
    config = BenchConfig(per_class=args.per_class, resolution=args.resolution, epochs=args.epochs, seed=args.seed,
                         seeds=args.seeds)
    torch.set_num_threads(args.threads)

    start, cpu_start = time.perf_counter(), time.process_time()
    glyphs = render_glyphs(per_class=config.per_class, resolution=config.resolution, seed=config.seed,
                           cache=False, progress=False)
    render_seconds, render_cpu = time.perf_counter() - start, time.process_time() - cpu_start
    train, test = load_digits_split(resolution=config.resolution, seed=config.seed)
    digit_glyphs = glyphs.subset(glyphs.y < len(DIGIT_CLASSES))
    assert digit_glyphs.classes[: len(DIGIT_CLASSES)] == list(DIGIT_CLASSES)
    if args.grid:
        save_grid(train, digit_glyphs, args.grid)

    rows = [("render glyphs", f"{len(glyphs.classes)} classes x {config.per_class}",
             f"{render_seconds:.1f} s wall, {render_cpu:.1f} s CPU")]
    for name, source in (("glyphs 0-9 -> real test", digit_glyphs), ("real train -> real test", train)):
        start = time.perf_counter()
        accuracy = [train_and_test(source, test, config, config.seed + k) for k in range(config.seeds)]
        spread = f" ({min(accuracy):.3f}-{max(accuracy):.3f})" if config.seeds > 1 else ""
        rows.append((name, f"{len(source)} train / {len(test)} test",
                     f"acc {np.mean(accuracy):.3f}{spread}, {time.perf_counter() - start:.0f} s"))
    print(f"demo data bench: resolution {config.resolution}, epochs {config.epochs}, seed {config.seed}, "
          f"training seeds {config.seeds}, torch threads {torch.get_num_threads()}")
    print(f"{'step':<26}{'data':<28}{'result'}")
    for row in rows:
        print(f"{row[0]:<26}{row[1]:<28}{row[2]}")


if __name__ == "__main__":
    main()
