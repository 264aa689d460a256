"""Messages, progress bars and optional TensorBoard files: how privimage talks while it works.

Library code logs through `logging.getLogger(__name__)` (loggers under "privimage") and never prints;
an application decides what to show. The CLI calls `setup_cli` once: INFO messages as
"privimage: ..." lines on stderr, WARNING only with --quiet, and progress bars off with --no-progress
or --quiet. Progress bars follow tqdm's own switch, the environment variable TQDM_DISABLE=1, which
`progress_enabled` also honours where a caller passes progress=True explicitly.

Only public or noised values are ever logged (see README, "Nothing un-noised is printed").

Example:
    >>> log = logging.getLogger("privimage.mine")
    >>> log.info("4/5 pre-training on %s selected images", f"{12500:,}")
"""

import logging
import os
import sys
from pathlib import Path

ROOT = "privimage"


def progress_enabled(requested: bool = True) -> bool:
    """False when the caller asked for no bars, or TQDM_DISABLE is set (tqdm's own switch)."""
    return bool(requested) and os.environ.get("TQDM_DISABLE", "").strip().lower() in ("", "0", "false", "no")


class CliFormatter(logging.Formatter):
    """"privimage: message", and "privimage: warning: message" for warnings."""

    def format(self, record: logging.LogRecord) -> str:
        level = f"{record.levelname.lower()}: " if record.levelno >= logging.WARNING else ""
        return f"privimage: {level}{super().format(record)}"


class StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time of the record (tests and notebooks replace it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):  # StreamHandler.__init__ assigns one; the property always follows sys.stderr
        pass


def setup_cli(*, quiet: bool = False, progress: bool = True, debug: bool = False) -> None:
    """Route privimage's log records (and Python warnings) to stderr; turn progress bars off if asked."""
    if quiet or not progress:
        os.environ["TQDM_DISABLE"] = "1"  # for every bar, also those of libraries and subprocesses
    logger = logging.getLogger(ROOT)
    logger.setLevel(logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO)
    handler = next((h for h in logger.handlers if isinstance(h, StderrHandler)), None)
    if handler is None:
        handler = StderrHandler()
        handler.setFormatter(CliFormatter())
        logger.addHandler(handler)
    logger.propagate = False
    logging.captureWarnings(True)  # e.g. the delta >= 1/N warning, as one "privimage: ..." line
    warnings_logger = logging.getLogger("py.warnings")
    if handler not in warnings_logger.handlers:
        warnings_logger.addHandler(handler)


def tensorboard_writer(out_dir: str | Path, *, purge_step: int | None = None):
    """A SummaryWriter writing into OUT_DIR/tensorboard when the `tensorboard` package is installed, else None.

    Disabled with PRIVIMAGE_TENSORBOARD=0. No hard dependency: `pip install 'privimage[tensorboard]'`.
    """
    if os.environ.get("PRIVIMAGE_TENSORBOARD", "1").strip().lower() in ("0", "false", "no"):
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard not installed
        return None
    return SummaryWriter(str(Path(out_dir) / "tensorboard"), purge_step=purge_step)
