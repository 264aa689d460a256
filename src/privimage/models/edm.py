"""EDM preconditioning and the EDM training loss (Karras et al. 2022, "Elucidating the design space").

The preconditioning wraps the bare U-Net (Table 1: c_skip, c_out, c_in, c_noise). The loss returns one
value per EXAMPLE, averaged over its K noisy copies (noise multiplicity), so one example is one clipped
contribution in DP-SGD. Its randomness (sigma, noise, label dropout) is drawn by `EDMLoss.draw` OUTSIDE
any vmap and passed in as batch tensors, so per-sample gradients are exact and reproducible.

Example:
    >>> net = EDMPrecond(UNet(CONFIGS["tiny"]))
    >>> loss_fn = EDMLoss(multiplicity=2)
    >>> images = torch.zeros(4, 1, 16, 16); labels = torch.arange(4)
    >>> loss_fn(net, images, labels, *loss_fn.draw(images, labels, generator=torch.Generator())).shape
    torch.Size([4])
"""

import numpy as np
import torch
from torch import nn

from privimage.data.tensors import to_model_space, to_uint8  # noqa: F401 (re-exported)
from privimage.models.unet import UNet


class EDMPrecond(nn.Module):
    """D(x; sigma, y) = c_skip x + c_out F(c_in x; c_noise, y)   (EDM eq. 7, Table 1)."""

    def __init__(self, unet: UNet, *, sigma_data: float = 0.5):
        super().__init__()
        if sigma_data <= 0:
            raise ValueError(f"sigma_data must be > 0, got {sigma_data}")
        self.unet = unet
        self.config = unet.config
        self.sigma_data = float(sigma_data)

    @property
    def null_class(self) -> int:
        return self.config.num_classes

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, class_labels: torch.Tensor) -> torch.Tensor:
        sigma = sigma.reshape(-1, 1, 1, 1).to(torch.float32)  # (B, 1, 1, 1)
        sd2 = self.sigma_data**2
        c_skip = sd2 / (sigma**2 + sd2)
        c_out = sigma * self.sigma_data / (sigma**2 + sd2).sqrt()
        c_in = 1 / (sd2 + sigma**2).sqrt()
        c_noise = sigma.log().flatten() / 4  # (B,)
        f_x = self.unet(c_in * x, c_noise, class_labels)
        return c_skip * x + c_out * f_x.to(torch.float32)


class EDMLoss:
    """EDM loss (EDM eq. 2, 8): log-normal sigma, weight (sigma^2+sd^2)/(sigma*sd)^2, per-example mean.

    Labels are replaced by the null class with probability `label_dropout` so the same network also
    learns the unconditional model needed for classifier-free guidance.
    """

    def __init__(self, *, P_mean: float = -1.2, P_std: float = 1.2, sigma_data: float = 0.5,
                 label_dropout: float = 0.1, multiplicity: int = 1):
        if multiplicity < 1:
            raise ValueError(f"noise multiplicity K must be >= 1, got {multiplicity}")
        if not 0 <= label_dropout < 1:
            raise ValueError(f"label_dropout must be in [0, 1), got {label_dropout}")
        self.P_mean, self.P_std, self.sigma_data = P_mean, P_std, sigma_data
        self.label_dropout, self.multiplicity = label_dropout, multiplicity

    def draw(self, images: torch.Tensor, labels: torch.Tensor, *, generator: torch.Generator):
        """The loss's randomness for a batch: sigma (B, K), noise (B, K, C, H, W), drop (B, K) bool."""
        b, k, dev = images.shape[0], self.multiplicity, images.device
        rnd_normal = torch.randn((b, k), generator=generator, device=dev)
        sigma = (rnd_normal * self.P_std + self.P_mean).exp()
        noise = torch.randn((b, k, *images.shape[1:]), generator=generator, device=dev)
        drop = torch.rand((b, k), generator=generator, device=dev) < self.label_dropout
        return sigma, noise, drop

    def __call__(self, net: EDMPrecond, images: torch.Tensor, labels: torch.Tensor, sigma: torch.Tensor,
                 noise: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
        """Per-example loss (B,) for images (B, C, H, W) in [-1, 1] and labels (B,)."""
        b, k = sigma.shape
        assert noise.shape[:2] == (b, k) and images.shape[0] == b, (images.shape, noise.shape, sigma.shape)
        y = images[:, None].expand(noise.shape).reshape(b * k, *images.shape[1:])  # (B*K, C, H, W)
        s = sigma.reshape(b * k)
        null = torch.full_like(labels, net.null_class)
        cls = torch.where(drop, null[:, None], labels[:, None]).reshape(b * k)  # (B*K,)
        denoised = net(y + noise.reshape(y.shape) * s.reshape(-1, 1, 1, 1), s, cls)
        weight = (s**2 + self.sigma_data**2) / (s * self.sigma_data) ** 2  # (B*K,)
        per_copy = weight * ((denoised - y) ** 2).mean(dim=(1, 2, 3))  # (B*K,)
        return per_copy.reshape(b, k).mean(dim=1)


def estimate_sigma_data(x: np.ndarray) -> float:
    """Pixel standard deviation of uint8 images in model space. Use on PUBLIC data only (not private)."""
    return float((x.astype(np.float64) / 127.5 - 1).std())
