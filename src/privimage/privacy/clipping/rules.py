"""Per-layer rules of the fast clipping: per-example squared gradient norms and the clipped sum.

A layer's parameter gradient for one example is a sum over the example's rows: a (rows, d_in) input
`A` and a (rows, d_out) output gradient `G` give grad W = G^T A. Rows are positions (conv output
pixels, sequence items) times the example's r noisy copies: the copies of one example are ONE
example, so their rows are pooled before the norm is taken (an EDM loss that is the mean over K
copies). Per layer, the cheaper of two ways (mixed ghost clipping, Bu et al. 2022):
  ghost        ||G^T A||_F^2 = <A A^T, G G^T>  (Li et al. 2021)          time ~ T^2 (d_in + d_out)
  instantiate  grad W materialised per example, (B, d_out, d_in)         time ~ T d_in d_out
with T = rows per example (a conv's instantiation is one grouped convolution backward). The clipped sum sum_b c_b grad_b is then one matmul over the stored A and
c-scaled G (book-keeping, Bu et al. 2023) or one contraction of the instantiated gradients.

Each rule returns a Term: `sq` (B,) fp32 squared norms of the layer's trainable parameters, and
`clipped(c)` -> {param name: fp32 sum over examples of c_b * grad_b}. Inputs/gradients arrive with a
batch dimension N = B * r, example-major (rows b*r .. b*r + r - 1 are example b's copies).
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

UNFOLD_BYTES = 256 * 2**20  # memory bound of one conv unfold chunk (float32)


@dataclass
class Term:
    sq: torch.Tensor  # (B,) fp32 squared norm of the layer's per-example gradient
    clipped: Callable[[torch.Tensor], dict[str, torch.Tensor]]  # c (B,) -> {param: sum_b c_b grad_b}


def _trainable(layer: nn.Module) -> dict[str, nn.Parameter]:
    return {k: p for k, p in layer.named_parameters(recurse=False) if p.requires_grad}


def _ghost_cheaper(rows: int, d_in: int, d_out: int) -> bool:
    """Whether the ghost norm takes less TIME than instantiating: per example it costs ~T^2 (d_in + d_out)
    multiply-adds (A A^T and G G^T), instantiation ~T d_in d_out (the weight gradient itself).

    Bu et al. 2022 compare 2 T^2 with d_in d_out, which is the memory of the two; by that rule the demo
    U-Net's low-resolution convolutions took the ghost path and their unfolds were 26 % of a DP step on
    CPU (bench/dpsgd_speed.py --config demo). Instantiated gradients are held until the clip factors are
    known: B x (layer's parameters) floats, which the models here afford.
    """
    return rows * (d_in + d_out) < d_in * d_out


def _rows(a: torch.Tensor, g: torch.Tensor, b: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Linear input (N, *, d_in) and output gradient (N, *, d_out) as (B, T, d) fp32."""
    return a.reshape(b, -1, a.shape[-1]).float(), g.reshape(b, -1, g.shape[-1]).float()


def _weight_term(A: torch.Tensor, G: torch.Tensor) -> Term:
    """grad W = G^T A per example, for A (B, T, d_in), G (B, T, d_out), both fp32."""
    b, t, d_in = A.shape
    if _ghost_cheaper(t, d_in, G.shape[-1]):
        sq = (torch.bmm(A, A.transpose(1, 2)) * torch.bmm(G, G.transpose(1, 2))).sum((1, 2))
        return Term(sq, lambda c: {"weight": (G * c[:, None, None]).flatten(0, 1).T @ A.flatten(0, 1)})
    gw = torch.bmm(G.transpose(1, 2), A)  # (B, d_out, d_in)
    return Term(gw.pow(2).sum((1, 2)), lambda c: {"weight": torch.einsum("b,boi->oi", c, gw)})


def _bias_term(G: torch.Tensor) -> Term:
    gb = G.sum(1)  # (B, d_out)
    return Term(gb.pow(2).sum(1), lambda c: {"bias": c @ gb})


def _combine(terms: dict[str, Term]) -> Term:
    """The Term of the trainable parameters among weight / bias."""
    parts = list(terms.values())
    sq = sum(t.sq for t in parts)
    return Term(sq, lambda c: {k: v for t in parts for k, v in t.clipped(c).items()})


def linear(layer: nn.Linear, a: torch.Tensor, g: torch.Tensor, b: int) -> Term:
    A, G = _rows(a, g, b)
    trainable = _trainable(layer)
    terms = {}
    if "weight" in trainable:
        terms["weight"] = _weight_term(A, G)
    if "bias" in trainable:
        terms["bias"] = _bias_term(G)
    return _combine(terms)


def conv2d(layer: nn.Conv2d, a: torch.Tensor, g: torch.Tensor, b: int, *, per_example: str = "grouped") -> Term:
    """Conv2d (groups=1, zero padding): an unfold turns it into a Linear over the output pixels.

    per_example: how an instantiated weight gradient is computed, "grouped" (one grouped convolution
    backward) or "unfold" (unfold + batched matmul); see CONV_PER_EXAMPLE.
    """
    n, c_out = g.shape[:2]
    r = n // b
    G = g.reshape(b, r, c_out, -1).float()  # (B, r, C_out, L); reshape copies a channels_last tensor
    trainable = _trainable(layer)
    terms = {}
    if "bias" in trainable:
        gb = G.sum((1, 3))  # (B, C_out)
        terms["bias"] = Term(gb.pow(2).sum(1), lambda c: {"bias": c @ gb})
    if "weight" in trainable:
        d_in, chunk = _unfold_sizes(layer, g, b)
        L = G.shape[-1]
        if _ghost_cheaper(r * L, d_in, c_out):
            sq = []
            for lo in range(0, b, chunk):
                U = _unfold(layer, a, lo, min(b, lo + chunk), r, L)
                U = U.permute(0, 1, 3, 2).flatten(1, 2)  # (b', T, d_in)
                Gc = G[lo:lo + chunk].permute(0, 1, 3, 2).flatten(1, 2)  # (b', T, C_out)
                sq.append((torch.bmm(U, U.transpose(1, 2)) * torch.bmm(Gc, Gc.transpose(1, 2))).sum((1, 2)))

            def clipped_ghost(c):
                total = 0
                for lo in range(0, b, chunk):
                    U = _unfold(layer, a, lo, min(b, lo + chunk), r, L)  # (b', r, d_in, L)
                    total = total + torch.einsum("b,bkol,bkil->oi", c[lo:lo + chunk], G[lo:lo + chunk], U)
                return {"weight": total.reshape(layer.weight.shape)}

            terms["weight"] = Term(torch.cat(sq), clipped_ghost)
        else:
            gw = CONV_PER_EXAMPLE[per_example](layer, a, g, b)  # (B, C_out, d_in)
            terms["weight"] = Term(gw.pow(2).sum((1, 2)),
                                   lambda c: {"weight": torch.einsum("b,boi->oi", c, gw).reshape(layer.weight.shape)})
    return _combine(terms)


def _conv_weight_per_example(layer: nn.Conv2d, a: torch.Tensor, g: torch.Tensor, b: int) -> torch.Tensor:
    """Per-example conv weight gradients (B, C_out, C_in*kh*kw), each summed over the example's r copies.

    One grouped convolution backward: the B examples become B groups of channels and the r copies the
    batch, so the backend's own weight-gradient kernel does the work (~1.3x a plain weight gradient on
    CPU; an unfold + einsum, as Opacus does, was ~10x).
    """
    n, c_in, h, w = a.shape
    c_out, ho, wo = g.shape[1:]
    r = n // b
    x = a.float().reshape(b, r, c_in, h, w).transpose(0, 1).reshape(r, b * c_in, h, w)
    gy = g.float().reshape(b, r, c_out, ho, wo).transpose(0, 1).reshape(r, b * c_out, ho, wo)
    weight = layer.weight.detach().float().expand(b, *layer.weight.shape).reshape(b * c_out, *layer.weight.shape[1:])
    gw = torch.ops.aten.convolution_backward(gy, x, weight, None, list(layer.stride), list(layer.padding),
                                             list(layer.dilation), False, [0, 0], b, [False, True, False])[1]
    return gw.reshape(b, c_out, -1)


def _conv_weight_per_example_unfold(layer: nn.Conv2d, a: torch.Tensor, g: torch.Tensor, b: int) -> torch.Tensor:
    """The same (B, C_out, C_in*kh*kw) by unfold + one batched matmul per chunk of examples.

    The alternative for GPUs: on an H200 our fast step was no faster than vmap (docs/benchmarks.md), and
    the grouped convolution backward with B groups is the suspect; a bmm of (C_out, r*L) by (r*L, d_in) per
    example is the shape matmul kernels favour. Chunks keep each unfold under UNFOLD_BYTES. On this CPU
    the grouped path is faster (3.97x vs 2.76x a non-private step), so it stays the default until a GPU
    measurement says otherwise.
    """
    n, c_out = g.shape[:2]
    r, L = n // b, g.shape[2] * g.shape[3]
    d_in, chunk = _unfold_sizes(layer, g, b)
    out = []
    for lo in range(0, b, chunk):
        hi = min(b, lo + chunk)
        u = _unfold(layer, a, lo, hi, r, L).transpose(1, 2).reshape(hi - lo, d_in, r * L)
        gc = g[lo * r:hi * r].float().reshape(hi - lo, r, c_out, L).transpose(1, 2).reshape(hi - lo, c_out, r * L)
        out.append(torch.bmm(gc, u.transpose(1, 2)))  # (b', C_out, d_in)
    return torch.cat(out)


def _unfold_sizes(layer: nn.Conv2d, g: torch.Tensor, b: int) -> tuple[int, int]:
    """(d_in = C_in*kh*kw, examples per unfold chunk so that one chunk stays under UNFOLD_BYTES)."""
    r, L = g.shape[0] // b, g.shape[2] * g.shape[3]
    d_in = layer.in_channels * layer.kernel_size[0] * layer.kernel_size[1]
    return d_in, max(1, UNFOLD_BYTES // (4 * r * d_in * L))


def _unfold(layer: nn.Conv2d, a: torch.Tensor, lo: int, hi: int, r: int, L: int) -> torch.Tensor:
    """The conv input of examples lo..hi-1 (their r copies each) unfolded: (hi-lo, r, d_in, L) fp32."""
    u = F.unfold(a[lo * r:hi * r].float(), layer.kernel_size, dilation=layer.dilation, padding=layer.padding,
                 stride=layer.stride)  # (n', d_in, L)
    return u.reshape(hi - lo, r, -1, L)


# Ways to instantiate per-example conv weight gradients (FastClipping(conv_per_example=...)).
CONV_PER_EXAMPLE = {"grouped": _conv_weight_per_example, "unfold": _conv_weight_per_example_unfold}


def group_norm(layer: nn.GroupNorm, a: torch.Tensor, g: torch.Tensor, b: int) -> Term:
    """y = x_hat * w + b per channel: grad w = sum over positions of x_hat * g; instantiated (p = 2C)."""
    x_hat = F.group_norm(a.float(), layer.num_groups, eps=layer.eps)  # (N, C, *)
    n, c_ch = g.shape[:2]
    gf = g.float()
    trainable = _trainable(layer)
    per = {}
    if "weight" in trainable:
        per["weight"] = (x_hat * gf).reshape(n, c_ch, -1).sum(2).reshape(b, -1, c_ch).sum(1)  # (B, C)
    if "bias" in trainable:
        per["bias"] = gf.reshape(n, c_ch, -1).sum(2).reshape(b, -1, c_ch).sum(1)  # (B, C)
    sq = sum(v.pow(2).sum(1) for v in per.values())
    return Term(sq, lambda c: {k: c @ v for k, v in per.items()})


def embedding(layer: nn.Embedding, idx: torch.Tensor, g: torch.Tensor, b: int) -> Term:
    """Row i of grad W sums the output gradients of the example's positions that looked up index i."""
    ids = idx.reshape(b, -1)  # (B, T)
    G = g.reshape(b, ids.shape[1], -1).float()  # (B, T, D)
    if layer.padding_idx is not None:
        G = G * (ids != layer.padding_idx)[..., None]  # the padding row gets no gradient
    t, v = ids.shape[1], layer.num_embeddings
    if _ghost_cheaper(t, v, G.shape[-1]):
        same = (ids[:, :, None] == ids[:, None, :]).float()  # (B, T, T)
        sq = (same * torch.bmm(G, G.transpose(1, 2))).sum((1, 2))

        def clipped(c):
            out = torch.zeros(layer.weight.shape, dtype=torch.float32, device=G.device)
            return {"weight": out.index_add_(0, ids.flatten(), (G * c[:, None, None]).flatten(0, 1))}

        return Term(sq, clipped)
    onehot = F.one_hot(ids, v).float()  # (B, T, V)
    gw = torch.bmm(onehot.transpose(1, 2), G)  # (B, V, D)
    return Term(gw.pow(2).sum((1, 2)), lambda c: {"weight": torch.einsum("b,bvd->vd", c, gw)})


def rule_for(layer: nn.Module) -> tuple[Callable | None, str]:
    """(rule, "") for a supported layer, else (None, why not)."""
    if type(layer) is nn.Linear:
        return linear, ""
    if type(layer) is nn.Conv2d:
        if layer.groups != 1 or layer.padding_mode != "zeros" or isinstance(layer.padding, str):
            return None, f"Conv2d with groups={layer.groups}, padding={layer.padding!r}, mode={layer.padding_mode}"
        return conv2d, ""
    if type(layer) is nn.GroupNorm:
        return group_norm, ""
    if type(layer) is nn.Embedding:
        if layer.max_norm is not None or layer.scale_grad_by_freq or layer.sparse:
            return None, "Embedding with max_norm, scale_grad_by_freq or sparse"
        return embedding, ""
    return None, f"no rule for {type(layer).__name__}"
