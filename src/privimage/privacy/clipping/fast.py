"""Fast clipping: per-example norms and the clipped sum without per-example autograd (book-keeping).

One forward with hooks that keep each supported layer's input and output, ONE backward for the
gradients of those outputs only (autograd skips every parameter gradient), then per layer the rules
of `rules.py` (ghost norm or instantiation, whichever is cheaper), the clip factors from the summed
squared norms, and the clipped sum from the same stored tensors: Bu et al. 2023's book-keeping with
Bu et al. 2022's per-layer choice. Cost close to one non-private step.

Contract (checked where possible, otherwise documented):
  * every trainable parameter belongs to a Linear, Conv2d (groups=1, zero padding), GroupNorm or
    Embedding that uses it only in its own forward; any other layer with trainable parameters makes
    the WHOLE model fall back to the exact torch.func path, with a warning naming the layers;
  * inside the model the batch dimension is N = B * r, each example's r rows consecutive (how
    EDMLoss feeds its K noisy copies); N % B != 0 raises;
  * no in-place op on a hooked layer's output (detected: raises, use clipping="exact").
"""

import functools
import logging

import torch
from torch import nn

from privimage.privacy.clipping.exact import ExactClipping, clip_factors
from privimage.privacy.clipping.rules import CONV_PER_EXAMPLE, conv2d, rule_for

log = logging.getLogger(__name__)


def plan(module: nn.Module, *, conv_per_example: str = "grouped"
         ) -> tuple[list[tuple[str, nn.Module, object]], list[str]]:
    """([(prefix, layer, rule)] for layers with trainable parameters, [why each unsupported one is])."""
    layers, unsupported = [], []
    for prefix, layer in module.named_modules():
        if not any(p.requires_grad for p in layer.parameters(recurse=False)):
            continue
        rule, why = rule_for(layer)
        if rule is None:
            unsupported.append(f"{prefix or '<root>'} ({why})")
        else:
            layers.append((prefix, layer, functools.partial(conv2d, per_example=conv_per_example)
                           if rule is conv2d else rule))
    return layers, unsupported


class FastClipping:
    """Sum of clipped per-example gradients from per-layer rules; exact fallback for unsupported models."""

    name = "fast"

    def __init__(self, *, conv_per_example: str = "grouped"):
        """conv_per_example: "grouped" or "unfold", how a conv's per-example weight gradient is instantiated."""
        if conv_per_example not in CONV_PER_EXAMPLE:
            raise ValueError(f"conv_per_example must be one of {sorted(CONV_PER_EXAMPLE)}, got {conv_per_example!r}")
        self.conv_per_example = conv_per_example
        self._plans: dict[int, tuple] = {}  # id(module) -> plan(module)
        self._exact = ExactClipping()

    def __call__(self, module: nn.Module, loss_fn, batch: tuple, *, max_grad_norm: float):
        if id(module) not in self._plans:
            self._plans[id(module)] = plan(module, conv_per_example=self.conv_per_example)
            if self._plans[id(module)][1]:
                log.warning("fast clipping has no rule for %s: this model uses the exact torch.func clipping",
                            ", ".join(self._plans[id(module)][1]))
        layers, unsupported = self._plans[id(module)]
        if unsupported:
            return self._exact(module, loss_fn, batch, max_grad_norm=max_grad_norm)
        calls: list[tuple[str, nn.Module, object, torch.Tensor, torch.Tensor, int]] = []

        def hook(prefix, rule):
            def record(layer, args, output):
                if output.requires_grad:
                    calls.append((prefix, layer, rule, args[0].detach(), output, output._version))
            return record

        handles = [layer.register_forward_hook(hook(prefix, rule)) for prefix, layer, rule in layers]
        try:
            losses = loss_fn(module, *batch)  # (B,)
        finally:
            for h in handles:
                h.remove()
        b = losses.shape[0]
        assert losses.shape == (b,), f"loss_fn must return one loss per example, got {tuple(losses.shape)}"
        for prefix, _, _, _, out, version in calls:
            if out._version != version:
                raise ValueError(f"layer {prefix!r}: its output was modified in place, so the fast clipping cannot "
                                 "see its gradient; remove the in-place op or use clipping='exact'")
            if out.shape[0] % b:
                raise ValueError(f"layer {prefix!r} saw a batch of {out.shape[0]} rows for {b} examples; the fast "
                                 "clipping needs each example's rows consecutive (N = B * r); use clipping='exact'")
        grads = torch.autograd.grad(losses.sum(), [c[4] for c in calls], allow_unused=True)
        with torch.autocast(losses.device.type, enabled=False):  # norms and sums in fp32 under bf16 autocast
            sums = self._clipped_sums(calls, grads, b, max_grad_norm, losses.device)
        for name, p in module.named_parameters():  # layers not on this batch's loss path: zero
            if p.requires_grad and name not in sums:
                sums[name] = torch.zeros_like(p, dtype=torch.float32)
        return sums, losses.detach()

    @staticmethod
    def _clipped_sums(calls, grads, b: int, max_grad_norm: float, device) -> dict[str, torch.Tensor]:
        terms = [(prefix, rule(layer, a, g, b)) for (prefix, layer, rule, a, _, _), g in zip(calls, grads)
                 if g is not None]
        sq = sum((t.sq for _, t in terms), torch.zeros(b, device=device))  # (B,) full squared norms
        c = clip_factors(sq, max_grad_norm)  # (B,)
        sums: dict[str, torch.Tensor] = {}
        for prefix, term in terms:
            for name, value in term.clipped(c).items():
                key = f"{prefix}.{name}" if prefix else name
                sums[key] = sums[key] + value if key in sums else value
        return sums
