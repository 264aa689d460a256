"""Resize and channel conversion, one code path for decoded files and for in-memory arrays.

Downscaling is antialiased (PIL LANCZOS with `reducing_gap`, which first box-reduces by an integer
factor): a plain strided resize would alias, and the models then learn the aliasing. A non-square image
is center-cropped to a square first, as in StyleGAN's dataset_tool, so shapes are never distorted.
"""

import numpy as np
from PIL import Image

GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}


def native_channels(img: Image.Image) -> int:
    """1 for a grayscale file, 3 for anything else (palette, RGBA and CMYK become RGB)."""
    return 1 if img.mode in GRAY_MODES else 3


def image_to_array(img: Image.Image, *, resolution: int | None, channels: int | None) -> np.ndarray:
    """One PIL image -> (H, W, C) uint8 with C = channels (or the image's own), resized if asked."""
    c = channels or native_channels(img)
    if img.mode.startswith("I;16"):  # 16-bit PNG: keep the top 8 bits rather than clipping at 255
        img = Image.fromarray((np.asarray(img, dtype=np.uint16) >> 8).astype(np.uint8))
    img = img.convert("L" if c == 1 else "RGB")
    if resolution is not None and img.size != (resolution, resolution):
        w, h = img.size
        s = min(w, h)
        box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
        img = img.resize((resolution, resolution), Image.Resampling.LANCZOS, box=box, reducing_gap=3.0)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[:, :, None] if arr.ndim == 2 else arr  # (H, W, C)


def convert_channels(x: np.ndarray, channels: int) -> np.ndarray:
    """(N, H, W, C) uint8 -> (N, H, W, channels); RGB -> gray uses PIL's ITU-R 601-2 luma exactly."""
    if x.shape[-1] == channels:
        return x
    if channels == 3:
        return np.repeat(x, 3, axis=-1)
    rgb = x.astype(np.uint32)
    luma = (rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16
    return luma.astype(np.uint8)[..., None]


def transform_array(x: np.ndarray, *, resolution: int | None, channels: int | None) -> np.ndarray:
    """(N, H, W, C) uint8 -> resized / converted copy; returns x itself when nothing is asked."""
    if channels is not None:
        x = convert_channels(x, channels)
    if resolution is None or x.shape[1:3] == (resolution, resolution):
        return x
    out = np.empty((len(x), resolution, resolution, x.shape[-1]), np.uint8)  # (N, R, R, C)
    for i, img in enumerate(x):
        pil = Image.fromarray(img[:, :, 0] if img.shape[-1] == 1 else img)
        out[i] = image_to_array(pil, resolution=resolution, channels=x.shape[-1])
    return out
