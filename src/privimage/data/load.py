"""`load_images`: one entry point for every supported dataset format, with a disk cache.

Dispatch is by what the path is (a .npz, an IDX file, a folder or an archive) and then by marker files
inside the tree (wnids.txt -> Tiny-ImageNet, dataset.json -> StyleGAN zip, batches.meta / meta ->
CIFAR pickles, *-ubyte -> IDX, else ImageFolder), shallowest marker first.
"""

from pathlib import Path

import numpy as np

from privimage.data import cache as disk_cache
from privimage.data.cifar import MEMBER_NAMES as CIFAR_MEMBERS
from privimage.data.cifar import find_cifar, read_cifar
from privimage.data.dataset_json import MARKER as DATASET_JSON
from privimage.data.dataset_json import read_dataset_json
from privimage.data.decode import Prefetcher, is_image
from privimage.data.idx import idx_pair, is_idx, labels_for, read_idx
from privimage.data.imageset import ImageSet
from privimage.data.imagefolder import read_image_folder
from privimage.data.npz import read_npz
from privimage.data.splits import check_split, in_split
from privimage.data.tinyimagenet import MARKER as WNIDS
from privimage.data.tinyimagenet import TEXT_FILES as TINY_FILES
from privimage.data.tinyimagenet import read_tiny_imagenet
from privimage.data.tree import FileTree, FolderTree, is_archive, open_tree
from privimage.errors import UserError

FORMATS = "an image folder, .tar[.gz|.xz|.bz2], .zip, Tiny-ImageNet, CIFAR pickles, IDX (*-ubyte[.gz]) or .npz"


def load_images(
    path: str | Path,
    *,
    split: str = "train",
    resolution: int | None = None,
    channels: int | None = None,
    cache: bool = True,
    progress: bool = True,
) -> ImageSet:
    """Read a labelled image dataset into an ImageSet: x (N, H, W, C) uint8, y (N,) int64, class names.

    split: "train", "test" or "val" (split folders, CIFAR/IDX files, Tiny-ImageNet val).
    resolution: resize (antialiased, center-cropped to square) to R x R; None keeps the size, which
        must then be the same for every image. channels: 1 (gray) or 3 (RGB); None keeps the files'.
    cache: reuse / write a decoded copy under $PRIVIMAGE_CACHE. progress: tqdm bars on stderr.

    >>> cifar = load_images("cifar10-jpg.tar.xz", split="test")  # doctest: +SKIP
    >>> cifar.x.shape, cifar.classes[:2]  # doctest: +SKIP
    ((10000, 32, 32, 3), ['airplane', 'automobile'])
    """
    path = Path(path).expanduser()
    check_split(split)
    if resolution is not None and (not isinstance(resolution, int) or resolution < 1):
        raise UserError(f"resolution must be a positive integer, got {resolution!r}")
    if channels not in (None, 1, 3):
        raise UserError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")
    if not path.exists():
        raise UserError(f"{path}: no such file or folder")
    options = {"split": split, "resolution": resolution, "channels": channels}
    source = f"{path.resolve()} split={split} resolution={resolution} channels={channels}"
    use_cache = cache and path.suffix.lower() != ".npz"  # an .npz loads as fast as a cache entry
    key = disk_cache.cache_key(path, options) if use_cache else ""
    if use_cache and (hit := disk_cache.load(key)) is not None:
        return hit

    images = _read(path, split=split, resolution=resolution, channels=channels, progress=progress)
    _check_labels(images, path)
    images.source = source
    images.meta.update(options, path=str(path.resolve()))
    if use_cache:
        disk_cache.store(key, images)
    images.meta["from_cache"] = False
    return images


def _read(path: Path, *, split: str, resolution: int | None, channels: int | None, progress: bool) -> ImageSet:
    if path.is_file() and path.suffix.lower() == ".npz":
        return read_npz(path, split=split, resolution=resolution, channels=channels)
    if path.is_file() and is_idx(path.name):
        tree = FolderTree(path.parent, only=[p.name for p in path.parent.iterdir() if is_idx(p.name)])
        return read_idx(tree, path.name, labels_for(tree, path.name), resolution=resolution, channels=channels)
    if not (path.is_dir() or is_archive(path)):
        raise UserError(f"{path}: unknown dataset format; expected {FORMATS}")

    def keep(name: str) -> bool:  # tar members whose bytes a reader may need
        base = name.rpartition("/")[2]
        wanted_image = is_image(name) and in_split(name, split)
        return wanted_image or base in TINY_FILES or base == DATASET_JSON or base in CIFAR_MEMBERS or is_idx(name)

    if path.is_dir() or path.name.lower().endswith(".zip"):  # random access: decode what is selected
        tree = open_tree(path, keep=keep, progress=progress)
    else:  # a tarball streams once: decode its images while it streams
        prefetch = Prefetcher(path, resolution=resolution, channels=channels)
        try:
            tree = open_tree(path, keep=keep, progress=progress, on_member=prefetch.add)
        except BaseException:
            prefetch.cancel()
            raise
        tree.decoded = prefetch.results()
    return _read_tree(tree, split=split, resolution=resolution, channels=channels, progress=progress)


def _read_tree(
    tree: FileTree, *, split: str, resolution: int | None, channels: int | None, progress: bool
) -> ImageSet:
    options = {"resolution": resolution, "channels": channels, "progress": progress}
    marker = _shallowest(tree, WNIDS)
    if marker is not None:
        return read_tiny_imagenet(tree, marker, split=split, **options)
    marker = _shallowest(tree, DATASET_JSON)
    if marker is not None:
        return read_dataset_json(tree, marker, split=split, **options)
    found = find_cifar(tree)
    if found is not None:
        return read_cifar(tree, *found, split=split, resolution=resolution, channels=channels)
    if any(is_idx(f) for f in tree.files):
        images, labels = idx_pair(tree, split)
        return read_idx(tree, images, labels, resolution=resolution, channels=channels)
    return read_image_folder(tree, split=split, **options)


def _shallowest(tree: FileTree, base: str) -> str | None:
    """Folder prefix ('' or 'a/b/') of the least deep file named `base`, or None."""
    hits = [f for f in tree.files if f.rpartition("/")[2] == base]
    if not hits:
        return None
    best = min(hits, key=lambda f: (f.count("/"), f))
    return best[: len(best) - len(base)]


def _check_labels(images: ImageSet, path: Path) -> None:
    if len(images) == 0:
        raise UserError(f"{path}: no images")
    if images.y.min() < 0 or images.y.max() >= len(images.classes):
        bad = images.y[(images.y < 0) | (images.y >= len(images.classes))][0]
        raise UserError(f"{path}: label {bad} is out of range for {len(images.classes)} classes")
    assert images.x.dtype == np.uint8 and images.x.ndim == 4, images.x.shape
