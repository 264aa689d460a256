"""Split names (train / test / val) and how they appear as folder names in datasets."""

from privimage.errors import UserError

# split -> folder names that mean it (compared lower-case)
SPLIT_FOLDERS = {
    "train": ("train", "training"),
    "test": ("test", "testing"),
    "val": ("val", "valid", "validation"),
}
ALL_SPLIT_FOLDERS = {name for names in SPLIT_FOLDERS.values() for name in names}


def check_split(split: str) -> str:
    if split not in SPLIT_FOLDERS:
        raise UserError(f"unknown split {split!r}; choose one of {', '.join(SPLIT_FOLDERS)}")
    return split


def is_split_folder(name: str, split: str | None = None) -> bool:
    """Whether a folder name means `split` (or any split when split is None)."""
    return name.lower() in (ALL_SPLIT_FOLDERS if split is None else SPLIT_FOLDERS[split])


def in_split(name: str, split: str) -> bool:
    """Whether a member path belongs to `split`: under its folder, or under no split folder at all.

    Used to skip the other splits' images while streaming a tarball.
    """
    for part in name.split("/")[:-1]:
        if is_split_folder(part):
            return is_split_folder(part, split)
    return True
