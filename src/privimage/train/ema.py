"""Exponential moving average of the weights: the model that is sampled from (smoother than the last step).

For DP fine-tuning the EMA is post-processing of the noisy iterates, so it costs no privacy.
"""

import copy

import torch
from torch import nn


def make_ema(net: nn.Module) -> nn.Module:
    """A frozen copy of `net` to be updated by `update_ema`."""
    ema = copy.deepcopy(net).eval()
    ema.requires_grad_(False)
    return ema


def ema_decay(decay: float, step: int) -> float:
    """Decay warmed up as min(decay, (1 + step) / (10 + step)).

    Why: a short run (a few hundred steps, typical of DP fine-tuning and the CPU demo) with a fixed 0.999
    would keep most of the initial weights in the average (0.999**800 = 0.45), and sample noise.
    """
    return min(decay, (1 + step) / (10 + step))


@torch.no_grad()
def update_ema(ema: nn.Module, net: nn.Module, *, decay: float, step: int) -> None:
    """ema <- d * ema + (1 - d) * net with d = ema_decay(decay, step) (buffers copied)."""
    d = ema_decay(decay, step)
    for p_ema, p in zip(ema.parameters(), net.parameters()):
        p_ema.lerp_(p.detach(), 1 - d)
    for b_ema, b in zip(ema.buffers(), net.buffers()):
        b_ema.copy_(b)
