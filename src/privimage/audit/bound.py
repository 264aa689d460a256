"""From canary scores to an epsilon lower bound at a stated confidence: guesses, then the two tests.

The auditor ranks the m canaries by score and, for each guess count k of a small grid fixed in
advance, guesses "in" for the k/2 highest and "out" for the k/2 lowest (abstaining on the rest). Each
(k, test) pair is one hypothesis test; the significance 1 - confidence is split evenly over all of
them (Bonferroni), so the maximum reported is itself valid at the stated confidence, not a best-of-many.

Tests: `one_run` (Steinke et al. 2023, any (epsilon, delta)-DP mechanism) and, given the audited
mechanism, `fdp` (Mahloujifar et al. 2024, claims "as private as this DP-SGD with noise sigma'"; its
bound is the ledger epsilon of the least private refuted claim).

    >>> scores, included = np.arange(100.0), np.arange(100) >= 50   # every guess right
    >>> lower_bound(scores, included, delta=1e-5).epsilon > 0
    True
"""

import math
from dataclasses import dataclass

import numpy as np

from privimage.audit.fdp import dpsgd_family, refutes
from privimage.audit.one_run import epsilon_one_run
from privimage.privacy.accountant import epsilon_pld
from privimage.privacy.mechanism import Mechanism

GUESS_FRACTIONS = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0)  # guesses k as a fraction of m, fixed before the run
SIGMA_RANGE = 30.0  # the f-DP search looks at noise multipliers in [sigma / 30, 30 sigma]
PROFILE_MAX_EPSILON = 60.0  # the claimed profiles are evaluated on [0, 60]: ample for claims up to ~15


@dataclass(frozen=True)
class Bound:
    epsilon: float  # the lower bound: the largest of the tests below, valid at `confidence` (Bonferroni)
    confidence: float  # probability that a mechanism meeting its claim gives a bound below its epsilon
    one_run: float  # best (epsilon, delta) bound of Steinke et al. over the guess counts
    fdp: float | None  # best f-DP bound of Mahloujifar et al. (None: no mechanism given)
    guesses: int  # k of the largest bound
    correct: int  # right guesses among them
    tests: int  # hypothesis tests the significance was split over


def guesses_at(scores: np.ndarray, included: np.ndarray, k: int) -> int:
    """Right guesses when the k/2 highest scores are guessed "in" and the k/2 lowest "out"."""
    order = np.argsort(scores, kind="stable")
    half = k // 2
    top, bottom = order[len(order) - half:], order[:half]
    return int(included[top].sum() + (~included[bottom]).sum())


def lower_bound(scores, included, *, delta: float, confidence: float = 0.95,
                mechanism: Mechanism | None = None) -> Bound:
    """Epsilon lower bound from one run: scores (m,) higher = more likely included; included (m,) bool."""
    scores, included = np.asarray(scores, dtype=np.float64), np.asarray(included, dtype=bool)
    m = len(scores)
    if scores.shape != included.shape or m < 2:
        raise ValueError(f"need as many scores as inclusion flags (at least 2), got {scores.shape}, {included.shape}")
    if not np.all(np.isfinite(scores)):
        raise ValueError("canary scores must be finite")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    counts = sorted({max(2, 2 * round(f * m / 2)) for f in GUESS_FRACTIONS if 2 * round(f * m / 2) <= m})
    tests = len(counts) * (2 if mechanism is not None else 1)
    significance = (1 - confidence) / tests
    best = (0.0, 0, 0)  # (epsilon, guesses, correct)
    one_run = fdp = 0.0
    family = None if mechanism is None else dpsgd_family(mechanism, max_epsilon=PROFILE_MAX_EPSILON)
    refuted_sigma = math.inf  # smallest noise multiplier any f-DP test refuted
    for k in counts:
        v = guesses_at(scores, included, k)
        eps = epsilon_one_run(m=m, guesses=k, correct=v, delta=delta, significance=significance)
        one_run = max(one_run, eps)
        if eps > best[0]:
            best = (eps, k, v)
        if family is not None:
            sigma = _refuted_sigma(family, mechanism, m=m, guesses=k, correct=v, significance=significance)
            if sigma < refuted_sigma:
                refuted_sigma, best_fdp = sigma, (k, v)
    if refuted_sigma < math.inf:  # the ledger epsilon of the least private refuted claim
        fdp = epsilon_pld([Mechanism(mechanism.name, mechanism.kind, noise_multiplier=refuted_sigma,
                                     sample_rate=mechanism.sample_rate, steps=mechanism.steps)], delta=delta)
        if fdp > best[0]:
            best = (fdp, *best_fdp)
    return Bound(epsilon=best[0], confidence=confidence, one_run=one_run, fdp=None if mechanism is None else fdp,
                 guesses=best[1], correct=best[2], tests=tests)


def _refuted_sigma(family, mechanism: Mechanism, *, m: int, guesses: int, correct: int,
                   significance: float) -> float:
    """Smallest noise multiplier whose claim the guesses refute (bisection in log sigma; inf if none is)."""
    def refuted(log_sigma: float) -> bool:
        return refutes(family(math.exp(log_sigma)), m=m, guesses=guesses, correct=correct, significance=significance)

    lo, hi = math.log(mechanism.noise_multiplier / SIGMA_RANGE), math.log(mechanism.noise_multiplier * SIGMA_RANGE)
    if correct <= guesses / 2 or not refuted(hi):
        return math.inf
    if refuted(lo):
        return math.exp(lo)
    while hi - lo > 0.01:  # sigma to 1 %
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if refuted(mid) else (mid, hi)
    return math.exp(hi)
