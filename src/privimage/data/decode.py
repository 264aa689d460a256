"""Decode many image files into one (N, H, W, C) uint8 array, in parallel, with a progress bar.

A thread pool, not a process pool: PIL releases the GIL while decoding and resizing, and threads need
no pickling of the bytes (on 2 shared cores processes were slower; see bench/load_data.py). Work is
handed out in chunks so the pool overhead stays small for tiny 32x32 JPEGs.
"""

import io
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image
from tqdm import tqdm

from privimage.data.transform import convert_channels, image_to_array
from privimage.data.tree import FileTree
from privimage.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
CHUNK = 256  # images per task handed to a worker
SERIAL_BELOW = 512  # fewer images than this: decode in the calling thread


def is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def decode_one(data: bytes, where: str, *, resolution: int | None, channels: int | None) -> np.ndarray:
    """Bytes of one image file -> (H, W, C) uint8; a corrupt file raises UserError naming it."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return image_to_array(img, resolution=resolution, channels=channels)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise UserError(f"{where}: cannot decode image ({err})") from None


def decode_files(
    tree: FileTree, names: list[str], *, resolution: int | None, channels: int | None, progress: bool
) -> np.ndarray:
    """Decode `names` from `tree` -> (N, H, W, C) uint8 in the order given.

    Without a target resolution all images must share one size; with channels=None, grayscale files
    are promoted to RGB when the set mixes both.
    """
    if not names:
        raise UserError(f"{tree.origin}: no images to decode")

    def work(chunk: list[str]) -> list[np.ndarray]:
        return [decode_one(tree.read(n), tree.where(n), resolution=resolution, channels=channels) for n in chunk]

    chunks = [names[i : i + CHUNK] for i in range(0, len(names), CHUNK)]
    images: list[np.ndarray] = []
    with tqdm(total=len(names), unit="img", desc="decode", disable=not progress, leave=False) as bar:
        if len(names) < SERIAL_BELOW:
            results = map(work, chunks)
            images = [a for r in results for a in _tick(bar, r)]
        else:
            with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
                images = [a for r in pool.map(work, chunks) for a in _tick(bar, r)]
    return _stack(images, names, tree)


def _tick(bar, result: list) -> list:
    bar.update(len(result))
    return result


def _stack(images: list[np.ndarray], names: list[str], tree: FileTree) -> np.ndarray:
    """List of (H, W, C) -> (N, H, W, C); mixed sizes are a user error naming two files."""
    first = images[0].shape[:2]
    for img, name in zip(images, names):
        if img.shape[:2] != first:
            raise UserError(
                f"{tree.where(name)}: image is {img.shape[1]}x{img.shape[0]} but {tree.where(names[0])} is "
                f"{first[1]}x{first[0]}; pass a resolution (--resolution R) to resize all images"
            )
    c = max(img.shape[2] for img in images)
    out = np.empty((len(images), *first, c), np.uint8)  # (N, H, W, C)
    for i, img in enumerate(images):
        out[i] = convert_channels(img[None], c)[0] if img.shape[2] != c else img
    return out
