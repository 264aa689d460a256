"""`privimage semantic train` and `privimage semantic query`: steps 1-3 of PrivImage from the shell.

train: fit the semantic query function on a public dataset's labels (no privacy spent).
query: DP semantic distribution of a sensitive dataset (charged to DIR/ledger.json), then the
selection of public classes (DIR/selection.json).
"""

import json
from pathlib import Path

from privimage.data import load_images
from privimage.errors import UserError
from privimage.privacy.ledger import Ledger
from privimage.privacy.rng import noise_source
from privimage.semantic.classifier import ClassifierConfig, load_classifier, save_classifier, train_classifier
from privimage.semantic.network import ResNetConfig
from privimage.semantic.query import MECHANISM_NAME, dp_semantic_distribution
from privimage.semantic.selection import check_selectable, select

UNLABELLED_CLASS = "all"  # the one sensitive class of unlabelled data


def register(subparsers) -> None:
    """Add `semantic train` and `semantic query` to the `privimage` parser."""
    semantic = subparsers.add_parser("semantic", help="semantic query function, DP semantic distribution, selection")
    sub = semantic.add_subparsers(dest="semantic_command", metavar="COMMAND", required=True)

    defaults = ClassifierConfig()
    train = sub.add_parser("train", help="train the semantic query function on PUBLIC labels")
    train.add_argument("--public", required=True, type=Path, help="public dataset (folder, archive, ...)")
    train.add_argument("--out", required=True, type=Path, help="checkpoint directory to write")
    train.add_argument("--split", default="train", choices=["train", "test", "val"], help="public split to use")
    train.add_argument("--resolution", type=int, default=None, help="resize public images to R x R first")
    train.add_argument("--channels", type=int, default=None, choices=[1, 3], help="1 gray, 3 RGB")
    train.add_argument("--epochs", type=int, default=defaults.epochs, help="passes over the public data")
    train.add_argument("--batch-size", type=int, default=defaults.batch_size, help="images per step")
    train.add_argument("--optimizer", default=defaults.optimizer, choices=["sgd", "adam"], help="optimizer")
    train.add_argument("--lr", type=float, default=defaults.lr, help="peak learning rate (cosine decay)")
    train.add_argument("--width", type=int, default=defaults.arch.width, help="channels of the first stage")
    train.add_argument("--stages", type=int, default=defaults.arch.stages, help="resolution stages")
    train.add_argument("--blocks", type=int, default=defaults.arch.blocks, help="residual blocks per stage")
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
    query.add_argument("--sigma-q", type=float, required=True, help="noise multiplier of the query")
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
    public = load_images(args.public, split=args.split, resolution=args.resolution, channels=args.channels)
    config = ClassifierConfig(
        arch=ResNetConfig(width=args.width, stages=args.stages, blocks=args.blocks), epochs=args.epochs,
        batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr, flip=not args.no_flip,
    )
    model, meta = train_classifier(public, config=config, val_fraction=args.val_fraction, seed=args.seed)
    save_classifier(args.out, model, meta)
    if args.json:
        print(json.dumps({"checkpoint": str(args.out), "val_accuracy": meta.val_accuracy,
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
    noise = noise_source(args.seed)
    ledger = Ledger(args.out / "ledger.json", delta=args.delta, epsilon_budget=args.epsilon_budget,
                    noise_seed=noise.describe())
    noisy = dp_semantic_distribution(model, sensitive, k=args.k, sigma_q=args.sigma_q, noise=noise,
                                     ledger=ledger, labelled=not args.unlabelled, progress=True)
    selection = select(noisy, k=args.k, public_classes=meta.classes, sensitive_classes=sensitive_classes,
                       public_counts=public.counts(), sigma_q=args.sigma_q, fraction=args.fraction)
    selection.save(args.out / "selection.json")
    epsilon = ledger.epsilon()
    if args.json:
        print(json.dumps({"selection": str(args.out / "selection.json"), "ledger": str(args.out / "ledger.json"),
                          "epsilon": epsilon, "delta": args.delta, "n_images": selection.n_images,
                          "fraction_of_public": selection.fraction_of_public}))
    else:
        print(selection.summary())
        print(f"{MECHANISM_NAME}: sigma_q={args.sigma_q:g}, k={args.k}; ledger epsilon={epsilon:.4g} "
              f"at delta={args.delta:g} ({args.out / 'ledger.json'})")
    return 0
