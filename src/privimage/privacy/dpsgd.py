"""DP-SGD (Abadi et al. 2016) with exact per-sample gradients from torch.func.

One noisy step per logical (Poisson) batch, whatever the number of physical micro-batches:
    accumulate(): per-sample grads g_i (vmap over the batch)  ->  clip: g_i * min(1, C / ||g_i||)
                  ->  add to the running sum  S += sum_i clip(g_i)
    step():       charge one step to the ledger  ->  g = (S + N(0, (sigma C)^2 I)) / E[B]
                  ->  optimizer.step()  ->  reset S
Dividing by the *expected* batch size q N (not the realised size) keeps the noise calibrated to
sensitivity C; the realised Poisson batch size is itself data-dependent and is never reported.

Why not Opacus' GradSampleModule + DPOptimizer: the hook-based per-sample rules are silently wrong for
convolutions whose input is non-contiguous or channels_last (attention reshapes in the U-Net produce
such inputs; on tests/test_dpsgd.py's AttentionNet, Opacus 1.6 conv weight grad_samples are off by
~100 % relative to a one-example loop, torch.func by < 1e-6), and DPOptimizer keeps every per-sample gradient of the logical batch until step() (memory
grows with the batch) and samples noise with its own generator handling. torch.func gives exact
gradients for any layer, and clip + noise is the ~30 lines below.
"""

from collections.abc import Iterator

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from privimage.privacy.ledger import Ledger


