"""IDX files (MNIST, Fashion-MNIST): '<split>-images-idx3-ubyte[.gz]' with '<split>-labels-idx1-ubyte[.gz]'.

IDX header: two zero bytes, a type code (0x08 = uint8), the number of dimensions, then each dimension as
a big-endian int32; the data follows. Only uint8 files exist for these datasets, so only those are read.
"""

import gzip
import re
import zlib

import numpy as np

from privimage.data.imageset import ImageSet
from privimage.data.transform import transform_array
from privimage.data.tree import FileTree
from privimage.errors import UserError

IDX_PATTERN = re.compile(r"(^|/)([\w.]+?)-(images|labels)[-.]idx([13])-ubyte(\.gz)?$")
FILE_PREFIX = {"train": "train", "test": "t10k"}
FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]


def is_idx(name: str) -> bool:
    return IDX_PATTERN.search(name) is not None


def parse_idx(data: bytes, where: str, ndim: int) -> np.ndarray:
    """Raw IDX bytes -> uint8 array with `ndim` dimensions (3 for images, 1 for labels)."""
    try:
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as err:
        raise UserError(f"{where}: corrupt gzip ({err})") from None
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08 or data[3] != ndim:
        raise UserError(f"{where}: not a uint8 IDX file with {ndim} dimension(s)")
    shape = tuple(int(d) for d in np.frombuffer(data, ">i4", count=ndim, offset=4))
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise UserError(f"{where}: header says {shape} but the file holds {body.size} values (truncated?)")
    return body.reshape(shape)


def idx_pair(tree: FileTree, split: str) -> tuple[str, str]:
    """Names of the images and labels files for `split` in the tree."""
    if split not in FILE_PREFIX:
        raise UserError(f"{tree.origin}: IDX datasets have no {split!r} split (only train and test)")
    images = [f for f in tree.files if (m := IDX_PATTERN.search(f)) and m.group(3) == "images"
              and m.group(2).lower() == FILE_PREFIX[split]]
    if not images:
        raise UserError(f"{tree.origin}: no {FILE_PREFIX[split]}-images-idx3-ubyte[.gz] file for split {split!r}")
    return images[0], labels_for(tree, images[0])


def labels_for(tree: FileTree, images: str) -> str:
    """The labels file beside an images file (same prefix, '-labels-idx1-ubyte', any compression)."""
    m = IDX_PATTERN.search(images)
    stem = images[: m.start(2)] + m.group(2)
    for suffix in ("-labels-idx1-ubyte", "-labels-idx1-ubyte.gz", "-labels.idx1-ubyte"):
        if stem + suffix in tree.files:
            return stem + suffix
    raise UserError(f"{tree.where(images)}: no labels file {stem}-labels-idx1-ubyte[.gz] beside it")


def read_idx(
    tree: FileTree, images: str, labels: str, *, resolution: int | None, channels: int | None
) -> ImageSet:
    x = parse_idx(tree.read(images), tree.where(images), 3)[..., None]  # (N, H, W, 1)
    y = parse_idx(tree.read(labels), tree.where(labels), 1).astype(np.int64)
    if len(x) != len(y):
        raise UserError(f"{tree.where(labels)}: {len(y)} labels for {len(x)} images in {tree.where(images)}")
    n_classes = int(y.max()) + 1 if len(y) else 0
    fashion = "fashion" in str(tree.where(images)).lower() and n_classes <= 10
    classes = FASHION_CLASSES if fashion else [str(i) for i in range(max(n_classes, 10))]
    x = transform_array(x, resolution=resolution, channels=channels)
    return ImageSet(np.ascontiguousarray(x), y, list(classes), meta={"format": "idx", "file": images})
