"""`audit(config, ...)`: one DP fine-tuning run of a config with m canaries, and its epsilon lower bound.

Each canary is included independently with probability 1/2 (drawn from the run's NoiseSource, stream
"<entry>/inclusion"). The run is a release of the sensitive images of its own: it is charged to a ledger
(`ledger_path`, e.g. RUN/audit_ledger.json; a temporary one if None) as a new DP-SGD entry audit-<n> at
the config's q, steps and clip, sigma calibrated so that the run alone spends privacy.epsilon. That
entry's epsilon is the claim; `bound.lower_bound` turns the canary scores into the empirical lower bound.
No pre-training: neither the guarantee nor the canaries' signal depends on the starting weights.

    >>> result = audit(load_run_config("privimage:demo.yaml"), setting="gradient", canaries=1000)
    >>> result.epsilon_lower_bound <= result.epsilon_claimed
    True
"""

import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from privimage.audit import blackbox, whitebox
from privimage.audit.bound import lower_bound
from privimage.device import resolve_device
from privimage.models.edm import EDMLoss, EDMPrecond, to_model_space
from privimage.models.unet import UNet
from privimage.preflight import sensitive_split
from privimage.privacy.accountant import calibrate_sigma, epsilon_pld
from privimage.privacy.ledger import Ledger
from privimage.privacy.rng import noise_source
from privimage.run_config import RunConfig
from privimage.train.finetune import finetune, plan

SETTINGS = ("gradient", "input")
CONFIDENCE = 0.95


@dataclass(frozen=True)
class AuditResult:
    epsilon_claimed: float  # the audit run's ledger epsilon (PLD) at delta
    epsilon_lower_bound: float  # empirical lower bound, valid at `confidence`
    confidence: float  # probability that a run meeting its claim shows a bound below it
    canaries: int  # m; each included with probability 1/2
    setting: str  # gradient (white-box Dirac canaries) | input (canary images, final model's loss)
    delta: float  # delta of the claim and of the bound
    bound_one_run: float  # Steinke et al. 2023 (epsilon, delta) bound
    bound_fdp: float  # Mahloujifar et al. 2024 f-DP bound (DP-SGD trade-off family)
    guesses: int  # guesses behind the reported bound (the rest abstained)
    correct: int  # right ones among them
    noise_multiplier: float  # sigma of the audit run
    sample_rate: float  # q of the audit run
    steps: int  # noisy steps of the audit run
    ledger: str | None  # ledger file the audit run was charged to (None: a temporary one)
    mechanism: str  # its entry there

    def to_json(self) -> dict:
        return asdict(self)


def audit(config: RunConfig, *, setting: str = "gradient", canaries: int = 1000, device="auto",
          progress: bool = True, ledger_path: str | Path | None = None) -> AuditResult:
    """Audit the DP fine-tuning of `config` (see the module docstring)."""
    if setting not in SETTINGS:
        raise ValueError(f"setting must be one of {SETTINGS}, got {setting!r}")
    if canaries < 2:
        raise ValueError(f"need at least 2 canaries, got {canaries}")
    device = resolve_device(device)  # no wall time is reported: it follows the realised Poisson batch sizes
    noise = noise_source(config.privacy.seed)
    sensitive = sensitive_split(config, config.data.sensitive_split, progress=progress)
    torch.manual_seed(config.seed)  # the (public) initial weights
    net = EDMPrecond(UNet(config.model))
    with tempfile.TemporaryDirectory(prefix="privimage-audit-") as tmp:
        ledger = Ledger(ledger_path or Path(tmp) / "ledger.json", delta=config.privacy.delta,
                        noise_seed=noise.describe())
        name = f"audit-{len(ledger.entries) + 1}"
        included = noise.bernoulli(canaries, p=0.5, stream=f"{name}/inclusion", counter=0)  # (m,) bool
        if setting == "gradient":
            scores, mechanism = _gradient(config, net, sensitive, included, noise=noise, ledger=ledger, name=name,
                                          device=device)
        else:
            scores, mechanism = _input(config, net, sensitive, included.numpy(), ledger=ledger, name=name,
                                       tmp=Path(tmp), device=device, progress=progress)
        ledger.summary()  # the file gets its epsilons (all audits composed)
    claimed = epsilon_pld([mechanism], delta=config.privacy.delta)  # this run alone
    bound = lower_bound(scores, included.numpy(), delta=config.privacy.delta, confidence=CONFIDENCE,
                        mechanism=mechanism)
    return AuditResult(epsilon_claimed=claimed, epsilon_lower_bound=bound.epsilon, confidence=CONFIDENCE,
                       canaries=canaries, setting=setting, delta=config.privacy.delta, bound_one_run=bound.one_run,
                       bound_fdp=bound.fdp, guesses=bound.guesses, correct=bound.correct,
                       noise_multiplier=mechanism.noise_multiplier, sample_rate=mechanism.sample_rate,
                       steps=mechanism.steps,
                       ledger=None if ledger_path is None else str(ledger_path), mechanism=name)


def _gradient(config: RunConfig, net: EDMPrecond, sensitive, included: torch.Tensor, *, noise, ledger, name, device):
    """White-box: the config's U-Net and sensitive images, plus Dirac canaries, through the real engine."""
    f = config.finetune
    q, steps = plan(f, len(sensitive))
    loss_fn = EDMLoss(sigma_data=net.sigma_data, label_dropout=f.label_dropout, multiplicity=f.multiplicity)
    x_all, y_all = torch.from_numpy(sensitive.x).to(device), torch.from_numpy(sensitive.y).to(device)

    def real(engine, idx):  # the fine-tuning's own per-example EDM loss, per physical micro-batch
        for micro in idx.split(f.micro_batch):
            x, y = to_model_space(x_all[micro]), y_all[micro]
            draws = loss_fn.draw(x, y, generator=engine.generator(stream="loss", device=device))
            engine.accumulate(lambda audited, *batch: loss_fn(audited.model, *batch), x, y, *draws)

    scores, mechanism = whitebox.gradient_scores(
        net, included, real=real, num_real=len(sensitive), sample_rate=q, steps=steps,
        epsilon=config.privacy.epsilon, delta=config.privacy.delta, max_grad_norm=f.clip, noise=noise,
        ledger=ledger, name=name, micro_batch=max(f.micro_batch, 256), lr=f.lr, clipping=f.clipping, device=device)
    return scores.numpy(), mechanism


def _input(config: RunConfig, net: EDMPrecond, sensitive, included: np.ndarray, *, ledger, name, tmp: Path, device,
           progress):
    """Black-box: canary images through `finetune` itself; scored by the released model's loss."""
    canaries = blackbox.canary_images(len(included), sensitive,
                                      generator=torch.Generator().manual_seed(config.seed + 1))
    train = blackbox.with_canaries(sensitive, canaries, included)
    q, steps = plan(config.finetune, len(train))
    sigma, _ = calibrate_sigma(epsilon=config.privacy.epsilon, delta=config.privacy.delta, sample_rate=q,
                               steps=steps)
    before = blackbox.frozen_copy(net)
    released = finetune(net, train, config=replace(config.finetune, mechanism_name=name), noise_multiplier=sigma,
                        ledger=ledger, out_dir=tmp / "finetune", seed=config.privacy.seed, device=device,
                        progress=progress)
    scores = blackbox.loss_scores(before, released, canaries, seed=config.seed, device=device)
    return scores, next(e for e in ledger.entries if e.name == name)
