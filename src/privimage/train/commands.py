"""CLI of the generator: `privimage pretrain`, `privimage finetune`, `privimage sample`.

    privimage pretrain --data public/ [--selection selection.json] --out run/pretrain --config demo --steps 2000
    privimage finetune --ckpt run/pretrain --sensitive private/ --out run/finetune --epsilon 10 --delta 1e-5 \\
        [--query-ledger run/ledger.json] [--epochs 50 | --steps 300] [--batch 256 --clip 1e-3 --multiplicity 8]
    privimage sample --ckpt run/finetune --n 50000 --out samples.npz [--grid grid.png] [--steps 50]
"""

import argparse
import json
import math
import sys
from pathlib import Path

from privimage import distributed
from privimage.data import load_images
from privimage.errors import UserError
from privimage.files import write_json_atomic
from privimage.generators import checkpoint_family
from privimage.models.edm import EDMPrecond
from privimage.models.gan import generate as gan_generate
from privimage.models.unet import CONFIGS, UNet, UNetConfig, count_parameters
from privimage.privacy.ledger import Ledger, Mechanism
from privimage.sample import SAMPLERS, generate, save_samples
from privimage.train.checkpoint import JSON_FILE, load_checkpoint, load_model
from privimage.train.finetune import FinetuneConfig, calibrate_for_ledger, finetune, plan
from privimage.train.gan_checkpoint import load_gan
from privimage.train.pretrain import PretrainConfig, pretrain
from privimage.device import resolve_device


def new_model(name: str, num_classes: int) -> EDMPrecond:
    """A fresh EDM model from a named U-Net config, with `num_classes` classes (+ the null class)."""
    cfg = UNetConfig.from_dict({**CONFIGS[name].to_dict(), "num_classes": num_classes})
    return EDMPrecond(UNet(cfg))


def _images(path, net_config: UNetConfig, what: str):
    """Read images at the model's resolution and channels."""
    if not Path(path).exists():
        raise UserError(f"{path}: no such {what} dataset")
    return load_images(path, resolution=net_config.img_resolution, channels=net_config.in_channels)


def _pretrain(args) -> int:
    out = Path(args.out)
    resumed = load_checkpoint(out).model(ema=False) if args.resume and (out / JSON_FILE).is_file() else None
    # A resumed run reads the images at its own U-Net's size, whatever --config names.
    images = _images(args.data, resumed.config if resumed else CONFIGS[args.config], "public")
    if args.selection:
        from privimage.semantic.selection import Selection, apply_selection

        images = apply_selection(images, Selection.load(args.selection))
    net = resumed or new_model(args.config, len(images.classes))
    config = PretrainConfig(steps=args.steps, batch_size=args.batch, lr=args.lr, hflip=args.hflip,
                            checkpoint_every=args.checkpoint_every)
    if distributed.is_main():
        print(f"privimage: pre-training a {count_parameters(net):,}-parameter U-Net "
              f"({'resumed from ' + str(out) if resumed else args.config}) on "
              f"{len(images)} images, {len(images.classes)} classes", file=sys.stderr)
    pretrain(net, images, config=config, out_dir=out, seed=args.seed, device=args.device, resume=args.resume)
    if distributed.is_main():
        write_json_atomic(out / "classes.json", images.classes)
    return 0


