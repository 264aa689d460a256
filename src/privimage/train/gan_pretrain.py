"""PrivImage+G step 4: pre-train the class-conditional GAN on PUBLIC images (no privacy spent).

As for diffusion (train/pretrain.py), the caller decides which public images and labels: PrivImage's
selection relabelled to the sensitive classes, or (`unconditional=True`, the all / random baselines)
every image as the null class. Each step: one D step on a batch of public images and a batch of
fakes (hinge loss + the auxiliary classifier's cross-entropy on the real labels), then one G step
(hinge + the auxiliary loss of the asked class); Adam for both, an EMA of G's weights. Returns the GAN whose G
holds the EMA weights: the starting point of DP fine-tuning.

Example:
    >>> gan = GAN(GANConfig(img_resolution=16, in_channels=1, num_classes=10))
    >>> gan = pretrain_gan(gan, public, config=PretrainConfig(steps=800), train=GANTrainConfig(),
    ...                    out_dir="run/pretrain", seed=0)
"""

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from privimage.data import ImageSet
from privimage.device import resolve_device
from privimage.errors import UserError
from privimage.log import progress_enabled
from privimage.models.gan import GAN, d_fake_loss, d_real_loss, g_loss
from privimage.data.tensors import to_model_space
from privimage.privacy.rng import noise_generator
from privimage.train.checkpoint import JSON_FILE
from privimage.train.ema import make_ema, update_ema
from privimage.train.gan_checkpoint import load_gan_checkpoint, restore_gan, save_gan_checkpoint
from privimage.train.pretrain import PretrainConfig
from privimage.train.runlog import RunLog

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GANTrainConfig:
    pretrain_g_lr: float | None = None  # G's Adam learning rate in pre-training; None = pretrain.lr (D's)
    finetune_g_lr: float | None = None  # G's Adam learning rate in DP fine-tuning; None = finetune.lr (D's)
    beta1: float = 0.0  # Adam beta1 of G and D (0 as in SNGAN / BigGAN: momentum destabilises GANs)
    beta2: float = 0.999  # Adam beta2 of G and D
    ac_weight: float = 1.0  # weight of D's auxiliary classification loss (AC-GAN) in D's real loss and G's loss

    def __post_init__(self):
        for name in ("pretrain_g_lr", "finetune_g_lr"):
            if getattr(self, name) is not None and not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0 or null, got {getattr(self, name)}")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ValueError(f"beta1 and beta2 must be in [0, 1), got {self.beta1}, {self.beta2}")
        if not self.ac_weight >= 0:
            raise ValueError(f"ac_weight must be >= 0, got {self.ac_weight}")


def optimizers(gan: GAN, *, lr: float, g_lr: float | None, train: GANTrainConfig) -> dict[str, torch.optim.Optimizer]:
    """{"d": Adam over D (lr), "g": Adam over G (g_lr, or lr when None)}."""
    betas = (train.beta1, train.beta2)
    return {"d": torch.optim.Adam(gan.D.parameters(), lr=lr, betas=betas),
            "g": torch.optim.Adam(gan.G.parameters(), lr=g_lr or lr, betas=betas)}


def fake_batch(gan: GAN, n: int, *, generator: torch.Generator, unconditional: bool = False):
    """Latents (n, z_dim) and labels (n,): uniform over the classes, or all the null class."""
    c, device = gan.config, generator.device
    z = torch.randn((n, c.z_dim), generator=generator, device=device)
    if unconditional:
        return z, torch.full((n,), gan.null_class, dtype=torch.int64, device=device)
    return z, torch.randint(c.num_classes, (n,), generator=generator, device=device)


