"""PrivImage+G step 5: DP fine-tuning of the (pre-trained) GAN on the SENSITIVE images.

Only D reads sensitive images, and only through `privacy.dpsgd.DPSGD`. Each logical step t:
  1. the engine's Poisson batch (rate q = batch_size / N) of real images; D's REAL loss per example
     (hinge + the auxiliary classifier's cross-entropy on the real label) goes into `engine.accumulate` (micro-batches), so each real example's gradient is clipped
     to C on its own, and the engine adds N(0, (sigma C)^2) once and divides by E[B] = q N;
  2. the FAKE term of D's loss, relu(1 + D(G(z), y)), is computed on generated images only: it is a
     function of G and of D's current weights, both already released (post-processing), and of public
     randomness. It is NOT clipped together with the real examples (a real example's clipped
     contribution stays bounded by C, whatever the fakes) and it needs no noise. For the two terms to
     have the same scale, each of E[B] fakes is clipped to the same C and their sum divided by the same
     E[B] (the engine's own clipping, run on public data); it enters as `engine.step(public_grads=...)`,
     added after the noise. The ledger charges exactly one Poisson-subsampled Gaussian step for this.
  3. G's step: the generator loss -D(G(z), y) + ac_weight CE through the updated (private) D; G never sees a real
     image, so it costs nothing more. An EMA of G is what is sampled.
Latents and fake labels of step t come from the release's NoiseSource (stream "<name>/gan", counter t),
drawn before the real batch is touched, so they are independent of the sensitive data and a replayed
step redraws them identically.

Logged (log.jsonl): step, epsilon so far (ledger), the norm of D's NOISY private gradient, images/s
(counted with E[B]). Per-example losses of sensitive data are never logged, printed or saved.
Resuming, kill -9 safety and the noise key are as for diffusion (train/finetune.py): the key lives in
out_dir/noise.key and is deleted when the release is final; checkpoints hold no generator state.

Example:
    >>> q, steps = plan(FinetuneConfig(steps=300, batch_size=128), len(sensitive))
    >>> sigma, _ = calibrate_for_ledger(ledger, epsilon=10.0, sample_rate=q, steps=steps)
    >>> gan = finetune_gan(gan, sensitive, config=..., train=GANTrainConfig(), noise_multiplier=sigma,
    ...                    ledger=ledger, out_dir="run/finetune")
"""

import functools
import sys
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm import tqdm

from privimage.data import ImageSet
from privimage.data.tensors import to_model_space
from privimage.device import resolve_device
from privimage.errors import UserError
from privimage.log import progress_enabled
from privimage.models.gan import GAN, d_fake_loss, d_real_loss, g_loss
from privimage.privacy import noise_key
from privimage.privacy.dpsgd import DPSGD, check_dp_compatible
from privimage.privacy.ledger import Ledger
from privimage.train.checkpoint import JSON_FILE
from privimage.train.ema import make_ema, update_ema
from privimage.train.finetune import FinetuneConfig, plan
from privimage.train.gan_checkpoint import load_gan_checkpoint, restore_gan, save_gan_checkpoint
from privimage.train.gan_pretrain import GANTrainConfig, check_gan_images, fake_batch, optimizers
from privimage.train.runlog import RunLog, log_private_step


