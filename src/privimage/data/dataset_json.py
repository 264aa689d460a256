"""StyleGAN / EDM / DPImageBench dataset zips: PNG files plus dataset.json {"labels": [[file, label], ...]}.

Such a zip (made by StyleGAN's dataset_tool.py) has no class names, so classes are "0".."K-1".
"""

import json

import numpy as np

from privimage.data.decode import decode_files
from privimage.data.imageset import ImageSet
from privimage.data.tree import FileTree
from privimage.errors import UserError

MARKER = "dataset.json"


def read_dataset_json(
    tree: FileTree, root: str, *, split: str, resolution: int | None, channels: int | None, progress: bool
) -> ImageSet:
    table = root + MARKER
    if split != "train":
        raise UserError(f"{tree.origin}: a dataset.json archive holds one split ('train'), not {split!r}")
    try:
        labels = json.loads(tree.read(table)).get("labels")
    except (ValueError, AttributeError) as err:
        raise UserError(f"{tree.where(table)}: not a JSON object with 'labels' ({err})") from None
    if not labels:
        raise UserError(f"{tree.where(table)}: has no labels (an unconditional dataset); class labels are needed")
    present = set(tree.files)
    names, y = [], []
    for i, entry in enumerate(labels):
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[1], int) and entry[1] >= 0):
            raise UserError(f"{tree.where(table)}: labels[{i}] is {entry!r}, expected [file, label >= 0]")
        name = root + entry[0]
        if name not in present:
            raise UserError(f"{tree.where(table)}: labels[{i}] names {tree.where(name)}, which does not exist")
        names.append(name)
        y.append(entry[1])
    x = decode_files(tree, names, resolution=resolution, channels=channels, progress=progress)
    classes = [str(k) for k in range(max(y) + 1)]
    return ImageSet(x, np.array(y, np.int64), classes, meta={"format": "dataset.json"})
