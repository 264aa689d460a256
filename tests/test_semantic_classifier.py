"""Semantic query function: it learns an easy public set, round-trips through its checkpoint format,
and resizes / converts inputs it was not trained at."""

import json

import numpy as np
import pytest
import torch

from privimage.data.imageset import ImageSet
from privimage.errors import UserError
from privimage.semantic.classifier import (
    ClassifierConfig,
    augment,
    load_classifier,
    predict_logits,
    predict_topk,
    save_classifier,
    train_classifier,
)
from privimage.semantic.network import ResNetConfig

COLOURS = np.array([[230, 40, 40], [40, 200, 40], [40, 40, 230]])
SHAPES = ["square", "disc"]
SHAPE_CLASSES = [f"{c}-{s}" for s in SHAPES for c in ("red", "green", "blue")]  # class = shape * 3 + colour
TINY = ClassifierConfig(arch=ResNetConfig(width=8, stages=2, blocks=1), epochs=5, batch_size=32, lr=0.1)


def shapes(n: int, *, seed: int, resolution: int = 16, classes: list[int] | None = None) -> ImageSet:
    """Coloured squares / discs at random positions on dark noise; class = (shape, colour), 6 classes."""
    rng = np.random.default_rng(seed)
    y = rng.choice(classes if classes is not None else range(6), size=n)
    x = rng.integers(0, 50, (n, resolution, resolution, 3))
    yy, xx = np.mgrid[:resolution, :resolution]
    r = resolution // 5
    for i in range(n):
        cy, cx = rng.integers(r + 1, resolution - r - 1, size=2)
        inside = (abs(yy - cy) <= r) & (abs(xx - cx) <= r) if y[i] // 3 == 0 else (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        x[i][inside] = COLOURS[y[i] % 3]
    return ImageSet(x.astype(np.uint8), y.astype(np.int64), list(SHAPE_CLASSES), source=f"shapes(seed={seed})")


@pytest.fixture(scope="module")
def trained():
    public = shapes(420, seed=0)
    model, meta = train_classifier(public, config=TINY, val_fraction=0.15, seed=0, device="cpu", progress=False)
    return model, meta


def test_classifier_learns_easy_public_set(trained):
    model, meta = trained
    assert meta.val_accuracy is not None and meta.val_accuracy >= 0.9
    fresh = shapes(120, seed=1)
    top1 = predict_topk(model, fresh, k=1)[:, 0]
    assert (top1 == fresh.y).mean() >= 0.9


def test_checkpoint_round_trip_gives_identical_predictions(trained, tmp_path):
    model, meta = trained
    save_classifier(tmp_path / "ckpt", model, meta)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["meta.json", "weights.safetensors"]
    loaded, loaded_meta = load_classifier(tmp_path / "ckpt", device="cpu")
    assert loaded_meta == meta
    images = shapes(64, seed=2)
    assert torch.equal(predict_logits(model, images), predict_logits(loaded, images))
    assert np.array_equal(predict_topk(model, images, k=3), predict_topk(loaded, images, k=3))
    on_disk = json.loads((tmp_path / "ckpt" / "meta.json").read_text())
    assert on_disk["classes"] == SHAPE_CLASSES and on_disk["resolution"] == 16 and on_disk["channels"] == 3
    assert on_disk["normalisation"] == {"mean": [0.5] * 3, "std": [0.5] * 3}


def test_checkpoint_with_wrong_architecture_is_a_user_error(trained, tmp_path):
    model, meta = trained
    save_classifier(tmp_path / "ckpt", model, meta)
    meta_path = tmp_path / "ckpt" / "meta.json"
    obj = json.loads(meta_path.read_text())
    obj["architecture"]["width"] = 16
    meta_path.write_text(json.dumps(obj))
    with pytest.raises(UserError, match="does not match"):
        load_classifier(tmp_path / "ckpt")
    with pytest.raises(UserError, match="weights.safetensors missing"):
        load_classifier(tmp_path / "nowhere")


def test_predict_topk_resizes_and_converts_channels(trained):
    model, _ = trained
    images = shapes(100, seed=3)
    base = predict_topk(model, images, k=2)
    assert base.shape == (100, 2) and base.dtype == np.int64
    assert (base[:, 0] != base[:, 1]).all()
    upscaled = images.x.repeat(2, axis=1).repeat(2, axis=2)  # (N, 32, 32, 3): resized back to 16 inside
    assert (predict_topk(model, upscaled, k=1)[:, 0] == base[:, 0]).mean() >= 0.9
    grey = images.x.mean(axis=3, keepdims=True).astype(np.uint8)  # (N, 16, 16, 1) -> repeated to RGB
    grey_top = predict_topk(model, grey, k=2)
    assert grey_top.shape == (100, 2) and ((0 <= grey_top) & (grey_top < 6)).all()
    with pytest.raises(UserError, match="k=7"):
        predict_topk(model, images, k=7)


def test_single_channel_public_data_trains():
    rgb = shapes(60, seed=4)
    grey = ImageSet(rgb.x.mean(axis=3, keepdims=True).astype(np.uint8), rgb.y, rgb.classes, "grey")
    # width >= 8: a width-4 net on 1-channel input aborts inside oneDNN (torch 2.13 CPU, one thread).
    config = ClassifierConfig(arch=ResNetConfig(width=8, stages=2), epochs=1, batch_size=16, flip=False)
    model, meta = train_classifier(grey, config=config, val_fraction=0.0, device="cpu", progress=False)
    assert meta.channels == 1 and meta.val_accuracy is None and model.channels == 1
    assert predict_topk(model, rgb, k=1).shape == (60, 1)  # RGB input converted to luma


def test_augment_crops_windows_and_flips_only_when_asked():
    gen = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6).repeat(32, 1, 1, 1)  # (64, 1, 6, 6)
    assert torch.equal(augment(x, padding=0, flip=False, generator=gen), x)
    flipped = augment(x, padding=0, flip=True, generator=gen)
    mirrored = (flipped == x.flip(3)).flatten(1).all(1)
    assert 10 < mirrored.sum() < 54 and ((flipped == x).flatten(1).all(1) | mirrored).all()
    cropped = augment(x, padding=2, flip=False, generator=gen)
    assert cropped.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), mode="reflect")
    for i in range(len(x)):  # every output is some 6x6 window of the padded input
        windows = padded[i, 0].unfold(0, 6, 1).unfold(1, 6, 1)  # (5, 5, 6, 6)
        assert (windows == cropped[i, 0]).flatten(2).all(2).any()


def test_bad_training_input_is_a_user_error():
    with pytest.raises(UserError, match="optimizer"):
        train_classifier(shapes(20, seed=5), config=ClassifierConfig(optimizer="lbfgs"), progress=False)
    one_class = shapes(20, seed=5, classes=[0])
    one_class = ImageSet(one_class.x, np.zeros(20, dtype=np.int64), ["red-square"], "one class")
    with pytest.raises(UserError, match="needs >= 2"):
        train_classifier(one_class, config=TINY, progress=False)
