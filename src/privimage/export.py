"""`privimage export`: samples in the layouts other tools read.

    png           OUT/000000.png ... + OUT/labels.csv (index, label, class): the flat folder that
                  pytorch-fid and clean-fid compute FID on
    imagefolder   OUT/<class name>/000000.png ...: torchvision ImageFolder, the official PrivImage code,
                  and `privimage data info` read it back with the class names
    dpimagebench  OUT.npz with x (N, C, H, W) float32 in [0, 1] and y (N,) int64: DPImageBench's gen.npz
    npz           OUT.npz with x (N, H, W, C) uint8, y (N,) int64, classes (K,) str: our own samples format

Samples are post-processing of the DP model, so exporting them costs no privacy.

Example:
    >>> export_samples("runs/demo/privimage/samples.npz", "fid/privimage", format="png")   # doctest: +SKIP
"""

import argparse
import csv
from pathlib import Path

import numpy as np
from PIL import Image

from privimage.data.imageset import ImageSet
from privimage.errors import UserError
from privimage.files import atomic_path
from privimage.sample import load_samples


def read_samples(path: str | Path) -> ImageSet:
    """A samples .npz (or a folder holding samples.npz) as an ImageSet with its class names."""
    path = Path(path)
    if path.is_dir():
        path = path / "samples.npz"
    x, y = load_samples(path)  # checked: one reader of samples files
    with np.load(path, allow_pickle=False) as npz:
        names = [str(c) for c in npz["classes"]] if "classes" in npz.files else None
    classes = names if names is not None else [str(i) for i in range(int(y.max()) + 1)]
    if y.max() >= len(classes):
        raise UserError(f"{path}: labels up to {y.max()} but {len(classes)} class names")
    return ImageSet(x, y, classes, str(path))


def _png(image: np.ndarray, path: Path) -> None:
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(path)


def _fresh_folder(out: Path) -> Path:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out}: exists and is not an empty folder; choose a new --out")
    out.mkdir(parents=True, exist_ok=True)
    return out


def write_png(images: ImageSet, out: Path) -> Path:
    out = _fresh_folder(out)
    with open(out / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["index", "label", "class"])
        for i, (image, label) in enumerate(zip(images.x, images.y)):
            _png(image, out / f"{i:06d}.png")
            writer.writerow([i, int(label), images.classes[label]])
    return out


def write_imagefolder(images: ImageSet, out: Path) -> Path:
    out = _fresh_folder(out)
    for name in images.classes:
        if not name or name in (".", "..") or "/" in name or "\\" in name:
            raise UserError(f"class name {name!r} cannot be a folder name; use --format png or npz")
    for i, (image, label) in enumerate(zip(images.x, images.y)):
        folder = out / images.classes[label]
        folder.mkdir(exist_ok=True)
        _png(image, folder / f"{i:06d}.png")
    return out


def write_dpimagebench(images: ImageSet, out: Path) -> Path:
    x = images.x.transpose(0, 3, 1, 2).astype(np.float32) / 255.0  # (N, C, H, W) in [0, 1]
    with atomic_path(out) as tmp, open(tmp, "wb") as f:
        np.savez(f, x=x, y=images.y.astype(np.int64))
    return out


def write_npz(images: ImageSet, out: Path) -> Path:
    with atomic_path(out) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, x=images.x, y=images.y, classes=np.array(images.classes, dtype=str))
    return out


FORMATS = {"png": write_png, "imagefolder": write_imagefolder, "dpimagebench": write_dpimagebench, "npz": write_npz}


def export_samples(samples: ImageSet | str | Path, out: str | Path, *, format: str) -> Path:
    """Write `samples` (an ImageSet or a samples .npz) to `out` in `format` (see FORMATS); returns out."""
    if format not in FORMATS:
        raise UserError(f"unknown export format {format!r}; choose from {', '.join(FORMATS)}")
    images = samples if isinstance(samples, ImageSet) else read_samples(samples)
    out = Path(out)
    if format in ("dpimagebench", "npz") and out.suffix != ".npz":
        raise UserError(f"{out}: the {format} format is one .npz file; give --out a name ending in .npz")
    out.parent.mkdir(parents=True, exist_ok=True)
    return FORMATS[format](images, out)


def cmd_export(args) -> int:
    out = export_samples(args.samples, args.out, format=args.format)
    print(out)
    return 0


def register(subparsers) -> None:
    """Add `export` to the `privimage` parser."""
    p = subparsers.add_parser("export", help="write samples as PNGs, an ImageFolder, DPImageBench's npz or ours",
                              description=__doc__.split("\n\n")[1],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("samples", help="samples.npz (or a method folder of a run directory that holds one)")
    p.add_argument("--format", required=True, choices=sorted(FORMATS))
    p.add_argument("--out", required=True, help="folder (png, imagefolder) or .npz file (dpimagebench, npz)")
    p.set_defaults(func=cmd_export)
