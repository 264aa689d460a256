"""`privimage data info` and `privimage data convert`: inspect a dataset, or freeze it into one .npz."""

import json
from pathlib import Path

from privimage.data.load import load_images
from privimage.data.npz import write_npz
from privimage.errors import UserError


def register(subparsers) -> None:
    """Add `data info` and `data convert` to the `privimage` parser."""
    data = subparsers.add_parser("data", help="inspect and convert datasets")
    sub = data.add_subparsers(dest="data_command", metavar="COMMAND", required=True)

    info = sub.add_parser("info", help="number of images, classes with counts, resolution, channels")
    _add_load_options(info)
    info.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    info.set_defaults(func=run_info)

    convert = sub.add_parser("convert", help="write the dataset as one .npz (x, y, classes)")
    _add_load_options(convert)
    convert.add_argument("--out", required=True, type=Path, help="output file, must end in .npz")
    convert.set_defaults(func=run_convert)


def _add_load_options(parser) -> None:
    parser.add_argument("path", type=Path, help="folder, archive, CIFAR/IDX/npz file")
    parser.add_argument("--split", default="train", choices=["train", "test", "val"], help="which split")
    parser.add_argument("--resolution", type=int, default=None, help="resize to R x R")
    parser.add_argument("--channels", type=int, default=None, choices=[1, 3], help="1 gray, 3 RGB")
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write the disk cache")


def _load(args):
    return load_images(
        args.path, split=args.split, resolution=args.resolution, channels=args.channels,
        cache=not args.no_cache, progress=True,
    )


def run_info(args) -> int:
    images = _load(args)
    counts = [int(c) for c in images.counts()]
    _, h, w, c = images.x.shape
    if args.json:
        print(json.dumps({"n": len(images), "classes": images.classes, "counts": counts,
                          "height": h, "width": w, "channels": c}))
        return 0
    print(f"{args.path} (split {args.split}): {len(images)} images, {w}x{h}, {c} channel(s), "
          f"{len(images.classes)} classes")
    width = max(len(name) for name in images.classes) if images.classes else 0
    for name, count in zip(images.classes, counts):
        print(f"  {name:<{width}}  {count}")
    return 0


def run_convert(args) -> int:
    if args.out.suffix != ".npz":
        raise UserError(f"{args.out}: output must end in .npz")
    images = _load(args)
    write_npz(images, args.out)
    print(f"wrote {len(images)} images to {args.out}")
    return 0
