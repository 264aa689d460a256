"""Device recipes of the semantic classifier: picked by device and image size, trainable at tiny size on CPU."""

import dataclasses

import pytest
import torch

from privimage.semantic.classifier import train_classifier
from privimage.semantic.network import ResNet, ResNetConfig
from privimage.semantic.recipes import RECIPES, recipe_for
from test_semantic_classifier import shapes


def test_recipe_depends_on_device_and_resolution():
    assert recipe_for("cpu", resolution=32).arch.stem_stride == 2  # Tiny-ImageNet-32: work at 16 x 16
    assert recipe_for("cpu", resolution=16).arch.stem_stride == 1  # glyphs, digits: full resolution
    assert not recipe_for("cpu", resolution=32).channels_last  # segfaults in oneDNN with 2 threads
    assert recipe_for(torch.device("cuda"), resolution=32) == RECIPES["cuda"]
    assert RECIPES["cuda"].bf16 and RECIPES["cuda"].channels_last and RECIPES["cuda"].arch.blocks == 2


def test_stride_two_stem_halves_the_feature_map():
    plain = ResNet(ResNetConfig(width=4, stages=2, stem_stride=1), in_channels=3, num_classes=5, resolution=32)
    strided = ResNet(ResNetConfig(width=4, stages=2, stem_stride=2), in_channels=3, num_classes=5, resolution=32)
    x = torch.zeros(2, 3, 32, 32)
    assert plain.stem(x).shape == (2, 4, 32, 32) and strided.stem(x).shape == (2, 4, 16, 16)
    assert strided(x).shape == (2, 5)
    with pytest.raises(ValueError, match="stem_stride 1 or 2"):
        ResNet(ResNetConfig(stem_stride=3), in_channels=3, num_classes=5, resolution=32)


@pytest.mark.parametrize("kind", ["cpu", "cuda"])
def test_each_recipe_learns_at_tiny_size_on_cpu(kind):
    """Each recipe's optimizer, augmentation and bf16 autocast train here on CPU at tiny size (2 stages of
    width 8 at 16 px; channels_last off: see above)."""
    recipe = RECIPES[kind]
    arch = dataclasses.replace(recipe.arch, width=8, stages=2, blocks=1, stem_stride=1)
    config = dataclasses.replace(recipe, arch=arch, epochs=5, batch_size=32, channels_last=False, lr=0.1)
    model, meta = train_classifier(shapes(240, seed=0), config=config, val_fraction=0.2, device="cpu", progress=False)
    assert meta.val_accuracy > 0.4  # 6 classes: chance is 0.17
    assert meta.training["seconds"] > 0 and meta.training["device"] == "cpu" and meta.training["bf16"]
