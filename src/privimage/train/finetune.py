"""PrivImage step 5: fine-tune the (pre-trained) diffusion model on the SENSITIVE images with DP-SGD.

Only the EDM-specific loop lives here; the release itself (Poisson batches, clipping, noise, charging,
replay) is `privacy.dpsgd.DPSGD`. Each logical step t: the engine's Poisson batch at rate q =
batch_size / N; per PHYSICAL micro-batch, the diffusion-loss draws (sigma, noise, label drop) from a
generator derived from (key, t, micro-batch), then the per-example EDM losses (each the mean over K
noisy copies, so one example = one clipped contribution) go into `engine.accumulate`; one
`engine.step()` per logical batch. The noise multiplier sigma is given: the caller calibrates it to
the TOTAL budget, query included (`calibrate_for_ledger`).

What is logged (log.jsonl, progress bar): step, epsilon so far (from the ledger), the norm of the NOISY
gradient, and images/s counted with the EXPECTED batch size. Per-example losses of the sensitive data
are un-noised statistics: they are never logged, printed or saved.

Resuming: the only secret is the NoiseSource key in out_dir/noise.key (written 0600 before the first
charge, deleted after the last step's checkpoint, see privacy/noise_key.py); checkpoints hold no
generator state. Steps between the last checkpoint and the kill were already charged; the engine
replays them from the key (same batches, draws and noise: the same release again) without charging
them twice, so the ledger's steps always equal the steps taken.

Example:
    >>> q, steps = plan(FinetuneConfig(epochs=50), len(sensitive))
    >>> sigma, _ = calibrate_for_ledger(ledger, epsilon=10.0, sample_rate=q, steps=steps)
    >>> ema = finetune(net, sensitive, config=FinetuneConfig(), noise_multiplier=sigma, ledger=ledger,
    ...                out_dir="run/finetune")
"""

import logging
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from privimage import distributed
from privimage.data import ImageSet
from privimage.device import resolve_device
from privimage.errors import UserError
from privimage.log import progress_enabled
from privimage.models.edm import EDMLoss, EDMPrecond, to_model_space
from privimage.privacy import noise_key
from privimage.privacy.accountant import calibrate_for_ledger  # noqa: F401 (re-exported: privimage.calibrate_for_ledger)
from privimage.privacy.dpsgd import DPSGD, check_dp_compatible
from privimage.privacy.ledger import Ledger
from privimage.privacy.rng import NoiseSource
from privimage.train.checkpoint import JSON_FILE, Checkpoint, load_checkpoint, save_checkpoint
from privimage.train.ema import make_ema, update_ema
from privimage.train.pretrain import check_images
from privimage.train.runlog import RunLog, log_private_step

