"""uint8 images (N, H, W, C) <-> float model inputs (N, C, H, W) in [-1, 1]: one conversion for every model.

The float tensor always has standard NCHW strides. A plain permute of 1-channel images counts as
"contiguous" yet keeps channels-last strides, and oneDNN on AVX-512 CPUs corrupts the heap in the
backward pass of small strided 1x1 convolutions given such inputs (seen with torch 2.13 on AMD EPYC).
"""

import numpy as np
import torch


def to_model_space(x: np.ndarray | torch.Tensor, device=None) -> torch.Tensor:
    """uint8 images (N, H, W, C), array or tensor -> float32 (N, C, H, W) in [-1, 1], NCHW strides.

    >>> to_model_space(np.full((2, 4, 4, 1), 255, np.uint8)).flatten()[0].item()
    1.0
    """
    x = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
    h = x.to(device).permute(0, 3, 1, 2).float() / 127.5 - 1
    return h.clone(memory_format=torch.contiguous_format)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float (N, C, H, W) in [-1, 1] -> uint8 (N, H, W, C), clipped and rounded."""
    return (x * 127.5 + 128).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
