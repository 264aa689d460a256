"""The one in-memory image type every reader returns and every step consumes."""

from dataclasses import dataclass, field

import numpy as np


@dataclass
class ImageSet:
    """Images with integer labels.

    x: (N, H, W, C) uint8, C in {1, 3}; y: (N,) int64 with 0 <= y < len(classes).
    `source` records where the images came from and with which options (provenance).
    """

    x: np.ndarray
    y: np.ndarray
    classes: list[str]
    source: str = ""
    meta: dict = field(default_factory=dict)  # free-form provenance details (split, resolution, ...)

    def __post_init__(self):
        assert self.x.ndim == 4 and self.x.dtype == np.uint8, (self.x.shape, self.x.dtype)
        assert self.x.shape[-1] in (1, 3), self.x.shape
        assert self.y.shape == (len(self.x),), (self.y.shape, self.x.shape)
        self.y = self.y.astype(np.int64, copy=False)

    def __len__(self) -> int:
        return len(self.x)

    @property
    def resolution(self) -> int:
        return self.x.shape[1]

    @property
    def channels(self) -> int:
        return self.x.shape[3]

    def counts(self) -> np.ndarray:
        """Images per class, (len(classes),) int64."""
        return np.bincount(self.y, minlength=len(self.classes))

    @classmethod
    def from_arrays(cls, x, y, **kwargs) -> "ImageSet":
        """From numpy / torch images and labels (see `privimage.data.memory.from_arrays`)."""
        from privimage.data.memory import from_arrays

        return from_arrays(x, y, **kwargs)

    @classmethod
    def from_dataset(cls, dataset, **kwargs) -> "ImageSet":
        """From any map-style (image, label) dataset, e.g. a torch Dataset (see `privimage.data.memory`)."""
        from privimage.data.memory import from_dataset

        return from_dataset(dataset, **kwargs)

    def subset(self, index) -> "ImageSet":
        """The images at `index` (array of ints or bool mask), same classes."""
        return ImageSet(self.x[index], self.y[index], list(self.classes), self.source, dict(self.meta))

    def balanced_head(self, n: int) -> "ImageSet":
        """At most `n` images taken class by class in turn (each class's first images, in their order).

        Deterministic and class-balanced, for a cheaper evaluation on a part of a set whose files are
        grouped by class (the first n of CIFAR-10's test split would all be airplanes). `source` names the
        part, so caches keyed on it (FID statistics) tell the parts apart.
        """
        if n >= len(self):
            return self
        rank = np.empty(len(self), dtype=np.int64)  # position of each image within its own class
        for c in np.unique(self.y):
            where = np.flatnonzero(self.y == c)
            rank[where] = np.arange(len(where))
        index = np.lexsort((self.y, rank))[:n]  # by rank, then class: round robin over the classes
        part = self.subset(np.sort(index))
        part.source = f"{self.source}|balanced first {n}"
        return part
