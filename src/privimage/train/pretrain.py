"""PrivImage step 4: pre-train the conditional diffusion model on PUBLIC images (no privacy spent).

The images' labels must already be the sensitive classes: which public images to use and how they are
relabelled is decided by the caller (PrivImage: the semantic selection of step 3). `unconditional=True`
trains every image as the null class and ignores its labels: the all / random baselines, whose public
images have no sensitive label (privimage/baselines.py).
Pre-training is plain Adam on the EDM loss with an EMA of the weights; bf16 autocast on CUDA only.
Under torchrun (privimage.distributed) each process draws its share of the global batch from its own
generator and the gradients of the global mean loss are all-reduced (what DDP does, without wrapping
the module), so `batch_size` is the global batch whatever the number of processes; rank 0 alone
writes checkpoints and logs.

Example:
    >>> net = EDMPrecond(UNet(CONFIGS["demo"]))
    >>> ema = pretrain(net, public, config=PretrainConfig(steps=2000), out_dir="run/pretrain", seed=0)
"""

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from privimage import distributed
from privimage.data import ImageSet
from privimage.errors import UserError
from privimage.log import progress_enabled
from privimage.models.edm import EDMLoss, EDMPrecond, to_model_space
from privimage.privacy.rng import noise_generator
from privimage.train.checkpoint import JSON_FILE, load_checkpoint, save_checkpoint
from privimage.train.ema import make_ema, update_ema
from privimage.device import resolve_device
from privimage.train.runlog import RunLog

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PretrainConfig:
    steps: int = 2000  # optimisation steps
    batch_size: int = 64  # images per step (sampled uniformly with replacement)
    lr: float = 3e-4  # Adam learning rate
    ema_decay: float = 0.999  # EMA of the weights, per step
    hflip: bool = False  # random horizontal flips; leave off for digits and glyphs
    label_dropout: float = 0.1  # probability of training a label as the null class (for guidance)
    multiplicity: int = 1  # noisy copies per image and step
    checkpoint_every: int = 500  # steps between checkpoints (and one at the end)
    log_every: int = 50  # steps between log.jsonl lines

    def __post_init__(self):
        if self.steps < 0 or self.batch_size < 1 or self.lr <= 0 or not 0 <= self.ema_decay < 1:
            raise ValueError(f"invalid pretrain config: {self}")
        if self.checkpoint_every < 1 or self.log_every < 1:
            raise ValueError("checkpoint_every and log_every must be >= 1")


