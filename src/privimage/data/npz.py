"""NumPy .npz files with x (N, H, W[, C]) uint8, y (N,) ints and optional classes (K,) str.

This is also the format `privimage data convert` and the samplers write, so a sample file can be read
back like any dataset. Object arrays are refused (allow_pickle=False): they would run pickled code.
"""

import json
import zipfile
from pathlib import Path

import numpy as np

from privimage.data.imageset import ImageSet
from privimage.data.transform import transform_array
from privimage.errors import UserError
from privimage.files import atomic_path


def read_npz(path: Path, *, resolution: int | None, channels: int | None) -> ImageSet:
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise UserError(f"{path}: not a readable .npz file ({err})") from None
    for key in ("x", "y"):
        if key not in arrays:
            raise UserError(f"{path}: missing array {key!r} (found: {', '.join(arrays) or 'none'})")
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
    return ImageSet(np.ascontiguousarray(x), y.astype(np.int64), classes, meta={"format": "npz"})


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