def _query_ledger(path: Path, query_ledger: str | None, *, delta: float, epsilon: float) -> Ledger:
    """OUT/ledger.json with the budget epsilon; on a first run, the entries of the query ledger copied in."""
    if path.exists() or not query_ledger:
        return Ledger(path, delta=delta, epsilon_budget=epsilon)
    try:
        data = json.loads(Path(query_ledger).read_text())
        entries = [Mechanism(**{k: e[k] for k in ("name", "kind", "noise_multiplier", "sample_rate", "steps")})
                   for e in data["entries"]]
        seed = data["noise_seed"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserError(f"{query_ledger}: not a readable privimage ledger ({err})") from None
    if data["delta"] != delta:
        raise UserError(f"{query_ledger}: written with delta={data['delta']}, but --delta is {delta}")
    ledger = Ledger(path, delta=delta, epsilon_budget=epsilon, noise_seed=seed)
    try:
        for mechanism in entries:
            ledger.charge(mechanism)
    except BaseException:
        path.unlink()  # never leave a ledger that lacks the query: a rerun would not copy it again
        raise
    return ledger


def _check_budget(epsilon: float, delta: float) -> None:
    """One line before any data is read: a budget that no DP run can meet."""
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise UserError(f"--epsilon must be a finite number > 0, got {epsilon}")
    if not 0 < delta < 1:
        raise UserError(f"--delta must be in (0, 1), got {delta}")


def _finetune(args) -> int:
    _check_budget(args.epsilon, args.delta)
    out = Path(args.out)
    resuming = args.resume and (out / JSON_FILE).is_file()
    if resuming:
        net = load_checkpoint(out).model(ema=False)
    elif args.ckpt:
        net = load_model(args.ckpt)  # the pre-trained EMA weights
    else:
        net = None  # built below once the number of classes is known
    sensitive = _images(args.sensitive, net.config if net else CONFIGS[args.config], "sensitive")
    if net is None:
        net = new_model(args.config, len(sensitive.classes))
    if len(sensitive.classes) != net.config.num_classes:
        raise UserError(f"{args.sensitive}: {len(sensitive.classes)} classes, the model has "
                        f"{net.config.num_classes}; pre-train on the selection relabelled to these classes")
    config = FinetuneConfig(epochs=args.epochs, steps=args.steps, batch_size=args.batch, micro_batch=args.micro_batch,
                            clip=args.clip, multiplicity=args.multiplicity, lr=args.lr)
    q, steps = plan(config, len(sensitive))
    ledger = sigma = None  # under torchrun, ranks > 0 hold no ledger: finetune hands them rank 0's sigma
    if distributed.is_main():
        ledger = _query_ledger(out / "ledger.json", args.query_ledger, delta=args.delta, epsilon=args.epsilon)
        sigma, planned_eps = calibrate_for_ledger(ledger, epsilon=args.epsilon, sample_rate=q, steps=steps)
        print(f"privimage: DP fine-tuning: q = {q:.4g}, {steps} steps, sigma = {sigma:.4g} "
              f"(planned epsilon {planned_eps:.4g} <= {args.epsilon})", file=sys.stderr)
    finetune(net, sensitive, config=config, noise_multiplier=sigma, ledger=ledger, out_dir=out, seed=args.seed,
             device=args.device, resume=args.resume)
    if not distributed.is_main():
        return 0
    write_json_atomic(out / "classes.json", sensitive.classes)
    result = {"out": str(out), "epsilon": ledger.epsilon(), "delta": args.delta, "sigma": sigma,
              "sample_rate": q, "steps": steps, "ledger": str(ledger.path),
              "world_size": distributed.world_size()}
    if args.json:
        print(json.dumps(result))
    return 0


def _sample(args) -> int:
    device = resolve_device(args.device)
    if checkpoint_family(args.ckpt) == "gan":  # one pass of G: --steps, --sampler and --guidance do not apply
        x, y = gan_generate(load_gan(args.ckpt), args.n, seed=args.seed, batch_size=args.batch, device=device)
    else:
        net = load_model(args.ckpt)
        x, y = generate(net, args.n, num_classes=net.config.num_classes, steps=args.steps, guidance=args.guidance,
                        seed=args.seed, batch_size=args.batch, sampler=args.sampler, device=device)
    names = Path(args.ckpt) / "classes.json"
    classes = json.loads(names.read_text()) if names.is_file() else None
    if not distributed.is_main():  # every process sampled its block; rank 0 writes them all
        return 0
    save_samples(args.out, x, y, classes=classes, grid=args.grid)
    print(f"privimage: wrote {len(x)} images to {args.out}" + (f" and {args.grid}" if args.grid else ""),
          file=sys.stderr)
    return 0


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return int(text)


def register(subparsers) -> None:
    """Add `pretrain`, `finetune` and `sample` to the `privimage` parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (cuda when present)")

    p = subparsers.add_parser("pretrain", parents=[common], help="pre-train the generator on public images")
    p.add_argument("--data", required=True, help="public dataset (folder, archive, npz ...)")
    p.add_argument("--selection", help="selection.json of `semantic select`: keep and relabel those classes")
    p.add_argument("--out", required=True, help="checkpoint directory")
    p.add_argument("--config", choices=sorted(CONFIGS), default="demo", help="U-Net config")
    p.add_argument("--steps", type=_positive_int, default=PretrainConfig.steps)
    p.add_argument("--batch", type=_positive_int, default=PretrainConfig.batch_size)
    p.add_argument("--lr", type=float, default=PretrainConfig.lr)
    p.add_argument("--hflip", action="store_true", help="random horizontal flips (not for digits or text)")
    p.add_argument("--checkpoint-every", type=_positive_int, default=PretrainConfig.checkpoint_every)
    p.add_argument("--seed", type=int, default=None, help="random seed (default: os.urandom)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.set_defaults(func=_pretrain)

    f = subparsers.add_parser("finetune", parents=[common], help="DP fine-tuning on the sensitive images")
    start = f.add_mutually_exclusive_group(required=True)
    start.add_argument("--ckpt", help="pre-trained checkpoint directory")
    start.add_argument("--config", choices=sorted(CONFIGS), help="no pre-training: a fresh U-Net of this config")
    f.add_argument("--sensitive", required=True, help="sensitive dataset")
    f.add_argument("--out", required=True, help="checkpoint directory; the ledger is OUT/ledger.json")
    f.add_argument("--epsilon", type=float, required=True, help="total epsilon, query included")
    f.add_argument("--delta", type=float, required=True, help="delta, below 1/N")
    f.add_argument("--query-ledger", help="ledger.json of the semantic query, charged to this release too")
    length = f.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=float, default=FinetuneConfig.epochs)
    length.add_argument("--steps", type=_positive_int, default=None, help="noisy steps (instead of --epochs)")
    f.add_argument("--batch", type=_positive_int, default=FinetuneConfig.batch_size, help="expected batch q*N")
    f.add_argument("--micro-batch", type=_positive_int, default=FinetuneConfig.micro_batch)
    f.add_argument("--clip", type=float, default=FinetuneConfig.clip, help="per-example clipping norm C")
    f.add_argument("--multiplicity", type=_positive_int, default=FinetuneConfig.multiplicity, help="K")
    f.add_argument("--lr", type=float, default=FinetuneConfig.lr)
    f.add_argument("--seed", type=int, default=None, help="noise seed, for tests only (default: os.urandom)")
    f.add_argument("--resume", action="store_true", help="continue the run in --out (privacy spent once)")
    f.add_argument("--json", action="store_true", help="print one JSON object")
    f.set_defaults(func=_finetune)

    s = subparsers.add_parser("sample", parents=[common], help="sample images from a checkpoint")
    s.add_argument("--ckpt", required=True, help="checkpoint directory (diffusion or GAN: read from its state.json)")
    s.add_argument("--n", type=_positive_int, required=True, help="number of images (class-balanced)")
    s.add_argument("--out", required=True, help="output .npz (keys x, y)")
    s.add_argument("--grid", help="also write a PNG grid, one row per class")
    s.add_argument("--steps", type=_positive_int, default=50, help="sampler steps (diffusion only)")
    s.add_argument("--sampler", choices=sorted(SAMPLERS), default="heun")
    s.add_argument("--guidance", type=float, default=0.0, help="classifier-free guidance scale")
    s.add_argument("--batch", type=_positive_int, default=256)
    s.add_argument("--seed", type=int, default=0, help="image i uses seed + i")
    s.set_defaults(func=_sample)
