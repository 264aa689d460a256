"""ImageSets from what a notebook already holds: numpy / torch arrays, or any torch `Dataset`.

Both end in the one in-memory format every step consumes: x (N, H, W, C) uint8, y (N,) int64.
Accepted image layouts: (N, H, W), (N, H, W, C) or (N, C, H, W) with C in {1, 3}; uint8 in [0, 255]
or floats in [0, 1] (torchvision's ToTensor) or [-1, 1] (our model space), mapped to uint8.

Example:
    >>> images = ImageSet.from_arrays(np.zeros((4, 32, 32, 3), np.uint8), [0, 1, 0, 1], classes=["a", "b"])
    >>> images = ImageSet.from_dataset(torchvision_cifar10, resolution=32)     # doctest: +SKIP
"""

import numpy as np

from privimage.data.imageset import ImageSet
from privimage.data.transform import image_to_array, transform_array
from privimage.errors import UserError


def to_numpy(value) -> np.ndarray:
    """numpy array of a numpy array, torch tensor, PIL image or nested list."""
    if hasattr(value, "detach"):  # torch.Tensor, without importing torch here
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def to_uint8_nhwc(x: np.ndarray, *, where: str) -> np.ndarray:
    """(N, H, W[, C]) or (N, C, H, W), uint8 or float -> (N, H, W, C) uint8."""
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise UserError(f"{where}: images must be (N, H, W), (N, H, W, C) or (N, C, H, W), got shape {x.shape}")
    if x.shape[-1] not in (1, 3) and x.shape[1] in (1, 3):
        x = x.transpose(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C)
    if x.shape[-1] not in (1, 3):
        raise UserError(f"{where}: images need 1 or 3 channels, got shape {x.shape}")
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise UserError(f"{where}: images must be uint8 or float, got {x.dtype}")
    lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 1.0)
    if lo < -1.0001 or hi > 1.0001:
        raise UserError(f"{where}: float images must lie in [0, 1] or [-1, 1], got [{lo:.3g}, {hi:.3g}]")
    unit = (x + 1) / 2 if lo < 0 else x  # [-1, 1] -> [0, 1]
    return np.ascontiguousarray(np.clip(np.rint(unit * 255), 0, 255).astype(np.uint8))


def from_arrays(x, y, *, classes: list[str] | None = None, source: str = "in-memory arrays",
                resolution: int | None = None, channels: int | None = None) -> ImageSet:
    """ImageSet of images `x` and integer labels `y`; class names default to "0", "1", ..."""
    x = to_uint8_nhwc(to_numpy(x), where=source)
    y = to_numpy(y).reshape(-1)
    if len(y) != len(x) or (len(y) and not np.issubdtype(y.dtype, np.integer)):
        raise UserError(f"{source}: need one integer label per image, got {len(y)} labels of {y.dtype} "
                        f"for {len(x)} images")
    if len(x) == 0:
        raise UserError(f"{source}: no images")
    classes = [str(c) for c in classes] if classes is not None else [str(i) for i in range(int(y.max()) + 1)]
    if y.min() < 0 or y.max() >= len(classes):
        raise UserError(f"{source}: labels must lie in 0..{len(classes) - 1}, got {y.min()}..{y.max()}")
    x = transform_array(x, resolution=resolution, channels=channels)
    return ImageSet(x, y.astype(np.int64), classes, source, {"format": "memory"})


def from_dataset(dataset, *, classes: list[str] | None = None, resolution: int | None = None,
                 channels: int | None = None, source: str | None = None) -> ImageSet:
    """ImageSet of a map-style dataset whose items are (image, label); images as PIL, arrays or tensors.

    Class names come from `classes`, else the dataset's own `.classes` (torchvision datasets have one).
    """
    source = source or f"{type(dataset).__name__} ({len(dataset)} items)"
    names = classes if classes is not None else getattr(dataset, "classes", None)
    images, labels = [], []
    for i in range(len(dataset)):
        item = dataset[i]
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise UserError(f"{source}: item {i} is not an (image, label) pair")
        image, label = item[0], item[1]
        if hasattr(image, "convert") and hasattr(image, "size"):  # a PIL image
            images.append(image_to_array(image, resolution=resolution, channels=channels))
        else:
            arr = to_uint8_nhwc(to_numpy(image)[None], where=f"{source} item {i}")[0]
            images.append(transform_array(arr[None], resolution=resolution, channels=channels)[0])
        labels.append(int(to_numpy(label)))
    shapes = {a.shape for a in images}
    if len(shapes) > 1:
        raise UserError(f"{source}: images of different sizes {sorted(shapes)[:2]}; pass resolution=")
    return from_arrays(np.stack(images), np.array(labels, np.int64), classes=names, source=source)
