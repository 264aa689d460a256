"""The baselines as their papers define them: public pre-training without invented sensitive labels, and a
random subset whose size comes from the config and public metadata, never from PrivImage's noisy selection."""

from pathlib import Path

import numpy as np
import pytest
import torch

from privimage import generators, pipeline
from privimage.baselines import baseline_public_data, expected_fraction, random_size
from privimage.data import ImageSet
from sklearn.datasets import load_digits
from privimage.errors import UserError
from privimage.models.edm import EDMPrecond
from privimage.models.unet import CONFIGS, UNet
from privimage.run_config import load_run_config
from privimage.train.pretrain import PretrainConfig, pretrain

TINY_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PRIVIMAGE_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def glyphs() -> ImageSet:
    """A 'public' set of 20 classes (sklearn's digits 16x16, split in two by position): labels up to 19,
    beyond the model's 10 sensitive classes."""
    d = load_digits()
    x = np.kron(d.images / 16 * 255, np.ones((2, 2))).round().astype(np.uint8)[..., None]  # (N, 16, 16, 1)
    y = d.target + 10 * (np.arange(len(x)) % 2)
    return ImageSet(x, y, [f"p{i}" for i in range(20)], source="digits as 20 public classes")


def test_expected_fraction_from_public_metadata():
    counts = np.array([500] * 200)  # Tiny-ImageNet: 200 classes of 500
    assert expected_fraction(k=5, fraction=None, num_sensitive=10, public_counts=counts) == pytest.approx(0.25)
    assert expected_fraction(k=5, fraction=0.1, num_sensitive=10, public_counts=counts) == pytest.approx(0.1)
    counts = np.array([10, 30, 0, 20])  # empty classes are never selected: mean of the non-empty ones
    assert expected_fraction(k=1, fraction=None, num_sensitive=2, public_counts=counts) == pytest.approx(2 / 3)


def test_random_size_comes_from_the_config(glyphs):
    config = load_run_config(TINY_CONFIG, ["semantic.k=1"])  # 1 of 20 public classes per digit: 10 / 20
    expected = round(10 * glyphs.counts().mean())
    assert random_size(config, glyphs, num_sensitive=10) == expected and abs(expected - len(glyphs) / 2) < 1
    config = load_run_config(TINY_CONFIG, ["baselines.random_fraction=0.5"])
    subset = baseline_public_data("random", config, glyphs, num_sensitive=10)
    assert len(subset) == len(glyphs) // 2 and subset.classes == glyphs.classes  # public labels, not invented
    assert baseline_public_data("all", config, glyphs, num_sensitive=10) is glyphs
    assert baseline_public_data("none", config, glyphs, num_sensitive=10) is None
    with pytest.raises(UserError, match=r"baselines.random_fraction must be a fraction in \(0, 1\], got 0"):
        load_run_config(TINY_CONFIG, ["baselines.random_fraction=0"])


def labels_seen(net: EDMPrecond) -> list[torch.Tensor]:
    """Every class-label batch the U-Net is called with."""
    seen = []
    net.unet.register_forward_pre_hook(lambda module, args: seen.append(args[2].clone()))
    return seen


def test_unconditional_pretraining_uses_only_the_null_class(tmp_path, glyphs):
    config = PretrainConfig(steps=3, batch_size=8, label_dropout=0.0, checkpoint_every=3)
    net = EDMPrecond(UNet(CONFIGS["tiny"]))
    with pytest.raises(UserError, match="labels outside 0..9"):  # the 20 public labels are no sensitive labels
        pretrain(net, glyphs, config=config, out_dir=tmp_path / "c", seed=0, device="cpu", progress=False)
    seen = labels_seen(net)
    pretrain(net, glyphs, config=config, out_dir=tmp_path / "u", seed=0, device="cpu", progress=False,
             unconditional=True)
    assert len(seen) == 3 and all(bool((y == net.null_class).all()) for y in seen)

    digits = ImageSet(glyphs.x[glyphs.y < 10], glyphs.y[glyphs.y < 10], glyphs.classes[:10], source="digit glyphs")
    net = EDMPrecond(UNet(CONFIGS["tiny"]))
    seen = labels_seen(net)  # the conditional mode (PrivImage's selection) does pass the labels
    pretrain(net, digits, config=config, out_dir=tmp_path / "d", seed=0, device="cpu", progress=False)
    assert all(bool((y < net.null_class).all()) for y in seen)


class Stop(Exception):
    """Ends a run once the pre-training data of interest was recorded."""


def record_pretraining(monkeypatch, last: str) -> dict:
    """Replace the pipeline's pre-training by a recorder of (images, unconditional) per method; the later
    stages (calibration, DP fine-tuning, sampling, CA) are not under test here and are skipped."""
    calls = {}

    def fake_pretrain(net, images, *, out_dir, unconditional=False, **kwargs):
        method = Path(out_dir).parent.name
        calls[method] = (images.x.copy(), unconditional, len(images))
        if method == last:
            raise Stop
        return net

    monkeypatch.setattr(generators, "pretrain", fake_pretrain)  # the diffusion family's steps 4 and 5
    monkeypatch.setattr(generators, "finetune", lambda net, *args, **kwargs: net)
    monkeypatch.setattr(pipeline, "calibrate_for_ledger", lambda *args, **kwargs: (1.0, None))
    monkeypatch.setattr(pipeline, "sample_and_evaluate", lambda *args, **kwargs: {})
    return calls


def test_random_baseline_does_not_depend_on_the_selection(tmp_path, monkeypatch):
    """The random subset is the same with or without PrivImage's noisy selection in the run directory."""
    full = load_run_config(TINY_CONFIG, ["privacy.seed=0", "methods=[privimage, random]"])
    calls = record_pretraining(monkeypatch, last="random")
    with pytest.raises(Stop):
        pipeline.run(full, tmp_path / "with", device="cpu", progress=False)
    assert (tmp_path / "with" / "selection.json").is_file()
    with_selection = calls["random"]
    assert calls["privimage"][1] is False  # PrivImage pre-trains conditionally on its relabelled selection

    alone = load_run_config(TINY_CONFIG, ["privacy.seed=0", "methods=[all, random]"])
    calls = record_pretraining(monkeypatch, last="random")
    with pytest.raises(Stop):
        pipeline.run(alone, tmp_path / "alone", device="cpu", progress=False)
    assert not (tmp_path / "alone" / "selection.json").exists()
    assert np.array_equal(calls["random"][0], with_selection[0]) and calls["random"][1] is True
    public_size = calls["all"][2]  # `all` pre-trains on every public image, unconditionally
    assert calls["all"][1] is True and calls["random"][2] == round(public_size * 10 / 62)  # k=1: 10 of 62 classes
