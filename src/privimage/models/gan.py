"""Compact class-conditional GAN of the SNGAN family (Miyato et al. 2018, "standard CNN"), 16-64 px.

G: (z, y) -> linear -> (g_width, 4, 4) -> [x2 nearest up-sampling, 3x3 conv, class-conditional
   BatchNorm, ReLU] per octave -> 3x3 conv -> tanh. BatchNorm is fine in G: G never sees a sensitive
   image, only D's (already private) gradients.
D: [4x4 stride-2 conv, LeakyReLU] per octave -> 3x3 conv -> LeakyReLU -> sum pool (B, F) -> a linear
   score plus the projection of a class embedding (Miyato & Koyama 2018), and an auxiliary classifier
   head (AC-GAN, Odena et al. 2017) that makes small conditional GANs class-consistent quickly. No
   normalisation layers and no spectral norm (its power iteration updates a buffer inside the forward
   pass, which per-example gradients under vmap / hooks do not follow): one example's outputs depend only
   on that example, so DP-SGD's per-example clipping bounds its influence.

Losses (hinge + weighted cross-entropy of the auxiliary head) are returned per example, unreduced
(as models/edm.py); the loop reduces. Label `num_classes` is the null class (unconditional pre-training
of the all / random baselines); the auxiliary loss skips it.

Example:
    >>> gan = GAN(GANConfig(img_resolution=16, in_channels=1, num_classes=10))
    >>> z = torch.zeros(2, gan.config.z_dim); y = torch.tensor([0, 9])
    >>> x = gan.G(z, y); x.shape
    torch.Size([2, 1, 16, 16])
    >>> d_real_loss(gan.D, x, y, ac_weight=1.0).shape
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

from privimage import distributed
from privimage.data.tensors import to_uint8
from privimage.log import progress_enabled
from privimage.sample import balanced_labels, image_latents


@dataclass(frozen=True)
class GANConfig:
    img_resolution: int = 16  # output height = width: 16, 32 or 64 (4x4 doubled once per octave)
    in_channels: int = 1  # 1 (grayscale) or 3 (RGB)
    num_classes: int = 10  # conditional classes; index num_classes is the null class (unconditional pre-training)
    z_dim: int = 64  # latent dimension of G
    g_width: int = 64  # G channels at 4x4; halved per octave (at least 8)
    d_width: int = 32  # D channels after its first conv; doubled per octave

    def __post_init__(self):
        if self.img_resolution not in (16, 32, 64):
            raise ValueError(f"img_resolution must be 16, 32 or 64, got {self.img_resolution}")
        if self.in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {self.in_channels}")
        if self.num_classes < 1 or self.z_dim < 1 or self.g_width < 8 or self.d_width < 4:
            raise ValueError(f"invalid GAN config: {self}")

    @property
    def octaves(self) -> int:
        """Up-sampling steps of G = down-sampling convolutions of D (4x4 <-> img_resolution)."""
        return int(math.log2(self.img_resolution // 4))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GANConfig":
        return cls(**d)


class ConditionalBatchNorm(nn.Module):
    """BatchNorm without affine, then a per-class gain and bias: (B, C, H, W), (B,) -> (B, C, H, W)."""

    def __init__(self, channels: int, num_labels: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.gain = nn.Embedding(num_labels, channels)
        self.bias = nn.Embedding(num_labels, channels)
        nn.init.ones_(self.gain.weight)
        nn.init.zeros_(self.bias.weight)

    def forward(self, x, y):
        return self.bn(x) * self.gain(y)[:, :, None, None] + self.bias(y)[:, :, None, None]


class Generator(nn.Module):
    """G(z, y): (B, z_dim), (B,) -> images (B, C, H, W) in [-1, 1]."""

    def __init__(self, config: GANConfig):
        super().__init__()
        c, labels = config, config.num_classes + 1  # + the null class
        widths = [max(c.g_width >> i, 8) for i in range(c.octaves + 1)]  # 4x4, 8x8, ...
        self.config = c
        self.linear = nn.Linear(c.z_dim, widths[0] * 16)
        self.bn0 = ConditionalBatchNorm(widths[0], labels)
        self.convs = nn.ModuleList(nn.Conv2d(widths[i], widths[i + 1], 3, padding=1) for i in range(c.octaves))
        self.bns = nn.ModuleList(ConditionalBatchNorm(widths[i + 1], labels) for i in range(c.octaves))
        self.out = nn.Conv2d(widths[-1], c.in_channels, 3, padding=1)

    def forward(self, z, y):
        h = F.relu(self.bn0(self.linear(z).view(len(z), -1, 4, 4), y))  # (B, g_width, 4, 4)
        for conv, bn in zip(self.convs, self.bns):
            h = F.relu(bn(conv(F.interpolate(h, scale_factor=2)), y))
        return torch.tanh(self.out(h))


class Discriminator(nn.Module):
    """D(x, y) -> scores (B,); `scores_and_logits` also gives the auxiliary head's logits (B, num_classes)."""

    def __init__(self, config: GANConfig):
        super().__init__()
        c = config
        widths = [c.in_channels] + [c.d_width << i for i in range(c.octaves)]
        self.config = c
        self.downs = nn.ModuleList(nn.Conv2d(widths[i], widths[i + 1], 4, stride=2, padding=1)
                                   for i in range(c.octaves))
        features = c.d_width << c.octaves
        self.conv = nn.Conv2d(widths[-1], features, 3, padding=1)
        self.linear = nn.Linear(features, 1)
        self.embed = nn.Embedding(c.num_classes + 1, features)  # projection; + the null class
        self.classify = nn.Linear(features, c.num_classes)  # auxiliary classifier (real classes only)
        nn.init.normal_(self.embed.weight, std=0.02)

    def scores_and_logits(self, x, y):
        h = x
        for down in self.downs:
            h = F.leaky_relu(down(h), 0.2)
        h = F.leaky_relu(self.conv(h), 0.2).sum(dim=(2, 3))  # (B, features)
        return self.linear(h).squeeze(1) + (self.embed(y) * h).sum(1), self.classify(h)

    def forward(self, x, y):
        return self.scores_and_logits(x, y)[0]


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


