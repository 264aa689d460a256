"""The classifiers that score synthetic images (CA), each with the training recipe it is used with.

CA trains one of these on synthetic images and tests it on real held-out images. They train on
synthetic or public data only, never under DP-SGD, so BatchNorm is fine here. Every network takes
float NCHW in [-1, 1] with 1 or 3 channels at 16..64 px (global average pooling makes them
size-agnostic) and returns logits (N, num_classes).

Example:
    >>> net = CLASSIFIERS["cnn"].build(in_channels=1, num_classes=10)
    >>> net(torch.zeros(2, 1, 16, 16)).shape
    torch.Size([2, 10])
"""

import functools
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn


def conv_bn(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    """3x3 convolution, BatchNorm, ReLU: the building block of every network here."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class SmallCNN(nn.Module):
    """A fast 6-conv network (~75k params): the CPU default, minutes not hours on 2 cores."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 16):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            conv_bn(in_channels, w), conv_bn(w, w), nn.MaxPool2d(2),  # (N, w, H/2, W/2)
            conv_bn(w, 2 * w), conv_bn(2 * w, 2 * w), nn.MaxPool2d(2),  # (N, 2w, H/4, W/4)
            conv_bn(2 * w, 4 * w), conv_bn(4 * w, 4 * w),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),  # (N, 4w)
        )
        self.head = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class Residual(nn.Module):
    """x + f(x)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.inner(x)


class ResNet9(nn.Module):
    """The ResNet-9 of the PrivImage code (DAWNBench layout: prep, 3 stages, two residual pairs), with the
    DAWNBench model's logit scale 0.125 (Page 2018), which keeps the first SGD steps at lr 0.1 stable."""

    logit_scale = 0.125

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            conv_bn(in_channels, 64),  # (N, 64, H, W)
            conv_bn(64, 128), nn.MaxPool2d(2),  # (N, 128, H/2, W/2)
            Residual(nn.Sequential(conv_bn(128, 128), conv_bn(128, 128))),
            conv_bn(128, 256), nn.MaxPool2d(2),  # (N, 256, H/4, W/4)
            conv_bn(256, 512), nn.MaxPool2d(2),  # (N, 512, H/8, W/8)
            Residual(nn.Sequential(conv_bn(512, 512), conv_bn(512, 512))),
            nn.AdaptiveMaxPool2d(1), nn.Flatten(),  # (N, 512)
        )
        self.head = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)) * self.logit_scale


class WideBlock(nn.Module):
    """Pre-activation wide residual block (Zagoruyko & Komodakis 2016), dropout between its two convolutions."""

    def __init__(self, c_in: int, c_out: int, stride: int, dropout: float = 0.0):
        super().__init__()
        self.bn1, self.bn2 = nn.BatchNorm2d(c_in), nn.BatchNorm2d(c_out)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        same = c_in == c_out and stride == 1
        self.shortcut = None if same else nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.bn1(x))
        out = self.conv2(self.dropout(torch.relu(self.bn2(self.conv1(a)))))
        return out + (x if self.shortcut is None else self.shortcut(a))


def stages(block, widths: list[int], n: int) -> list[nn.Module]:
    """Three stages of n blocks each, widths[0] -> widths[1..3], the 2nd and 3rd halving the resolution."""
    layers = []
    for stage in range(3):
        for i in range(n):
            c_in = widths[stage] if i == 0 else widths[stage + 1]
            layers.append(block(c_in, widths[stage + 1], 2 if (i == 0 and stage > 0) else 1))
    return layers


