"""Phase (a) of DP-SGD: the SUM of clipped per-example gradients of one physical micro-batch.

One small interface, interchangeable implementations (chosen by name in `DPSGD(clipping=...)`):

    clip(module, loss_fn, batch, *, max_grad_norm) -> (sums {param name: fp32 tensor}, losses (B,))

where loss_fn(module, *batch) returns one loss per example, sums[name] = sum_i g_i * min(1, C/||g_i||)
over the examples i of the batch (||g_i|| the norm of example i's FULL gradient, all parameters), and
losses are detached (never to be logged: they are un-noised statistics of sensitive data).

    exact   torch.func vmap(grad): every per-example gradient materialised; any layer; the reference
    fast    per-layer rules (ghost norms / instantiation, book-keeping): one forward, one backward
            without parameter gradients; falls back to `exact` (with a warning) for models that use a
            layer with parameters it has no rule for
"""

from privimage.privacy.clipping.exact import ExactClipping, clip_factors, per_sample_grads
from privimage.privacy.clipping.fast import FastClipping

CLIPPING = {"exact": ExactClipping, "fast": FastClipping}


def make_clipping(name: str):
    """The clipping implementation registered as `name`."""
    if name not in CLIPPING:
        raise ValueError(f"clipping must be one of {sorted(CLIPPING)}, got {name!r}")
    return CLIPPING[name]()


__all__ = ["CLIPPING", "ExactClipping", "FastClipping", "clip_factors", "make_clipping", "per_sample_grads"]
