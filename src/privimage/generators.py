"""Generator families behind one small interface, so the pipeline, checkpoints, sampling and report treat them alike.

    diffusion   PrivImage+D: EDM-preconditioned conditional U-Net (models/edm.py, models/unet.py; config `model`)
    gan         PrivImage+G: class-conditional SNGAN-style GAN, DP-SGD on D only (models/gan.py; config `gan`)

`GENERATORS` is the explicit registry (no string imports); `family(name)` refuses an unknown name with
the known ones. Every checkpoint records its family (state.json / model.safetensors "model"), and
`load_generator(path)` rebuilds whichever family wrote it.

Example:
    >>> fam = family(config.generator)
    >>> net = fam.build(config)
    >>> net = fam.pretrain(net, public, config=config, out_dir="run/pretrain", seed=0)
    >>> x, y = fam.sample(net, config, device="cpu")
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import nn

from privimage.errors import UserError
from privimage.models import gan as gan_model
from privimage.models.edm import EDMPrecond
from privimage.models.unet import UNet
from privimage.sample import generate
from privimage.train.checkpoint import load_model, model_description
from privimage.train.finetune import finetune
from privimage.train.gan_checkpoint import load_gan
from privimage.train.gan_finetune import finetune_gan
from privimage.train.gan_pretrain import pretrain_gan
from privimage.train.pretrain import pretrain

if TYPE_CHECKING:
    from privimage.run_config import RunConfig


@dataclass(frozen=True)
class Family:
    """What the pipeline needs of a generator family; every function takes the whole RunConfig."""

    name: str
    config_key: str  # the config section of the architecture (named in error messages)
    architecture: Callable[[RunConfig], Any]  # the model config: .img_resolution, .in_channels, .num_classes
    build: Callable[[RunConfig], nn.Module]  # a fresh (randomly initialised) model
    pretrain: Callable[..., nn.Module]  # (net, public, *, config, out_dir, seed, device, resume, progress, unconditional)
    finetune: Callable[..., nn.Module]  # (net, sensitive, *, config, noise_multiplier, ledger, out_dir, seed, ...)
    sample: Callable[..., tuple[np.ndarray, np.ndarray]]  # (net, config, *, device, progress) -> x uint8, y
    load: Callable[[Path], nn.Module]  # the sampled model of a checkpoint directory
    sampler: Callable[[RunConfig], str]  # how samples are drawn, for the log


def _diffusion_pretrain(net, images, *, config: RunConfig, **kw):
    return pretrain(net, images, config=config.pretrain, **kw)


def _diffusion_finetune(net, sensitive, *, config: RunConfig, **kw):
    return finetune(net, sensitive, config=config.finetune, **kw)


def _diffusion_sample(net, config: RunConfig, *, device, progress: bool = True):
    s = config.sample
    return generate(net, s.n, num_classes=net.config.num_classes, steps=s.steps, guidance=s.guidance, seed=config.seed,
                    batch_size=s.batch_size, sampler=s.sampler, device=device, progress=progress)


def _gan_pretrain(net, images, *, config: RunConfig, **kw):
    return pretrain_gan(net, images, config=config.pretrain, train=config.gan.train, **kw)


def _gan_finetune(net, sensitive, *, config: RunConfig, **kw):
    return finetune_gan(net, sensitive, config=config.finetune, train=config.gan.train, **kw)


def _gan_sample(net, config: RunConfig, *, device, progress: bool = True):
    s = config.sample
    return gan_model.generate(net, s.n, seed=config.seed, batch_size=s.batch_size, device=device, progress=progress)


GENERATORS: dict[str, Family] = {
    "diffusion": Family(
        name="diffusion",
        config_key="model",
        architecture=lambda config: config.model,
        build=lambda config: EDMPrecond(UNet(config.model)),
        pretrain=_diffusion_pretrain,
        finetune=_diffusion_finetune,
        sample=_diffusion_sample,
        load=load_model,
        sampler=lambda config: f"{config.sample.sampler}, {config.sample.steps} steps",
    ),
    "gan": Family(
        name="gan",
        config_key="gan.model",
        architecture=lambda config: config.gan.model,
        build=lambda config: gan_model.GAN(config.gan.model),
        pretrain=_gan_pretrain,
        finetune=_gan_finetune,
        sample=_gan_sample,
        load=load_gan,
        sampler=lambda config: "GAN, one pass of G",
    ),
}


def family(name: str) -> Family:
    """The registered family `name`; UserError naming the known ones otherwise."""
    if name not in GENERATORS:
        raise UserError(f"generator: unknown family {name!r} (known: {', '.join(GENERATORS)})")
    return GENERATORS[name]


def checkpoint_family(path) -> str:
    """The family recorded in checkpoint directory `path` ("diffusion" for checkpoints older than families)."""
    return model_description(path).get("family", "diffusion")


def load_generator(path) -> nn.Module:
    """The sampled model (EMA weights) of a checkpoint directory, whichever family wrote it."""
    return family(checkpoint_family(path)).load(path)
