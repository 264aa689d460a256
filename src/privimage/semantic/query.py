"""Step 2 of PrivImage: the DP semantic distribution of the sensitive data over the public classes.

Each sensitive image votes for the k public classes the semantic query function ranks highest, in the
row of its sensitive class (one row when the data is unlabelled): a histogram H of shape (S, P). Adding
or removing one image changes k distinct cells of one row by 1, so the L2 sensitivity is sqrt(k); the
Gaussian mechanism adds N(0, (sigma_q * sqrt(k))^2) to EVERY cell (as in the paper's code). Only the
noisy histogram leaves this module; the ledger is charged before it is released.
"""

import math

import numpy as np
import torch

from privimage.data.imageset import ImageSet
from privimage.errors import UserError
from privimage.privacy.ledger import Ledger, Mechanism
from privimage.privacy.rng import NoiseSource
from privimage.semantic.classifier import Classifier, predict_topk

MECHANISM_NAME = "semantic_query"


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
    num_public = classifier.net.num_classes
    cells = (rows[:, None] * num_public + topk).ravel()  # (N * k,) flat indices into (S, P)
    histogram = np.bincount(cells, minlength=num_rows * num_public).reshape(num_rows, num_public)
    if noiseless:
        return histogram.astype(np.float64)

    ledger.charge(Mechanism(MECHANISM_NAME, "gaussian", noise_multiplier=float(sigma_q), sample_rate=1.0, steps=1))
    std = float(sigma_q) * math.sqrt(k)
    cell_noise = noise.gaussian((num_rows, num_public), std=std, stream=f"{MECHANISM_NAME}/noise", counter=0,
                                dtype=torch.float64)  # (S, P)
    return histogram + cell_noise.numpy()
