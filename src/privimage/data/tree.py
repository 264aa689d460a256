"""A read-only file tree over a folder, a tarball or a zip, so every layout reader works on all three.

Tarballs are streamed once (`tarfile` mode 'r|*'): LZMA and gzip are sequential, so random access
would decompress the archive again for every member. While streaming we keep the bytes of the members
a reader may need (`keep`) and only the names of the rest; zips and folders are read on demand.
"""

import io
import os
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from privimage.errors import UserError
from privimage.log import progress_enabled

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2", ".tbz2")


def is_archive(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(TAR_SUFFIXES) or name.endswith(".zip")


class FileTree:
    """Relative POSIX names of the files (and folders) under one root, and their bytes."""

    def __init__(self, origin: Path, files: list[str], dirs: set[str]):
        self.origin = origin  # the folder or archive this tree was read from (for messages)
        self.files = sorted(files)  # relative names of every regular file, "a/b/c.png"
        self.dirs = dirs  # relative names of every folder, including implied parents
        self.decoded: dict = {}  # name -> (H, W, C) array or UserError, decoded while streaming (decode.py)

    def read(self, name: str) -> bytes:
        raise NotImplementedError

    def where(self, name: str) -> str:
        """A readable location of one member, for error messages."""
        return f"{self.origin}/{name}" if self.origin.is_dir() else f"{self.origin}:{name}"


class FolderTree(FileTree):
    def __init__(self, root: Path, only: list[str] | None = None):
        """All files under `root`, or just the names in `only` (a file and its siblings)."""
        if only is not None:
            super().__init__(root, list(only), _parents(list(only)))
            return
        files, dirs = [], set()
        for here, subdirs, names in os.walk(root):
            rel = Path(here).relative_to(root).as_posix()
            prefix = "" if rel == "." else rel + "/"
            dirs.update(prefix + d for d in subdirs)
            files.extend(prefix + n for n in names)
        super().__init__(root, files, dirs)

    def read(self, name: str) -> bytes:
        try:
            return (self.origin / name).read_bytes()
        except OSError as err:
            raise UserError(f"{self.where(name)}: cannot read ({err.strerror or err})") from None


class ZipTree(FileTree):
    def __init__(self, path: Path):
        try:
            self.zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as err:
            raise UserError(f"{path}: not a readable zip file ({err})") from None
        names = self.zip.namelist()
        files = [n for n in names if not n.endswith("/")]
        super().__init__(path, files, _parents(files) | {n.rstrip("/") for n in names if n.endswith("/")})

    def read(self, name: str) -> bytes:
        try:
            return self.zip.read(name)
        except (zipfile.BadZipFile, OSError, EOFError) as err:
            raise UserError(f"{self.where(name)}: cannot read from zip ({err})") from None


class MemoryTree(FileTree):
    """A streamed tarball: all names, and the bytes of the kept members not already decoded."""

    def __init__(self, path: Path, files: list[str], dirs: set[str], data: dict[str, bytes]):
        super().__init__(path, files, dirs | _parents(files))
        self.data = data  # member name -> bytes, only for kept members

    def read(self, name: str) -> bytes:
        assert name in self.data, f"{name} was not kept (or was decoded) while streaming"
        return self.data[name]


def open_tree(
    path: Path,
    *,
    keep: Callable[[str], bool],
    progress: bool,
    on_member: Callable[[str, bytes], bool] | None = None,
) -> FileTree:
    """A FileTree for a folder, tarball or zip.

    For a tarball, `keep(name)` picks the members to read; each is offered to `on_member(name, data)`
    first (a decoder working while the stream goes on), and held in memory unless that returns True.
    """
    if path.is_dir():
        return FolderTree(path)
    if path.name.lower().endswith(".zip"):
        return ZipTree(path)
    return _stream_tar(path, keep, progress, on_member or (lambda name, data: False))


def _stream_tar(
    path: Path, keep: Callable[[str], bool], progress: bool, on_member: Callable[[str, bytes], bool]
) -> MemoryTree:
    files, dirs, data = [], set(), {}
    size = path.stat().st_size
    quiet = not progress_enabled(progress) or size < 8 << 20  # no bar for archives that stream in a blink
    with open(path, "rb") as raw, tqdm(
        total=size, unit="B", unit_scale=True, desc=f"read {path.name}", disable=quiet, leave=False
    ) as bar:
        counted = _CountingReader(raw, bar)
        try:
            with tarfile.open(fileobj=counted, mode="r|*") as tar:
                for member in tar:
                    name = _clean(member.name)
                    if member.isdir():
                        dirs.add(name)
                    elif member.isfile() and name:
                        files.append(name)
                        if keep(name):
                            blob = tar.extractfile(member).read()
                            if not on_member(name, blob):
                                data[name] = blob
        except (tarfile.TarError, EOFError, OSError) as err:
            raise UserError(f"{path}: not a readable tar archive ({type(err).__name__}: {err})") from None
    return MemoryTree(path, files, dirs, data)


class _CountingReader(io.RawIOBase):
    """Passes reads through and advances a byte progress bar (the compressed bytes consumed)."""

    def __init__(self, raw, bar):
        self.raw, self.bar = raw, bar

    def readable(self) -> bool:
        return True

    def read(self, n=-1) -> bytes:
        chunk = self.raw.read(n)
        self.bar.update(len(chunk))
        return chunk


def _clean(name: str) -> str:
    """'./a/b/' -> 'a/b' (tar names may carry a leading './' or trailing '/')."""
    while name.startswith("./"):
        name = name[2:]
    return name.strip("/")


def _parents(files: list[str]) -> set[str]:
    dirs = set()
    for name in files:
        parts = name.split("/")[:-1]
        dirs.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    return dirs
