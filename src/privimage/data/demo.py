"""Embedded demo data: the whole pipeline runs on what installed packages ship, with no download.

SENSITIVE = scikit-learn's bundled handwritten digits (1797 images, 8x8, 17 grey levels). They were made by
normalising each digit to fill the height of a 32x32 binary bitmap and counting ink pixels in 4x4 blocks.
PUBLIC = characters 0-9, A-Z, a-z rendered from the fonts matplotlib ships, put through the same
acquisition (fill the height of a 32x32 binary bitmap, 4x4-block ink count to 8x8, 17 levels) with random
affine jitter, pen width, elastic wobble and smoothing, so that pre-training on the digit glyphs
transfers to the handwritten digits (bench/demo_data.py measures how well).

Both are bright ink on a dark background and are upscaled to `resolution` by the same smooth resize.

Example:
    >>> train, test = load_digits_split(resolution=16)
    >>> glyphs = render_glyphs(per_class=300, resolution=16)
    >>> matching_public_classes(train.classes, glyphs.classes)[3]  # public class "3"
    3
"""

import hashlib
import json
import sys
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy.ndimage import gaussian_filter, map_coordinates
from tqdm import tqdm

from privimage.data.cache import cache_dir
from privimage.data.imageset import ImageSet
from privimage.errors import UserError
from privimage.files import atomic_path
from privimage.log import progress_enabled

DIGIT_CLASSES = "0123456789"
DEFAULT_CHARS = DIGIT_CLASSES + "ABCDEFGHIJKLMNOPQRSTUVWXYZ" + "abcdefghijklmnopqrstuvwxyz"

# Text fonts inside matplotlib's data directory (symbol fonts such as cmsy10 map ASCII to symbols).
FONT_FILES = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf",
    "DejaVuSansMono-BoldOblique.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf",
    "DejaVuSerif-BoldItalic.ttf", "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf",
    "STIXGeneralBolIta.ttf", "cmr10.ttf", "cmb10.ttf", "cmti10.ttf", "cmss10.ttf", "cmtt10.ttf",
)

RENDER_VERSION = 4  # bump when rendering changes, so stale caches are not read
LEVELS = 16  # the digits' grey levels are 0..16 (ink pixels in a 4x4 block)
BLOCKS = 8  # the digits are 8x8 blocks
BLOCK_PX = 4  # glyphs are drawn on a 32x32 canvas (as the digits were), then averaged per 4x4 block
FONT_PX = 48  # font size the glyph shapes are rasterised at before the affine warp
MIN_PEN = 0.5  # smallest extra pen width (each side of a stroke), in pixels of the 32x32 canvas
MAX_PEN = 1.0  # largest extra pen width, in pixels of the 32x32 canvas
MIN_FILL = 0.85  # smallest glyph height, as a fraction of the canvas (the digits fill all of it)
MAX_WIDTH = 0.8  # widest a glyph may be, as a fraction of the canvas (the digits are ~6 of 8 blocks)
MAX_STRETCH = 0.5  # glyphs are drawn up to 1.5x wider than the font: handwritten digits are wider
MAX_ROTATION = 10.0  # largest rotation either way, degrees
MAX_SHEAR = 0.2  # largest horizontal shear either way (x += shear * y)
MAX_SMOOTH = 1.0  # largest Gaussian smoothing sigma before thresholding, canvas px
THRESHOLD = 128  # smoothed coverage (of 255) that counts as ink
ELASTIC = 1.5  # standard deviation of the coarse stroke displacements, canvas px


