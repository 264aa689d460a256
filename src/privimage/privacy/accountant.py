"""Epsilon of a composition of Gaussian mechanisms, and the DP-SGD noise that meets a target epsilon.

The privacy-loss-distribution (PLD) accountant of Google's dp-accounting is the primary accountant: it
is numerically tight (Koskela et al. 2020; Doroshenko et al. 2022). Renyi DP (Mironov 2017; Mironov,
Talwar & Zhang 2019) is reported as a cross-check; it is an upper bound, looser than PLD. Both use
add/remove-one adjacency, the adjacency DP-SGD with Poisson sampling is analysed under.

PLD discretisation: dp-accounting's default interval (1e-4) costs ~2 s per evaluation for 5000 steps,
too slow for a 30-step bisection. We evaluate at 1e-3 and 5e-4; the pessimistic PLD error shrinks
linearly with the interval, so their difference estimates the error of the 5e-4 result. When it is
below 0.2 % we keep it, otherwise we fall back to the default interval. Either way the result is within
~0.5 % of dp-accounting's default PLDAccountant, and never below it by more than that.
"""

import functools
import logging
import math
import warnings
from collections.abc import Sequence
from contextlib import contextmanager

import dp_accounting
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.rdp import rdp_privacy_accountant

from privimage.errors import UserError
from privimage.privacy.mechanism import Mechanism

NEIGHBORS = dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE
PLD_INTERVALS = (1e-3, 5e-4)  # coarse, fine discretisation intervals tried first
PLD_DEFAULT_INTERVAL = 1e-4  # dp-accounting's PLDAccountant default, the fallback
PLD_AGREEMENT = 2e-3  # relative difference between the two intervals accepted as converged
ACCOUNTANTS = ("pld", "rdp")


def dp_event(mechanism: Mechanism) -> dp_accounting.DpEvent:
    """The dp-accounting event of one ledger entry: its Gaussian (sub-sampled for DP-SGD) `steps` times."""
    gaussian = dp_accounting.GaussianDpEvent(mechanism.noise_multiplier)
    if mechanism.kind == "poisson_gaussian":
        return dp_accounting.SelfComposedDpEvent(
            dp_accounting.PoissonSampledDpEvent(mechanism.sample_rate, gaussian), mechanism.steps
        )
    return dp_accounting.SelfComposedDpEvent(gaussian, mechanism.steps)


def _composed_event(mechanisms: Sequence[Mechanism]) -> dp_accounting.DpEvent | None:
    events = [dp_event(m) for m in mechanisms if m.steps > 0]
    return dp_accounting.ComposedDpEvent(events) if events else None


def check_delta(delta: float, n: int | None = None) -> None:
    """ValueError unless 0 < delta < 1; a warning when delta >= 1/n (it then allows leaking a record)."""
    if not (isinstance(delta, (int, float)) and 0 < delta < 1):
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    if n is not None and n > 0 and delta >= 1 / n:
        warnings.warn(
            f"delta={delta:g} >= 1/N = 1/{n}: such a delta permits releasing a whole record; use delta < 1/N",
            stacklevel=2,
        )


def _check_epsilon(epsilon: float) -> None:
    if not (isinstance(epsilon, (int, float)) and math.isfinite(epsilon) and epsilon > 0):
        raise ValueError(f"epsilon must be a finite number > 0, got {epsilon!r}")


def _pld_at(event: dp_accounting.DpEvent, delta: float, interval: float) -> float:
    accountant = pld_privacy_accountant.PLDAccountant(NEIGHBORS, value_discretization_interval=interval)
    accountant.compose(event)
    return float(accountant.get_epsilon(delta))


