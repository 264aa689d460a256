"""`privimage audit`, gradient setting, on the REAL engine: below the claim when correct, far above when broken.

A Linear model on random data plus Dirac canaries; the breakages are switched on only here, by
monkeypatch: the engine's noise scaled down 10x (NoiseSource.gaussian), or clipping skipped.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from privimage.audit.bound import lower_bound
from privimage.audit.whitebox import MECHANISM, gradient_scores
from privimage.privacy import clipping
from privimage.privacy.ledger import Ledger
from privimage.privacy.rng import NoiseSource

CLAIM = 2.0
M, N, STEPS, Q = 400, 64, 30, 0.25


def audit_linear(tmp_path, seed: int, clip_impl: str = "fast", tag: str = "honest"):
    noise = NoiseSource.from_test_seed(seed)
    included = noise.bernoulli(M, p=0.5, stream="audit/inclusion", counter=0)
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(N, 8, generator=g), torch.randint(0, 3, (N,), generator=g)
    torch.manual_seed(seed)
    model = torch.nn.Linear(8, 3)

    def real(engine, idx):
        engine.accumulate(lambda a, xb, yb: F.cross_entropy(a.model(xb), yb, reduction="none"), x[idx], y[idx])

    ledger = Ledger(tmp_path / f"ledger-{tag}-{seed}.json", delta=1e-5)
    scores, entry = gradient_scores(model, included, real=real, num_real=N, sample_rate=Q, steps=STEPS,
                                    epsilon=CLAIM, delta=1e-5, max_grad_norm=0.5, noise=noise, ledger=ledger,
                                    clipping=clip_impl)
    assert ledger.entries == [entry] and (entry.name, entry.steps, entry.sample_rate) == (MECHANISM, STEPS, Q)
    claimed = ledger.epsilon()  # every step was charged
    assert claimed == pytest.approx(CLAIM, rel=1e-2)
    return lower_bound(scores.numpy(), included.numpy(), delta=1e-5, mechanism=entry), claimed


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_correct_engine_stays_below_the_claim(tmp_path, seed):
    bound, claimed = audit_linear(tmp_path, seed)
    assert bound.epsilon <= claimed


def test_noise_scaled_down_10x_is_caught(tmp_path, monkeypatch):
    honest, _ = audit_linear(tmp_path, 0)
    gaussian = NoiseSource.gaussian
    monkeypatch.setattr(NoiseSource, "gaussian",
                        lambda self, shape, *, std, **kw: gaussian(self, shape, std=std / 10, **kw))
    bound, claimed = audit_linear(tmp_path, 0, tag="broken")
    assert bound.epsilon > 2 * claimed > 2 * honest.epsilon
    assert bound.correct == bound.guesses  # every confident guess right


def test_skipped_clipping_is_caught(tmp_path, monkeypatch):
    monkeypatch.setattr(clipping.exact, "clip_factors", lambda sq_norms, max_grad_norm: torch.ones_like(sq_norms))
    bound, claimed = audit_linear(tmp_path, 0, clip_impl="exact")
    assert bound.epsilon > 2 * claimed


def test_an_audit_entry_is_never_reused(tmp_path):
    ledger = Ledger(tmp_path / "ledger.json", delta=1e-5)
    ledger.open_dpsgd(MECHANISM, sample_rate=Q, noise_multiplier=1.0, planned_steps=1)
    with pytest.raises(ValueError, match="already has an entry 'audit'"):
        gradient_scores(None, torch.ones(4, dtype=torch.bool), sample_rate=Q, steps=1, epsilon=CLAIM, delta=1e-5,
                        max_grad_norm=1.0, noise=NoiseSource.from_test_seed(0), ledger=ledger)


def test_canary_gradient_is_a_dirac_of_norm_at_least_c():
    from privimage.audit.whitebox import CANARY_NORM, Audited, canary_loss
    from privimage.privacy.clipping.exact import per_sample_grads

    audited = Audited(torch.nn.Linear(4, 2), 5)
    grads, _ = per_sample_grads(audited, canary_loss(CANARY_NORM * 0.5), torch.tensor([3, 1]))
    expected = torch.zeros(2, 5, 1)
    expected[0, 3, 0] = expected[1, 1, 0] = CANARY_NORM * 0.5
    assert torch.equal(grads["canary.weight"], expected)
    assert not grads["model.weight"].any() and CANARY_NORM >= 1
    assert np.isclose(float(grads["canary.weight"][0].norm()), 5.0)
