"""Improved precision and recall (Kynkaanniemi et al. 2019) in the Inception feature space.

Each set's manifold is the union of balls around its points, with radius the distance to the k-th
nearest neighbour in the same set. Precision: the fraction of synthetic points inside the real
manifold (are the samples realistic?); recall: the fraction of real points inside the synthetic
manifold (is the real variety covered?).

Example:
    >>> precision_recall(real_features, synthetic_features, k=3)
    {'precision': 0.71, 'recall': 0.55}
"""

import numpy as np
import torch

from privimage.errors import UserError


def pairwise_distances(a: torch.Tensor, b: torch.Tensor, batch_size: int) -> torch.Tensor:
    """(N, D), (M, D) -> (N, M) Euclidean distances, computed in row blocks to bound memory."""
    return torch.cat([torch.cdist(a[i : i + batch_size], b) for i in range(0, len(a), batch_size)])


def knn_radii(features: torch.Tensor, k: int, batch_size: int) -> torch.Tensor:
    """(N, D) -> (N,) distance of each point to its k-th nearest neighbour in the set (itself excluded)."""
    d = pairwise_distances(features, features, batch_size)  # (N, N), zero diagonal
    return d.kthvalue(k + 1, dim=1).values  # k + 1: the point itself is its own nearest neighbour


def coverage(points: torch.Tensor, centers: torch.Tensor, radii: torch.Tensor, batch_size: int) -> float:
    """Fraction of `points` inside at least one ball (centers, radii)."""
    inside = 0
    for i in range(0, len(points), batch_size):
        d = torch.cdist(points[i : i + batch_size], centers)  # (B, M)
        inside += (d <= radii[None, :]).any(dim=1).sum().item()
    return inside / len(points)


def precision_recall(
    real_features: np.ndarray, synthetic_features: np.ndarray, *, k: int = 3, batch_size: int = 1000
) -> dict[str, float]:
    """{"precision", "recall"} of synthetic vs real (N, D) features, k-NN manifolds (paper default k=3)."""
    if k < 1:
        raise UserError(f"precision/recall k must be >= 1, got {k}")
    if min(len(real_features), len(synthetic_features)) <= k:
        raise UserError(f"precision/recall with k={k} needs more than {k} images in each set")
    real = torch.from_numpy(np.asarray(real_features, dtype=np.float32))
    synth = torch.from_numpy(np.asarray(synthetic_features, dtype=np.float32))
    real_radii = knn_radii(real, k, batch_size)
    synth_radii = knn_radii(synth, k, batch_size)
    return {
        "precision": coverage(synth, real, real_radii, batch_size),
        "recall": coverage(real, synth, synth_radii, batch_size),
    }
