"""CA: the classifiers train on real small data and score what they should; bad inputs fail clearly."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from privimage.data.imageset import ImageSet
from privimage.errors import UserError
from privimage.evaluate.ca import classification_accuracies, classification_accuracy
from privimage.evaluate.classifiers import CLASSIFIERS


def digits_16px() -> tuple[ImageSet, ImageSet]:
    """sklearn digits (1797 8x8 images, values 0..16) as 16x16 grey uint8: 1400 train, 397 test."""
    d = load_digits()
    x = (d.images / 16 * 255).round().astype(np.uint8)  # (N, 8, 8)
    x = x.repeat(2, axis=1).repeat(2, axis=2)[..., None]  # (N, 16, 16, 1)
    data = ImageSet(x, d.target.astype(np.int64), [str(i) for i in range(10)], source="sklearn digits")
    order = np.random.default_rng(0).permutation(len(data))
    return data.subset(order[:1400]), data.subset(order[1400:])


@pytest.fixture(scope="module")
def digits():
    return digits_16px()


def test_cnn_learns_digits(digits):
    train, test = digits
    acc = classification_accuracy(train, test, classifier="cnn", seed=0, device="cpu", progress=False)
    assert acc > 0.9, acc


def test_shuffled_labels_give_chance_accuracy(digits):
    # CA measures label information: a generator whose labels are noise must score near chance (10%).
    train, test = digits
    noise = ImageSet(train.x, np.random.default_rng(1).permutation(train.y), train.classes)
    acc = classification_accuracy(noise, test, classifier="cnn", epochs=3, device="cpu", progress=False)
    assert acc < 0.3, acc


def test_same_seed_same_accuracy_and_reference(digits):
    train, test = digits
    small = train.subset(np.arange(300))
    kwargs = dict(classifiers=("cnn",), epochs=2, seed=3, device="cpu", progress=False)
    a = classification_accuracies(small, test, real_train=train.subset(np.arange(300, 600)), **kwargs)
    b = classification_accuracies(small, test, **kwargs)
    assert a["per_classifier"] == b["per_classifier"]
    assert a["mean"] == a["per_classifier"]["cnn"]
    assert set(a["real_per_classifier"]) == {"cnn"} and a["real_mean"] == a["real_per_classifier"]["cnn"]
    assert b["real_per_classifier"] == {} and b["real_mean"] is None


@pytest.mark.parametrize("name", sorted(CLASSIFIERS))
@pytest.mark.parametrize("channels,size", [(1, 16), (3, 32), (3, 64)])
def test_every_classifier_takes_1_or_3_channels_16_to_64px(name, channels, size):
    if name == "wrn28-10" and size == 64:
        pytest.skip("WRN-28-10 at 64 px: same code path as 32 px, too slow for a 2-core CPU test")
    net = CLASSIFIERS[name].build(in_channels=channels, num_classes=7).eval()
    with torch.no_grad():
        out = net(torch.zeros(2, channels, size, size))
    assert out.shape == (2, 7)


def test_resnet9_recipe_is_the_papers():
    r = CLASSIFIERS["resnet9"]
    assert (r.lr, r.momentum, r.weight_decay, r.epochs, r.batch_size) == (0.1, 0.9, 5e-4, 50, 512)


def test_bad_inputs_raise_user_errors(digits):
    train, test = digits
    with pytest.raises(UserError, match="unknown classifier"):
        classification_accuracy(train, test, classifier="vgg", progress=False)
    with pytest.raises(UserError, match="classes"):
        classification_accuracy(ImageSet(train.x, train.y % 5, [str(i) for i in range(5)]), test, progress=False)
    rgb = ImageSet(np.repeat(test.x, 3, axis=3), test.y, test.classes, source="rgb")
    with pytest.raises(UserError, match="same resolution and channels"):
        classification_accuracy(train, rgb, progress=False)
    with pytest.raises(UserError, match="epochs"):
        classification_accuracy(train, test, epochs=0, progress=False)