def class_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the auxiliary head per example (B,); 0 for the null class."""
    real = y < logits.shape[1]
    return torch.where(real, F.cross_entropy(logits, y.clamp(max=logits.shape[1] - 1), reduction="none"), 0.0)


def d_real_loss(D: Discriminator, x: torch.Tensor, y: torch.Tensor, *, ac_weight: float = 0.0) -> torch.Tensor:
    """D's loss on REAL images, per example (B,): relu(1 - D(x, y)) + ac_weight CE. The only term on real data."""
    score, logits = D.scores_and_logits(x, y)
    return F.relu(1 - score) + ac_weight * class_loss(logits, y)


def d_fake_loss(D: Discriminator, x_fake: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """D's hinge loss on generated images, per example (B,): relu(1 + D(G(z), y)) (no class term on fakes)."""
    return F.relu(1 + D(x_fake, y))


def g_loss(D: Discriminator, x_fake: torch.Tensor, y: torch.Tensor, *, ac_weight: float = 0.0) -> torch.Tensor:
    """Generator loss, per example (B,): -D(G(z), y) + ac_weight CE of the auxiliary head on the asked class."""
    score, logits = D.scores_and_logits(x_fake, y)
    return -score + ac_weight * class_loss(logits, y)


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
    G = standing_stats(gan.G.to(device), seed=seed)  # the same statistics in every process (same seed)
    y = balanced_labels(n, c.num_classes)
    out = np.zeros((n, c.img_resolution, c.img_resolution, c.in_channels), dtype=np.uint8)
    mine = distributed.block(n)  # under torchrun each process draws its block; range(n) in one process
    with tqdm(total=len(mine), desc="sample (GAN)", unit="img",
              disable=not (progress_enabled(progress) and distributed.is_main())) as bar:
        for start in range(mine.start, mine.stop, batch_size):
            idx = range(start, min(start + batch_size, mine.stop))
            z = image_latents([seed + i for i in idx], (c.z_dim,), device)  # (b, z_dim)
            out[start:idx.stop] = to_uint8(G(z, torch.from_numpy(y[start:idx.stop]).to(device)))
            bar.update(len(idx))
    if distributed.world_size() > 1:
        out = distributed.all_reduce_sum({"x": torch.from_numpy(out)})["x"].numpy()  # every process: all n images
    return out, y
