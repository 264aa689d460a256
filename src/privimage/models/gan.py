"""Compact class-conditional GAN of the SNGAN / BigGAN family (Miyato et al. 2018; Brock et al. 2019), 16-64 px.

G: z -> linear -> (ch, 4, 4) -> up-sampling residual blocks with class-conditional BatchNorm -> tanh.
   BatchNorm is fine in G: G never sees a sensitive image, only D's (already private) gradients.
D: down-sampling residual blocks (no normalisation) -> ReLU -> sum pool -> linear + projection of the
   class embedding (Miyato & Koyama 2018). No BatchNorm, no spectral norm (its power iteration updates
   a buffer inside the forward pass, which per-example gradients under vmap cannot follow exactly): one
   example's score depends only on that example, so DP-SGD's per-example clipping bounds it.

Losses are hinge losses returned per example (unreduced, as `models/edm.py`); the loop reduces.

Example:
    >>> gan = GAN(GANConfig(img_resolution=16, in_channels=1, num_classes=10))
    >>> z = torch.zeros(2, gan.config.z_dim); y = torch.tensor([0, 9])
    >>> x = gan.G(z, y); x.shape
    torch.Size([2, 1, 16, 16])
    >>> d_real_loss(gan.D, x, y).shape
    torch.Size([2])
"""

import copy
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from privimage.data.tensors import to_uint8
from privimage.sample import balanced_labels, image_latents


