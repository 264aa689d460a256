"""The embedded demo data: fixed digit split, deterministic cached glyphs that look like the digits."""

from pathlib import Path

import numpy as np
import pytest

from privimage.data import demo
from privimage.data.demo import (DEFAULT_CHARS, DIGIT_CLASSES, digit_mask, load_digits_split,
                                 matching_public_classes, render_glyphs)
from privimage.errors import UserError


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Every test renders into its own cache, never the user's ~/.cache."""
    monkeypatch.setenv("PRIVIMAGE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def border_mean(x: np.ndarray) -> float:
    """Mean of the outermost pixel ring, (N, H, W, 1) uint8 -> float."""
    ring = np.concatenate([x[:, 0], x[:, -1], x[:, :, 0], x[:, :, -1]], axis=1)
    return float(ring.mean())


@pytest.mark.parametrize("resolution", [16, 32])
def test_digits_shapes_classes_and_bright_ink(resolution):
    train, test = load_digits_split(resolution=resolution)
    assert len(train) + len(test) == 1797
    for part in (train, test):
        assert part.x.shape[1:] == (resolution, resolution, 1) and part.x.dtype == np.uint8
        assert part.y.dtype == np.int64
        assert part.classes == list("0123456789")
        assert part.x.max() == 255
        # Ink bright, background dark: the border is much darker than the whole image.
        assert border_mean(part.x) < 0.5 * part.x.mean()
    assert train.meta["split"] == "train" and test.meta["split"] == "test"


def test_digit_split_is_fixed_disjoint_and_stratified():
    train, test = load_digits_split(test_fraction=0.25, seed=0)
    train2, test2 = load_digits_split(test_fraction=0.25, seed=0)
    np.testing.assert_array_equal(test.meta["index"], test2.meta["index"])
    np.testing.assert_array_equal(train.x, train2.x)
    assert not set(train.meta["index"]) & set(test.meta["index"])
    assert len(set(train.meta["index"]) | set(test.meta["index"])) == 1797
    fraction = test.counts() / (train.counts() + test.counts())
    assert np.all(np.abs(fraction - 0.25) < 0.01), fraction
    _, other = load_digits_split(seed=1)
    assert set(other.meta["index"]) != set(test.meta["index"])


@pytest.mark.parametrize("bad", [{"test_fraction": 0.0}, {"test_fraction": 1.0}, {"resolution": 4}])
def test_digits_reject_bad_options(bad):
    with pytest.raises(UserError):
        load_digits_split(**bad)


def test_glyphs_have_all_classes_with_requested_count():
    glyphs = render_glyphs(per_class=3, progress=False)
    assert glyphs.classes == list(DEFAULT_CHARS) and len(glyphs.classes) == 62
    assert glyphs.x.shape == (62 * 3, 16, 16, 1) and glyphs.x.dtype == np.uint8
    np.testing.assert_array_equal(glyphs.counts(), np.full(62, 3))
    # Not blank: every image has bright ink covering a real part of it, on a dark border.
    flat = glyphs.x.reshape(len(glyphs), -1)
    assert np.all(flat.max(axis=1) > 100)
    assert np.all((flat > 64).mean(axis=1) > 0.05)
    assert border_mean(glyphs.x) < 0.5 * glyphs.x.mean()


def test_glyphs_are_deterministic_per_seed_and_character():
    first = render_glyphs(per_class=4, classes="0123456789", seed=7, cache=False, progress=False)
    again = render_glyphs(per_class=4, classes="0123456789", seed=7, cache=False, progress=False)
    np.testing.assert_array_equal(first.x, again.x)
    other = render_glyphs(per_class=4, classes="0123456789", seed=8, cache=False, progress=False)
    assert not np.array_equal(first.x, other.x)
    # A class's images depend only on (seed, character), not on the other classes or the count.
    alone = render_glyphs(per_class=2, classes="3", seed=7, cache=False, progress=False)
    np.testing.assert_array_equal(alone.x, first.x[first.y == 3][:2])


def test_glyphs_are_cached_and_the_second_call_reads_the_cache(private_cache, monkeypatch):
    first = render_glyphs(per_class=2, classes="abc", resolution=32, progress=False)
    assert first.meta["from_cache"] is False
    files = list((private_cache / "demo").iterdir())
    assert [f.suffix for f in files] == [".npz"]  # no temporary file left behind

    def must_not_render(*args, **kwargs):
        raise AssertionError("rendered again instead of reading the cache")

    monkeypatch.setattr(demo, "_render_class", must_not_render)
    second = render_glyphs(per_class=2, classes="abc", resolution=32, progress=False)
    assert second.meta["from_cache"] is True
    np.testing.assert_array_equal(first.x, second.x)
    np.testing.assert_array_equal(first.y, second.y)
    assert second.classes == ["a", "b", "c"]
    with pytest.raises(AssertionError):  # other options are a different cache entry
        render_glyphs(per_class=3, classes="abc", resolution=32, progress=False)


def test_digit_glyphs_fill_the_image_like_the_digits():
    train, _ = load_digits_split()
    glyphs = render_glyphs(per_class=30, classes=DIGIT_CLASSES, cache=False, progress=False)
    # Same ink coverage (within 0.05 of the pixel range) and same mean image layout.
    assert abs(glyphs.x.mean() - train.x.mean()) / 255 < 0.05
    layout = np.corrcoef(glyphs.x.mean(axis=0).ravel(), train.x.mean(axis=0).ravel())[0, 1]
    assert layout > 0.8, layout


@pytest.mark.parametrize("bad", [{"per_class": 0}, {"classes": ""}, {"classes": "aa"}, {"resolution": 7}])
def test_glyphs_reject_bad_options(bad):
    with pytest.raises(UserError):
        render_glyphs(progress=False, cache=False, **bad)


def test_matching_public_classes_and_digit_mask():
    public = list(DEFAULT_CHARS)
    match = matching_public_classes(list(DIGIT_CLASSES), public)
    np.testing.assert_array_equal(match, np.arange(10))
    assert matching_public_classes(["x", "?"], public).tolist() == [public.index("x"), -1]
    mask = digit_mask(public)
    assert mask.sum() == 10 and mask[:10].all()


def test_a_corrupt_cache_file_is_rebuilt(private_cache):
    first = render_glyphs(per_class=2, classes="xy", progress=False)
    Path(first.meta["cache_path"]).write_bytes(b"not an npz")
    again = render_glyphs(per_class=2, classes="xy", progress=False)
    assert again.meta["from_cache"] is False
    np.testing.assert_array_equal(first.x, again.x)
    assert render_glyphs(per_class=2, classes="xy", progress=False).meta["from_cache"] is True
