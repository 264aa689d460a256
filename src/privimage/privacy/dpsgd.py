"""DP-SGD (Abadi et al. 2016): the engine that owns the whole release, phase by phase.

One noisy step per logical (Poisson) batch, whatever the number of physical micro-batches:
    accumulate()  (a) S += sum_i clip(g_i), g_i * min(1, C / ||g_i||)   [privacy/clipping: exact | fast]
    step()        charge step t to the ledger (unless t was charged before: a replay after a resume)
                  (b) S <- reduce(S)                  optional, e.g. an all-reduce across processes
                  (c) S + N(0, (sigma C)^2 I)          ONCE, fp32, NoiseSource stream "<name>/noise", counter t
                  (d) / E[B] = q N                     the EXPECTED batch size, never the realised one
                      + public_grads                   gradients of NON-sensitive terms only (e.g. a GAN's)
                  (e) optimizer.step()
Dividing by the expected batch size keeps the noise calibrated to sensitivity C; the realised Poisson
batch size is itself data-dependent and is never reported.

Replay: every draw (Poisson batch, dropout, noise) is a pure function of the NoiseSource key and (t,
micro-batch); a step t <= the ledger's charged steps is replayed bit for bit and not charged again. The
key file (privacy/noise_key.py) is what makes that possible; checkpoints hold no generator state.

    engine = DPSGD(net, opt, noise_multiplier=sigma, max_grad_norm=C, expected_batch_size=q * n,
                   sample_rate=q, noise=NoiseSource.fresh(), ledger=ledger)
    for t, idx in engine.batches(n, steps=T):
        for micro in idx.split(32) or [idx]:          # an empty batch still takes its noisy step
            engine.accumulate(loss_fn, x[micro], y[micro])
        engine.step()
"""

from collections.abc import Callable, Iterator

import torch
from torch import nn

from privimage.privacy.clipping import make_clipping
from privimage.privacy.clipping.exact import max_relative_error_vs_loop, per_sample_grads  # noqa: F401 (re-export)
from privimage.privacy.ledger import Ledger
from privimage.privacy.poisson import poisson_batches
from privimage.privacy.rng import NoiseSource

