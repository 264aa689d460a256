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
    """Pre-activation wide residual block (Zagoruyko & Komodakis 2016)."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.bn1, self.bn2 = nn.BatchNorm2d(c_in), nn.BatchNorm2d(c_out)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        same = c_in == c_out and stride == 1
        self.shortcut = None if same else nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.bn1(x))
        out = self.conv2(torch.relu(self.bn2(self.conv1(a))))
        return out + (x if self.shortcut is None else self.shortcut(a))


class WideResNet(nn.Module):
    """WRN-depth-widen (default WRN-28-10, ~36M params), the DPImageBench CA classifier."""

    def __init__(self, in_channels: int, num_classes: int, depth: int = 28, widen: int = 10):
        super().__init__()
        assert (depth - 4) % 6 == 0, depth
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        layers: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)]
        for stage in range(3):
            for i in range(n):
                c_in = widths[stage] if i == 0 else widths[stage + 1]
                layers.append(WideBlock(c_in, widths[stage + 1], stride=2 if (i == 0 and stage > 0) else 1))
        layers += [nn.BatchNorm2d(widths[3]), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)  # (N, 64 * widen)
        self.head = nn.Linear(widths[3], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@dataclass(frozen=True)
class Recipe:
    """A classifier and how it is trained: SGD with momentum; a linear warm-up (one-cycle) then cosine decay."""

    build: Callable[..., nn.Module]  # (in_channels=, num_classes=) -> network
    epochs: int  # default number of epochs
    batch_size: int  # images per optimizer step
    lr: float  # peak SGD learning rate (cosine-annealed to 0 over all steps)
    momentum: float  # SGD momentum
    weight_decay: float  # L2 penalty
    nesterov: bool = False  # Nesterov momentum
    warmup: float = 0.0  # fraction of all steps with a linear lr ramp from 0 to the peak (0: cosine from the peak)
    label_smoothing: float = 0.0  # cross-entropy label smoothing
    crop_padding: int = 0  # random-crop augmentation: pad by this many pixels (reflect), crop back (0 = off)
    flip: bool = False  # random horizontal flips (natural images only: not digits or glyphs)


CLASSIFIERS: dict[str, Recipe] = {
    # Fast CPU default for 16..32 px images.
    "cnn": Recipe(SmallCNN, epochs=15, batch_size=64, lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True),
    # The PrivImage code's ResNet-9 (SGD lr 0.1, momentum 0.9, wd 5e-4, 50 epochs, batch 512) with what the fast
    # CIFAR ResNet-9 recipes (Page 2018, DAWNBench) add: it diverged at lr 0.1 from a cold start, so a one-cycle
    # warm-up over the first 20 % of the steps, Nesterov momentum, label smoothing 0.2, random crop (4 px) + flips.
    "resnet9": Recipe(ResNet9, epochs=50, batch_size=512, lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True,
                      warmup=0.2, label_smoothing=0.2, crop_padding=4, flip=True),
    # DPImageBench parity (WRN-28-10); GPU only in practice.
    "wrn28-10": Recipe(WideResNet, epochs=50, batch_size=128, lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True),
}
