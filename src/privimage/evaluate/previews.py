"""A few real held-out and selected public images per class (previews.npz), for the report.

The report shows them next to the samples, so a reader sees what the generator should imitate and what
it was pre-trained on. Held-out images are real images: they are NOT covered by the DP guarantee (no
image of the sensitive TRAINING split is ever stored here); the report says so above them.
"""

from pathlib import Path

import numpy as np

from privimage.data.imageset import ImageSet
from privimage.files import atomic_path


def first_per_class(images: ImageSet, per_class: int) -> ImageSet:
    """Up to `per_class` images of every class, in class order."""
    index = np.concatenate([np.flatnonzero(images.y == c)[:per_class] for c in range(len(images.classes))])
    return images.subset(index.astype(np.int64))


def save_previews(path: Path, *, held_out: ImageSet | None, selected: ImageSet | None, per_class: int = 8) -> None:
    """previews.npz: held_out_x/_y (real, held out) and public_x/_y (selected public images, relabelled)."""
    arrays = {}
    for name, images in (("held_out", held_out), ("public", selected)):
        if images is not None and len(images):
            some = first_per_class(images, per_class)
            arrays.update({f"{name}_x": some.x, f"{name}_y": some.y})
            arrays["classes"] = np.array(images.classes, dtype=str)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