def pretrain_gan(gan: GAN, images: ImageSet, *, config: PretrainConfig, train: GANTrainConfig, out_dir,
                 seed: int | None = None, device="auto", resume: bool = False, progress: bool = True,
                 unconditional: bool = False) -> GAN:
    """Train `gan` in place on public `images`; returns it with G set to the EMA weights."""
    check_gan_images(gan, images, labels=not unconditional)
    device, out_dir = resolve_device(device), Path(out_dir)
    G, D = gan.G, gan.D
    gan.to(device).train()
    ema = make_ema(G)
    opts = optimizers(gan, lr=config.lr, g_lr=train.pretrain_g_lr, train=train)
    generator, _ = noise_generator(seed, device=device)  # public randomness: batches, latents, flips
    run_config = asdict(config) | {"gan": asdict(train), "unconditional": unconditional}
    start = 0
    if resume and (out_dir / JSON_FILE).is_file():
        ckpt = load_gan_checkpoint(out_dir, kind="pretrain")
        restore_gan(ckpt, gan, ema, opts, {"batches": generator})
        start = ckpt.step
        logger.info("resuming pre-training at step %d of %d", start, config.steps)
    x_all = torch.from_numpy(images.x).to(device)  # (N, H, W, C) uint8, converted per batch
    y_all = (torch.full((len(images),), gan.null_class, dtype=torch.int64, device=device) if unconditional
             else torch.from_numpy(images.y).to(device))  # (N,)
    log = RunLog(out_dir, start_step=start)
    sums = torch.zeros(2, device=device)  # D and G losses since the last log line
    b = config.batch_size
    bar = tqdm(range(start, config.steps), desc="pretrain (GAN)", initial=start, total=config.steps,
               disable=not progress_enabled(progress))
    for step in bar:
        # D step: hinge loss on public images (real) and on fakes (G's output, detached).
        idx = torch.randint(len(images), (b,), generator=generator, device=device)
        x, y = to_model_space(x_all[idx]), y_all[idx]  # (B, C, H, W) in [-1, 1]
        if config.hflip:
            flip = torch.rand((b, 1, 1, 1), generator=generator, device=device) < 0.5
            x = torch.where(flip, x.flip(3), x)
        z, y_fake = fake_batch(gan, b, generator=generator, unconditional=unconditional)
        with torch.no_grad():
            x_fake = G(z, y_fake)
        d_loss = (d_real_loss(D, x, y, ac_weight=train.ac_weight) + d_fake_loss(D, x_fake, y_fake)).mean()
        opts["d"].zero_grad(set_to_none=True)
        d_loss.backward()
        opts["d"].step()
        # G step through the updated D.
        z, y_fake = fake_batch(gan, b, generator=generator, unconditional=unconditional)
        loss_g = g_loss(D, G(z, y_fake), y_fake, ac_weight=train.ac_weight).mean()
        opts["g"].zero_grad(set_to_none=True)
        loss_g.backward(inputs=list(G.parameters()))
        opts["g"].step()
        update_ema(ema, G, decay=config.ema_decay, step=step)
        sums += torch.stack([d_loss.detach(), loss_g.detach()])
        rate, done = log.count(b), step + 1
        if done % config.log_every == 0 or done == config.steps:
            n_logged = done % config.log_every or config.log_every
            d_mean, g_mean = (sums / n_logged).tolist()
            record = log.write(done, d_loss=round(d_mean, 5), g_loss=round(g_mean, 5))
            bar.set_postfix(d=record["d_loss"], g=record["g_loss"], img_s=f"{rate:.0f}")
            sums.zero_()
        if done % config.checkpoint_every == 0 or done == config.steps:
            save_gan_checkpoint(out_dir, gan=gan, ema_g=ema, optimizers=opts, step=done, kind="pretrain",
                                config=run_config, generators={"batches": generator})
    bar.close()
    G.load_state_dict(ema.state_dict())  # fine-tuning starts from the EMA of G (and the last D)
    return gan


def check_gan_images(gan: GAN, images: ImageSet, *, labels: bool = True) -> None:
    """UserError unless the images (and, with `labels`, their labels) fit the GAN's size and classes."""
    c = gan.config
    if images.resolution != c.img_resolution or images.channels != c.in_channels:
        raise UserError(f"{images.source or 'images'}: {images.resolution}x{images.resolution}x{images.channels} "
                        f"images, but the GAN expects {c.img_resolution}x{c.img_resolution}x{c.in_channels}; set "
                        f"gan.model.img_resolution / gan.model.in_channels")
    if len(images) == 0:
        raise UserError(f"{images.source or 'images'}: no images")
    if labels and (images.y.min() < 0 or images.y.max() >= c.num_classes):
        raise UserError(f"{images.source or 'images'}: labels outside 0..{c.num_classes - 1}")