@dataclass(frozen=True)
class GANConfig:
    img_resolution: int = 16  # output height = width: a power of two in 16..64 (base 4x4, doubled per block)
    in_channels: int = 1  # 1 (grayscale) or 3 (RGB)
    num_classes: int = 10  # conditional classes; index num_classes is the null class (unconditional pre-training)
    z_dim: int = 64  # latent dimension of G
    g_width: int = 128  # G channels at 4x4; halved per up-sampling block (at least 16)
    d_width: int = 32  # D channels at full resolution; doubled per down-sampling block

    def __post_init__(self):
        if self.img_resolution not in (16, 32, 64):
            raise ValueError(f"img_resolution must be 16, 32 or 64, got {self.img_resolution}")
        if self.in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {self.in_channels}")
        if self.num_classes < 1 or self.z_dim < 1 or self.g_width < 16 or self.d_width < 4:
            raise ValueError(f"invalid GAN config: {self}")

    @property
    def blocks(self) -> int:
        """Up-sampling blocks of G = down-sampling blocks of D (4x4 <-> img_resolution)."""
        return int(math.log2(self.img_resolution // 4))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GANConfig":
        return cls(**d)


class ConditionalBatchNorm(nn.Module):
    """BatchNorm without affine, then a per-class gain and bias: (B, C, H, W), (B,) -> (B, C, H, W)."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.gain = nn.Embedding(num_classes, channels)
        self.bias = nn.Embedding(num_classes, channels)
        nn.init.ones_(self.gain.weight)
        nn.init.zeros_(self.bias.weight)

    def forward(self, x, y):
        return self.bn(x) * self.gain(y)[:, :, None, None] + self.bias(y)[:, :, None, None]


class GBlock(nn.Module):
    """BN-ReLU-up-conv-BN-ReLU-conv + up-sampled 1x1 shortcut (SNGAN generator block)."""

    def __init__(self, cin: int, cout: int, num_classes: int):
        super().__init__()
        self.bn1, self.bn2 = ConditionalBatchNorm(cin, num_classes), ConditionalBatchNorm(cout, num_classes)
        self.conv1, self.conv2 = nn.Conv2d(cin, cout, 3, padding=1), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1)

    def forward(self, x, y):
        h = F.interpolate(F.relu(self.bn1(x, y)), scale_factor=2)
        h = self.conv2(F.relu(self.bn2(self.conv1(h), y)))
        return h + self.skip(F.interpolate(x, scale_factor=2))


class Generator(nn.Module):
    """G(z, y): (B, z_dim), (B,) -> images (B, C, H, W) in [-1, 1]."""

    def __init__(self, config: GANConfig):
        super().__init__()
        c = config
        widths = [max(c.g_width >> i, 16) for i in range(c.blocks + 1)]  # 4x4, 8x8, ...
        self.config = c
        self.linear = nn.Linear(c.z_dim, widths[0] * 16)
        self.blocks = nn.ModuleList(GBlock(widths[i], widths[i + 1], c.num_classes + 1) for i in range(c.blocks))
        self.bn = nn.BatchNorm2d(widths[-1])
        self.out = nn.Conv2d(widths[-1], c.in_channels, 3, padding=1)

    def forward(self, z, y):
        h = self.linear(z).view(len(z), -1, 4, 4)
        for block in self.blocks:
            h = block(h, y)
        return torch.tanh(self.out(F.relu(self.bn(h))))


class DBlock(nn.Module):
    """(ReLU)-conv-ReLU-conv-avgpool + 1x1 shortcut; the first block skips the pre-activation (SNGAN)."""

    def __init__(self, cin: int, cout: int, *, down: bool, first: bool):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(cin, cout, 3, padding=1), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1)
        self.down, self.first = down, first

    def forward(self, x):
        h = self.conv2(F.relu(self.conv1(x if self.first else F.relu(x))))
        s = self.skip(x)
        if self.down:
            h, s = F.avg_pool2d(h, 2), F.avg_pool2d(s, 2)
        return h + s


class Discriminator(nn.Module):
    """D(x, y): (B, C, H, W), (B,) -> scores (B,); projection discriminator, no normalisation layers."""

    def __init__(self, config: GANConfig):
        super().__init__()
        c = config
        widths = [c.d_width << i for i in range(c.blocks + 1)]
        self.config = c
        blocks = [DBlock(c.in_channels, widths[0], down=True, first=True)]
        blocks += [DBlock(widths[i], widths[i + 1], down=i + 1 < c.blocks, first=False) for i in range(c.blocks)]
        self.blocks = nn.Sequential(*blocks)  # resolution / 2**blocks = 4 at the end
        self.linear = nn.Linear(widths[-1], 1)
        self.embed = nn.Embedding(c.num_classes + 1, widths[-1])  # + the null class
        nn.init.normal_(self.embed.weight, std=0.02)

    def forward(self, x, y):
        h = F.relu(self.blocks(x)).sum(dim=(2, 3))  # (B, C)
        return self.linear(h).squeeze(1) + (self.embed(y) * h).sum(1)


class GAN(nn.Module):
    """G and D together (one module, so one checkpoint holds both); `config` describes both."""

    def __init__(self, config: GANConfig):
        super().__init__()
        self.config = config
        self.G, self.D = Generator(config), Discriminator(config)

    @property
    def null_class(self) -> int:
        """The label of unconditional (all / random baseline) pre-training; fine-tuning uses 0..num_classes-1."""
        return self.config.num_classes


def d_real_loss(D: Discriminator, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Hinge loss of D on REAL images, per example (B,): relu(1 - D(x, y)). The only term that sees real data."""
    return F.relu(1 - D(x, y))


def d_fake_loss(D: Discriminator, x_fake: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Hinge loss of D on generated images, per example (B,): relu(1 + D(G(z), y))."""
    return F.relu(1 + D(x_fake, y))


def g_loss(D: Discriminator, x_fake: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Generator hinge loss, per example (B,): -D(G(z), y)."""
    return -D(x_fake, y)


@torch.no_grad()
def standing_stats(G: Generator, *, batches: int = 8, batch_size: int = 256, seed: int = 0) -> Generator:
    """A copy of G whose BatchNorm statistics are averages over `batches` class-balanced batches of fakes.

    Why: the running statistics of BN follow the live G, not its EMA (BigGAN's "standing statistics").
    Sampling in eval mode with these makes image i a function of (z_i, y_i) only, whatever the batch size.
    """
    G = copy.deepcopy(G).train()
    for m in G.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average
    device = next(G.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    for _ in range(batches):
        z = torch.randn((batch_size, G.config.z_dim), generator=generator, device=device)
        G(z, torch.arange(batch_size, device=device) % G.config.num_classes)
    return G.eval()


@torch.no_grad()
def generate(gan: GAN, n: int, *, seed: int = 0, batch_size: int = 500, device="cpu",
             progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """n class-balanced samples of G: (x (n, H, W, C) uint8, y (n,) int64). Image i uses latent seed + i."""
    if n < 1 or batch_size < 1:
        raise ValueError(f"n and batch_size must be >= 1, got n={n}, batch_size={batch_size}")
    c = gan.config
    G = standing_stats(gan.G.to(device), seed=seed)
    y = balanced_labels(n, c.num_classes)
    out = np.empty((n, c.img_resolution, c.img_resolution, c.in_channels), dtype=np.uint8)
    with tqdm(total=n, desc="sample (GAN)", unit="img", disable=not progress) as bar:
        for start in range(0, n, batch_size):
            idx = range(start, min(start + batch_size, n))
            z = image_latents([seed + i for i in idx], (c.z_dim,), device)  # (b, z_dim)
            out[start:idx.stop] = to_uint8(G(z, torch.from_numpy(y[start:idx.stop]).to(device)))
            bar.update(len(idx))
    return out, y