def epsilon_pld(mechanisms: Sequence[Mechanism], *, delta: float) -> float:
    """Epsilon at `delta` of all `mechanisms` composed, by the PLD accountant (0.0 when nothing was spent).

    >>> round(epsilon_pld([Mechanism("q", "gaussian", noise_multiplier=20.0)], delta=1e-5), 3)
    0.16
    """
    check_delta(delta)
    event = _composed_event(mechanisms)
    if event is None:
        return 0.0
    coarse, fine = (_pld_at(event, delta, interval) for interval in PLD_INTERVALS)
    if abs(coarse - fine) <= PLD_AGREEMENT * fine:
        return fine
    return _pld_at(event, delta, PLD_DEFAULT_INTERVAL)


@contextmanager
def _quiet_absl():
    """dp-accounting's RDP warns (via absl) each time it drops an order it cannot evaluate; harmless."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def epsilon_rdp(mechanisms: Sequence[Mechanism], *, delta: float) -> float:
    """Epsilon at `delta` of all `mechanisms` composed, by the RDP accountant (an upper bound on PLD's)."""
    check_delta(delta)
    event = _composed_event(mechanisms)
    if event is None:
        return 0.0
    accountant = rdp_privacy_accountant.RdpAccountant(neighboring_relation=NEIGHBORS)
    with _quiet_absl():
        accountant.compose(event)
        return float(accountant.get_epsilon(delta))


EPSILON = {"pld": epsilon_pld, "rdp": epsilon_rdp}


# Cached: a pure function of scalars, which `privimage run` evaluates before the query and again at fine-tuning.
@functools.lru_cache(maxsize=32, typed=True)
def calibrate_sigma(
    *,
    epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    query_sigma: float | None = None,
    accountant: str = "pld",
) -> tuple[float, float]:
    """Smallest DP-SGD noise multiplier whose epsilon, composed with the query, is at most `epsilon`.

    DP-SGD is `steps` Poisson-sampled (rate `sample_rate`) Gaussian steps; the query, if given, is one
    Gaussian release with noise multiplier `query_sigma` (PrivImage's semantic query). Bisection on
    log(sigma) to a relative width of 2e-4, so sigma * (1 - 1e-3) misses the target.
    Returns (sigma, achieved epsilon) under the chosen accountant.

    >>> sigma, eps = calibrate_sigma(epsilon=10.0, delta=1e-5, sample_rate=0.01, steps=100)
    >>> eps <= 10.0
    True
    """
    _check_epsilon(epsilon)
    check_delta(delta)
    if not (isinstance(sample_rate, (int, float)) and 0 < sample_rate <= 1):
        raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate!r}")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    if accountant not in EPSILON:
        raise ValueError(f"accountant must be one of {ACCOUNTANTS}, got {accountant!r}")
    compute = EPSILON[accountant]
    fixed = [Mechanism("query", "gaussian", noise_multiplier=query_sigma)] if query_sigma is not None else []
    if fixed:
        query_epsilon = compute(fixed, delta=delta)
        if query_epsilon >= epsilon:
            raise UserError(
                f"the query alone (noise multiplier {query_sigma}) spends epsilon={query_epsilon:.4g} "
                f">= the target {epsilon}; raise the target or the query noise"
            )

    def eps_at(sigma: float) -> float:
        dpsgd = Mechanism("dpsgd", "poisson_gaussian", noise_multiplier=sigma, sample_rate=sample_rate, steps=steps)
        return compute([*fixed, dpsgd], delta=delta)

    # Bracket: eps(lo) > target >= eps(hi), by doubling / halving from sigma = 1.
    lo, hi = 1.0, 1.0
    eps_hi = eps_at(hi)
    if eps_hi <= epsilon:
        while True:
            lo = hi / 2
            if lo < 1 / 64:
                raise UserError(
                    f"target epsilon={epsilon} is reached with noise multiplier below {hi:.3g}; "
                    "lower the target (DP-SGD is unreliable with so little noise)"
                )
            eps_lo = eps_at(lo)
            if eps_lo > epsilon:
                break
            hi, eps_hi = lo, eps_lo
    else:
        while eps_hi > epsilon:
            lo, hi = hi, hi * 2
            if hi > 1e6:
                raise UserError(
                    f"target epsilon={epsilon} needs a noise multiplier above 1e6 "
                    "(the query leaves almost no budget); raise the target"
                )
            eps_hi = eps_at(hi)
    # Bisection in log space.
    while hi / lo > 1 + 2e-4:
        mid = math.sqrt(lo * hi)
        eps_mid = eps_at(mid)
        if eps_mid <= epsilon:
            hi, eps_hi = mid, eps_mid
        else:
            lo = mid
    return hi, eps_hi


