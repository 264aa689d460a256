"""The run directory: one config, one run at a time, and ledgers that cannot be silently lost.

`open_run_dir(out, config)` is entered only after `preflight` passed, so a refused run writes nothing:
  * it creates OUT and holds an exclusive lock on OUT/.privimage.lock (fcntl.flock) while the run is in
    it: a second run on the same directory exits with one line. The kernel drops the lock when the
    process ends, killed or not, so a crash never leaves a stale lock.
  * config.json is written now, or must already hold the same config; a directory with nothing but a
    config.json (a run that stopped before doing anything) takes the new config.
  * the ledgers are the source of truth. Every artefact that shows privacy was spent (selection.json, a
    pre-training or DP fine-tuning checkpoint or log, samples, metrics) must be paid for by an entry of
    its method's ledger. A missing ledger, or one without that entry, is refused: recreating it would
    forget privacy already spent, and the query would run again.

Example:
    >>> with open_run_dir("runs/demo", config) as out:   # doctest: +SKIP
    ...     ...  # the run; a concurrent `privimage run --out runs/demo` is refused meanwhile
"""

import fcntl
import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path

from privimage.config_io import config_hash, to_dict
from privimage.errors import UserError
from privimage.files import read_json, write_json_atomic
from privimage.run_config import METHODS, RunConfig
from privimage.semantic.query import MECHANISM_NAME as QUERY
from privimage.timings import with_timings

LOCK_FILE = ".privimage.lock"  # hidden, empty, never rewritten: a finished rerun changes no byte
CONFIG_FILE = "config.json"
DP_TRAINING_FILES = ("state.json", "model.safetensors", "log.jsonl")  # exist only once DP-SGD was opened


@contextmanager
def open_run_dir(out_dir, config: RunConfig):
    """Create or reopen the run directory `out_dir` for `config`, locked for this process; yields its Path.

    Under torchrun only rank 0 opens, checks and locks it; the other processes write nothing there.
    """
    out = Path(out_dir)
    if not _main_process():
        yield out
        return
    if out.exists() and not out.is_dir():
        raise UserError(f"run directory {out} exists and is not a directory; choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create run directory {out}: {err.strerror}") from None
    with locked(out):
        resolved = check_config(out, config)
        check_ledgers(out, config)
        if not (out / CONFIG_FILE).is_file() or read_json(out / CONFIG_FILE) != resolved:
            write_json_atomic(out / CONFIG_FILE, resolved)
        yield out


@contextmanager
def locked(out: Path):
    """Hold an exclusive flock on OUT/.privimage.lock; UserError at once if another process holds it."""
    try:
        fd = os.open(out / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise UserError(f"cannot write to run directory {out}: {err.strerror}; choose another --out") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"{out} is in use by another privimage run (it holds {out / LOCK_FILE}); wait for it "
                            f"to finish or choose another --out") from None
        except OSError as err:  # e.g. ENOLCK on a network file system without locks
            raise UserError(f"cannot lock run directory {out}: {err.strerror}; choose an --out on a local disk") \
                from None
        yield
    finally:
        os.close(fd)  # releases the lock


def _main_process() -> bool:
    """False only in a process of rank > 0 of a torchrun job (privimage.distributed, imported only then)."""
    distributed = sys.modules.get("privimage.distributed")
    return distributed is None or distributed.is_main()


def check_config(out: Path, config: RunConfig) -> dict:
    """The config.json content of `config`; UserError if `out` holds results of another config."""
    resolved = {"hash": config_hash(config), "config": to_dict(config)}
    results = [p.name for p in sorted(out.iterdir()) if not p.name.startswith(".") and p.name != CONFIG_FILE]
    if not results:
        return resolved  # nothing done yet: the config may change
    if not (out / CONFIG_FILE).is_file():
        raise UserError(f"{out} holds {results[0]} but no {CONFIG_FILE}: not a privimage run directory, or its "
                        f"config was deleted; choose a new --out")
    previous = read_json(out / CONFIG_FILE).get("hash")
    if previous != resolved["hash"]:
        raise UserError(f"{out} holds a run of a different config (hash {previous}, this config {resolved['hash']}); "
                        f"use a new --out directory")
    return resolved


def check_ledgers(out: Path, config: RunConfig) -> None:
    """UserError when an artefact shows privacy was spent that its method's ledger does not record."""
    finished = _finished_methods(out)
    for method in METHODS:
        evidence = spending_evidence(out, method, finetune_name=config.finetune.mechanism_name,
                                     finished=method in finished)
        if not evidence:
            continue
        path = out / method / "ledger.json"
        if not path.is_file():
            artefact = evidence[0][0]
            raise UserError(f"{path} is missing but {artefact} shows that privacy was spent; a new ledger would "
                            f"forget that spending: restore the ledger or use a new --out")
        names = _entry_names(path)
        for artefact, entry in evidence:
            if entry not in names:
                raise UserError(f"{path} has no {entry!r} entry but {artefact} shows it was spent; the ledger "
                                f"was edited or replaced: restore it or use a new --out")


def spending_evidence(out: Path, method: str, *, finetune_name: str, finished: bool) -> list[tuple[Path, str]]:
    """(artefact, ledger entry that paid for it) of every artefact of `method` found in `out`."""
    mdir = out / method
    dp_training = [mdir / "finetune" / f for f in DP_TRAINING_FILES if (mdir / "finetune" / f).exists()]
    released = [p for p in (mdir / "samples.npz", mdir / "metrics.json") if p.exists()]
    released += [out / "metrics.json"] if finished else []
    evidence = [(p, finetune_name) for p in dp_training + released]
    if method == "privimage":  # everything after the query needs the query's selection
        before = [p for p in (out / "selection.json", mdir / "pretrain") if p.exists()]
        evidence += [(p, QUERY) for p in before + [p for p, _ in evidence]]
    return evidence


def _finished_methods(out: Path) -> set[str]:
    path = out / "metrics.json"
    if not path.is_file():
        return set()
    methods = read_json(path).get("methods")
    return set(methods) if isinstance(methods, dict) else set()


def _entry_names(path: Path) -> set[str]:
    try:
        return {str(e["name"]) for e in json.loads(path.read_text())["entries"]}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserError(f"{path}: not a readable privimage ledger ({err.__class__.__name__}: {err})") from None


def finished_metrics(out: Path, config: RunConfig) -> dict | None:
    """metrics.json of a run that already finished every method of `config` (a rerun is a no-op), else None."""
    if set(_finished_methods(out)) != set(config.methods):
        return None
    return with_timings(read_json(out / "metrics.json"), out)  # the operator's table shows the minutes
