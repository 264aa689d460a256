"""CIFAR-10 / CIFAR-100 "python version" pickles, from cifar-*-python.tar.gz or the extracted folder.

The pickles are unpickled with an allow-list (numpy arrays and plain containers only): a plain
`pickle.load` of a downloaded file runs whatever code the file names. CIFAR-100 uses the fine labels.
"""

import io
import pickle

import numpy as np

from privimage.data.imageset import ImageSet
from privimage.data.transform import transform_array
from privimage.data.tree import FileTree
from privimage.errors import UserError

CIFAR10_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
CIFAR100_FILES = {"train": ["train"], "test": ["test"]}
MEMBER_NAMES = {"batches.meta", "meta", *CIFAR10_FILES["train"], "test_batch", "train", "test"}
_ALLOWED = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def find_cifar(tree: FileTree) -> tuple[str, str] | None:
    """('cifar10' | 'cifar100', folder prefix) when the tree holds CIFAR pickles, else None."""
    for f in tree.files:
        folder, _, base = f.rpartition("/")
        prefix = folder + "/" if folder else ""
        if base == "batches.meta" or base == "data_batch_1":
            return "cifar10", prefix
        if base == "meta" and prefix + "train" in tree.files:
            return "cifar100", prefix
    return None


def load_pickle(tree: FileTree, name: str) -> dict:
    try:
        obj = _SafeUnpickler(io.BytesIO(tree.read(name)), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise UserError(f"{tree.where(name)}: not a CIFAR pickle ({err})") from None
    if not isinstance(obj, dict):
        raise UserError(f"{tree.where(name)}: not a CIFAR pickle (a {type(obj).__name__}, expected a dict)")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def read_cifar(
    tree: FileTree, kind: str, prefix: str, *, split: str, resolution: int | None, channels: int | None
) -> ImageSet:
    files, meta_name, names_key, label_key = (
        (CIFAR10_FILES, "batches.meta", "label_names", "labels")
        if kind == "cifar10"
        else (CIFAR100_FILES, "meta", "fine_label_names", "fine_labels")
    )
    if split not in files:
        raise UserError(f"{tree.origin}: CIFAR has no {split!r} split (only train and test)")
    meta = load_pickle(tree, prefix + meta_name)
    classes = [n.decode() if isinstance(n, bytes) else str(n) for n in meta.get(names_key, [])]
    xs, ys = [], []
    for base in files[split]:
        name = prefix + base
        if name not in tree.files:
            raise UserError(f"{tree.where(name)}: missing CIFAR batch file")
        batch = load_pickle(tree, name)
        data, labels = np.asarray(batch.get("data")), np.asarray(batch.get(label_key), dtype=np.int64)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
            raise UserError(f"{tree.where(name)}: expected 'data' (N, 3072) uint8 and N '{label_key}'")
        xs.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))  # (N, 32, 32, 3)
        ys.append(labels)
    x = transform_array(np.concatenate(xs), resolution=resolution, channels=channels)
    return ImageSet(np.ascontiguousarray(x), np.concatenate(ys), classes, meta={"format": kind})
