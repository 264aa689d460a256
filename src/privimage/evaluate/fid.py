"""Frechet Inception Distance (Heusel et al. 2017) with the standard TF Inception-v3 features.

FID = |mu_1 - mu_2|^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2)) between Gaussians fitted to the pool3
features of two image sets. Statistics are stored in the pytorch-fid .npz format (mu, sigma); the real
set's statistics are cached per dataset, split and weights file under $PRIVIMAGE_CACHE/fid (default
~/.cache/privimage/fid), since the real set is the same for every evaluation. Without the weights, FID
is unavailable: we raise UserError, never report another number under the name FID.

Example:
    >>> score = fid_of_sets(synthetic, real_train, weights=None, num_samples=50_000)
"""

import hashlib
import logging
import zipfile
from pathlib import Path

import numpy as np
import scipy.linalg
import torch

from privimage.data.cache import cache_dir as data_cache_dir
from privimage.data.imageset import ImageSet
from privimage.errors import UserError
from privimage.files import atomic_path
from privimage.device import resolve_device
from privimage.evaluate.inception import default_weights_path, inception_features, load_inception

log = logging.getLogger(__name__)


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) features -> mean (D,) and covariance (D, D), as pytorch-fid (unbiased, N - 1)."""
    if len(features) < 2:
        raise UserError(f"FID needs at least 2 images, got {len(features)}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, *, eps: float = 1e-6) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), with pytorch-fid's numerical guards.

    When the product is near-singular, sqrtm is not finite; then eps*I is added to both covariances.
    A large imaginary part in the root means the covariances are broken, so we raise instead of
    discarding it.
    """
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    assert mu1.shape == mu2.shape and sigma1.shape == sigma2.shape == mu1.shape * 2, (mu1.shape, sigma1.shape)
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)  # no `disp`: removed in scipy 1.18
    if not np.isfinite(covmean).all():
        offset = np.eye(len(sigma1)) * eps
        log.warning("FID: singular product; adding %g to the covariance diagonals", eps)
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"FID: imaginary component {np.max(np.abs(covmean.imag)):.3g} in sqrtm is too large")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def save_stats(path: str | Path, mu: np.ndarray, sigma: np.ndarray, *, nonprivate: bool = False) -> None:
    """Write mu, sigma as a pytorch-fid compatible .npz (atomically: temp file, then rename).

    `nonprivate` marks statistics of training images (an un-noised statistic of possibly sensitive data) in an
    extra array that pytorch-fid ignores; `privimage evaluate` and `privimage run` refuse such a file unless
    the non-private FID is allowed, and label the FID non-private.
    """
    marker = {"nonprivate": np.bool_(True)} if nonprivate else {}  # held-out statistics: exactly pytorch-fid's keys
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, mu=mu, sigma=sigma, **marker)


def load_stats(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read (mu, sigma) from a pytorch-fid .npz file."""
    try:
        with np.load(path) as f:
            return f["mu"], f["sigma"]
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise UserError(f"{path} is not a FID statistics file with 'mu' and 'sigma' ({err})") from err


def stats_nonprivate(path: str | Path) -> bool:
    """Whether `privimage fid-stats` wrote this file from a training split (False for other pytorch-fid files)."""
    try:
        with np.load(path) as f:
            return bool(f["nonprivate"]) if "nonprivate" in f.files else False
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise UserError(f"{path} is not a FID statistics file with 'mu' and 'sigma' ({err})") from err


def cache_dir() -> Path:
    """$PRIVIMAGE_CACHE/fid, default ~/.cache/privimage/fid."""
    return data_cache_dir() / "fid"


def weights_id(weights: str | Path | None) -> str:
    """Identity of the weights file for the cache key: resolved path, size and mtime."""
    path = Path(weights) if weights is not None else default_weights_path()
    if path is None or not path.is_file():
        return "none"
    st = path.stat()
    return f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"


def real_stats(
    real: ImageSet, *, weights: str | Path | None = None, net: torch.nn.Module | None = None,
    device: str | torch.device = "cpu", cache: bool = True, progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Inception statistics of a real set, cached by its source (path, split, options), size and weights.

    `net` is the already loaded network of `weights` (loaded here on a cache miss when None).
    """
    key = hashlib.sha256(f"{real.source}|{real.x.shape}|{weights_id(weights)}".encode()).hexdigest()[:20]
    path = cache_dir() / f"{key}.npz"
    if cache and path.is_file():
        try:
            return load_stats(path)
        except UserError:  # a damaged cache entry is a miss, recomputed below
            pass
    net = net if net is not None else load_inception(weights, device=device)
    mu, sigma = feature_stats(inception_features(real.x, net=net, device=device, progress=progress))
    if cache:
        save_stats(path, mu, sigma)
    return mu, sigma


def fid_of_sets(
    synthetic: ImageSet,
    real: ImageSet | None,
    *,
    reference: tuple[np.ndarray, np.ndarray] | None = None,
    weights: str | Path | None = None,
    num_samples: int = 50_000,
    device: str | torch.device | None = None,
    cache: bool = True,
    progress: bool = True,
) -> float:
    """FID between `num_samples` synthetic images (class-balanced) and the real set (e.g. its train split).

    `reference` = (mu, sigma) of the real set computed elsewhere (pytorch-fid .npz, `load_stats`) instead
    of `real`; they must come from the same Inception weights and preprocessing.

    The usual protocol is 50k synthetic images against the real training split; with fewer synthetic
    images FID is biased upwards, so we say so on stderr.
    """
    if num_samples < 2:
        raise UserError(f"FID num_samples must be >= 2, got {num_samples}")
    dev = resolve_device(device)
    net = load_inception(weights, device=dev)  # fails before any work when the weights are missing
    if len(synthetic) < num_samples:
        log.warning("FID: only %d synthetic images (asked for %d); FID is biased up", len(synthetic), num_samples)
    feats = inception_features(synthetic.balanced_head(num_samples).x, net=net, device=dev, progress=progress)  # (N, 2048)
    mu_s, sigma_s = feature_stats(feats)
    if reference is not None:
        mu_r, sigma_r = reference
        if np.shape(mu_r) != (mu_s.shape[0],) or np.shape(sigma_r) != sigma_s.shape:
            raise UserError(f"FID reference statistics have shapes {np.shape(mu_r)}, {np.shape(sigma_r)}; "
                            f"expected ({mu_s.shape[0]},) and {sigma_s.shape} (pool3 features)")
    elif real is None:
        raise UserError("FID needs the real images or their statistics (reference=(mu, sigma))")
    else:
        mu_r, sigma_r = real_stats(real, weights=weights, net=net, device=dev, cache=cache, progress=progress)
    return frechet_distance(mu_s, sigma_s, mu_r, sigma_r)
