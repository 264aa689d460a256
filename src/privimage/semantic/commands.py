"""`privimage semantic train` and `privimage semantic query`: steps 1-3 of PrivImage from the shell.

train: fit the semantic query function on a public dataset's labels (no privacy spent); the recipe of
the device (recipes.py) unless flags override it.
query: DP semantic distribution of a sensitive dataset (charged to DIR/ledger.json), then the
selection of public classes (DIR/selection.json). Its noise is --query-epsilon (the query's own epsilon)
or --sigma-q; every refusal comes before the ledger is charged.
"""

import argparse
import json
import sys
from pathlib import Path

from privimage.data import load_images
from privimage.errors import UserError
from privimage.privacy.ledger import Ledger
from privimage.privacy.rng import noise_source
import dataclasses

from privimage.device import resolve_device
from privimage.semantic.classifier import load_classifier, save_classifier, train_classifier
from privimage.semantic.query import MECHANISM_NAME, dp_semantic_distribution, query_epsilon_of, query_sigma
from privimage.semantic.recipes import recipe_for
from privimage.semantic.selection import UNLABELLED_CLASS, check_selectable, select


def register(subparsers) -> None:
    """Add `semantic train` and `semantic query` to the `privimage` parser."""
    semantic = subparsers.add_parser("semantic", help="semantic query function, DP semantic distribution, selection")
    sub = semantic.add_subparsers(dest="semantic_command", metavar="COMMAND", required=True)

    train = sub.add_parser("train", help="train the semantic query function on PUBLIC labels (unset flags: the "
                                         "device's recipe, see docs/semantic.md)")
    train.add_argument("--public", required=True, type=Path, help="public dataset (folder, archive, ...)")
    train.add_argument("--out", required=True, type=Path, help="checkpoint directory to write")
    train.add_argument("--split", default="train", choices=["train", "test", "val"], help="public split to use")
    train.add_argument("--resolution", type=int, default=None, help="resize public images to R x R first")
    train.add_argument("--channels", type=int, default=None, choices=[1, 3], help="1 gray, 3 RGB")
    train.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N; picks the recipe")
    train.add_argument("--epochs", type=int, help="passes over the public data")
    train.add_argument("--batch-size", type=int, help="images per step")
    train.add_argument("--optimizer", choices=["sgd", "adam"], help="optimizer")
    train.add_argument("--lr", type=float, help="peak learning rate (cosine decay)")
    train.add_argument("--width", type=int, help="channels of the first stage")
    train.add_argument("--stages", type=int, help="resolution stages")
    train.add_argument("--blocks", type=int, help="residual blocks per stage")
    train.add_argument("--stem-stride", type=int, choices=[1, 2], help="2: first convolution halves H and W")
    train.add_argument("--channels-last", action=argparse.BooleanOptionalAction, help="NHWC memory layout")
    train.add_argument("--bf16", action=argparse.BooleanOptionalAction, help="bfloat16 autocast")
    train.add_argument("--no-flip", action="store_true", help="no mirroring augmentation (glyphs, digits)")
    train.add_argument("--val-fraction", type=float, default=0.05, help="public images held out for accuracy")
    train.add_argument("--seed", type=int, default=0, help="seed of initialisation, split and augmentation")
    train.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    train.set_defaults(func=run_train)

    query = sub.add_parser("query", help="DP semantic distribution of SENSITIVE data and the selection")
    query.add_argument("--classifier", required=True, type=Path, help="checkpoint from `semantic train`")
    query.add_argument("--public", required=True, type=Path, help="the public dataset the classifier knows")
    query.add_argument("--sensitive", required=True, type=Path, help="sensitive dataset")
    query.add_argument("--k", type=int, default=5, help="public classes each sensitive image votes for")
    noise = query.add_mutually_exclusive_group(required=True)
    noise.add_argument("--query-epsilon", type=float, help="the query's own epsilon at --delta (sigma_q calibrated)")
    noise.add_argument("--sigma-q", type=float, help="noise multiplier of the query")
    query.add_argument("--out", required=True, type=Path, help="directory for selection.json and ledger.json")
    query.add_argument("--delta", type=float, default=1e-5, help="delta of the ledger")
    query.add_argument("--epsilon-budget", type=float, default=None, help="refuse the query above this epsilon")
    query.add_argument("--fraction", type=float, default=None,
                       help="select classes until about this fraction of the public set (default: k per class)")
    query.add_argument("--unlabelled", action="store_true", help="sensitive labels unknown: one row")
    query.add_argument("--seed", type=int, default=None, help="noise seed (default: os.urandom; tests only)")
    query.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    query.set_defaults(func=run_query)


