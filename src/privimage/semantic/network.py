"""The semantic query function's architecture: a small ResNet (He et al. 2016) for 16..64 px images.

It is trained on PUBLIC labels only and never on sensitive data, so BatchNorm is fine here (unlike in
the DP-trained generator). Global average pooling makes one network work at any input resolution; the
resolution it was trained at is kept on the module so callers can resize inputs to it.
"""

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass
class ResNetConfig:
    width: int = 32  # channels of the first stage; each later stage doubles them
    stages: int = 3  # resolution stages; every stage after the first halves H and W
    blocks: int = 1  # residual blocks per stage
    stem_stride: int = 1  # 2 halves H and W in the first convolution: ~4x cheaper, for CPUs (see docs/semantic.md)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual shortcut (1x1 projection when the shape changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return F.relu(h + self.shortcut(x))


class ResNet(nn.Module):
    """Images (B, C, H, W) in [-1, 1] -> logits (B, num_classes) over the public classes."""

    def __init__(self, config: ResNetConfig, *, in_channels: int, num_classes: int, resolution: int):
        super().__init__()
        if config.width < 1 or config.stages < 1 or config.blocks < 1 or config.stem_stride not in (1, 2):
            raise ValueError(f"ResNetConfig needs width, stages and blocks >= 1 and stem_stride 1 or 2, got {config}")
        self.config = config
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.resolution = resolution  # the H = W the network was trained at; inputs are resized to it
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, config.width, 3, stride=config.stem_stride, padding=1, bias=False),
            nn.BatchNorm2d(config.width),
            nn.ReLU(),
        )
        layers = []
        c_in = config.width
        for stage in range(config.stages):
            c_out = config.width * 2**stage
            for block in range(config.blocks):
                stride = 2 if stage > 0 and block == 0 else 1
                layers.append(BasicBlock(c_in, c_out, stride))
                c_in = c_out
        self.layers = nn.Sequential(*layers)
        self.head = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.layers(self.stem(x))  # (B, width * 2**(stages-1), H / (stem_stride * 2**(stages-1)), ...)
        return self.head(h.mean(dim=(2, 3)))  # (B, num_classes)
