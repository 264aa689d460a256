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


@torch.no_grad()
def update_ema(ema: nn.Module, net: nn.Module, *, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * net, parameter by parameter (buffers copied)."""
    for p_ema, p in zip(ema.parameters(), net.parameters()):
        p_ema.lerp_(p.detach(), 1 - decay)
    for b_ema, b in zip(ema.buffers(), net.buffers()):
        b_ema.copy_(b)
