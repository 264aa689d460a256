"""Poisson sampling of DP-SGD's logical batches (the sampling DP-SGD's accounting assumes).

Each example of range(n) joins step t's batch independently with probability q. The coin flips are
drawn from the release's NoiseSource (stream "<mechanism>/poisson", counter t): unpredictable without
the key (so the batch composition is as secret as the noise), and a pure function of (key, t), so a
step replayed after a crash sees the same batch without any saved generator state.
"""

from collections.abc import Iterator

import torch

from privimage.privacy.rng import NoiseSource


def poisson_batches(n: int, *, sample_rate: float, steps: int, noise: NoiseSource, mechanism: str = "finetune",
                    start: int = 0) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield (t, indices) for the steps t = start + 1 .. steps: step t's Poisson batch of range(n).

    `steps` is the TOTAL number of planned steps and `start` the steps already taken (a resumed run).
    Indices are CPU LongTensors, possibly empty (an empty batch still takes its noisy step).

    >>> src = NoiseSource.from_test_seed(0)
    >>> [t for t, idx in poisson_batches(100, sample_rate=0.1, steps=3, noise=src)]
    [1, 2, 3]
    """
    if not (isinstance(sample_rate, (int, float)) and 0 < sample_rate <= 1):
        raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate!r}")
    if n < 1 or steps < 0 or not 0 <= start <= steps:
        raise ValueError(f"need n >= 1 and 0 <= start <= steps, got n={n}, start={start}, steps={steps}")
    for t in range(start + 1, steps + 1):
        keep = noise.bernoulli(n, p=sample_rate, stream=f"{mechanism}/poisson", counter=t)  # (n,) bool
        yield t, keep.nonzero().flatten()
