"""CA: the classifiers train on real small data and score what they should; bad inputs fail clearly."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from privimage.data.imageset import ImageSet
from privimage.errors import UserError
from privimage.evaluate.ca import accuracy, classification_accuracies, classification_accuracy, per_class_accuracy
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
    if name in ("wrn28-10", "resnext", "resnet164") and size == 64:
        pytest.skip(f"{name} at 64 px: same code path as 32 px, too slow for a 2-core CPU test")
    net = CLASSIFIERS[name].build(in_channels=channels, num_classes=7).eval()
    with torch.no_grad():
        out = net(torch.zeros(2, channels, size, size))
    assert out.shape == (2, 7)


def test_dpimagebench_classifiers_have_their_published_shapes():
    """WRN-28-10 ~36.5M parameters; ResNet-164 of basic blocks: 27 per stage; ResNeXt: 2 bottlenecks per stage of
    8 groups, widths 640 / 1280 / 2560."""
    from privimage.evaluate.classifiers import CifarResNet, ResNeXt, Shortcut

    count = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731
    wrn = CLASSIFIERS["wrn28-10"].build(in_channels=3, num_classes=10)
    assert 36.4e6 < count(wrn) < 36.6e6
    assert any(isinstance(m, torch.nn.Dropout) and m.p == 0.3 for m in wrn.modules())
    resnet = CifarResNet(3, 10)
    assert sum(isinstance(m, Shortcut) for m in resnet.modules()) == 3 * 27
    assert sum(isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3) for m in resnet.modules()) == 163
    resnext = ResNeXt(3, 10)
    blocks = [m for m in resnext.modules() if isinstance(m, Shortcut)]
    assert len(blocks) == 6
    grouped = [m for m in resnext.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert [m.groups for m in grouped] == [8] * 6 and grouped[-1].in_channels == 8 * 2560 // 10
    assert resnext.head.in_features == 2560


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


def test_per_class_accuracy_of_a_constant_classifier():
    class AlwaysOne(torch.nn.Module):  # predicts class 1 for every image
        def forward(self, x):
            return torch.tensor([0.0, 1.0, 0.0]).expand(len(x), 3)

    y = np.array([0, 1, 1, 1, 2, 2])
    test = ImageSet(np.zeros((6, 8, 8, 1), np.uint8), y, ["a", "b", "c"])
    per_class = per_class_accuracy(AlwaysOne(), test, device=torch.device("cpu"), batch_size=4)
    assert list(per_class) == [0.0, 1.0, 0.0]
    assert accuracy(AlwaysOne(), test, device=torch.device("cpu")) == pytest.approx(3 / 6)  # weighted by counts
    empty = ImageSet(np.zeros((2, 8, 8, 1), np.uint8), np.array([1, 1]), ["a", "b", "c"])
    assert np.isnan(per_class_accuracy(AlwaysOne(), empty, device=torch.device("cpu"))[[0, 2]]).all()
    assert accuracy(AlwaysOne(), empty, device=torch.device("cpu")) == 1.0


def test_classification_accuracies_report_per_class(digits):
    train, test = digits
    scores = classification_accuracies(train.subset(np.arange(300)), test, classifiers=("cnn",), epochs=1,
                                       progress=False)
    per_class = scores["per_class"]
    assert list(per_class) == test.classes
    overall = sum(per_class[c] * n for c, n in zip(test.classes, test.counts())) / len(test)
    assert overall == pytest.approx(scores["mean"], abs=1e-3)  # per-class values are rounded to 4 digits
