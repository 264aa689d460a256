"""NumPy .npz files with x (N, H, W[, C]) uint8, y (N,) ints and optional classes (K,) str.

This is also the format `privimage data convert` and the samplers write, so a sample file can be read
back like any dataset. Object arrays are refused (allow_pickle=False): they would run pickled code.

An .npz holds one split. `privimage data convert` records which one in its `meta` (JSON); asking such a
file for another split is refused, because the caller would silently get other images than it asked for
(a converted TRAINING split given as held-out images would make FID an un-noised statistic of the
sensitive data, and CA a score on the training images). A file that records no split answers any split.
"""

import json
import zipfile
from pathlib import Path

import numpy as np

from privimage.data.imageset import ImageSet
from privimage.data.transform import transform_array
from privimage.errors import UserError
from privimage.files import atomic_path


def recorded_split(arrays: dict) -> str | None:
    """The split named in an .npz's `meta` (what write_npz stores), or None when it names none."""
    if "meta" not in arrays or arrays["meta"].ndim != 0:
        return None
    try:
        meta = json.loads(str(arrays["meta"]))
    except ValueError:
        return None
    split = meta.get("split") if isinstance(meta, dict) else None
    return split if isinstance(split, str) else None


def read_npz(path: Path, *, split: str = "train", resolution: int | None, channels: int | None) -> ImageSet:
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise UserError(f"{path}: not a readable .npz file ({err})") from None
    for key in ("x", "y"):
        if key not in arrays:
            raise UserError(f"{path}: missing array {key!r} (found: {', '.join(arrays) or 'none'})")
    held = recorded_split(arrays)
    if held is not None and held != split:
        raise UserError(f"{path}: this .npz holds the {held!r} split (recorded by `privimage data convert`), not "
                        f"{split!r}. Give the {split!r} images as their own file (privimage data convert SOURCE "
                        f"--split {split} --out FILE.npz), or ask for split {held!r}; a run can hold out part of "
                        f"its training images instead (data.holdout)")
    x, y = arrays["x"], arrays["y"]
    if x.dtype != np.uint8:
        raise UserError(f"{path}: x must be uint8 images in [0, 255], got dtype {x.dtype}")
    if x.ndim == 3:
        x = x[..., None]  # (N, H, W) grayscale -> (N, H, W, 1)
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise UserError(f"{path}: x must have shape (N, H, W) or (N, H, W, C) with C in 1, 3; got {x.shape}")
    if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
        raise UserError(f"{path}: y must be {len(x)} integer labels (one per image); got {y.dtype} {y.shape}")
    if "classes" in arrays:
        classes = [str(c) for c in arrays["classes"].tolist()]
    else:
        classes = [str(i) for i in range(int(y.max()) + 1 if len(y) else 0)]
    x = transform_array(x, resolution=resolution, channels=channels)
    meta = {"format": "npz", "recorded_split": held}
    return ImageSet(np.ascontiguousarray(x), y.astype(np.int64), classes, meta=meta)


def write_npz(images: ImageSet, path: Path) -> None:
    """Write x, y, classes (what read_npz reads) plus source and meta, atomically.

    The file appears complete or not at all (temp file + os.replace), so an interrupted write never
    leaves a truncated dataset or cache entry behind.
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(
            f, x=images.x, y=images.y, classes=np.array(images.classes, dtype=str),
            source=np.array(images.source), meta=np.array(json.dumps(images.meta)),
        )
