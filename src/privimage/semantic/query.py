"""Step 2 of PrivImage: the DP semantic distribution of the sensitive data over the public classes.

Each sensitive image votes for the k public classes the semantic query function ranks highest, in the
row of its sensitive class (one row when the data is unlabelled): a histogram H of shape (S, P). Adding
or removing one image changes k distinct cells of one row by 1, so the L2 sensitivity is sqrt(k); the
Gaussian mechanism adds N(0, (sigma_q * sqrt(k))^2) to EVERY cell (as in the paper's code). Only the
noisy histogram leaves this module; the ledger is charged before it is released.

The noise is given either directly (sigma_q) or as the query's own epsilon at the release's delta
(`query_sigma` calibrates sigma_q with the ledger's PLD accountant); the rest of the budget is DP-SGD's.
"""

import math

import numpy as np
import torch

from privimage.data.imageset import ImageSet
from privimage.errors import UserError
from privimage.privacy.accountant import calibrate_query_sigma, epsilon_pld
from privimage.privacy.ledger import Ledger, Mechanism
from privimage.privacy.rng import NoiseSource
from privimage.semantic.classifier import Classifier, predict_topk

MECHANISM_NAME = "semantic_query"
DEFAULT_QUERY_EPSILON = 0.2  # semantic.query_epsilon's default: measured in docs/semantic.md


def query_sigma(*, sigma_q: float | None, query_epsilon: float | None, delta: float) -> float:
    """The query's noise multiplier from exactly one of sigma_q or query_epsilon (its own epsilon at delta).

    >>> round(query_sigma(sigma_q=None, query_epsilon=0.005, delta=1e-5))   # the paper's sigma_q is 484
    446
    """
    if (sigma_q is None) == (query_epsilon is None):
        raise UserError("set exactly one of semantic.sigma_q and semantic.query_epsilon (the other to null), "
                        f"got sigma_q={sigma_q} and query_epsilon={query_epsilon}")
    if sigma_q is not None:
        if not (math.isfinite(sigma_q) and sigma_q > 0):
            raise UserError(f"semantic.sigma_q must be a finite number > 0, got {sigma_q}")
        return float(sigma_q)
    if not (math.isfinite(query_epsilon) and query_epsilon > 0):
        raise UserError(f"semantic.query_epsilon must be a finite number > 0, got {query_epsilon}")
    return calibrate_query_sigma(epsilon=float(query_epsilon), delta=delta)


def query_epsilon_of(sigma_q: float, *, delta: float) -> float:
    """Epsilon at `delta` of the query alone (PLD, as the ledger composes it): its share of the budget."""
    return epsilon_pld([Mechanism(MECHANISM_NAME, "gaussian", noise_multiplier=float(sigma_q))], delta=delta)


def dp_semantic_distribution(classifier: Classifier, sensitive: ImageSet, *, k: int, sigma_q: float,
                             noise: NoiseSource, ledger: Ledger | None, labelled: bool = True,
                             batch_size: int = 512, allow_zero_noise: bool = False,
                             progress: bool = False) -> np.ndarray:
    """Noisy semantic distribution (S, P) float64: row s = noisy top-k votes of sensitive class s.

    sigma_q is the noise multiplier (noise std / L2 sensitivity). `ledger` is charged once with
    Mechanism("semantic_query", "gaussian", sigma_q) before the release. sigma_q = 0 is refused unless
    `allow_zero_noise=True` (tests only): then nothing is charged and the exact histogram is returned,
    which is NOT private. The noise comes from `noise` (stream "semantic_query/noise", drawn once).

    Example:
        noisy = dp_semantic_distribution(model, sensitive, k=5, sigma_q=484.0, noise=NoiseSource.fresh(),
                                         ledger=Ledger("run/ledger.json", delta=1e-5))
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if not (isinstance(sigma_q, (int, float)) and math.isfinite(sigma_q) and sigma_q >= 0):
        raise ValueError(f"sigma_q must be a finite number >= 0, got {sigma_q!r}")
    noiseless = sigma_q == 0
    if noiseless and not allow_zero_noise:
        raise ValueError("sigma_q = 0 releases the exact histogram (not private); pass allow_zero_noise=True in tests")
    if not noiseless and ledger is None:
        raise ValueError("a ledger is required: the semantic query spends privacy")
    if not noiseless and ledger.has(MECHANISM_NAME):
        raise UserError(f"{ledger.path}: a mechanism named {MECHANISM_NAME!r} is already in the ledger "
                        "(one semantic query per release; use a new output directory)")
    if len(sensitive) == 0:
        raise UserError(f"sensitive data {sensitive.source!r} has no images")
    num_rows = len(sensitive.classes) if labelled else 1
    if num_rows < 1:
        raise UserError(f"sensitive data {sensitive.source!r} has no classes; use unlabelled mode")

    topk = predict_topk(classifier, sensitive, k=k, batch_size=batch_size, progress=progress)  # (N, k)
    rows = sensitive.y if labelled else np.zeros(len(sensitive), dtype=np.int64)  # (N,)
    histogram = vote_histogram(topk, rows, num_rows=num_rows, num_public=classifier.net.num_classes)
    if noiseless:
        return histogram

    ledger.charge(Mechanism(MECHANISM_NAME, "gaussian", noise_multiplier=float(sigma_q), sample_rate=1.0, steps=1))
    return add_query_noise(histogram, k=k, sigma_q=sigma_q, noise=noise)


def vote_histogram(topk: np.ndarray, rows: np.ndarray, *, num_rows: int, num_public: int) -> np.ndarray:
    """EXACT votes (S, P) float64 of top-k public ids (N, k) in rows (N,). Not private: add_query_noise next."""
    cells = (rows[:, None] * num_public + topk).ravel()  # (N * k,) flat indices into (S, P)
    return np.bincount(cells, minlength=num_rows * num_public).reshape(num_rows, num_public).astype(np.float64)


def add_query_noise(histogram: np.ndarray, *, k: int, sigma_q: float, noise: NoiseSource) -> np.ndarray:
    """histogram + N(0, (sigma_q * sqrt(k))^2) on every cell, from `noise`'s stream "semantic_query/noise".

    Charge the ledger BEFORE calling this (dp_semantic_distribution does); a NoiseSource draws a stream once.
    """
    std = float(sigma_q) * math.sqrt(k)
    cell_noise = noise.gaussian(histogram.shape, std=std, stream=f"{MECHANISM_NAME}/noise", counter=0,
                                dtype=torch.float64)  # (S, P)
    return histogram + cell_noise.numpy()
