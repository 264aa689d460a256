"""Split names (train / test / val), how they appear as folder names in datasets, and seeded hold-outs."""

import numpy as np

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


def hold_out(n: int, *, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) positions of n images: round(fraction * n) positions, at least one, drawn by `seed`.

    The draw depends only on (n, fraction, seed), never on what the images show: the choice is public,
    so the privacy guarantee of the training part is unchanged, and the held-out images are read only
    to evaluate (CA, FID), never by the semantic query or DP-SGD.

    >>> train, held = hold_out(10, fraction=0.2, seed=0)
    >>> len(train), len(held), sorted(set(train) | set(held)) == list(range(10))
    (8, 2, True)
    """
    if not 0 < fraction < 1:
        raise UserError(f"data.holdout must be a fraction in (0, 1), got {fraction}")
    if n < 2:
        raise UserError(f"data.holdout needs at least 2 sensitive images, got {n}")
    n_held = min(max(1, round(fraction * n)), n - 1)
    held = np.random.default_rng(seed).permutation(n)[:n_held]
    keep = np.ones(n, dtype=bool)
    keep[held] = False
    return np.flatnonzero(keep), np.sort(held)
