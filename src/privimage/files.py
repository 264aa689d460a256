"""Files that survive a kill mid-write: readers see the old file or the new one, never half of one.

Why one place: ledgers, checkpoints, caches, selections, samples and metrics are all read back by a
resumed run, so each is written to a temporary file beside its target, fsynced, then renamed over it.
A write that fails (disk full, read-only directory) raises an OSError that names the target, so the
CLI can report it in one line.
"""

import errno
import json
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path

from privimage.errors import UserError

OS_ERROR_CODE = re.compile(r"\(os error (\d+)\)")  # how Rust libraries (safetensors) report an errno


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside `path`; when the block succeeds it replaces `path` atomically.

    Example:
        with atomic_path("run/ledger.json") as tmp:
            tmp.write_text("{}")
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as err:
        _reraise(err, path)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except Exception as err:
        _reraise(err, path)
    finally:
        Path(tmp).unlink(missing_ok=True)  # gone after a successful replace


def _reraise(err: Exception, path: Path):
    named = naming(err, path)
    if named is err:
        raise err
    raise named from err


def naming(err: Exception, path: Path) -> Exception:
    """`err` as an OSError that names `path` when it is an I/O failure without a file name, else `err`.

    A failed write() (ENOSPC) carries no file name, and safetensors reports "(os error 28)" in a
    SafetensorError; both become OSError(errno, strerror, path).
    """
    if isinstance(err, OSError):
        return err if err.filename is not None or err.errno is None else OSError(err.errno, err.strerror, str(path))
    found = OS_ERROR_CODE.search(str(err))
    if found is None:
        return err
    code = int(found.group(1))
    return OSError(code, os.strerror(code) if code in errno.errorcode else str(err), str(path))


def write_json_atomic(path: str | Path, obj) -> None:
    """Write `obj` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")


def read_json(path: str | Path) -> dict:
    """The JSON object in `path`; a missing or malformed file is a UserError naming it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"file not found: {path}")
    try:
        obj = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj
