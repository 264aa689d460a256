"""Compact class-conditional U-Net of the DDPM++ / NCSN++ family (Song et al. 2021; Karras et al. 2022).

Built for DP-SGD: GroupNorm instead of BatchNorm (per-sample gradients stay per-sample), no in-place ops
on inputs, no `.item()` and no data-dependent control flow, so `torch.func.vmap(grad(...))` runs it one
example at a time. Class label `num_classes` is the null class used for classifier-free guidance.

Example:
    >>> net = UNet(CONFIGS["tiny"])
    >>> x = torch.zeros(2, 1, 16, 16); noise = torch.zeros(2); y = torch.tensor([0, 10])
    >>> net(x, noise, y).shape
    torch.Size([2, 1, 16, 16])
"""

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class UNetConfig:
    img_resolution: int = 32  # input height = width, 16..64, divisible by 2**(len(ch_mult)-1)
    in_channels: int = 3  # 1 (grayscale) or 3 (RGB); also the number of output channels
    num_classes: int = 10  # conditional classes; index num_classes is the null (unconditional) class
    nf: int = 32  # base channel count; level i has nf * ch_mult[i] channels
    ch_mult: tuple[int, ...] = (1, 2, 2)  # channel multiplier per resolution level
    num_blocks: int = 2  # residual blocks per level in the encoder (decoder has one more)
    attn_resolutions: tuple[int, ...] = (16,)  # resolutions with a self-attention block after each res block
    dropout: float = 0.1  # dropout inside residual blocks

    def __post_init__(self):
        if not 16 <= self.img_resolution <= 64:
            raise ValueError(f"img_resolution must be in 16..64, got {self.img_resolution}")
        if self.in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {self.in_channels}")
        if self.img_resolution % 2 ** (len(self.ch_mult) - 1):
            raise ValueError(f"img_resolution {self.img_resolution} not divisible by 2**{len(self.ch_mult) - 1}")
        if self.num_classes < 1 or self.nf < 4 or self.num_blocks < 1 or not 0 <= self.dropout < 1:
            raise ValueError(f"invalid U-Net config: {self}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "UNetConfig":
        d = dict(d)
        d["ch_mult"] = tuple(d["ch_mult"])
        d["attn_resolutions"] = tuple(d["attn_resolutions"])
        return cls(**d)


# Named configs. "cifar10" is the paper's model (about 1.75M parameters); "demo" the fast 16x16 grayscale
# model of the end-to-end demo; "tiny" a laptop-sized model for tests.
CONFIGS = {
    "cifar10": UNetConfig(img_resolution=32, in_channels=3, num_classes=10, nf=32, ch_mult=(1, 2, 2),
                          num_blocks=2, attn_resolutions=(16,), dropout=0.1),
    "demo": UNetConfig(img_resolution=16, in_channels=1, num_classes=10, nf=16, ch_mult=(1, 2),
                       num_blocks=1, attn_resolutions=(8,), dropout=0.0),
    "tiny": UNetConfig(img_resolution=16, in_channels=1, num_classes=10, nf=8, ch_mult=(1, 2),
                       num_blocks=1, attn_resolutions=(8,), dropout=0.0),
}


def _norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups of at least 4 channels (as DDPM++)."""
    return nn.GroupNorm(num_groups=min(32, max(1, channels // 4)), num_channels=channels, eps=1e-6)


class PositionalEmbedding(nn.Module):
    """Sinusoidal embedding of the scalar noise level c_noise: (B,) -> (B, dim)."""

    def __init__(self, dim: int, max_positions: int = 10000):
        super().__init__()
        freqs = (1 / max_positions) ** (torch.arange(dim // 2, dtype=torch.float32) / (dim // 2 - 1))
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        angles = t.float()[:, None] * self.freqs[None, :]  # (B, dim/2)
        return torch.cat([angles.cos(), angles.sin()], dim=1)


class ResBlock(nn.Module):
    """GN-SiLU-conv, embedding scale-shift, SiLU-dropout-conv; residual scaled by 1/sqrt(2) (DDPM++)."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float):
        super().__init__()
        self.norm0 = _norm(in_ch)
        self.conv0 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.affine = nn.Linear(emb_dim, 2 * out_ch)  # per-channel scale and shift
        self.norm1 = _norm(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv1 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        nn.init.zeros_(self.conv1.weight)  # each block starts as the identity (skip path only)
        nn.init.zeros_(self.conv1.bias)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv0(F.silu(self.norm0(x)))  # (B, out, H, W)
        scale, shift = self.affine(emb)[:, :, None, None].chunk(2, dim=1)  # each (B, out, 1, 1)
        h = self.norm1(h) * (1 + scale) + shift
        h = self.conv1(self.dropout(F.silu(h)))
        return (h + self.skip(x)) / math.sqrt(2)


class AttnBlock(nn.Module):
    """Single-head self-attention over the H*W positions, residual scaled by 1/sqrt(2)."""

    def __init__(self, ch: int):
        super().__init__()
        self.norm = _norm(ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = nn.Conv2d(ch, ch, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).unbind(1)  # each (B, C, HW)
        attn = torch.softmax(torch.einsum("bci,bcj->bij", q, k) / math.sqrt(c), dim=2)  # (B, HW, HW)
        out = torch.einsum("bij,bcj->bci", attn, v).reshape(b, c, h, w)
        return (x + self.proj(out)) / math.sqrt(2)


class UNet(nn.Module):
    """Bare conditional U-Net: (x (B,C,H,W), c_noise (B,), class_labels (B,) int64) -> (B,C,H,W).

    Knows nothing about noise schedules; `models.edm.EDMPrecond` wraps it.
    """

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        nf, emb_dim = config.nf, 4 * config.nf
        self.noise_embed = PositionalEmbedding(nf)
        self.map0 = nn.Linear(nf, emb_dim)
        self.map1 = nn.Linear(emb_dim, emb_dim)
        self.class_embed = nn.Embedding(config.num_classes + 1, emb_dim)  # last row: null class

        self.conv_in = nn.Conv2d(config.in_channels, nf, 3, padding=1)
        self.down = nn.ModuleList()  # ("res"|"attn"|"down", module); skip saved after each res/down
        skip_chs, ch, res = [nf], nf, config.img_resolution
        for level, mult in enumerate(config.ch_mult):
            for _ in range(config.num_blocks):
                self.down.append(ResBlock(ch, nf * mult, emb_dim, config.dropout))
                ch = nf * mult
                if res in config.attn_resolutions:
                    self.down.append(AttnBlock(ch))
                skip_chs.append(ch)
            if level < len(config.ch_mult) - 1:
                self.down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                res //= 2
                skip_chs.append(ch)
        self.mid = nn.ModuleList([ResBlock(ch, ch, emb_dim, config.dropout), AttnBlock(ch),
                                  ResBlock(ch, ch, emb_dim, config.dropout)])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(config.ch_mult))):
            for _ in range(config.num_blocks + 1):
                self.up.append(ResBlock(ch + skip_chs.pop(), nf * mult, emb_dim, config.dropout))
                ch = nf * mult
                if res in config.attn_resolutions:
                    self.up.append(AttnBlock(ch))
            if level > 0:
                self.up.append(Upsample(ch))
                res *= 2
        assert not skip_chs, skip_chs
        self.norm_out = _norm(ch)
        self.conv_out = nn.Conv2d(ch, config.in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, class_labels: torch.Tensor) -> torch.Tensor:
        emb = F.silu(self.map0(self.noise_embed(c_noise)))  # (B, 4nf)
        emb = F.silu(self.map1(emb) + self.class_embed(class_labels))
        h = self.conv_in(x)
        skips = [h]
        for block in self.down:
            if isinstance(block, ResBlock):
                h = block(h, emb)
                skips.append(h)
            elif isinstance(block, AttnBlock):
                h = block(h)
                skips[-1] = h
            else:  # strided conv downsampling
                h = block(h)
                skips.append(h)
        h = self.mid[2](self.mid[1](self.mid[0](h, emb)), emb)
        for block in self.up:
            h = block(torch.cat([h, skips.pop()], dim=1), emb) if isinstance(block, ResBlock) else block(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Upsample(nn.Module):
    """Nearest-neighbour x2 then a 3x3 conv."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def count_parameters(net: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


if __name__ == "__main__":  # python -m privimage.models.unet: the named configs and their sizes
    for name, cfg in CONFIGS.items():
        print(f"{name:8s} {count_parameters(UNet(cfg)):>10,d} parameters  {cfg}")
