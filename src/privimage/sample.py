"""Deterministic EDM samplers: Heun (EDM Algorithm 2) and Euler (DDIM-like); images out as uint8.

Sampling only touches the trained network, so it spends no privacy. Each image has its own random
generator seeded with `seed + index`, so image i is the same whatever the batch size (as NVlabs/edm)
and whatever the number of processes: under torchrun each process samples its block of the indices and
the blocks are gathered (an all-reduce of a zero-filled array: each image comes from one process).

Example:
    >>> x, y = generate(net, 100, num_classes=10, steps=18, seed=0)   # x (100, H, W, C) uint8
    >>> save_samples("samples.npz", x, y, grid="grid.png")
"""

import zipfile
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from privimage import distributed
from privimage.errors import UserError
from privimage.files import atomic_path
from privimage.log import progress_enabled
from privimage.models.edm import EDMPrecond, to_uint8


def sigma_steps(num_steps: int, *, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0,
                device="cpu") -> torch.Tensor:
    """EDM time steps (eq. 5): sigma_max -> sigma_min over num_steps, then a final 0. (num_steps + 1,)"""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    i = torch.arange(num_steps, dtype=torch.float64, device=device)
    t = (sigma_max ** (1 / rho) + i / max(num_steps - 1, 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([t, torch.zeros_like(t[:1])])


def guided(net: EDMPrecond, x: torch.Tensor, sigma: torch.Tensor, labels: torch.Tensor, guidance: float):
    """Classifier-free guidance: D = (1 + w) D(x | y) - w D(x | null). w = 0 is the plain conditional model."""
    sigma = sigma.to(torch.float32).expand(x.shape[0])
    cond = net(x.float(), sigma, labels).to(torch.float64)
    if guidance == 0:
        return cond
    uncond = net(x.float(), sigma, torch.full_like(labels, net.null_class)).to(torch.float64)
    return (1 + guidance) * cond - guidance * uncond


@torch.no_grad()
def edm_sampler(net, latents, class_labels, *, num_steps=50, sigma_min=0.002, sigma_max=80.0, rho=7.0,
                guidance=0.0):
    """EDM Algorithm 2 (deterministic, S_churn = 0). latents (B, C, H, W) ~ N(0, I) -> images in [-1, 1]."""
    t_steps = sigma_steps(num_steps, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho, device=latents.device)
    x_next = latents.to(torch.float64) * t_steps[0]
    for i, (t_cur, t_next) in enumerate(zip(t_steps[:-1], t_steps[1:])):
        x_hat, t_hat = x_next, t_cur

        # Euler step.
        denoised = guided(net, x_hat, t_hat, class_labels, guidance)
        d_cur = (x_hat - denoised) / t_hat
        x_next = x_hat + (t_next - t_hat) * d_cur

        # Apply 2nd order correction.
        if i < num_steps - 1:
            denoised = guided(net, x_next, t_next, class_labels, guidance)
            d_prime = (x_next - denoised) / t_next
            x_next = x_hat + (t_next - t_hat) * (0.5 * d_cur + 0.5 * d_prime)
    return x_next


@torch.no_grad()
def euler_sampler(net, latents, class_labels, *, num_steps=50, sigma_min=0.002, sigma_max=80.0, rho=7.0,
                  guidance=0.0):
    """First-order probability-flow ODE solver (DDIM-like): one network evaluation per step."""
    t_steps = sigma_steps(num_steps, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho, device=latents.device)
    x = latents.to(torch.float64) * t_steps[0]
    for t_cur, t_next in zip(t_steps[:-1], t_steps[1:]):
        d_cur = (x - guided(net, x, t_cur, class_labels, guidance)) / t_cur
        x = x + (t_next - t_cur) * d_cur
    return x


SAMPLERS = {"heun": edm_sampler, "euler": euler_sampler}


def balanced_labels(n: int, num_classes: int) -> np.ndarray:
    """0, 1, ..., num_classes-1, 0, 1, ... : (n,) int64, class counts differ by at most one."""
    return np.arange(n, dtype=np.int64) % num_classes


def image_latents(seeds, shape, device="cpu") -> torch.Tensor:
    """One N(0, I) latent per seed, (len(seeds), *shape); image i depends on seeds[i] only."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds]).to(device)


def generate(net: EDMPrecond, n: int, *, num_classes: int, steps: int = 50, guidance: float = 0.0,
             seed: int = 0, batch_size: int = 256, sampler: str = "heun", device="cpu",
             progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """n class-balanced samples: (x (n, H, W, C) uint8, y (n,) int64). Image i uses seed + i."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {sorted(SAMPLERS)}, got {sampler!r}")
    if n < 1 or batch_size < 1:
        raise ValueError(f"n and batch_size must be >= 1, got n={n}, batch_size={batch_size}")
    if num_classes != net.config.num_classes:
        raise ValueError(f"num_classes={num_classes} but the model has {net.config.num_classes}")
    cfg = net.config
    shape = (cfg.in_channels, cfg.img_resolution, cfg.img_resolution)
    y = balanced_labels(n, num_classes)
    net = net.to(device).eval()
    out = np.zeros((n, cfg.img_resolution, cfg.img_resolution, cfg.in_channels), dtype=np.uint8)
    mine = distributed.block(n)  # range(n) in one process
    with tqdm(total=len(mine), desc=f"sample ({sampler}, {steps} steps)", unit="img",
              disable=not (progress_enabled(progress) and distributed.is_main())) as bar:
        for start in range(mine.start, mine.stop, batch_size):
            idx = range(start, min(start + batch_size, mine.stop))
            latents = image_latents([seed + i for i in idx], shape, device)
            labels = torch.from_numpy(y[start:idx.stop]).to(device)
            images = SAMPLERS[sampler](net, latents, labels, num_steps=steps, guidance=guidance)
            out[start:idx.stop] = to_uint8(images.float())
            bar.update(len(idx))
    if distributed.world_size() > 1:
        out = distributed.all_reduce_sum({"x": torch.from_numpy(out)})["x"].numpy()  # every process: all n images
    return out, y


def save_samples(path, x: np.ndarray, y: np.ndarray, *, classes: list[str] | None = None, grid=None,
                 per_class: int = 10) -> None:
    """Write x, y and class names to an .npz, atomically (a resumed run reads it back, a kill mid-write
    leaves no truncated file); with `grid`, also a PNG of per_class images per class row.

    Without `classes` the names are "0", "1", ...: every samples file names its classes, so exports and
    reports never have to guess them.
    """
    classes = [str(i) for i in range(int(y.max()) + 1)] if classes is None else list(classes)
    if len(y) and not 0 <= y.min() <= y.max() < len(classes):
        raise ValueError(f"labels {y.min()}..{y.max()} do not fit {len(classes)} class names")
    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
        np.savez_compressed(f, x=x, y=y, classes=np.array(classes, dtype=str))
    if grid is not None:
        save_grid(grid, x, y, per_class=per_class)


def load_samples(path) -> tuple[np.ndarray, np.ndarray]:
    """x (N, H, W, C) uint8 and y (N,) int64 of a samples .npz, checked; UserError naming a bad file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such samples file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            x, y = npz["x"], npz["y"].astype(np.int64)
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise UserError(f"{path}: not a readable samples .npz with arrays 'x' and 'y' ({err}); delete it to "
                        f"sample again") from None
    if x.ndim != 4 or x.dtype != np.uint8 or x.shape[-1] not in (1, 3) or y.shape != (len(x),) or len(x) == 0:
        raise UserError(f"{path}: x must be (N, H, W, 1|3) uint8 and y (N,), got {x.shape} {x.dtype} and {y.shape}")
    return x, y


def save_grid(path, x: np.ndarray, y: np.ndarray, *, per_class: int = 10) -> None:
    """A PNG grid: one row per class, up to per_class images each (pillow)."""
    from PIL import Image

    classes = np.unique(y)
    h, w, c = x.shape[1:]
    canvas = np.zeros((len(classes) * h, per_class * w, c), dtype=np.uint8)
    for r, cls in enumerate(classes):
        for j, img in enumerate(x[y == cls][:per_class]):
            canvas[r * h:(r + 1) * h, j * w:(j + 1) * w] = img
    with atomic_path(path) as tmp:
        Image.fromarray(canvas[..., 0] if c == 1 else canvas).save(tmp, format="PNG")
