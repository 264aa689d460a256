"""The bound math of `privimage audit`: pinned closed forms, monotonicity, validity by simulation."""

import math

import numpy as np
import pytest
from scipy import stats

from privimage.audit.bound import guesses_at, lower_bound
from privimage.audit.fdp import dpsgd_profile, gaussian_blow_up_inverse, profile_blow_up_inverse, refutes
from privimage.audit.one_run import epsilon_one_run, p_value_one_run
from privimage.privacy.mechanism import Mechanism


def test_one_run_all_correct_matches_the_closed_form():
    # delta = 0, all r guesses right: P[Binomial(r, p) >= r] = p^r = s  =>  eps = log(p / (1 - p)), p = s^(1/r)
    for r in (10, 100, 1000):
        p = 0.05 ** (1 / r)
        expected = math.log(p / (1 - p))
        assert epsilon_one_run(m=r, guesses=r, correct=r, delta=0.0, significance=0.05) == pytest.approx(expected,
                                                                                                        rel=1e-5)


def test_one_run_p_value_is_the_binomial_tail_plus_the_delta_term():
    eps = 1.0
    q = math.exp(eps) / (1 + math.exp(eps))
    assert p_value_one_run(m=100, guesses=50, correct=40, epsilon=eps, delta=0.0) == pytest.approx(
        stats.binom.sf(39, 50, q))
    with_delta = p_value_one_run(m=100, guesses=50, correct=40, epsilon=eps, delta=1e-3)
    assert with_delta > stats.binom.sf(39, 50, q)  # delta only weakens the test


def test_all_correct_bound_rises_with_m_and_delta_lowers_it():
    bounds = [epsilon_one_run(m=m, guesses=m, correct=m, delta=1e-5, significance=0.05) for m in (100, 1000, 10000)]
    assert bounds[0] < bounds[1] < bounds[2]
    assert bounds[1] == pytest.approx(5.78, abs=0.02)  # Steinke et al. Fig. 1: ~5.8 for 1000 perfect guesses
    assert epsilon_one_run(m=1000, guesses=1000, correct=1000, delta=1e-3, significance=0.05) < bounds[1]


def test_random_guesses_give_no_bound():
    rng = np.random.default_rng(0)
    for _ in range(5):
        included = rng.random(1000) < 0.5
        bound = lower_bound(rng.normal(size=1000), included, delta=1e-5)
        assert bound.epsilon < 0.3


def test_guesses_take_the_top_half_in_and_the_bottom_half_out():
    scores = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    included = np.array([False, True, False, True, True, True])
    assert guesses_at(scores, included, 2) == 2  # 5 in (right), 0 out (right)
    assert guesses_at(scores, included, 4) == 3  # + 4 in (right), 1 out (wrong)


def test_fdp_of_perfect_privacy_refutes_nothing_of_coin_flips():
    identity = lambda x: x  # noqa: E731  f(alpha) = 1 - alpha: no test beats guessing
    assert not refutes(identity, m=1000, guesses=1000, correct=520, significance=0.05)
    assert refutes(identity, m=1000, guesses=1000, correct=600, significance=0.05)


def test_fdp_is_valid_on_simulated_gaussian_canaries():
    # Scores of a mu-GDP mechanism: in ~ N(mu, 1), out ~ N(0, 1). Its own claim may be refuted at most
    # ~5 % of the time; a claim 4x more private (mu / 4) nearly always.
    rng, mu, trials, refuted_true, refuted_false = np.random.default_rng(1), 2.0, 100, 0, 0
    for _ in range(trials):
        included = rng.random(1000) < 0.5
        scores = rng.normal(size=1000) + mu * included
        v = guesses_at(scores, included, 200)
        refuted_true += refutes(gaussian_blow_up_inverse(mu), m=1000, guesses=200, correct=v, significance=0.05)
        refuted_false += refutes(gaussian_blow_up_inverse(mu / 4), m=1000, guesses=200, correct=v, significance=0.05)
    assert refuted_true <= 0.1 * trials
    assert refuted_false >= 0.9 * trials


def test_profile_trade_off_of_a_gaussian_matches_gdp():
    # T Gaussian steps (q = 1) with noise sigma are exactly mu-GDP, mu = sqrt(T) / sigma (Dong et al. 2022).
    mechanism = Mechanism("g", "poisson_gaussian", noise_multiplier=5.0, sample_rate=1.0, steps=25)
    epsilons = np.linspace(0, 20, 200)
    from_profile = profile_blow_up_inverse(epsilons, dpsgd_profile(mechanism, epsilons))
    exact = gaussian_blow_up_inverse(1.0)
    for x in (0.05, 0.3, 0.5, 0.9, 0.99):
        assert from_profile(x) <= exact(x) + 1e-6  # a profile's curve is never above the exact one
        assert from_profile(x) == pytest.approx(exact(x), abs=0.01)


def test_fdp_bound_beats_one_run_on_perfect_guesses_and_is_named_in_the_result():
    mechanism = Mechanism("audit", "poisson_gaussian", noise_multiplier=5.0, sample_rate=1.0, steps=100)
    scores = np.arange(2000.0)
    bound = lower_bound(scores, scores >= 1000, delta=1e-5, mechanism=mechanism)
    assert bound.fdp > bound.one_run > 4
    assert bound.epsilon == bound.fdp and bound.correct == bound.guesses == 2000
    assert bound.tests == 12 and bound.confidence == 0.95


def test_invalid_inputs_are_refused():
    with pytest.raises(ValueError, match="as many scores"):
        lower_bound(np.zeros(3), np.zeros(4, dtype=bool), delta=1e-5)
    with pytest.raises(ValueError, match="finite"):
        lower_bound(np.array([0.0, np.nan]), np.array([True, False]), delta=1e-5)
    with pytest.raises(ValueError, match="correct <= guesses"):
        epsilon_one_run(m=10, guesses=5, correct=6, delta=0.0, significance=0.05)