log = logging.getLogger(__name__)
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class FinetuneConfig:
    epochs: float = 50.0  # passes over the data in expectation: steps = ceil(epochs * N / batch_size)
    steps: int | None = None  # noisy steps; when set, overrides epochs
    batch_size: int = 256  # EXPECTED logical batch size q * N (Poisson sampling)
    micro_batch: int = 32  # physical micro-batch (examples per forward/backward); bounds memory only
    clip: float = 1e-3  # per-example L2 clipping norm C (paper default)
    multiplicity: int = 8  # noisy copies K per example, averaged inside its loss
    lr: float = 3e-4  # Adam learning rate
    ema_decay: float = 0.999  # EMA of the weights, per noisy step (post-processing, no privacy cost)
    label_dropout: float = 0.1  # probability of training a label as the null class (for guidance)
    checkpoint_every: int = 50  # noisy steps between checkpoints (and one at the end)
    log_every: int = 10  # noisy steps between log.jsonl lines (each computes epsilon so far)
    mechanism_name: str = "finetune"  # ledger entry name
    clipping: str = "fast"  # per-example clipping: fast (per-layer rules) or exact (torch.func reference)
    precision: str = "fp32"  # fp32, or bf16 autocast (fp32 weights, norms and noise; for GPUs)
    channels_last: bool = False  # channels_last memory format for the U-Net (measure: helps on some GPUs)

    def __post_init__(self):
        if self.steps is None and not self.epochs > 0:
            raise ValueError(f"epochs must be > 0, got {self.epochs}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.batch_size < 1 or self.micro_batch < 1 or self.multiplicity < 1:
            raise ValueError("batch_size, micro_batch and multiplicity must be >= 1")
        if not self.clip > 0 or not self.lr > 0:
            raise ValueError(f"clip and lr must be > 0, got clip={self.clip}, lr={self.lr}")
        if self.checkpoint_every < 1 or self.log_every < 1:
            raise ValueError("checkpoint_every and log_every must be >= 1")
        if self.clipping not in ("fast", "exact"):
            raise ValueError(f"finetune.clipping must be fast or exact, got {self.clipping!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"finetune.precision must be one of {sorted(PRECISIONS)}, got {self.precision!r}")


def plan(config: FinetuneConfig, n: int) -> tuple[float, int]:
    """(sample_rate q, noisy steps) for n sensitive examples."""
    if n < 1:
        raise UserError("no sensitive images to fine-tune on")
    if config.batch_size > n:
        raise UserError(f"expected batch size {config.batch_size} > {n} sensitive images; lower --batch")
    q = config.batch_size / n
    return q, config.steps if config.steps is not None else math.ceil(config.epochs / q)


def finetune(net: EDMPrecond, sensitive: ImageSet, *, config: FinetuneConfig, noise_multiplier: float | None,
             ledger: Ledger | None, out_dir, seed: int | None = None, device="auto", resume: bool = False,
             progress: bool = True) -> EDMPrecond:
    """DP fine-tune `net` in place on `sensitive`; returns the (fresh) EMA model.

    seed=None: a fresh 256-bit key (os.urandom); an int only for tests (public, predictable noise).
    Under torchrun every process calls this with the same data and config; rank 0 alone holds the
    ledger, the key file, checkpoints and logs, the others pass ledger=None and take rank 0's noise
    multiplier, key, step and weights (`_share`). Each step: every process draws the SAME Poisson mask
    (same key), keeps its shard, clips per example, the clipped sums are all-reduced (engine's reduce
    hook), and every process adds the SAME noise N(0, (sigma C)^2) drawn from the shared key: the noise
    enters the released sum exactly once, as with one process (noise added per process would count
    world_size times in the sum and the accounting would be wrong), and all processes stay identical
    without a second collective.
    """
    check_images(net, sensitive)
    check_dp_compatible(net)
    device, out_dir = resolve_device(device), Path(out_dir)
    q, steps = plan(config, len(sensitive))
    main, world = distributed.is_main(), distributed.world_size()
    if main and (ledger is None or noise_multiplier is None):
        raise ValueError("finetune needs the ledger and noise_multiplier (on rank 0 of a distributed run)")
    net.to(device).train().requires_grad_(True)  # every weight is fine-tuned, also of a frozen EMA copy (pretrain's)
    distributed.broadcast_module(net)  # every process starts from rank 0's weights
    if config.channels_last:
        net.to(memory_format=torch.channels_last)
    ema = make_ema(net)  # fresh EMA, started from the pre-trained weights
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
    name = config.mechanism_name
    key_file = out_dir / noise_key.KEY_FILE
    start, ckpt, noise = 0, None, None
    if main:
        ledger.open_dpsgd(name, sample_rate=q, noise_multiplier=noise_multiplier, planned_steps=steps)
        if resume and (out_dir / JSON_FILE).is_file():
            ckpt = load_checkpoint(out_dir)
            if ckpt.state["kind"] != "finetune" or ckpt.state["config"] != _json(config):
                raise UserError(f"{out_dir}: holds a different run (kind or config differ); use a new --out")
            if ckpt.state.get("world_size", 1) != world:
                ran = ckpt.state.get("world_size", 1)
                raise UserError(f"{out_dir}: this DP fine-tuning ran with world_size {ran} processes; resume it with "
                                f"the same number (torchrun --nproc_per_node ...), not {world}")
            start = ckpt.step
        charged = _charged(ledger, name)
        if charged < start:
            raise UserError(f"{ledger.path}: {name!r} shows {charged} steps but the checkpoint took {start}")
        if charged > start and ckpt is None:  # fresh randomness: these would be new releases, not replays
            raise UserError(f"{ledger.path}: {name!r} already spent {charged} steps; resume that run (resume, same "
                            f"output directory) or start a new release with a new ledger")
        if start == steps:  # the release is final: nothing to draw, no secret to keep
            noise_key.delete(key_file)
        else:
            noise = noise_key.load_or_create(key_file, charged=charged, test_seed=seed)
            if noise.describe() not in ledger.noise_seed:
                ledger.noise_seed = f"{ledger.noise_seed}; {name}: {noise.describe()}"  # recorded at the next write
    start, ckpt, noise, noise_multiplier = _share(start, ckpt, noise, noise_multiplier, out_dir)
    if ckpt is not None:
        ckpt.restore(net, ema, optimizer)
    if start == steps:
        return ema
    engine = DPSGD(net, optimizer, noise_multiplier=noise_multiplier, max_grad_norm=config.clip,
                   expected_batch_size=config.batch_size, sample_rate=q, noise=noise, ledger=ledger,
                   mechanism_name=name, clipping=config.clipping, autocast_dtype=PRECISIONS[config.precision],
                   reduce=distributed.all_reduce_sum if world > 1 else None)
    loss_fn = EDMLoss(sigma_data=net.sigma_data, label_dropout=config.label_dropout,
                      multiplicity=config.multiplicity)

    def save(step: int) -> None:
        save_checkpoint(out_dir, net=net, ema=ema, optimizer=optimizer, step=step, kind="finetune",
                        config=_json(config),
                        ledger={"path": str(ledger.path), "name": name, "steps": _charged(ledger, name)},
                        extra={"noise_multiplier": noise_multiplier, "sample_rate": q, "delta": ledger.delta,
                               "epsilon": ledger.epsilon() if step == steps else None, "world_size": world})

    if main and ckpt is None:
        save(0)  # the weights before step 1: a run killed before its first checkpoint can still resume
    x_all, y_all = torch.from_numpy(sensitive.x).to(device), torch.from_numpy(sensitive.y).to(device)
    runlog = RunLog(out_dir, start_step=start, timed=False) if main else None  # no speed: it follows the batch sizes
    bar = tqdm(total=steps, initial=start, desc=f"DP fine-tune (sigma={noise_multiplier:.3g}, q={q:.3g})",
               disable=not (progress_enabled(progress) and main))
    for step, idx in engine.batches(len(sensitive), steps=steps, start=start):
        # The logical batch in micro-batches of config.micro_batch, dealt round-robin to the processes; the
        # loss draws of micro-batch c come from (key, step, c): per micro-batch (memory stays bounded by
        # micro_batch) and the same whatever the number of processes.
        chunks = list(enumerate(idx.to(device).split(config.micro_batch)))
        mine = [(c, chunk) for c, chunk in chunks if c % world == distributed.rank()]
        for c, chunk in mine or [(None, idx[:0].to(device))]:  # an empty share still takes its step
            x = to_model_space(x_all[chunk])  # (b, C, H, W); b is never reported
            y = y_all[chunk]
            if c is None:
                engine.accumulate(loss_fn, x, y)
                continue
            draws = loss_fn.draw(x, y, generator=engine.generator(stream="loss", index=c, device=device))
            engine.accumulate(loss_fn, x, y, *draws, index=c)  # draws: sigma, noise, label drop
        stats = engine.step()  # every process: all-reduce of the clipped sums, the same noise, the same update
        update_ema(ema, net, decay=config.ema_decay, step=step)
        bar.update(1)
        if not main:
            continue
        log_private_step(runlog, bar, step=step, last=steps, every=config.log_every, ledger=ledger, stats=stats)
        if step % config.checkpoint_every == 0 or step == steps:
            save(step)
    bar.close()
    if main:
        noise_key.delete(key_file)  # the last checkpoint is written: the release is final
        print(f"privimage: DP fine-tuning done: epsilon = {ledger.epsilon():.4g} at delta = {ledger.delta:g} "
              f"({ledger.path})", file=sys.stderr)
    return ema


def _share(start: int, ckpt, noise: NoiseSource | None, noise_multiplier: float, out_dir: Path):
    """Rank 0's step, checkpoint, key and sigma on every process (one process: unchanged).

    The key goes over the process group, never through a file the others write or a log: only rank 0
    writes noise.key, once.
    """
    if distributed.world_size() == 1:
        return start, ckpt, noise, noise_multiplier
    main = distributed.is_main()
    shared = distributed.broadcast_json({"start": start, "sigma": noise_multiplier, "restored": ckpt is not None,
                                         "optimizer": ckpt.state["optimizer"] if ckpt is not None else None,
                                         "noise": noise.describe() if noise is not None else None})
    key = distributed.broadcast_bytes(noise.secret() if main and noise is not None else None)
    if shared["restored"]:
        weights = distributed.broadcast_tensors(ckpt.weights if main else None)
        tensors = distributed.broadcast_tensors(ckpt.tensors if main else None)
        if not main:
            ckpt = Checkpoint(out_dir, shared["start"], {"optimizer": shared["optimizer"]}, weights, tensors)
    if not main and shared["noise"] is not None:
        noise = NoiseSource.from_secret(key, description=shared["noise"])
    return shared["start"], ckpt, noise, shared["sigma"]


def _charged(ledger: Ledger, name: str) -> int:
    return next(m.steps for m in ledger.entries if m.name == name)


def _json(config: FinetuneConfig) -> dict:
    return asdict(config)
