"""Tiny-ImageNet layout: wnids.txt, words.txt, train/<wnid>/images/*.JPEG, val/images + annotations.

Classes are the sorted WordNet ids of wnids.txt, named by the first synonym in words.txt
("n01443537 goldfish, Carassius auratus" -> "goldfish"); the ids stay in meta["wnids"]. The official
test split has no labels, so only train and val can be read.
"""

import numpy as np

from privimage.data.decode import decode_files, is_image
from privimage.data.imageset import ImageSet
from privimage.data.tree import FileTree
from privimage.errors import UserError

MARKER = "wnids.txt"
TEXT_FILES = ("wnids.txt", "words.txt", "val_annotations.txt")


def read_text(tree: FileTree, name: str) -> list[str]:
    try:
        return tree.read(name).decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise UserError(f"{tree.where(name)}: not a UTF-8 text file") from None


def class_names(tree: FileTree, root: str, wnids: list[str]) -> list[str]:
    """Human-readable names (first synonym), made unique by appending the wnid on a clash."""
    words = {}
    if root + "words.txt" in tree.files:
        for line in read_text(tree, root + "words.txt"):
            wnid, _, text = line.partition("\t")
            words[wnid.strip()] = text.split(",")[0].strip()
    names = [words.get(w) or w for w in wnids]
    return [f"{n} ({w})" if names.count(n) > 1 else n for n, w in zip(names, wnids)]


def read_tiny_imagenet(
    tree: FileTree, root: str, *, split: str, resolution: int | None, channels: int | None, progress: bool
) -> ImageSet:
    wnids = sorted({line.strip() for line in read_text(tree, root + MARKER) if line.strip()})
    if not wnids:
        raise UserError(f"{tree.where(root + MARKER)}: lists no classes")
    index = {w: i for i, w in enumerate(wnids)}
    if split == "train":
        names, labels = _train(tree, root, index)
    elif split == "val":
        names, labels = _val(tree, root, index)
    else:
        raise UserError(f"{tree.origin}: Tiny-ImageNet's {split!r} split has no labels; use split 'val'")
    if not names:
        raise UserError(f"{tree.where(root + split)}: no images for split {split!r}")
    x = decode_files(tree, names, resolution=resolution, channels=channels, progress=progress)
    y = np.array(labels, np.int64)
    return ImageSet(x, y, class_names(tree, root, wnids), meta={"format": "tiny-imagenet", "wnids": wnids})


def _train(tree: FileTree, root: str, index: dict[str, int]) -> tuple[list[str], list[int]]:
    """train/<wnid>/images/<wnid>_<k>.JPEG; the class is the folder's wnid."""
    base = root + "train/"
    names = [f for f in tree.files if f.startswith(base) and is_image(f)]
    labels = []
    for n in names:
        wnid = n[len(base) :].split("/")[0]
        if wnid not in index:
            raise UserError(f"{tree.where(n)}: class folder {wnid!r} is not listed in {MARKER}")
        labels.append(index[wnid])
    return names, labels


def _val(tree: FileTree, root: str, index: dict[str, int]) -> tuple[list[str], list[int]]:
    """val/images/<file> labelled by val/val_annotations.txt lines '<file>\\t<wnid>\\t<box>'."""
    table = root + "val/val_annotations.txt"
    if table not in tree.files:
        raise UserError(f"{tree.where(table)}: missing, so the val images have no labels")
    present = set(tree.files)
    names, labels = [], []
    for lineno, line in enumerate(read_text(tree, table), 1):
        fields = line.split("\t")
        if not line.strip():
            continue
        if len(fields) < 2:
            raise UserError(f"{tree.where(table)}:{lineno}: expected '<file>\\t<wnid>', got {line!r}")
        name = root + "val/images/" + fields[0].strip()
        if fields[1].strip() not in index:
            raise UserError(f"{tree.where(table)}:{lineno}: label {fields[1]!r} is not listed in {MARKER}")
        if name not in present:
            raise UserError(f"{tree.where(table)}:{lineno}: image {tree.where(name)} does not exist")
        names.append(name)
        labels.append(index[fields[1].strip()])
    return names, labels
