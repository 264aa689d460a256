"""Accountant: pinned against dp-accounting's default PLD, the analytic Gaussian, and calibration bounds."""

import math

import dp_accounting
import pytest
from dp_accounting.pld import pld_privacy_accountant
from scipy.optimize import brentq
from scipy.stats import norm

from privimage.errors import UserError
from privimage.privacy.accountant import calibrate_sigma, epsilon_pld, epsilon_rdp
from privimage.privacy.ledger import Mechanism


def dpsgd(sigma, q, steps):
    return Mechanism("finetune", "poisson_gaussian", noise_multiplier=sigma, sample_rate=q, steps=steps)


def query(sigma):
    return Mechanism("semantic_query", "gaussian", noise_multiplier=sigma)


def exact_gaussian_epsilon(sigma: float, delta: float) -> float:
    """Analytic Gaussian mechanism (Balle & Wang 2018): delta(eps) = Phi(1/2s - eps s) - e^eps Phi(-1/2s - eps s)."""

    def excess(eps):
        return norm.cdf(0.5 / sigma - eps * sigma) - math.exp(eps) * norm.cdf(-0.5 / sigma - eps * sigma) - delta

    return brentq(excess, 1e-9, 100.0)


def test_epsilon_matches_dp_accounting_default_pld():
    # sigma=1, q=0.01, T=5000 DP-SGD composed with a Gaussian query of noise multiplier 20, built independently.
    event = dp_accounting.ComposedDpEvent([
        dp_accounting.SelfComposedDpEvent(
            dp_accounting.PoissonSampledDpEvent(0.01, dp_accounting.GaussianDpEvent(1.0)), 5000
        ),
        dp_accounting.GaussianDpEvent(20.0),
    ])
    reference = pld_privacy_accountant.PLDAccountant()  # defaults: add/remove-one, interval 1e-4
    reference.compose(event)
    expected = reference.get_epsilon(1e-5)
    got = epsilon_pld([query(20.0), dpsgd(1.0, 0.01, 5000)], delta=1e-5)
    assert got == pytest.approx(expected, rel=0.01)
    assert 4.0 < got < 4.5  # sanity: the known value is ~4.21


@pytest.mark.parametrize("sigma", [2.0, 20.0, 484.0])
def test_gaussian_query_matches_analytic_epsilon(sigma):
    got = epsilon_pld([query(sigma)], delta=1e-5)
    assert got == pytest.approx(exact_gaussian_epsilon(sigma, 1e-5), rel=0.01)


def test_gaussian_steps_compose_like_one_gaussian_with_less_noise():
    # k releases with noise multiplier s = one release with noise s / sqrt(k).
    repeated = Mechanism("q", "gaussian", noise_multiplier=8.0, steps=4)
    assert epsilon_pld([repeated], delta=1e-5) == pytest.approx(exact_gaussian_epsilon(4.0, 1e-5), rel=0.01)


def test_rdp_is_an_upper_bound_close_to_pld():
    mechanisms = [query(484.0), dpsgd(2.0, 1 / 3, 150)]
    pld, rdp = epsilon_pld(mechanisms, delta=1e-5), epsilon_rdp(mechanisms, delta=1e-5)
    assert pld < rdp < 1.3 * pld


def test_zero_step_entries_count_nothing():
    assert epsilon_pld([dpsgd(1.0, 0.1, 0)], delta=1e-5) == 0.0
    assert epsilon_rdp([], delta=1e-5) == 0.0
    alone = epsilon_pld([query(20.0)], delta=1e-5)
    assert epsilon_pld([query(20.0), dpsgd(1.0, 0.1, 0)], delta=1e-5) == alone


def test_more_steps_or_less_noise_cost_more():
    base = epsilon_pld([dpsgd(1.5, 0.05, 100)], delta=1e-5)
    assert epsilon_pld([dpsgd(1.5, 0.05, 200)], delta=1e-5) > base
    assert epsilon_pld([dpsgd(1.2, 0.05, 100)], delta=1e-5) > base


@pytest.mark.parametrize("accountant", ["pld", "rdp"])
def test_calibrate_returns_smallest_sigma_meeting_target(accountant):
    eps_of = {"pld": epsilon_pld, "rdp": epsilon_rdp}[accountant]
    sigma, achieved = calibrate_sigma(epsilon=3.0, delta=1e-5, sample_rate=0.05, steps=200, query_sigma=50.0,
                                      accountant=accountant)
    composed = eps_of([query(50.0), dpsgd(sigma, 0.05, 200)], delta=1e-5)
    assert composed == pytest.approx(achieved)
    assert composed <= 3.0
    assert eps_of([query(50.0), dpsgd(sigma * (1 - 1e-3), 0.05, 200)], delta=1e-5) > 3.0


def test_calibrate_with_query_needs_more_noise_than_without():
    common = dict(epsilon=1.0, delta=1e-5, sample_rate=0.1, steps=50, accountant="rdp")  # RDP: fast
    with_query, _ = calibrate_sigma(query_sigma=5.0, **common)
    without, _ = calibrate_sigma(**common)
    assert with_query > without * 1.05


def test_calibrate_refuses_when_query_alone_exceeds_target():
    with pytest.raises(UserError, match="query alone"):
        calibrate_sigma(epsilon=0.001, delta=1e-5, sample_rate=0.1, steps=10, query_sigma=484.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(epsilon=0.0),
        dict(epsilon=-1.0),
        dict(epsilon=math.inf),
        dict(delta=0.0),
        dict(delta=1.0),
        dict(sample_rate=0.0),
        dict(sample_rate=1.5),
        dict(steps=0),
        dict(steps=2.5),
        dict(accountant="moments"),
    ],
)
def test_calibrate_rejects_invalid_parameters(kwargs):
    valid = dict(epsilon=1.0, delta=1e-5, sample_rate=0.1, steps=10)
    with pytest.raises(ValueError):
        calibrate_sigma(**{**valid, **kwargs})


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(kind="laplace"),
        dict(noise_multiplier=0.0),
        dict(noise_multiplier=math.nan),
        dict(sample_rate=0.0),
        dict(sample_rate=1.01),
        dict(steps=-1),
        dict(name=""),
    ],
)
def test_mechanism_rejects_invalid_fields(kwargs):
    valid = dict(name="finetune", kind="poisson_gaussian", noise_multiplier=1.0, sample_rate=0.1, steps=1)
    with pytest.raises(ValueError):
        Mechanism(**{**valid, **kwargs})


def test_gaussian_mechanism_must_not_claim_subsampling():
    with pytest.raises(ValueError, match="sample_rate"):
        Mechanism("q", "gaussian", noise_multiplier=10.0, sample_rate=0.5)


def test_epsilon_rejects_invalid_delta():
    with pytest.raises(ValueError, match="delta"):
        epsilon_pld([query(10.0)], delta=0.0)
