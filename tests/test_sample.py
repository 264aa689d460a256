"""EDM samplers: shapes, dtype, ranges, per-image reproducibility across batch sizes, files."""

import numpy as np
import pytest
import torch
from PIL import Image

from privimage.models.edm import EDMPrecond
from privimage.models.unet import CONFIGS, UNet
from privimage.sample import balanced_labels, generate, save_samples, sigma_steps


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    net = EDMPrecond(UNet(CONFIGS["tiny"]))
    with torch.no_grad():
        for p in net.parameters():  # a non-trivial (random) denoiser
            p.add_(0.05 * torch.randn_like(p))
    return net


def test_sigma_steps_follow_edm_schedule():
    t = sigma_steps(50)
    assert t.shape == (51,) and t[0] == pytest.approx(80) and t[-2] == pytest.approx(0.002) and t[-1] == 0
    assert torch.all(t[1:] < t[:-1])


@pytest.mark.parametrize("sampler", ["heun", "euler"])
def test_shapes_dtype_labels(net, sampler):
    x, y = generate(net, 13, num_classes=10, steps=3, seed=5, batch_size=4, sampler=sampler, progress=False)
    assert x.shape == (13, 16, 16, 1) and x.dtype == np.uint8
    assert y.dtype == np.int64 and np.array_equal(y, balanced_labels(13, 10))
    assert x.std() > 0


def test_image_reproducible_whatever_the_batch_size(net):
    a, _ = generate(net, 11, num_classes=10, steps=2, seed=7, batch_size=11, progress=False)
    b, _ = generate(net, 11, num_classes=10, steps=2, seed=7, batch_size=4, progress=False)
    assert np.array_equal(a, b)
    # image i uses seed + i: image 10 (label 0) of seed 7 is image 0 (label 0) of seed 17
    c, _ = generate(net, 1, num_classes=10, steps=2, seed=17, progress=False)
    assert np.array_equal(a[10], c[0])
    assert not np.array_equal(a[0], c[0])  # same label, other seed


def test_guidance_changes_images(net):
    a, _ = generate(net, 4, num_classes=10, steps=3, seed=1, progress=False)
    b, _ = generate(net, 4, num_classes=10, steps=3, seed=1, guidance=2.0, progress=False)
    assert not np.array_equal(a, b)


def test_balanced_labels_counts():
    counts = np.bincount(balanced_labels(2003, 10))
    assert counts.max() - counts.min() <= 1 and counts.sum() == 2003


def test_invalid_arguments(net):
    with pytest.raises(ValueError):
        generate(net, 2, num_classes=10, sampler="ddpm", progress=False)
    with pytest.raises(ValueError):
        generate(net, 2, num_classes=5, progress=False)


def test_save_npz_and_grid(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (20, 16, 16, 1), dtype=np.uint8)
    y = balanced_labels(20, 10)
    save_samples(tmp_path / "s.npz", x, y, grid=tmp_path / "g.png", per_class=2)
    with np.load(tmp_path / "s.npz") as f:
        assert np.array_equal(f["x"], x) and np.array_equal(f["y"], y)
    grid = np.asarray(Image.open(tmp_path / "g.png"))
    assert grid.shape == (10 * 16, 2 * 16)
    assert np.array_equal(grid[16:32, 16:32], x[11, :, :, 0])  # class 1, second image