def calibrate_for_ledger(ledger, *, epsilon: float, sample_rate: float, steps: int, mechanism_name: str = "finetune",
                         accountant: str = "pld") -> tuple[float, float]:
    """DP-SGD sigma so that the ledger's other entry (at most one Gaussian query) plus DP-SGD meet epsilon.

    `ledger` is a privacy.ledger.Ledger (not imported: the ledger imports this module). Its entry
    `mechanism_name` itself (a resumed run) is left out: its sigma is the one being calibrated.
    `accountant` ("pld" or "rdp", the config key privacy.accountant) decides sigma; the ledger always
    reports the PLD epsilon, which is at most the RDP one, so either choice meets the target.
    """
    others = [m for m in ledger.entries if m.steps > 0 and m.name != mechanism_name]
    if len(others) > 1 or (others and (others[0].kind != "gaussian" or others[0].steps != 1)):
        raise UserError(f"{ledger.path}: can only calibrate against one Gaussian query, found {others}")
    query_sigma = others[0].noise_multiplier if others else None
    return calibrate_sigma(epsilon=epsilon, delta=ledger.delta, sample_rate=sample_rate, steps=steps,
                           query_sigma=query_sigma, accountant=accountant)


# Cached: preflight calibrates the query's noise before the run, and the pipeline again when it queries.
@functools.lru_cache(maxsize=32)
def calibrate_query_sigma(*, epsilon: float, delta: float) -> float:
    """Smallest noise multiplier of ONE Gaussian release (PrivImage's semantic query) whose PLD epsilon at
    `delta` is at most `epsilon`: how `semantic.query_epsilon` becomes sigma_q.

    The noise multiplier is noise std / L2 sensitivity, so the answer does not depend on the query's k (the
    query scales its noise by sqrt(k) itself). The exact curve of one Gaussian (Balle & Wang 2018, Thm. 8)
    gives sigma by bisection in microseconds; the ledger's PLD accountant is slightly pessimistic, so sigma is
    then raised by 0.1 % steps until PLD, which the ledger reports, is at most `epsilon` too.

    >>> sigma = calibrate_query_sigma(epsilon=0.16, delta=1e-5)
    >>> 19 < sigma < 21
    True
    """
    _check_epsilon(epsilon)
    check_delta(delta)
    lo, hi = 0.05, 1e5  # eps(0.05) ~ 100 and eps(1e5) ~ 2e-5 at delta 1e-5: any sensible query lies between
    if _gaussian_delta(epsilon, hi) > delta:
        raise UserError(f"query epsilon {epsilon} needs a noise multiplier above {hi:g}; raise it")
    while hi / lo > 1 + 1e-6:  # the exact delta falls as sigma grows
        mid = math.sqrt(lo * hi)
        lo, hi = (lo, mid) if _gaussian_delta(epsilon, mid) <= delta else (mid, hi)
    sigma = hi
    while epsilon_pld([Mechanism("query", "gaussian", noise_multiplier=sigma)], delta=delta) > epsilon:
        sigma *= 1.001
    return sigma


def _gaussian_delta(epsilon: float, sigma: float) -> float:
    """Exact delta(epsilon) of one Gaussian mechanism, sensitivity 1, noise std sigma (Balle & Wang 2018)."""
    def phi(x: float) -> float:  # standard normal CDF
        return 0.5 * math.erfc(-x / math.sqrt(2))

    a, b = 1 / (2 * sigma), epsilon * sigma
    return phi(a - b) - math.exp(epsilon) * phi(-a - b)