def poisson_batches(n: int, *, sample_rate: float, steps: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Yield `steps` Poisson batches: each example in range(n) joins independently with probability q.

    Batches are CPU LongTensors of indices and can be empty (then still take a noisy step).
    """
    if not (0 < sample_rate <= 1):
        raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate!r}")
    if n < 1 or steps < 0:
        raise ValueError(f"need n >= 1 and steps >= 0, got n={n}, steps={steps}")
    for _ in range(steps):
        keep = torch.rand(n, generator=generator, device=generator.device) < sample_rate  # (n,) bool
        yield keep.nonzero().flatten().cpu()


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

    Each example is passed to loss_fn as a batch of one. Returns ({name: (B, *param.shape)}, losses (B,))
    over the parameters that require grad. Dropout inside the model draws independently per example.
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


def max_relative_error_vs_loop(module: nn.Module, loss_fn, *batch: torch.Tensor) -> float:
    """Largest relative error of per_sample_grads against a slow loop of one-example backward passes.

    The obviously-correct reference for tests: ||g_vmap - g_loop|| / ||g_loop|| per example and
    parameter (denominator floored at 1e-6 of that example's total gradient norm). The module must be
    deterministic (no dropout in train mode).
    """
    grads, _ = per_sample_grads(module, loss_fn, *batch)
    worst = 0.0
    for i in range(len(batch[0])):
        module.zero_grad(set_to_none=True)
        loss_fn(module, *(b[i : i + 1] for b in batch)).sum().backward()
        loop = {k: p.grad for k, p in module.named_parameters() if p.requires_grad}
        floor = 1e-6 * torch.sqrt(sum((g.double() ** 2).sum() for g in loop.values() if g is not None))
        for name, g_vmap in grads.items():
            g_loop = loop[name] if loop[name] is not None else torch.zeros_like(g_vmap[i])
            err = (g_vmap[i] - g_loop).double().norm() / torch.maximum(g_loop.double().norm(), floor).clamp_min(1e-30)
            worst = max(worst, float(err))
    module.zero_grad(set_to_none=True)
    return worst


def check_dp_compatible(module: nn.Module) -> None:
    """ValueError if a layer mixes examples of a batch (BatchNorm), which makes per-example gradients undefined."""
    for name, layer in module.named_modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            raise ValueError(
                f"{type(layer).__name__} at {name or '<root>'!r} normalises across the batch, so one example's "
                "gradient depends on the others and DP-SGD's per-example clipping does not bound it; "
                "replace it with nn.GroupNorm (or LayerNorm)"
            )


class DPSGD:
    """The DP-SGD engine around a module and its optimizer.

    `generator` draws the noise and must live on the parameters' device (see privacy.rng.noise_generator).
    With a `ledger`, the entry `mechanism_name` must have been opened with `Ledger.open_dpsgd` using the
    same noise multiplier; every step() charges it before the noisy gradient is used.

        engine = DPSGD(net, opt, noise_multiplier=1.0, max_grad_norm=1.0, expected_batch_size=q * n,
                       generator=g, ledger=ledger)
        for idx in poisson_batches(n, sample_rate=q, steps=T, generator=g):
            for micro in idx.split(32):
                engine.accumulate(loss_fn, x[micro], y[micro])
            if len(idx) == 0:
                engine.accumulate(loss_fn, x[idx], y[idx])   # empty batch: still one noisy step
            engine.step()
    """

    def __init__(
        self,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        noise_multiplier: float,
        max_grad_norm: float,
        expected_batch_size: float,
        generator: torch.Generator,
        ledger: Ledger | None = None,
        mechanism_name: str = "finetune",
    ):
        if not noise_multiplier >= 0:
            raise ValueError(f"noise_multiplier must be >= 0, got {noise_multiplier!r}")
        if not max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be > 0, got {max_grad_norm!r}")
        if not expected_batch_size > 0:
            raise ValueError(f"expected_batch_size (q * N) must be > 0, got {expected_batch_size!r}")
        check_dp_compatible(module)
        self.params = {k: p for k, p in module.named_parameters() if p.requires_grad}
        in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
        if in_optimizer != {id(p) for p in self.params.values()}:
            frozen = sum(1 for p in module.parameters() if not p.requires_grad)
            raise ValueError(
                f"the optimizer's parameters must be exactly the module's trainable parameters; {frozen} "
                "parameters have requires_grad=False (an EMA copy is frozen: call module.requires_grad_(True) "
                "to train them), or build the optimizer over the trainable ones only"
            )
        devices = {(p.device.type, p.device.index or 0) for p in self.params.values()}
        if devices != {(generator.device.type, generator.device.index or 0)}:
            raise ValueError(
                f"the noise generator is on {generator.device} but the parameters are on "
                f"{sorted({str(p.device) for p in self.params.values()})}; create it with noise_generator(device=...)"
            )
        if ledger is not None:
            entry = next((m for m in ledger.entries if m.name == mechanism_name), None)
            if entry is None or entry.kind != "poisson_gaussian" or entry.noise_multiplier != noise_multiplier:
                raise ValueError(
                    f"ledger {ledger.path} has no DP-SGD entry {mechanism_name!r} with noise_multiplier="
                    f"{noise_multiplier}; call ledger.open_dpsgd(...) with the same parameters first"
                )
        self.module, self.optimizer, self.generator = module, optimizer, generator
        self.noise_multiplier, self.max_grad_norm = float(noise_multiplier), float(max_grad_norm)
        self.expected_batch_size = float(expected_batch_size)
        self.ledger, self.mechanism_name = ledger, mechanism_name
        self.steps = 0  # noisy steps taken by this engine
        self._sum = {k: torch.zeros_like(p) for k, p in self.params.items()}  # sum of clipped grads
        self._open = True  # a logical batch is being accumulated (step() allowed)

    def zero_grad(self) -> None:
        """Drop what was accumulated and start a new logical batch."""
        for s in self._sum.values():
            s.zero_()
        self._open = True

    def accumulate(self, loss_fn, *batch: torch.Tensor) -> torch.Tensor:
        """Add one physical micro-batch's clipped per-example gradients; returns its losses (B,), detached.

        The losses are NOT noised: use them for control flow only, never log or save them.
        """
        self._open = True
        if len(batch[0]) == 0:
            return torch.zeros(0, device=batch[0].device)
        grads, losses = per_sample_grads(self.module, loss_fn, *batch)
        norms = torch.sqrt(sum(g.flatten(1).pow(2).sum(1) for g in grads.values()))  # (B,) full-gradient norms
        scale = (self.max_grad_norm / (norms + 1e-6)).clamp(max=1.0)  # (B,) clip factor
        for name, g in grads.items():
            self._sum[name].add_(torch.einsum("b,b...->...", scale.to(g.dtype), g))
        return losses.detach()

    @torch.no_grad()
    def step(self) -> dict:
        """One noisy step; charged to the ledger first. Returns stats derived only from noised values."""
        if not self._open:
            raise RuntimeError(
                "DPSGD.step() called twice without accumulate() or zero_grad() in between; an empty Poisson "
                "batch must still go through accumulate() (with the empty tensors) or zero_grad()"
            )
        if self.ledger is not None:
            self.ledger.charge_step(self.mechanism_name)
        std = self.noise_multiplier * self.max_grad_norm
        sq_norms = []
        for name, p in self.params.items():
            noise = torch.normal(0.0, std, size=p.shape, generator=self.generator, device=p.device, dtype=p.dtype)
            p.grad = (self._sum[name] + noise) / self.expected_batch_size
            sq_norms.append(p.grad.float().pow(2).sum())
        self.optimizer.step()
        self.zero_grad()
        self._open = False
        self.steps += 1
        return {"step": self.steps, "noisy_grad_norm": float(torch.stack(sq_norms).sum().sqrt())}
