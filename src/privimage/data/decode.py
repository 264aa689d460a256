"""Decode many image files into one (N, H, W, C) uint8 array, in parallel, with a progress bar.

A thread pool, not a process pool: PIL releases the GIL while decoding and resizing, threads need no
pickling of the bytes, and a forked process pool is unsafe once torch has started its own threads.
Work is handed out in chunks so the pool overhead stays small for tiny 32x32 JPEGs. For tarballs,
`Prefetcher` decodes members while the archive is still streaming, so decompression (sequential for
LZMA and gzip) and decoding overlap instead of adding up.
"""

import io
import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from privimage.data.transform import convert_channels, image_to_array
from privimage.data.tree import FileTree
from privimage.errors import UserError
from privimage.log import progress_enabled

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
CHUNK = 256  # images per task handed to a worker
SERIAL_BELOW = 512  # fewer images than this: decode in the calling thread
WORKERS = min(4, os.cpu_count() or 1)


def is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def decode_one(data: bytes, where: str, *, resolution: int | None, channels: int | None) -> np.ndarray:
    """Bytes of one image file -> (H, W, C) uint8; a corrupt file raises UserError naming it."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return image_to_array(img, resolution=resolution, channels=channels)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise UserError(f"{where}: cannot decode image ({err})") from None


class Prefetcher:
    """Decodes the image members of a tarball in a thread pool as they stream past.

    `add` is the tree's `on_member` hook: it takes image members (returns True, so their bytes are not
    kept twice) and leaves the rest. A corrupt image is remembered, not raised, because the layout
    reader may never select it; it is raised when `decode_files` asks for it.
    """

    def __init__(self, origin: Path, *, resolution: int | None, channels: int | None):
        self.origin, self.resolution, self.channels = origin, resolution, channels
        self.pool = ThreadPoolExecutor(max_workers=WORKERS)
        self.batch: list[tuple[str, bytes]] = []
        self.futures: list[Future] = []

    def add(self, name: str, data: bytes) -> bool:
        if not is_image(name):
            return False
        self.batch.append((name, data))
        if len(self.batch) >= CHUNK:
            self.futures.append(self.pool.submit(self._work, self.batch))
            self.batch = []
        return True

    def _work(self, batch: list[tuple[str, bytes]]) -> dict[str, np.ndarray | UserError]:
        out = {}
        for name, data in batch:
            try:
                out[name] = decode_one(data, f"{self.origin}:{name}", resolution=self.resolution, channels=self.channels)
            except UserError as err:
                out[name] = err
        return out

    def results(self) -> dict[str, np.ndarray | UserError]:
        """Wait for every decode; name -> (H, W, C) array, or the UserError of a corrupt file."""
        if self.batch:
            self.futures.append(self.pool.submit(self._work, self.batch))
        decoded = {}
        for future in self.futures:
            decoded.update(future.result())
        self.pool.shutdown()
        return decoded

    def cancel(self) -> None:
        self.pool.shutdown(cancel_futures=True)


def decode_files(
    tree: FileTree, names: list[str], *, resolution: int | None, channels: int | None, progress: bool
) -> np.ndarray:
    """Decode `names` from `tree` (or take them from `tree.decoded`) -> (N, H, W, C) uint8, in order.

    Without a target resolution all images must share one size; with channels=None, grayscale files
    are promoted to RGB when the set mixes both.
    """
    if not names:
        raise UserError(f"{tree.origin}: no images to decode")

    def get(name: str) -> np.ndarray:
        done = tree.decoded.pop(name, None)
        if isinstance(done, UserError):
            raise done
        if done is not None:
            return done
        return decode_one(tree.read(name), tree.where(name), resolution=resolution, channels=channels)

    def work(chunk: list[str]) -> list[np.ndarray]:
        return [get(n) for n in chunk]

    chunks = [names[i : i + CHUNK] for i in range(0, len(names), CHUNK)]
    quiet = not progress_enabled(progress) or len(names) < SERIAL_BELOW
    with tqdm(total=len(names), unit="img", desc="decode", disable=quiet, leave=False) as bar:
        if len(names) < SERIAL_BELOW or all(n in tree.decoded for n in names):
            return _stack(map(work, chunks), names, tree, bar)
        with ThreadPoolExecutor(max_workers=WORKERS) as pool:
            return _stack(pool.map(work, chunks), names, tree, bar)


def _stack(results, names: list[str], tree: FileTree, bar) -> np.ndarray:
    """Chunks of (H, W, C) arrays -> one preallocated (N, H, W, C); mixed sizes name two files."""
    out = None
    i = 0
    for chunk in results:
        for img in chunk:
            if out is None:
                out = np.empty((len(names), *img.shape), np.uint8)  # (N, H, W, C)
            if img.shape[:2] != out.shape[1:3]:
                raise UserError(
                    f"{tree.where(names[i])}: image is {img.shape[1]}x{img.shape[0]} but {tree.where(names[0])} "
                    f"is {out.shape[2]}x{out.shape[1]}; pass a resolution (--resolution R) to resize all images"
                )
            if img.shape[2] > out.shape[3]:  # first colour image in a gray set: promote what came before
                out = convert_channels(out, img.shape[2])
            out[i] = convert_channels(img[None], out.shape[3])[0]
            i += 1
        bar.update(len(chunk))
    assert out is not None and i == len(names), (i, len(names))
    return out
