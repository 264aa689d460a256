"""k-NN precision/recall (Kynkaanniemi et al. 2019) on feature clouds whose answer is known."""

import numpy as np
import pytest

from privimage.errors import UserError
from privimage.evaluate.prd import knn_radii, precision_recall


def clusters(centers: list[float], n: int, seed: int) -> np.ndarray:
    """n points around each 8-d center (c, c, ..., c), std 0.1: well-separated modes."""
    rng = np.random.default_rng(seed)
    return np.concatenate([c + 0.1 * rng.normal(size=(n, 8)) for c in centers])


def test_identical_sets_have_full_precision_and_recall():
    real = clusters([0.0, 5.0], 100, seed=0)
    assert precision_recall(real, real.copy(), k=3) == {"precision": 1.0, "recall": 1.0}


def test_mode_dropping_halves_recall_not_precision():
    # A fresh sample of the real distribution (8-d, k=3) scores about 0.87 on both; one that drops one of
    # the two modes (same number of points) keeps that precision but covers only half the real points.
    real = clusters([0.0, 5.0], 200, seed=0)
    fair = precision_recall(real, clusters([0.0, 5.0], 200, seed=1), k=3)
    dropped = precision_recall(real, clusters([0.0], 400, seed=1), k=3)
    assert min(fair.values()) > 0.8
    assert abs(dropped["precision"] - fair["precision"]) < 0.05
    assert 0.4 * fair["recall"] < dropped["recall"] < 0.6 * fair["recall"]


def test_far_away_samples_have_zero_precision_and_recall():
    pr = precision_recall(clusters([0.0], 100, seed=0), clusters([50.0], 100, seed=1), k=3)
    assert pr == {"precision": 0.0, "recall": 0.0}


def test_knn_radius_excludes_the_point_itself():
    import torch

    pts = torch.tensor([[0.0], [1.0], [3.0], [6.0]])
    # 1st neighbours: 0->1 (1), 1->0 (1), 3->1 (2), 6->3 (3); batched rows must give the same.
    assert knn_radii(pts, 1, batch_size=3).tolist() == [1.0, 1.0, 2.0, 3.0]


def test_too_few_points_or_bad_k():
    with pytest.raises(UserError, match="needs more than 3"):
        precision_recall(np.zeros((3, 2)), np.zeros((10, 2)), k=3)
    with pytest.raises(UserError, match="k must be >= 1"):
        precision_recall(np.zeros((10, 2)), np.zeros((10, 2)), k=0)