def run_train(args) -> int:
    device = resolve_device(args.device)
    public = load_images(args.public, split=args.split, resolution=args.resolution, channels=args.channels)
    recipe = recipe_for(device, resolution=public.resolution)
    arch = {"width": args.width, "stages": args.stages, "blocks": args.blocks, "stem_stride": args.stem_stride}
    flags = {"epochs": args.epochs, "batch_size": args.batch_size, "optimizer": args.optimizer, "lr": args.lr,
             "channels_last": args.channels_last, "bf16": args.bf16, "flip": False if args.no_flip else None}
    config = dataclasses.replace(
        recipe, arch=dataclasses.replace(recipe.arch, **{k: v for k, v in arch.items() if v is not None}),
        **{k: v for k, v in flags.items() if v is not None})
    print(f"classifier recipe ({device.type}): {config}", file=sys.stderr)
    model, meta = train_classifier(public, config=config, val_fraction=args.val_fraction, seed=args.seed,
                                   device=str(device))
    save_classifier(args.out, model, meta)
    if args.json:
        print(json.dumps({"checkpoint": str(args.out), "val_accuracy": meta.val_accuracy,
                          "seconds": meta.training.get("seconds"), "device": meta.training.get("device"),
                          "classes": len(meta.classes), "resolution": meta.resolution, "channels": meta.channels}))
    else:
        accuracy = "n/a (no validation split)" if meta.val_accuracy is None else f"{meta.val_accuracy:.4f}"
        print(f"validation accuracy: {accuracy} on {len(meta.classes)} public classes; wrote {args.out}")
    return 0


def run_query(args) -> int:
    model, meta = load_classifier(args.classifier)
    public = load_images(args.public, split="train")
    if public.classes != meta.classes:
        raise UserError(f"{args.public}: its {len(public.classes)} classes are not the {len(meta.classes)} public "
                        f"classes the classifier {args.classifier} was trained on")
    sensitive = load_images(args.sensitive, split="train")
    sensitive_classes = [UNLABELLED_CLASS] if args.unlabelled else sensitive.classes
    check_selectable(k=args.k, num_sensitive=len(sensitive_classes), public_counts=public.counts(),
                     fraction=args.fraction)  # before any privacy is spent
    sigma_q = query_sigma(sigma_q=args.sigma_q, query_epsilon=args.query_epsilon, delta=args.delta)
    query_epsilon = query_epsilon_of(sigma_q, delta=args.delta)
    noise = noise_source(args.seed)
    ledger = Ledger(args.out / "ledger.json", delta=args.delta, epsilon_budget=args.epsilon_budget,
                    noise_seed=noise.describe())
    noisy = dp_semantic_distribution(model, sensitive, k=args.k, sigma_q=sigma_q, noise=noise,
                                     ledger=ledger, labelled=not args.unlabelled, progress=True)
    selection = select(noisy, k=args.k, public_classes=meta.classes, sensitive_classes=sensitive_classes,
                       public_counts=public.counts(), sigma_q=sigma_q, fraction=args.fraction)
    selection.query_epsilon, selection.epsilon_budget = query_epsilon, args.epsilon_budget
    selection.save(args.out / "selection.json")
    epsilon = ledger.epsilon()
    if args.json:
        print(json.dumps({"selection": str(args.out / "selection.json"), "ledger": str(args.out / "ledger.json"),
                          "epsilon": epsilon, "query_epsilon": query_epsilon, "sigma_q": sigma_q,
                          "delta": args.delta, "n_images": selection.n_images,
                          "fraction_of_public": selection.fraction_of_public}))
    else:
        print(selection.summary())
        print(f"{MECHANISM_NAME}: sigma_q={sigma_q:.4g} (query epsilon {query_epsilon:.4g}), k={args.k}; "
              f"ledger epsilon={epsilon:.4g} "
              f"at delta={args.delta:g} ({args.out / 'ledger.json'})")
    return 0