def pretrain(net: EDMPrecond, images: ImageSet, *, config: PretrainConfig, out_dir, seed: int | None = None,
             device="auto", resume: bool = False, progress: bool = True, unconditional: bool = False) -> EDMPrecond:
    """Train `net` in place on `images`; returns the EMA model. Checkpoints and log.jsonl go to out_dir.

    unconditional: every image is trained as the null class (its labels are not read), so the class
    embeddings are left to the conditional fine-tuning.
    """
    check_images(net, images, labels=not unconditional)
    device = resolve_device(device)
    out_dir = Path(out_dir)
    main, world, rank = distributed.is_main(), distributed.world_size(), distributed.rank()
    if config.batch_size < world:
        raise UserError(f"pretrain.batch_size {config.batch_size} < {world} processes: every process needs images")
    local_batch = len(distributed.shard(config.batch_size))  # this process's share of the global batch
    net.to(device).train()
    distributed.broadcast_module(net)  # every process starts from rank 0's weights
    ema = make_ema(net)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
    generator, _ = noise_generator(None if seed is None else seed + rank, device=device)  # own draws per process
    loss_fn = EDMLoss(sigma_data=net.sigma_data, label_dropout=config.label_dropout,
                      multiplicity=config.multiplicity)
    start = 0
    if main and resume and (out_dir / JSON_FILE).is_file():
        ckpt = load_checkpoint(out_dir)
        if ckpt.state["kind"] != "pretrain":
            raise UserError(f"{out_dir}: holds a {ckpt.state['kind']} checkpoint, not pretrain")
        ckpt.restore(net, ema, optimizer, {"batches": generator})
        start = ckpt.step
        logger.info("resuming pre-training at step %d of %d", start, config.steps)
    if world > 1:  # rank 0's step, weights and optimizer everywhere; the others draw new (public) batches
        start = distributed.broadcast_json(start)
        for module in (net, ema):
            distributed.broadcast_module(module)
        distributed.broadcast_optimizer(optimizer)
        if not main and seed is not None:
            generator.manual_seed(seed + rank + 1_000_003 * start)
    x_all = torch.from_numpy(images.x).to(device)  # (N, H, W, C) uint8, converted per batch
    y_all = (torch.full((len(images),), net.null_class, dtype=torch.int64, device=device) if unconditional
             else torch.from_numpy(images.y).to(device))  # (N,)
    log = RunLog(out_dir, start_step=start) if main else None
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    loss_sum = torch.zeros((), device=device)
    bar = tqdm(range(start, config.steps), desc="pretrain", initial=start, total=config.steps,
               disable=not (progress_enabled(progress) and main))
    for step in bar:
        idx = torch.randint(len(images), (local_batch,), generator=generator, device=device)
        x = to_model_space(x_all[idx])  # (B, C, H, W) in [-1, 1]
        if config.hflip:
            flip = torch.rand((len(idx), 1, 1, 1), generator=generator, device=device) < 0.5
            x = torch.where(flip, x.flip(3), x)
        y = y_all[idx]
        with autocast:
            losses = loss_fn(net, x, y, *loss_fn.draw(x, y, generator=generator))  # (local_batch,)
            loss = losses.mean() if world == 1 else losses.sum() / config.batch_size  # share of the global mean
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if world > 1:  # sum over processes = gradient of the global mean loss
            loss = all_reduce_grads(net, loss)
        optimizer.step()
        update_ema(ema, net, decay=config.ema_decay, step=step)
        loss_sum += loss.detach()
        if not main:
            continue
        rate = log.count(config.batch_size)
        done = step + 1
        if done % config.log_every == 0 or done == config.steps:
            n_logged = done % config.log_every or config.log_every
            record = log.write(done, loss=round(loss_sum.item() / n_logged, 5))
            bar.set_postfix(loss=record["loss"], img_s=f"{rate:.0f}")
            loss_sum.zero_()
        if done % config.checkpoint_every == 0 or done == config.steps:
            save_checkpoint(out_dir, net=net, ema=ema, optimizer=optimizer, step=done, kind="pretrain",
                            config=asdict(config) | {"unconditional": unconditional}, generators={"batches": generator},
                            extra={"world_size": world})
    bar.close()
    return ema


def all_reduce_grads(net: torch.nn.Module, loss: torch.Tensor) -> torch.Tensor:
    """All-reduce (sum) every trainable parameter's gradient and the loss; a missing gradient counts as zero."""
    grads = {name: p.grad if p.grad is not None else torch.zeros_like(p)
             for name, p in net.named_parameters() if p.requires_grad}
    reduced = distributed.all_reduce_sum({**grads, "loss": loss.detach().float().reshape(1)})
    for name, p in net.named_parameters():
        if p.requires_grad:
            p.grad = reduced[name]
    return reduced["loss"][0]


def check_images(net: EDMPrecond, images: ImageSet, *, labels: bool = True) -> None:
    """UserError unless the images (and, with `labels`, their labels) fit the model's size and classes."""
    cfg = net.config
    if images.resolution != cfg.img_resolution or images.channels != cfg.in_channels:
        raise UserError(f"{images.source or 'images'}: {images.resolution}x{images.resolution}x{images.channels} "
                        f"images, but the model expects {cfg.img_resolution}x{cfg.img_resolution}x{cfg.in_channels}")
    if len(images) == 0:
        raise UserError(f"{images.source or 'images'}: no images")
    if labels and (images.y.min() < 0 or images.y.max() >= cfg.num_classes):
        raise UserError(f"{images.source or 'images'}: labels outside 0..{cfg.num_classes - 1}")