class WideResNet(nn.Module):
    """WRN-depth-widen (default WRN-28-10, ~36.5M params), one of DPImageBench's three CA classifiers."""

    def __init__(self, in_channels: int, num_classes: int, depth: int = 28, widen: int = 10, dropout: float = 0.0):
        super().__init__()
        assert (depth - 4) % 6 == 0, depth
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        layers: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)]
        layers += stages(functools.partial(WideBlock, dropout=dropout), widths, n)
        layers += [nn.BatchNorm2d(widths[3]), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)  # (N, 64 * widen)
        self.head = nn.Linear(widths[3], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class Shortcut(nn.Module):
    """relu(f(x) + x), x through a 1x1 convolution + BatchNorm where f changes the shape (post-activation)."""

    def __init__(self, inner: nn.Module, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.inner = inner
        self.project = (nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
                        if stride != 1 or c_in != c_out else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.inner(x) + self.project(x))


class CifarResNet(nn.Module):
    """The CIFAR ResNet of He et al. 2016 (6n+2 layers of basic blocks, widths 16 / 32 / 64); DPImageBench
    uses depth 164 (27 blocks per stage, ~2.6M params)."""

    def __init__(self, in_channels: int, num_classes: int, depth: int = 164):
        super().__init__()
        assert (depth - 2) % 6 == 0, depth

        def basic(c_in: int, c_out: int, stride: int) -> nn.Module:
            inner = nn.Sequential(conv_bn(c_in, c_out, stride),
                                  nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out))
            return Shortcut(inner, c_in, c_out, stride)

        self.features = nn.Sequential(conv_bn(in_channels, 16), *stages(basic, [16, 16, 32, 64], (depth - 2) // 6),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())  # (N, 64)
        self.head = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class ResNeXt(nn.Module):
    """CIFAR ResNeXt (Xie et al. 2017): bottlenecks with a grouped 3x3 convolution of `cardinality` groups,
    stage widths 64 * (widen, 2 widen, 4 widen), inner width cardinality * out / widen. DPImageBench's
    settings: depth 28 (2 bottlenecks per stage), cardinality 8, widen 10."""

    def __init__(self, in_channels: int, num_classes: int, depth: int = 28, cardinality: int = 8, widen: int = 10):
        super().__init__()

        def bottleneck(c_in: int, c_out: int, stride: int) -> nn.Module:
            d = cardinality * c_out // widen
            inner = nn.Sequential(
                nn.Conv2d(c_in, d, 1, bias=False), nn.BatchNorm2d(d), nn.ReLU(inplace=True),
                nn.Conv2d(d, d, 3, stride=stride, padding=1, groups=cardinality, bias=False), nn.BatchNorm2d(d),
                nn.ReLU(inplace=True), nn.Conv2d(d, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
            return Shortcut(inner, c_in, c_out, stride)

        widths = [64, 64 * widen, 128 * widen, 256 * widen]
        self.features = nn.Sequential(conv_bn(in_channels, 64), *stages(bottleneck, widths, (depth - 2) // 9),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())  # (N, 256 * widen)
        self.head = nn.Linear(widths[3], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@dataclass(frozen=True)
class Recipe:
    """A classifier and how it is trained: SGD (or Adam) with a per-step schedule, optionally an EMA of the weights."""

    build: Callable[..., nn.Module]  # (in_channels=, num_classes=) -> network
    epochs: int  # default number of epochs
    batch_size: int  # images per optimizer step
    lr: float  # peak learning rate
    momentum: float  # SGD momentum (unused by Adam)
    weight_decay: float  # L2 penalty
    nesterov: bool = False  # Nesterov momentum
    warmup: float = 0.0  # fraction of all steps with a linear lr ramp from 0 to the peak (0: cosine from the peak)
    label_smoothing: float = 0.0  # cross-entropy label smoothing
    crop_padding: int = 0  # random-crop augmentation: pad by this many pixels (reflect), crop back (0 = off)
    flip: bool = False  # random horizontal flips (natural images only: not digits or glyphs)
    optimizer: str = "sgd"  # "sgd" or "adam"
    lr_step: int = 0  # > 0: lr x lr_gamma every lr_step epochs (step schedule) instead of warm-up + cosine
    lr_gamma: float = 0.1  # the step schedule's factor
    ema: float = 0.0  # > 0: score the EMA of the weights, decay min(ema, (1 + t) / (10 + t)) at step t


def dpimagebench(build: Callable[..., nn.Module]) -> Recipe:
    """DPImageBench's classifier training: Adam lr 0.01, x0.2 every 20 epochs, batch 256, 50 epochs, EMA 0.9999
    of the weights, no augmentation. It then picks the epoch by accuracy on a validation split; CA here scores
    the last epoch's EMA (no selection: the test split is never used to choose)."""
    return Recipe(build, epochs=50, batch_size=256, lr=0.01, momentum=0.0, weight_decay=0.0, optimizer="adam",
                  lr_step=20, lr_gamma=0.2, ema=0.9999)


CLASSIFIERS: dict[str, Recipe] = {
    # Fast CPU default for 16..32 px images.
    "cnn": Recipe(SmallCNN, epochs=15, batch_size=64, lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True),
    # The PrivImage code's ResNet-9 (SGD lr 0.1, momentum 0.9, wd 5e-4, 50 epochs, batch 512) with what the fast
    # CIFAR ResNet-9 recipes (Page 2018, DAWNBench) add: it diverged at lr 0.1 from a cold start, so a one-cycle
    # warm-up over the first 20 % of the steps, Nesterov momentum, label smoothing 0.2, random crop (4 px) + flips.
    "resnet9": Recipe(ResNet9, epochs=50, batch_size=512, lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True,
                      warmup=0.2, label_smoothing=0.2, crop_padding=4, flip=True),
    # DPImageBench's three (its CA is their mean): WRN-28-10 with dropout 0.3, ResNet-164, ResNeXt (8 groups,
    # widen 10, 2 bottlenecks per stage), each with DPImageBench's recipe. GPU only in practice.
    "wrn28-10": dpimagebench(functools.partial(WideResNet, dropout=0.3)),
    "resnet164": dpimagebench(CifarResNet),
    "resnext": dpimagebench(ResNeXt),
}
