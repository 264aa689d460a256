"""The one-run (epsilon, delta) audit of Steinke, Nasr & Jagielski (NeurIPS 2023), Theorem 3.1 / Algorithm 2.

m canaries are each included independently with probability 1/2; after ONE training run the auditor
guesses "in" or "out" for r of them and abstains on the rest. If the training is (epsilon, delta)-DP,
each guess is no better than epsilon-randomized response, whose accuracy is e^eps / (1 + e^eps), so

    P[v or more of the r guesses are correct] <= P[Binomial(r, e^eps / (1 + e^eps)) >= v] + 2 m delta alpha,

with alpha the largest (1/i) P[v - i <= Binomial(r, .) < v] over i = 1..v (the paper's delta term). The
epsilon lower bound at significance s is the largest epsilon whose p-value is still below s: a mechanism
that really is (epsilon, delta)-DP produces such a result with probability at most s.

Why guesses and abstentions: only the most confident guesses (the highest and lowest scores) are
nearly always right; a bound from all m guesses would be dragged down by the undecidable middle.

Example (all 1000 guesses right, no delta): epsilon >= log(p / (1 - p)) with p = 0.05 ** (1 / 1000):
    >>> round(epsilon_one_run(m=1000, guesses=1000, correct=1000, delta=0.0, significance=0.05), 2)
    5.81
"""

import math

import numpy as np
from scipy import optimize, special, stats


def p_value_one_run(*, m: int, guesses: int, correct: int, epsilon: float, delta: float) -> float:
    """P[>= `correct` right of `guesses` guesses] if the training were (epsilon, delta)-DP (an upper bound)."""
    if not 0 <= correct <= guesses <= m:
        raise ValueError(f"need 0 <= correct <= guesses <= m, got correct={correct}, guesses={guesses}, m={m}")
    if not (epsilon >= 0 and 0 <= delta <= 1):
        raise ValueError(f"need epsilon >= 0 and delta in [0, 1], got epsilon={epsilon}, delta={delta}")
    p = special.expit(epsilon)  # accuracy of epsilon-randomized response
    beta = float(stats.binom.sf(correct - 1, guesses, p))  # P[Binomial(r, p) >= v]
    if delta == 0 or correct == 0:
        return beta
    i = np.arange(1, correct + 1)
    window = stats.binom.sf(correct - i - 1, guesses, p) - beta  # P[v - i <= Binomial < v], i = 1..v
    alpha = float(np.max(window / i))
    return min(1.0, beta + 2 * m * delta * alpha)


def epsilon_one_run(*, m: int, guesses: int, correct: int, delta: float, significance: float) -> float:
    """Largest epsilon that `correct` right guesses out of `guesses` refute at `significance` (0 if none)."""
    if not 0 < significance < 1:
        raise ValueError(f"significance must be in (0, 1), got {significance}")

    def margin(eps: float) -> float:  # > 0: (eps, delta)-DP is refuted
        return significance - p_value_one_run(m=m, guesses=guesses, correct=correct, epsilon=eps, delta=delta)

    if guesses == 0 or margin(0.0) <= 0:
        return 0.0
    hi = 1.0
    while margin(hi) > 0:
        if hi > 1e3:  # only reachable with delta = 0 and an absurd number of guesses
            return math.inf
        hi *= 2
    return float(optimize.brentq(margin, 0.0, hi, xtol=1e-6))