Reduce = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor] | None]


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
    """The DP-SGD engine around a module and its optimizer (see the module docstring for the phases).

    With a `ledger`, its entry `mechanism_name` must have been opened (`Ledger.open_dpsgd`) with the same
    noise multiplier and sample rate; each new step is charged before its noisy gradient is used.
    `clipping`: "fast" (per-layer rules) or "exact" (torch.func reference). `autocast_dtype`: e.g.
    torch.bfloat16 runs forward and backward under autocast; weights, norms, sums and noise stay fp32.
    """

    def __init__(self, module: nn.Module, optimizer: torch.optim.Optimizer, *, noise_multiplier: float,
                 max_grad_norm: float, expected_batch_size: float, sample_rate: float, noise: NoiseSource,
                 ledger: Ledger | None = None, mechanism_name: str = "finetune", clipping: str = "fast",
                 reduce: Reduce | None = None, autocast_dtype: torch.dtype | None = None):
        if not noise_multiplier >= 0:
            raise ValueError(f"noise_multiplier must be >= 0, got {noise_multiplier!r}")
        if not max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be > 0, got {max_grad_norm!r}")
        if not expected_batch_size > 0:
            raise ValueError(f"expected_batch_size (q * N) must be > 0, got {expected_batch_size!r}")
        if not (isinstance(sample_rate, (int, float)) and 0 < sample_rate <= 1):
            raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate!r}")
        if not isinstance(noise, NoiseSource):
            raise ValueError(f"noise must be a privimage.privacy.rng.NoiseSource, got {type(noise).__name__}")
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
        if ledger is not None:
            entry = next((m for m in ledger.entries if m.name == mechanism_name), None)
            if (entry is None or entry.kind != "poisson_gaussian" or entry.noise_multiplier != noise_multiplier
                    or entry.sample_rate != sample_rate):
                raise ValueError(
                    f"ledger {ledger.path} has no DP-SGD entry {mechanism_name!r} with noise_multiplier="
                    f"{noise_multiplier} and sample_rate={sample_rate}; call ledger.open_dpsgd(...) with the "
                    "same parameters first"
                )
        self.module, self.optimizer, self.noise = module, optimizer, noise
        self.noise_multiplier, self.max_grad_norm = float(noise_multiplier), float(max_grad_norm)
        self.expected_batch_size, self.sample_rate = float(expected_batch_size), float(sample_rate)
        self.ledger, self.mechanism_name, self.reduce = ledger, mechanism_name, reduce
        self.clipping = make_clipping(clipping)
        self.autocast_dtype = autocast_dtype
        self.steps = 0  # steps taken (a resumed run starts at its checkpoint's step, see batches())
        self._micro = 0  # micro-batches accumulated into the current logical batch
        self._sums = {k: torch.zeros_like(p, dtype=torch.float32) for k, p in self.params.items()}  # phase (a)
        self._open = True  # a logical batch is being accumulated (step() allowed)

    # ----------------------------------------------------------------------------------------------- batches
    def charged(self) -> int:
        """Steps of this mechanism already charged in the ledger (0 without a ledger)."""
        if self.ledger is None:
            return 0
        return next(m.steps for m in self.ledger.entries if m.name == self.mechanism_name)

    def batches(self, n: int, *, steps: int, start: int = 0) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield (t, CPU indices) for t = start+1 .. steps; q and E[B] = q n are checked against n.

        `start` is the step of the checkpoint a resumed run restored; steps start+1 .. charged() are
        replays (same batch, same noise, not charged again).
        """
        if abs(self.sample_rate * n - self.expected_batch_size) > 1e-9 * self.expected_batch_size:
            raise ValueError(f"expected_batch_size {self.expected_batch_size} != sample_rate {self.sample_rate} "
                             f"* n {n}: the noise would be scaled for another batch size")
        if self.ledger is not None and start > self.charged():
            raise ValueError(f"{self.ledger.path}: {self.mechanism_name!r} shows {self.charged()} steps charged but "
                             f"the run resumes after step {start}")
        self.steps = start
        for t, idx in poisson_batches(n, sample_rate=self.sample_rate, steps=steps, noise=self.noise,
                                      mechanism=self.mechanism_name, start=start):
            if self.steps != t - 1:
                raise RuntimeError(f"step {t - 1} was not taken (call engine.step() once per batch)")
            yield t, idx

    def generator(self, *, stream: str, index: int | None = None, device="cpu") -> torch.Generator:
        """A generator for NON-secret randomness of a micro-batch (e.g. diffusion-loss draws).

        A pure function of (key, step, micro-batch index, stream), so a replayed step redraws identically.
        index: the micro-batch's place in the logical batch (default: the next one this process accumulates);
        pass it when micro-batches are dealt to several processes, so draws do not depend on the world size.
        """
        return self.noise.torch_generator(stream=f"{self.mechanism_name}/{stream}", counter=self.steps + 1,
                                          index=self._micro if index is None else index, device=device)

    # ----------------------------------------------------------------------------------------- phases (a)
    def zero_grad(self) -> None:
        """Drop what was accumulated and start a new logical batch."""
        for s in self._sums.values():
            s.zero_()
        self._micro = 0
        self._open = True

    def accumulate(self, loss_fn, *batch: torch.Tensor, index: int | None = None) -> torch.Tensor:
        """Phase (a) for one physical micro-batch: add its clipped per-example gradients; returns losses (B,).

        loss_fn(module, *batch) -> (B,) per-example losses. The losses are NOT noised: use them for control
        flow only, never log or save them. Dropout draws from a generator derived from (key, step, micro),
        micro = `index` when given (see generator()), else this process's count of micro-batches.
        """
        self._open = True
        micro = self._micro if index is None else index
        if len(batch[0]) == 0:
            self._micro += 1
            return torch.zeros(0, device=batch[0].device)
        device = next(iter(self.params.values())).device
        seed = self.noise.torch_generator(stream=f"{self.mechanism_name}/dropout", counter=self.steps + 1,
                                          index=micro).initial_seed()
        self._micro += 1
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            with torch.autocast(device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
                sums, losses = self.clipping(self.module, loss_fn, batch, max_grad_norm=self.max_grad_norm)
        for name, s in sums.items():
            self._sums[name].add_(s)
        return losses.detach()

    # ----------------------------------------------------------------------------------- phases (b) - (e)
    @torch.no_grad()
    def step(self, public_grads: dict[str, torch.Tensor] | None = None) -> dict:
        """One noisy step t = steps + 1; charged first unless it is a replay. Returns stats of noised values.

        public_grads: {param name: gradient} of terms computed on NON-sensitive data only; added after the
        noise and the division by E[B], before the optimizer step. stats["noisy_grad_norm"] is a 0-dim
        tensor (no host sync here; call float() when logging).
        """
        if not self._open:
            raise RuntimeError(
                "DPSGD.step() called twice without accumulate() or zero_grad() in between; an empty Poisson "
                "batch must still go through accumulate() (with the empty tensors) or zero_grad()"
            )
        unknown = set(public_grads or {}) - set(self.params)
        if unknown:
            raise ValueError(f"public_grads has no trainable parameter named {sorted(unknown)[:3]}")
        t = self.steps + 1
        replay = self.ledger is not None and t <= self.charged()
        if self.ledger is not None and not replay:
            self.ledger.charge_step(self.mechanism_name)
        sums = self._sums
        if self.reduce is not None:  # (b)
            reduced = self.reduce(sums)
            sums = sums if reduced is None else reduced
        noise = self._noise(t)  # (c) {name: fp32 tensor}
        sq_norm = None
        for name, p in self.params.items():
            g = sums[name] if noise is None else sums[name] + noise[name]
            g = g / self.expected_batch_size  # (d)
            sq_norm = g.pow(2).sum() if sq_norm is None else sq_norm + g.pow(2).sum()
            if public_grads is not None and name in public_grads:
                g = g + public_grads[name].to(g)
            p.grad = g.to(p.dtype)
        self.optimizer.step()  # (e)
        self.zero_grad()
        self._open = False
        self.steps = t
        return {"step": t, "noisy_grad_norm": sq_norm.sqrt(), "replayed": replay}

    def _noise(self, t: int) -> dict[str, torch.Tensor] | None:
        """N(0, (sigma C)^2) for every parameter, fp32, drawn once per step from the NoiseSource."""
        if self.noise_multiplier == 0:
            return None
        total = sum(p.numel() for p in self.params.values())
        device = next(iter(self.params.values())).device
        flat = self.noise.gaussian((total,), std=self.noise_multiplier * self.max_grad_norm,
                                   stream=f"{self.mechanism_name}/noise", counter=t, device=device)
        parts = flat.split([p.numel() for p in self.params.values()])
        return {name: z.view(p.shape).to(p.device) for (name, p), z in zip(self.params.items(), parts)}
