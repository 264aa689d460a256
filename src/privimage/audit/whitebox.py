"""The `gradient` setting: white-box Dirac canaries observed through every noisy update of the REAL engine.

The audited module is wrapped with one extra embedding row per canary (`Audited.canary`, m x 1). Canary
j's loss is `norm * canary[j]`, so its per-example gradient is a Dirac of norm `norm` >= C on its own
coordinate: after clipping exactly C, the worst case DP-SGD's analysis allows. Canaries are examples
like any other: the engine's Poisson sampling (rate q, NoiseSource stream "<mechanism>/poisson") decides
when an included canary is in a batch; the engine clips, sums, charges the ledger, adds its noise and
divides by E[B]. The adversary reads the noisy gradient the engine hands to the optimizer (an optimizer
step pre-hook: nothing of the engine is replaced) and scores canary j by the sum over steps of its
coordinate, i.e. minus the sum of its SGD updates / lr.

Why an extra embedding and not coordinates of the model: real examples then add nothing to the scores,
so the audit measures the engine and not the model; and an Embedding is a layer every clipping
implementation has a rule for. What it cannot see: bugs that only touch real examples (e.g. a wrong
per-layer rule of the fast clipping for one layer type) -- the `input` setting and the clipping
exactness tests cover those.
"""

from collections.abc import Callable

import torch
from torch import nn

from privimage.privacy.accountant import calibrate_sigma
from privimage.privacy.dpsgd import DPSGD
from privimage.privacy.ledger import Ledger, Mechanism
from privimage.privacy.rng import NoiseSource

MECHANISM = "audit"  # default ledger entry of the audit's own DP-SGD run
CANARY_NORM = 10.0  # canary gradient norm in units of C: clipped to C by a correct engine, caught if not


class Audited(nn.Module):
    """The audited model plus one canary coordinate per canary (zeros; only canary losses touch them)."""

    def __init__(self, model: nn.Module | None, canaries: int):
        super().__init__()
        self.model = model
        self.canary = nn.Embedding(canaries, 1)
        nn.init.zeros_(self.canary.weight)


def canary_loss(norm: float) -> Callable:
    """loss_fn(audited, ids) -> (B,) = norm * canary[ids]: per-example gradient norm * e_id."""
    return lambda audited, ids: norm * audited.canary(ids)[:, 0]


RealStep = Callable[[DPSGD, torch.Tensor], None]  # adds real examples idx of this step: engine.accumulate(...)


def gradient_scores(model: nn.Module | None, included: torch.Tensor, *, real: RealStep | None = None,
                    num_real: int = 0, sample_rate: float, steps: int, epsilon: float, delta: float,
                    max_grad_norm: float, noise: NoiseSource, ledger: Ledger, name: str = MECHANISM,
                    micro_batch: int = 256, lr: float = 1e-3, clipping: str = "fast",
                    device: str | torch.device = "cpu") -> tuple[torch.Tensor, Mechanism]:
    """Run DP-SGD on num_real real examples + the included canaries; -> (scores (m,), its ledger entry).

    `included` (m,) bool: which canaries are in the training set. `real(engine, idx)` accumulates the
    real examples idx (indices < num_real) with loss functions of the `Audited` wrapper (use .model).
    sigma is calibrated so that the run alone spends `epsilon` at `delta`; it is charged to `ledger`
    as the DP-SGD entry `name` (a new one: the audit is a release of the real examples of its own).
    """
    m = len(included)
    ids = torch.nonzero(included).flatten().to(device)  # canary j <-> example num_real + position in ids
    n = num_real + len(ids)
    if n < 1:
        raise ValueError("nothing to train on: no real examples and no included canary")
    if ledger.has(name):
        raise ValueError(f"{ledger.path} already has an entry {name!r}: an audit run is a new release, name it anew")
    sigma, _ = calibrate_sigma(epsilon=epsilon, delta=delta, sample_rate=sample_rate, steps=steps)
    ledger.open_dpsgd(name, sample_rate=sample_rate, noise_multiplier=sigma, planned_steps=steps)
    audited = Audited(model, m).to(device).train()
    optimizer = torch.optim.SGD([p for p in audited.parameters() if p.requires_grad], lr=lr)
    engine = DPSGD(audited, optimizer, noise_multiplier=sigma, max_grad_norm=max_grad_norm,
                   expected_batch_size=sample_rate * n, sample_rate=sample_rate, noise=noise, ledger=ledger,
                   mechanism_name=name, clipping=clipping)
    scores = torch.zeros(m, dtype=torch.float64, device=device)

    def observe(opt, args, kwargs):  # the adversary: every noisy gradient, as the optimizer receives it
        scores.add_(audited.canary.weight.grad[:, 0].double())

    hook = optimizer.register_step_pre_hook(observe)
    loss = canary_loss(CANARY_NORM * max_grad_norm)
    try:
        for _, idx in engine.batches(n, steps=steps):
            idx = idx.to(device)
            if real is not None and num_real:
                real(engine, idx[idx < num_real])
            canaries = ids[idx[idx >= num_real] - num_real]
            for chunk in canaries.split(micro_batch) or (canaries,):  # >= 1 call: an empty batch still steps
                engine.accumulate(loss, chunk)
            engine.step()
    finally:
        hook.remove()
    entry = next(e for e in ledger.entries if e.name == name)
    return scores.cpu() * sample_rate * n, entry  # in units of clipped-gradient sums
