"""Disk cache of decoded datasets, so a 100k-image tarball is decoded once.

An entry is one uncompressed .npz under $PRIVIMAGE_CACHE (default ~/.cache/privimage/), named by a
hash of the source (absolute path, size, mtime; for a folder every file's) and the load options.
Changing, touching or replacing the source changes the key, so a stale entry is never read.
Entries are written atomically (write_npz), and an unreadable entry counts as a miss.
"""

import hashlib
import json
import logging
import os
import zipfile
from pathlib import Path

import numpy as np

from privimage.data.imageset import ImageSet
from privimage.data.npz import write_npz

log = logging.getLogger(__name__)

VERSION = 1  # bump when a reader's output changes, so old entries are not reused


def cache_dir() -> Path:
    """$PRIVIMAGE_CACHE, default ~/.cache/privimage: decoded datasets, demo glyphs, FID statistics."""
    return Path(os.environ.get("PRIVIMAGE_CACHE") or Path.home() / ".cache" / "privimage")


def fingerprint(path: Path) -> list:
    """What identifies the source's contents cheaply: size and mtime of the file, or of every file in it."""
    if path.is_file():
        st = path.stat()
        return [st.st_size, st.st_mtime_ns]
    h = hashlib.sha256()
    for here, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            st = os.stat(os.path.join(here, name))
            h.update(f"{os.path.relpath(os.path.join(here, name), path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return [h.hexdigest()]


def cache_key(path: Path, options: dict) -> str:
    desc = {"version": VERSION, "path": str(path.resolve()), "source": fingerprint(path), **options}
    return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:32]


def entry_path(key: str) -> Path:
    return cache_dir() / f"{key}.npz"


def load(key: str) -> ImageSet | None:
    """The cached ImageSet, or None on a miss (absent or unreadable entry)."""
    path = entry_path(key)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(str(f["meta"]))
            images = ImageSet(f["x"], f["y"], [str(c) for c in f["classes"]], str(f["source"]), meta)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
        return None
    images.meta.update(cache=str(path), from_cache=True)
    return images


def store(key: str, images: ImageSet) -> None:
    """Save an entry; a cache that cannot be written is reported once and skipped, not fatal."""
    try:
        write_npz(images, entry_path(key))
    except OSError as err:
        log.warning("not caching to %s (%s)", cache_dir(), err)
