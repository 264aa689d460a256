"""Exact per-example gradients from torch.func (vmap over grad): the reference clipping implementation.

Each example is passed to loss_fn as a batch of one inside `vmap`, so any layer (also ones the fast
path has no rule for) gets exact per-example gradients, whatever its input layout. Cost: every
per-example gradient is materialised, (B, *param.shape) per parameter.

Why not Opacus' GradSampleModule hooks as the reference: their per-sample rules were silently wrong
for convolutions with non-contiguous / channels_last inputs (Opacus 1.6 conv weight grad_samples ~100 %
off on tests/test_dpsgd.py's AttentionNet; torch.func < 1e-6).
"""

import torch
from torch import nn
from torch.func import functional_call, grad, vmap


class _LossOf(nn.Module):
    """Holds `module` as a child so functional_call swaps its parameters while loss_fn(module, ...) runs."""

    def __init__(self, module: nn.Module, loss_fn):
        super().__init__()
        self.inner = module
        self.loss_fn = loss_fn

    def forward(self, *batch):
        return self.loss_fn(self.inner, *batch)


def per_sample_grads(module: nn.Module, loss_fn, *batch: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Exact per-example gradients of `loss_fn(module, *batch)` -> per-sample losses (B,).

    Returns ({name: (B, *param.shape)}, losses (B,)) over the parameters that require grad. Dropout
    inside the model draws independently per example (from the global generator).
    """
    wrapper = _LossOf(module, loss_fn)
    trainable = {f"inner.{k}": p.detach() for k, p in module.named_parameters() if p.requires_grad}
    fixed = {f"inner.{k}": p.detach() for k, p in module.named_parameters() if not p.requires_grad}
    fixed.update({f"inner.{k}": b for k, b in module.named_buffers()})

    def loss_one(params, *example):
        losses = functional_call(wrapper, {**params, **fixed}, tuple(e.unsqueeze(0) for e in example))  # (1,)
        assert losses.shape == (1,), f"loss_fn must return one loss per example, got shape {tuple(losses.shape)}"
        return losses[0], losses[0].detach()

    per_example = vmap(grad(loss_one, has_aux=True), in_dims=(None, *[0] * len(batch)), randomness="different")
    grads, losses = per_example(trainable, *batch)
    return {k.removeprefix("inner."): g for k, g in grads.items()}, losses


def clip_factors(sq_norms: torch.Tensor, max_grad_norm: float) -> torch.Tensor:
    """(B,) factors min(1, C / ||g_i||) from squared per-example norms (fp32; no host sync)."""
    return (max_grad_norm / (sq_norms.float().sqrt() + 1e-6)).clamp(max=1.0)


class ExactClipping:
    """Sum of clipped per-example gradients via `per_sample_grads` (materialises all of them)."""

    name = "exact"

    def __call__(self, module: nn.Module, loss_fn, batch: tuple, *, max_grad_norm: float):
        grads, losses = per_sample_grads(module, loss_fn, *batch)
        with torch.autocast(losses.device.type, enabled=False):  # fp32 norms and sums under bf16 autocast
            return self._clip(grads, max_grad_norm), losses.detach()

    @staticmethod
    def _clip(grads: dict[str, torch.Tensor], max_grad_norm: float) -> dict[str, torch.Tensor]:
        sq = sum(g.flatten(1).float().pow(2).sum(1) for g in grads.values())  # (B,) squared full norms
        scale = clip_factors(sq, max_grad_norm)  # (B,)
        return {name: torch.einsum("b,b...->...", scale, g.float()) for name, g in grads.items()}


def max_relative_error_vs_loop(module: nn.Module, loss_fn, *batch: torch.Tensor) -> float:
    """Largest relative error of per_sample_grads against a slow loop of one-example backward passes.

    The obviously-correct reference for tests: ||g_vmap - g_loop|| / ||g_loop|| per example and
    parameter (denominator floored at 1e-6 of that example's total gradient norm). The module must be
    deterministic (no dropout in train mode).
    """
    grads, _ = per_sample_grads(module, loss_fn, *batch)
    worst = 0.0
    for i in range(len(batch[0])):
        loop = loop_grads(module, loss_fn, *(b[i : i + 1] for b in batch))
        floor = 1e-6 * torch.sqrt(sum((g.double() ** 2).sum() for g in loop.values()))
        for name, g_vmap in grads.items():
            g_loop = loop[name]
            err = (g_vmap[i] - g_loop).double().norm() / torch.maximum(g_loop.double().norm(), floor).clamp_min(1e-30)
            worst = max(worst, float(err))
    return worst


def loop_grads(module: nn.Module, loss_fn, *example: torch.Tensor) -> dict[str, torch.Tensor]:
    """The gradient of loss_fn(module, *example).sum() by a plain backward pass (zeros for unused params)."""
    module.zero_grad(set_to_none=True)
    loss_fn(module, *example).sum().backward()
    out = {k: (p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p))
           for k, p in module.named_parameters() if p.requires_grad}
    module.zero_grad(set_to_none=True)
    return out


def clipped_sum_by_loop(module: nn.Module, loss_fn, batch: tuple, *, max_grad_norm: float) -> dict[str, torch.Tensor]:
    """The obviously-correct reference: one backward per example, clip, sum (float64). For tests and bench."""
    total: dict[str, torch.Tensor] = {}
    for i in range(len(batch[0])):
        g = loop_grads(module, loss_fn, *(b[i : i + 1] for b in batch))
        norm = torch.sqrt(sum(v.double().pow(2).sum() for v in g.values()))
        scale = min(1.0, max_grad_norm / (float(norm) + 1e-6))
        for k, v in g.items():
            total[k] = total.get(k, 0) + scale * v.double()
    return total