def load_digits_split(*, resolution: int = 16, test_fraction: float = 0.25, seed: int = 0
                      ) -> tuple[ImageSet, ImageSet]:
    """The sensitive demo data: scikit-learn's digits as (train, test), test held out for evaluation.

    The split is stratified and fixed by `seed`: the same indices on every call and every numpy version,
    so the held-out test images are never seen by the query or by training. `meta["index"]` holds the
    positions in `sklearn.datasets.load_digits()`.
    """
    from sklearn.datasets import load_digits

    _check_resolution(resolution)
    if not 0.0 < test_fraction < 1.0:
        raise UserError(f"test_fraction must be in (0, 1), got {test_fraction}")
    digits = load_digits()
    levels = digits.images.astype(np.float32)  # (1797, 8, 8) in 0..16, higher = ink
    labels = digits.target.astype(np.int64)  # (1797,)
    rng = np.random.default_rng(seed)
    is_test = np.zeros(len(labels), dtype=bool)
    for c in range(10):
        members = np.flatnonzero(labels == c)
        is_test[rng.permutation(members)[: round(test_fraction * len(members))]] = True
    x = upscale_levels(levels, resolution)  # (1797, R, R, 1) uint8
    classes = list(DIGIT_CLASSES)
    options = f"resolution={resolution},test_fraction={test_fraction},seed={seed}"
    parts = []
    for split, mask in (("train", ~is_test), ("test", is_test)):
        index = np.flatnonzero(mask)
        parts.append(ImageSet(x[index], labels[index], classes, f"sklearn.load_digits:{split}({options})",
                              {"split": split, "resolution": resolution, "index": index}))
    return parts[0], parts[1]


def digits(split: str, *, resolution: int = 16) -> ImageSet:
    """One split ("train" or "test") of load_digits_split: what the `demo:digits` source names."""
    parts = dict(zip(("train", "test"), load_digits_split(resolution=resolution)))
    if split not in parts:
        raise UserError(f"demo:digits has the splits train and test, not {split!r}")
    return parts[split]


def render_glyphs(*, per_class: int = 300, resolution: int = 16, seed: int = 0, classes: str = DEFAULT_CHARS,
                  cache: bool = True, progress: bool = True) -> ImageSet:
    """The public demo data: `per_class` jittered font renderings of each character in `classes`.

    Deterministic given `seed`; a class's images depend only on (seed, character), so the digits of the
    full 62-class set equal those rendered alone. Cached under $PRIVIMAGE_CACHE (default
    ~/.cache/privimage) as an .npz written atomically; a second call reads the cache.
    """
    _check_resolution(resolution)
    if per_class < 1:
        raise UserError(f"per_class must be at least 1, got {per_class}")
    if not classes or len(set(classes)) != len(classes):
        raise UserError(f"classes must be distinct characters, got {classes!r}")
    fonts = _font_paths()
    options = {"version": RENDER_VERSION, "per_class": per_class, "resolution": resolution, "seed": seed,
               "classes": classes, "fonts": [p.name for p in fonts]}
    key = hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir() / "demo" / f"glyphs-{key}.npz"
    source = f"privimage.demo:glyphs(per_class={per_class},resolution={resolution},seed={seed})"
    meta = {"fonts": options["fonts"], "resolution": resolution, "cache_path": str(path), "from_cache": False}
    cached = _load_npz(path) if cache else None
    if cached is not None and len(cached["y"]) == len(classes) * per_class:
        return ImageSet(cached["x"], cached["y"], list(classes), source, {**meta, "from_cache": True})
    levels = np.empty((len(classes), per_class, BLOCKS, BLOCKS), dtype=np.float32)
    for k, char in enumerate(tqdm(classes, desc="rendering glyphs", disable=not progress_enabled(progress), file=sys.stderr)):
        levels[k] = _render_class(char, fonts, per_class, seed)
    x = upscale_levels(levels.reshape(-1, BLOCKS, BLOCKS), resolution)  # (K * per_class, R, R, 1)
    y = np.repeat(np.arange(len(classes), dtype=np.int64), per_class)
    if cache:
        try:
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                np.savez(f, x=x, y=y)
        except OSError as err:  # a full or read-only cache costs time, not the run (as data/cache.py)
            print(f"privimage: warning: not caching the demo glyphs ({err})", file=sys.stderr)
    return ImageSet(x, y, list(classes), source, meta)


