"""What a run ran on: versions, device, and which data (provenance.json, shown in the report).

Data sources are identified by path, size and modification time. The PUBLIC data (when it is not the
sensitive file) also gets a SHA-256 of its bytes, so anyone can check they hold the same public set.
The sensitive source never gets a content hash: a hash is an exact, un-noised function of the sensitive
images, and whoever holds a candidate dataset (say, the real one without one person's image) could test
which candidate was used, the membership question DP is there to hide. Path, size and mtime let the data
owner find their file again without publishing such a function of its contents. The held-out split
usually lives in the sensitive file, so it is named the same way.
"""

import datetime
import hashlib
import importlib.metadata
import platform
from pathlib import Path

import torch

from privimage import __version__
from privimage.data.cache import fingerprint
from privimage.device import resolve_device

PACKAGES = ("numpy", "scipy", "dp-accounting", "safetensors", "pillow", "cryptography")


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def describe_source(source: str, *, content_hash: bool) -> dict:
    """{"source", ...}: path, size, mtime (and sha256 of the bytes when content_hash) of a data source."""
    path = Path(source)
    if source.startswith(("demo:", "in memory")) or not path.exists():
        return {"source": source}
    st = path.stat()
    modified = datetime.datetime.fromtimestamp(st.st_mtime, datetime.timezone.utc)
    out = {"source": str(path.resolve()), "modified": modified.isoformat(timespec="seconds")}
    if path.is_file():
        out["bytes"] = st.st_size
        if content_hash:
            out["sha256"] = file_sha256(path)
    elif content_hash:
        out["listing_sha256"] = fingerprint(path)[0]  # names, sizes and mtimes of every file in the folder
    return out


def package_versions() -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def provenance(config, device) -> dict:
    """Versions, device and data identity of a run (see the module docstring for what is hashed)."""
    dev = resolve_device(device)
    d = config.data
    return {
        "privimage": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": str(dev),
        "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
        "platform": platform.platform(),
        "packages": package_versions(),
        "data": {
            "sensitive": {**describe_source(d.sensitive, content_hash=False), "split": d.sensitive_split},
            "held_out": {**describe_source(d.sensitive, content_hash=False), "split": d.test_split},
            "public": {**describe_source(d.public, content_hash=d.public != d.sensitive), "split": d.public_split},
        },
    }
