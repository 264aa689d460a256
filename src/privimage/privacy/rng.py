"""The random generator that draws DP noise (and Poisson samples).

DP noise must be unpredictable to whoever sees the release, so by default the generator is seeded from
the operating system's entropy pool (`os.urandom`), never from a fixed or time-based seed. An explicit
seed is for tests and reproducible debugging runs only; the ledger records which one was used.
"""

import os

import torch


def noise_generator(seed: int | None = None, device: str | torch.device = "cpu") -> tuple[torch.Generator, str]:
    """A torch.Generator on `device` and a description of its seed for the ledger.

    The generator must live on the device of the tensors it draws for (CUDA noise needs a CUDA
    generator), so pass the model's device.

    >>> g, how = noise_generator()
    >>> how
    'os.urandom'
    >>> torch.randn(2, generator=noise_generator(seed=1)[0]).shape
    torch.Size([2])
    """
    generator = torch.Generator(device=device)
    if seed is None:
        # 8 bytes = 64 bits of OS entropy; mask to the non-negative range torch accepts.
        generator.manual_seed(int.from_bytes(os.urandom(8), "little") & ((1 << 63) - 1))
        return generator, "os.urandom"
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int or None, got {seed!r}")
    generator.manual_seed(seed)
    return generator, f"seed={seed}"
