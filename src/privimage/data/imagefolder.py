"""ImageFolder trees: root/<class>/**/<image>, optionally split as root/<split>/<class>/**/<image>.

The class list is the sorted union of class folders over all splits, so a class label means the same
class in train and test even when one split lacks a class. A single top-level folder wrapping the
dataset (as tarballs often have) is skipped.
"""

import numpy as np

from privimage.data.decode import IMAGE_SUFFIXES, decode_files, is_image
from privimage.data.imageset import ImageSet
from privimage.data.splits import SPLIT_FOLDERS, is_split_folder
from privimage.data.tree import FileTree
from privimage.errors import UserError


def visible(name: str) -> bool:
    """Skip hidden files and macOS resource forks ('.DS_Store', '__MACOSX/._x.png')."""
    return not any(p.startswith(".") or p == "__MACOSX" for p in name.split("/"))


def image_names(tree: FileTree) -> list[str]:
    return [f for f in tree.files if is_image(f) and visible(f)]


def find_root(names: list[str]) -> str:
    """The folder holding the class (or split) folders: '' or 'wrapper/' when one folder wraps all."""
    root = ""
    while True:
        tails = [n[len(root) :].split("/") for n in names]
        first = {t[0] for t in tails}
        if len(first) != 1 or min(len(t) for t in tails) < 3 or is_split_folder(tails[0][0]):
            return root
        root += tails[0][0] + "/"


def read_image_folder(
    tree: FileTree, *, split: str, resolution: int | None, channels: int | None, progress: bool
) -> ImageSet:
    names = image_names(tree)
    if not names:
        raise UserError(f"{tree.origin}: no images found (looked for {', '.join(IMAGE_SUFFIXES)})")
    root = find_root(names)
    top = sorted({n[len(root) :].split("/")[0] for n in names if n.count("/") > root.count("/")})
    splits = [t for t in top if is_split_folder(t)]
    if splits:
        chosen = [t for t in splits if is_split_folder(t, split)]
        if not chosen:
            raise UserError(f"{tree.where(root or '.')}: no {split!r} split (found split folders: {', '.join(splits)})")
        class_roots = [root + s + "/" for s in splits]
        base = root + chosen[0] + "/"
    else:
        if split != "train":
            raise UserError(
                f"{tree.origin}: has no split folders ({'/'.join(SPLIT_FOLDERS)}), so only split 'train' "
                f"(all images) exists, not {split!r}"
            )
        class_roots, base = [root], root

    classes = sorted({n[len(r) :].split("/")[0] for r in class_roots for n in names if n.startswith(r)})
    selected = [n for n in names if n.startswith(base)]
    for n in selected:
        if "/" not in n[len(base) :]:
            raise UserError(f"{tree.where(n)}: image is not inside a class folder ({base or 'root'}<class>/...)")
    _check_no_empty_class(tree, base, selected)
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[n[len(base) :].split("/")[0]] for n in selected], np.int64)
    x = decode_files(tree, selected, resolution=resolution, channels=channels, progress=progress)
    return ImageSet(x, y, classes, meta={"format": "imagefolder", "root": base})


def _check_no_empty_class(tree: FileTree, base: str, selected: list[str]) -> None:
    """A class folder without images is almost always a mistake (a failed copy, a typo)."""
    used = {n[len(base) :].split("/")[0] for n in selected}
    for d in sorted(tree.dirs):
        rest = d[len(base) :]
        if d.startswith(base) and rest and "/" not in rest and visible(rest) and rest not in used:
            raise UserError(f"{tree.where(d)}: class folder has no images")

