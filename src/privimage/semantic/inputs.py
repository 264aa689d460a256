"""Images into the semantic classifier: uint8 (B, H, W, C) -> float (B, C, R, R) in [-1, 1], and the
public-training augmentation. Any channel count (grey or RGB) and size map to what the network was trained
at, so one classifier serves MNIST-like grey and CIFAR-like colour sensitive data alike.
"""

import torch
from torch.nn import functional as F

from privimage.data.tensors import to_model_space


def to_model_input(x: torch.Tensor, *, channels: int, resolution: int) -> torch.Tensor:
    """uint8 (B, H, W, C) -> float (B, channels, resolution, resolution) in [-1, 1].

    Channels: grey -> RGB repeats, RGB -> grey uses ITU-R 601 luma. Size: bilinear with antialiasing.
    """
    h = to_model_space(x)  # (B, C, H, W)
    if h.shape[1] == 1 and channels == 3:
        h = h.expand(-1, 3, -1, -1)
    elif h.shape[1] == 3 and channels == 1:
        luma = torch.tensor([0.299, 0.587, 0.114], device=h.device).view(1, 3, 1, 1)
        h = (h * luma).sum(dim=1, keepdim=True)
    if h.shape[2:] != (resolution, resolution):
        h = F.interpolate(h, size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False)
    return h.clone(memory_format=torch.contiguous_format)  # standard strides (see data/tensors.py)



def augment(x: torch.Tensor, *, padding: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random crop after reflect-padding and optional horizontal flip; x (B, C, H, W) -> same shape."""
    b, _, h, w = x.shape
    if padding > 0:
        padded = F.pad(x, (padding,) * 4, mode="reflect")  # (B, C, H + 2p, W + 2p)
        dy, dx = torch.randint(0, 2 * padding + 1, (2, b), generator=generator).to(x.device)
        rows = dy[:, None] + torch.arange(h, device=x.device)  # (B, H)
        cols = dx[:, None] + torch.arange(w, device=x.device)  # (B, W)
        batch = torch.arange(b, device=x.device)[:, None, None]
        x = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
        x = x.clone(memory_format=torch.contiguous_format)  # standard strides (see to_model_input)
    if flip:
        mirror = (torch.rand(b, generator=generator) < 0.5).to(x.device)
        x = torch.where(mirror[:, None, None, None], x.flip(3), x)
    return x