def matching_public_classes(sensitive_classes: list[str], public_classes: list[str]) -> np.ndarray:
    """For each sensitive class, the index of the public class with the same name, or -1.

    This is the ground truth of the demo's selection precision: sensitive digit "3" should select
    public glyph "3". Returns (len(sensitive_classes),) int64.
    """
    position = {name: i for i, name in enumerate(public_classes)}
    return np.array([position.get(name, -1) for name in sensitive_classes], dtype=np.int64)


def digit_mask(classes: list[str]) -> np.ndarray:
    """(len(classes),) bool: which classes are the digits 0-9 (the public classes that help the demo)."""
    return np.array([name in DIGIT_CLASSES and len(name) == 1 for name in classes], dtype=bool)


def upscale_levels(levels: np.ndarray, resolution: int) -> np.ndarray:
    """(N, 8, 8) grey levels 0..16 -> (N, R, R, 1) uint8 in 0..255, by a smooth (bicubic) resize."""
    assert levels.ndim == 3 and levels.shape[1:] == (BLOCKS, BLOCKS), levels.shape
    scaled = levels.astype(np.float32) * (255.0 / LEVELS)
    if resolution != BLOCKS:
        scaled = np.stack([np.asarray(Image.fromarray(img, mode="F").resize(
            (resolution, resolution), Image.Resampling.BICUBIC)) for img in scaled])
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)[..., None]


def _check_resolution(resolution: int) -> None:
    if not isinstance(resolution, int) or resolution < BLOCKS:
        raise UserError(f"resolution must be an integer >= {BLOCKS} (the digits are 8x8), got {resolution!r}")


def _font_paths() -> list[Path]:
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    found = [folder / name for name in FONT_FILES if (folder / name).exists()]
    if not found:
        raise UserError(f"no fonts found in {folder}: the demo needs matplotlib's bundled fonts")
    return found


class _GlyphShapes:
    """Tight high-resolution ink masks per (font, character, stroke), rasterised once and reused."""

    def __init__(self, fonts: list[Path]):
        self.fonts = [ImageFont.truetype(str(p), FONT_PX) for p in fonts]
        self.shapes: dict[tuple[int, str, int], Image.Image] = {}

    def get(self, font: int, char: str, stroke: int) -> Image.Image:
        key = (font, char, stroke)
        if key not in self.shapes:
            face = self.fonts[font]
            left, top, right, bottom = face.getbbox(char, stroke_width=stroke)
            image = Image.new("L", (right - left + 2, bottom - top + 2))
            ImageDraw.Draw(image).text((1 - left, 1 - top), char, fill=255, font=face,
                                       stroke_width=stroke, stroke_fill=255)  # stroke: a thicker pen
            box = image.getbbox()
            if box is None:
                raise UserError(f"font {face.path} renders {char!r} blank")
            self.shapes[key] = image.crop(box)
        return self.shapes[key]


def _render_class(char: str, fonts: list[Path], count: int, seed: int) -> np.ndarray:
    """(count, 8, 8) float32 grey levels 0..16 of `char`, jittered; depends only on (seed, char)."""
    shapes = _GlyphShapes(fonts)
    rng = np.random.default_rng([seed, ord(char)])
    u = rng.random((count, 9))  # one row of uniforms per image, so a prefix does not depend on count
    canvas = BLOCKS * BLOCK_PX
    # Smooth random displacements of the pen from a 4x4 grid of knots, (count, 2, canvas, canvas) px;
    # their own stream, so prefixes still do not depend on count.
    wobble = _smooth_fields(ELASTIC * np.random.default_rng([seed, ord(char), 1]).standard_normal(
        (count, 2, 4, 4)), canvas)
    out = np.empty((count, BLOCKS, BLOCKS), dtype=np.float32)
    for i, (uf, us, ufill, ustretch, urot, ushear, utx, uty, usmooth) in enumerate(u.tolist()):
        font, fill, stretch = int(uf * len(fonts)), MIN_FILL + (1 - MIN_FILL) * ufill, 1 + MAX_STRETCH * ustretch
        # Extra pen width MIN_PEN..MAX_PEN canvas px, whatever the glyph's scale (wide glyphs shrink more).
        pen_px = MIN_PEN + (MAX_PEN - MIN_PEN) * us
        pen = round(pen_px / min(_fit_scale(shapes.get(font, char, 0).size, canvas, fill, stretch)))  # font px
        shape = shapes.get(font, char, pen)
        ink = _warp(shape, canvas, scale=_fit_scale(shape.size, canvas, fill, stretch),
                    angle=np.deg2rad(MAX_ROTATION * (2 * urot - 1)), shear=MAX_SHEAR * (2 * ushear - 1),
                    shift=(BLOCK_PX * (utx - 0.5), BLOCK_PX * (uty - 0.5)))  # up to half a block
        ink = _elastic(np.asarray(ink, dtype=np.float32), wobble[i])  # (canvas, canvas) in 0..255
        # Smooth then threshold: rounder strokes on a binary bitmap, as the digits' 32x32 bitmaps were.
        ink = gaussian_filter(ink, MAX_SMOOTH * usmooth) if usmooth > 0 else ink
        ink = np.where(ink >= THRESHOLD, 255.0, 0.0)  # (canvas, canvas) binary
        blocks = ink.reshape(BLOCKS, BLOCK_PX, BLOCKS, BLOCK_PX)
        out[i] = np.rint(blocks.mean(axis=(1, 3)) * (LEVELS / 255.0))  # ink count per block, 0..16
    return out


