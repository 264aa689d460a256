"""The shared benchmark tarballs read as documented (skipped when ../shared/data is absent).

Uses the normal disk cache ($PRIVIMAGE_CACHE or ~/.cache/privimage), so only the first run decodes.
"""

from pathlib import Path

import numpy as np
import pytest

from privimage.data import load_images

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def shared(name: str) -> Path:
    path = SHARED / name
    if not path.is_file():
        pytest.skip(f"{path} not present")
    return path


@pytest.mark.slow
def test_cifar10_tarball():
    path = shared("cifar10-jpg.tar.xz")
    train = load_images(path, split="train", progress=False)
    test = load_images(path, split="test", progress=False)
    assert train.x.shape == (50000, 32, 32, 3) and test.x.shape == (10000, 32, 32, 3)
    assert train.classes == test.classes and len(train.classes) == 10 and "airplane" in train.classes
    assert train.counts().tolist() == [5000] * 10 and test.counts().tolist() == [1000] * 10
    assert train.x.std() > 30  # real photographs, not blank decodes


@pytest.mark.slow
def test_tinyimagenet_tarball():
    path = shared("tinyimagenet32-jpg.tar.xz")
    train = load_images(path, split="train", progress=False)
    val = load_images(path, split="val", progress=False)
    assert train.x.shape == (100000, 32, 32, 3) and val.x.shape == (10000, 32, 32, 3)
    assert train.classes == val.classes and len(train.classes) == 200
    assert train.counts().tolist() == [500] * 200
    assert np.bincount(val.y, minlength=200).min() > 0  # val labelled by val_annotations.txt
    assert len(set(train.classes)) == 200 and not any(c.startswith("n0") for c in train.classes)
