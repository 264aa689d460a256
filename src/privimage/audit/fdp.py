"""The f-DP refinement of the one-run audit (Mahloujifar, Melis & Chaudhuri 2024, "Auditing f-Differential
Privacy in One Run"): the same guesses, tested against a whole trade-off curve instead of one (epsilon, delta).

Why: (epsilon, delta) keeps only one point of a mechanism's privacy profile, and the binomial bound of
`one_run` cannot exceed ~log(r) with r guesses however good they are. DP-SGD is characterised by its
whole profile delta(epsilon), i.e. its trade-off function f (the smallest type-II error of any test at
type-I error alpha). Against f, a run with nearly all guesses right refutes far more.

Trade-off from a privacy profile {(eps_i, delta_i)} (Dong, Roth & Su 2022, Proposition 2.12):
    f(alpha) = max_i max(0, 1 - delta_i - e^eps_i alpha, e^-eps_i (1 - delta_i - alpha)).
The recursion of `refutes` needs x -> f(1 - x) (the "inverse blow-up": the smallest false-positive rate
at which a test reaches true-positive rate x).

The claims tested are "the run is at least as private as DP-SGD with this (q, T) and noise multiplier
sigma'" (`dpsgd_family`); the lower bound reported is the ledger epsilon of the least private such claim
that the guesses refute. The profile comes from the same PLD accountant (privacy.accountant) that
charged the run, so a correct engine's own claim is never refuted more often than the significance.
"""

import functools
from collections.abc import Callable

import numpy as np
from dp_accounting.pld import pld_privacy_accountant
from scipy import stats

from privimage.privacy.accountant import NEIGHBORS, dp_event
from privimage.privacy.mechanism import Mechanism

BlowUpInverse = Callable[[float], float]
PROFILE_INTERVAL = 1e-2  # PLD discretisation: pessimistic (the claim only gets weaker); delta within 0.3 % of 1e-3's


def refutes(blow_up_inverse: BlowUpInverse, *, m: int, guesses: int, correct: int, significance: float) -> bool:
    """True when `correct` right of `guesses` guesses (of m canaries) refute f-DP at `significance`.

    The recursion of Mahloujifar et al. 2024 (Algorithm 'audit with abstain'): starting from the
    significance spread over right (r) and wrong (h) guesses, walk down the number of right guesses,
    each step lifting the wrong-guess mass to what f forces; the claim is refuted when the mass needed
    exceeds the guesses' share guesses / m.
    """
    if not 0 <= correct <= guesses <= m:
        raise ValueError(f"need 0 <= correct <= guesses <= m, got correct={correct}, guesses={guesses}, m={m}")
    right = significance * correct / m
    wrong = significance * (guesses - correct) / m
    for i in range(correct - 1, -1, -1):
        lifted = max(wrong, blow_up_inverse(right))
        if lifted == wrong:  # a fixed point: neither mass moves again
            break
        right = min(right + i / (guesses - i) * (lifted - wrong), 1.0)
        wrong = lifted
    return right + wrong > guesses / m


def gaussian_blow_up_inverse(mu: float) -> BlowUpInverse:
    """x -> f(1 - x) for mu-GDP, f(alpha) = Phi(Phi^-1(1 - alpha) - mu) (Dong, Roth & Su 2022)."""
    return lambda x: float(stats.norm.cdf(stats.norm.ppf(x) - mu))


def profile_blow_up_inverse(epsilons: np.ndarray, deltas: np.ndarray) -> BlowUpInverse:
    """x -> f(1 - x) of the trade-off function of a privacy profile (see the module docstring)."""
    eps, delta = np.asarray(epsilons, dtype=np.float64), np.asarray(deltas, dtype=np.float64)

    def inverse(x: float) -> float:
        lines = np.maximum(np.exp(-eps) * (x - delta), 1.0 - delta - np.exp(eps) * (1.0 - x))
        return float(min(1.0, max(0.0, lines.max())))

    return inverse


def dpsgd_profile(mechanism: Mechanism, epsilons: np.ndarray) -> np.ndarray:
    """delta(eps) of one ledger mechanism at each of `epsilons`, from the PLD accountant (add or remove)."""
    accountant = pld_privacy_accountant.PLDAccountant(NEIGHBORS, value_discretization_interval=PROFILE_INTERVAL)
    accountant.compose(dp_event(mechanism))
    return np.array([accountant.get_delta(float(e)) for e in epsilons])


def dpsgd_family(mechanism: Mechanism, *, max_epsilon: float) -> Callable[[float], BlowUpInverse]:
    """noise multiplier sigma' -> inverse blow-up of `mechanism` run with sigma' instead of its own sigma."""
    epsilons = np.linspace(0.0, max_epsilon, 200)  # a truncated profile only weakens the claim

    @functools.lru_cache(maxsize=256)
    def member(sigma: float) -> BlowUpInverse:
        changed = Mechanism(mechanism.name, mechanism.kind, noise_multiplier=sigma,
                            sample_rate=mechanism.sample_rate, steps=mechanism.steps)
        return profile_blow_up_inverse(epsilons, dpsgd_profile(changed, epsilons))

    return member