def _elastic(ink: np.ndarray, field: np.ndarray) -> np.ndarray:
    """Bend the strokes like a hand does: resample (S, S) `ink` along the (2, S, S) displacement
    `field` (y, x), in canvas px."""
    size = ink.shape[0]
    rows, cols = np.mgrid[0:size, 0:size]  # (S, S) each
    return map_coordinates(ink, [rows + field[0], cols + field[1]], order=1, mode="constant")


def _smooth_fields(coarse: np.ndarray, size: int) -> np.ndarray:
    """(N, 2, 4, 4) coarse displacements -> (N, 2, size, size), bicubically upsampled (separable)."""
    knots = coarse.shape[-1]
    upsample = np.stack([np.asarray(Image.fromarray(np.eye(knots, dtype=np.float32)[:, [j]], mode="F").resize(
        (1, size), Image.Resampling.BICUBIC))[:, 0] for j in range(knots)], axis=1)  # (size, knots)
    return np.einsum("ia,nkab,jb->nkij", upsample, coarse, upsample, optimize=True).astype(np.float32)


def _fit_scale(size: tuple[int, int], canvas: int, fill: float, stretch: float) -> tuple[float, float]:
    """(x, y) scale that makes a glyph's height `fill` of the canvas, as the digits fill theirs, and
    `stretch` times wider than its font shape, but at most MAX_WIDTH of the canvas wide."""
    width, height = size
    scale_y = fill * canvas / height
    scale_x = min(stretch * scale_y, MAX_WIDTH * canvas / width)
    return scale_x, min(scale_y, scale_x)  # a glyph too wide even unstretched shrinks, keeping its aspect


def _warp(shape: Image.Image, canvas: int, *, scale: tuple[float, float], angle: float, shear: float,
          shift: tuple[float, float]) -> Image.Image:
    """Place `shape` scaled, sheared, rotated and shifted on a canvas x canvas image, centred.
    PIL wants the inverse map, output pixel -> input pixel."""
    width, height = shape.size
    cos, sin = np.cos(angle), np.sin(angle)
    rotate_shear = np.array([[cos, -sin], [sin, cos]]) @ np.array([[1.0, shear], [0.0, 1.0]])  # (2, 2)
    forward = rotate_shear @ np.diag(scale)
    inverse = np.linalg.inv(forward)
    centre_out = np.array([canvas / 2 + shift[0], canvas / 2 + shift[1]])
    offset = np.array([width / 2, height / 2]) - inverse @ centre_out
    coeffs = (inverse[0, 0], inverse[0, 1], offset[0], inverse[1, 0], inverse[1, 1], offset[1])
    return shape.transform((canvas, canvas), Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BILINEAR)


def _load_npz(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays in a cache file, or None when it is missing or unreadable (then it is rebuilt)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return None
