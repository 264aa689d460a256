"""One entry of the privacy ledger: a mechanism that touched sensitive data.

It lives in its own file so that both the accountant (which composes entries) and the ledger (which
stores them) can import it; `privimage.privacy.ledger` re-exports it.
"""

import math
from dataclasses import dataclass

KINDS = ("gaussian", "poisson_gaussian")


@dataclass(frozen=True)
class Mechanism:
    """A Gaussian mechanism released `steps` times, optionally on a Poisson subsample.

    >>> Mechanism("semantic_query", "gaussian", noise_multiplier=484.0)
    Mechanism(name='semantic_query', kind='gaussian', noise_multiplier=484.0, sample_rate=1.0, steps=1)
    """

    name: str  # e.g. "semantic_query", "finetune"; unique within a ledger
    kind: str  # "gaussian" (one-shot release) | "poisson_gaussian" (DP-SGD)
    noise_multiplier: float  # noise std / L2 sensitivity
    sample_rate: float = 1.0  # Poisson sampling rate q (1.0 for "gaussian")
    steps: int = 1  # releases / noisy steps (0 = opened but nothing spent yet)

    def __post_init__(self):
        if not self.name or not isinstance(self.name, str):
            raise ValueError(f"mechanism name must be a non-empty string, got {self.name!r}")
        if self.kind not in KINDS:
            raise ValueError(f"mechanism {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if not (math.isfinite(self.noise_multiplier) and self.noise_multiplier > 0):
            raise ValueError(
                f"mechanism {self.name!r}: noise_multiplier must be a finite number > 0 "
                f"(0 means no privacy), got {self.noise_multiplier!r}"
            )
        if not (0 < self.sample_rate <= 1):
            raise ValueError(f"mechanism {self.name!r}: sample_rate must be in (0, 1], got {self.sample_rate!r}")
        if self.kind == "gaussian" and self.sample_rate != 1.0:
            raise ValueError(
                f"mechanism {self.name!r}: a 'gaussian' release has sample_rate 1.0, got {self.sample_rate!r}"
            )
        if not isinstance(self.steps, int) or isinstance(self.steps, bool) or self.steps < 0:
            raise ValueError(f"mechanism {self.name!r}: steps must be an int >= 0, got {self.steps!r}")