def finetune_gan(gan: GAN, sensitive: ImageSet, *, config: FinetuneConfig, train: GANTrainConfig,
                 noise_multiplier: float, ledger: Ledger, out_dir, seed: int | None = None, device="auto",
                 resume: bool = False, progress: bool = True) -> GAN:
    """DP fine-tune `gan` in place on `sensitive`; returns it with G set to the EMA of fine-tuning.

    seed=None: a fresh 256-bit key (os.urandom); an int only for tests (public, predictable noise).
    """
    check_gan_images(gan, sensitive)
    check_dp_compatible(gan.D)
    device, out_dir = resolve_device(device), Path(out_dir)
    q, steps = plan(config, len(sensitive))
    G, D = gan.G, gan.D
    gan.to(device).train().requires_grad_(True)
    ema = make_ema(G)  # fresh EMA of G, started from the pre-trained weights
    opts = optimizers(gan, lr=config.lr, g_lr=train.finetune_g_lr, train=train)  # a slow G keeps its diversity
    name, run_config = config.mechanism_name, asdict(config) | {"gan": asdict(train)}
    ledger.open_dpsgd(name, sample_rate=q, noise_multiplier=noise_multiplier, planned_steps=steps)
    start, restored = 0, resume and (out_dir / JSON_FILE).is_file()
    if restored:
        ckpt = load_gan_checkpoint(out_dir, kind="finetune")
        if ckpt.state["config"] != run_config:
            raise UserError(f"{out_dir}: holds a run with another config; use a new output directory")
        restore_gan(ckpt, gan, ema, opts)
        start = ckpt.step
    charged = next(m.steps for m in ledger.entries if m.name == name)
    if charged < start:
        raise UserError(f"{ledger.path}: {name!r} shows {charged} steps but the checkpoint took {start}")
    if charged > start and not restored:  # fresh randomness: these would be new releases, not replays
        raise UserError(f"{ledger.path}: {name!r} already spent {charged} steps; resume that run (resume, same "
                        f"output directory) or start a new release with a new ledger")
    key_file = out_dir / noise_key.KEY_FILE
    if start == steps:  # the release is final: nothing to draw, no secret to keep
        noise_key.delete(key_file)
        G.load_state_dict(ema.state_dict())
        return gan
    noise = noise_key.load_or_create(key_file, charged=charged, test_seed=seed)
    if noise.describe() not in ledger.noise_seed:
        ledger.noise_seed = f"{ledger.noise_seed}; {name}: {noise.describe()}"  # recorded at the next write
    engine = DPSGD(D, opts["d"], noise_multiplier=noise_multiplier, max_grad_norm=config.clip,
                   expected_batch_size=config.batch_size, sample_rate=q, noise=noise, ledger=ledger,
                   mechanism_name=name, clipping=config.clipping)

    def save(step: int) -> None:
        save_gan_checkpoint(out_dir, gan=gan, ema_g=ema, optimizers=opts, step=step, kind="finetune",
                            config=run_config,
                            ledger={"path": str(ledger.path), "name": name, "steps": engine.charged()},
                            extra={"noise_multiplier": noise_multiplier, "sample_rate": q, "delta": ledger.delta,
                                   "epsilon": ledger.epsilon() if step == steps else None})

    if not restored:
        save(0)  # the weights before step 1: a run killed before its first checkpoint can still resume
    x_all, y_all = torch.from_numpy(sensitive.x).to(device), torch.from_numpy(sensitive.y).to(device)
    n_fake = config.batch_size  # E[B] fakes per step: the fake term has the real term's scale
    real_loss = functools.partial(d_real_loss, ac_weight=train.ac_weight)  # per example: hinge + auxiliary CE
    runlog = RunLog(out_dir, start_step=start, timed=False)  # no speed: it follows the realised batch sizes
    bar = tqdm(total=steps, initial=start, desc=f"DP fine-tune GAN (sigma={noise_multiplier:.3g}, q={q:.3g})",
               disable=not progress_enabled(progress))
    for step, idx in engine.batches(len(sensitive), steps=steps, start=start):
        public = noise.torch_generator(stream=f"{name}/gan", counter=step, device=device)  # not data-dependent
        z_d, y_d = fake_batch(gan, n_fake, generator=public)
        z_g, y_g = fake_batch(gan, n_fake, generator=public)
        idx = idx.to(device)
        for micro in idx.split(config.micro_batch) or (idx,):  # >= 1 chunk: an empty batch still takes its step
            engine.accumulate(real_loss, to_model_space(x_all[micro]), y_all[micro])  # REAL term: clipped, noised
        stats = engine.step(public_grads=fake_term(engine, G, D, z_d, y_d, micro_batch=config.micro_batch))
        generator_step(G, D, opts["g"], z_g, y_g, ac_weight=train.ac_weight)
        update_ema(ema, G, decay=config.ema_decay, step=step)
        bar.update(1)
        log_private_step(runlog, bar, step=step, last=steps, every=config.log_every, ledger=ledger, stats=stats)
        if step % config.checkpoint_every == 0 or step == steps:
            save(step)
    noise_key.delete(key_file)  # the last checkpoint is written: the release is final
    bar.close()
    print(f"privimage: DP fine-tuning (GAN) done: epsilon = {ledger.epsilon():.4g} at delta = {ledger.delta:g} "
          f"({ledger.path})", file=sys.stderr)
    G.load_state_dict(ema.state_dict())
    return gan


def fake_term(engine: DPSGD, G, D, z: torch.Tensor, y: torch.Tensor, *, micro_batch: int) -> dict[str, torch.Tensor]:
    """D's gradient on FAKES as public_grads: sum of per-fake gradients clipped to C, divided by E[B].

    Uses the engine's clipping implementation on generated images only (no sensitive data, no ledger).
    """
    with torch.no_grad():
        x_fake = G(z, y)  # (E[B], C, H, W)
    total: dict[str, torch.Tensor] = {}
    for micro in torch.arange(len(z), device=z.device).split(micro_batch):
        sums, _ = engine.clipping(D, d_fake_loss, (x_fake[micro], y[micro]), max_grad_norm=engine.max_grad_norm)
        for k, s in sums.items():
            total[k] = total[k] + s if k in total else s
    return {k: s / engine.expected_batch_size for k, s in total.items()}


def generator_step(G, D, optimizer: torch.optim.Optimizer, z: torch.Tensor, y: torch.Tensor, *,
                   ac_weight: float) -> None:
    """One Adam step of G on -D(G(z), y) + ac_weight CE; gradients reach G's parameters only (not D's .grad)."""
    loss = g_loss(D, G(z, y), y, ac_weight=ac_weight).mean()
    grads = torch.autograd.grad(loss, list(G.parameters()))
    for p, g in zip(G.parameters(), grads):
        p.grad = g
    optimizer.step()
