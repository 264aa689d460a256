"""The `privimage` command line: one subcommand group per area, registered explicitly.

Each area keeps its commands next to its code (`<area>/commands.py` with `register(subparsers)`), so
this file stays a table of contents. Exit codes: 0 ok, 1 data/runtime error, 2 usage error.
"""

import argparse
import errno
import os
import sys

from privimage import __version__
from privimage.audit import commands as audit_commands
from privimage.data import commands as data_commands
from privimage.errors import UserError
from privimage.log import setup_cli
from privimage.evaluate import commands as evaluate_commands
from privimage.privacy import commands as privacy_commands
from privimage.semantic import commands as semantic_commands
from privimage.train import commands as train_commands
from privimage import config_commands, export, pipeline_commands

AREAS = [
    pipeline_commands,  # run, demo
    config_commands,  # init, config show, config list
    data_commands,  # data info
    semantic_commands,  # semantic train, semantic query
    privacy_commands,  # privacy epsilon, privacy calibrate
    train_commands,  # pretrain, finetune, sample
    evaluate_commands,  # evaluate, fid-stats, report
    export,  # export samples as png / imagefolder / dpimagebench / npz
    audit_commands,  # audit: empirical lower bound on epsilon with canaries
]
SWITCHES = ("--debug", "--quiet", "--no-progress")  # global switches, accepted before or after the command


# errno -> advice: file-system failures a user fixes outside privimage (everything else keeps its traceback)
FILE_SYSTEM_ERRORS = {
    errno.ENOSPC: "the disk is full: free space, or point --out / $PRIVIMAGE_CACHE at a larger disk",
    errno.EDQUOT: "the disk quota is exceeded: free space, or point --out / $PRIVIMAGE_CACHE elsewhere",
    errno.EROFS: "the file system is read-only: choose another --out",
    errno.EACCES: "permission denied: choose another --out or fix the permissions",
    errno.EPERM: "operation not permitted: choose another --out or fix the permissions",
    errno.ENOTDIR: "a parent of this path is a file, not a directory",
    errno.EISDIR: "this path is a directory, a file was expected",
    errno.ENOENT: "check the path",
    errno.ENAMETOOLONG: "the path is too long",
    errno.EIO: "input/output error (failing disk or network file system)",
}


def os_error_line(err: OSError) -> str:
    """One line for a file-system failure: the path, what failed and what to do."""
    where = f"{err.filename}: " if err.filename is not None else ""
    return f"{where}{err.strerror or err} ({FILE_SYSTEM_ERRORS[err.errno]})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="privimage",
        description="Differentially private synthetic images by semantic-aware pre-training.",
    )
    parser.add_argument("--version", action="version", version=f"privimage {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    parser.add_argument("--quiet", action="store_true", help="only warnings and the results (no progress bars)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (also: TQDM_DISABLE=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for area in AREAS:
        area.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    argv = [a for a in argv if a in SWITCHES] + [a for a in argv if a not in SWITCHES]  # allowed anywhere
    args, extra = parser.parse_known_args(argv)
    if extra:  # key=value overrides may stand anywhere, also after --flags (argparse stops at the first flag)
        if not hasattr(args, "overrides") or any(item.startswith("-") or "=" not in item for item in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        main_process = join_processes()  # under torchrun: one process group; otherwise nothing happens
    except UserError as err:
        print(f"privimage: error: {err}", file=sys.stderr)
        return 1
    quiet = args.quiet or not main_process  # ranks > 0: warnings and errors only, no progress, no stdout
    setup_cli(quiet=quiet, progress=not args.no_progress and main_process, debug=args.debug)
    try:
        code = int(args.func(args) or 0)
        if code == 0:
            leave_together()
        return code
    except UserError as err:
        if args.debug:
            raise
        print(f"privimage: error: {rank_prefix()}{err}", file=sys.stderr)
        return 1
    except OSError as err:  # the machine, not the code: a full disk, a read-only or missing path
        if args.debug or err.errno not in FILE_SYSTEM_ERRORS:
            raise
        print(f"privimage: error: {os_error_line(err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("privimage: interrupted", file=sys.stderr)
        return 130


def join_processes() -> bool:
    """Join torchrun's process group when launched by torchrun (privimage.distributed); True on rank 0.

    Only rank 0 prints results: the others' stdout goes to /dev/null (their errors still reach stderr).
    Without torchrun's variables torch is not even imported here (`privimage --help` stays fast).
    """
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return True
    from privimage import distributed

    distributed.init()
    if not distributed.is_main():
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the life of the process)
    return distributed.is_main()


def leave_together() -> None:
    """Under torchrun, wait at the end of a successful command until every process has finished it.

    Rank 0 still writes files (samples, checkpoints) after the last collective; the others wait, so no process
    tears down its process group while another still works (the abort once blamed on that had another cause:
    distributed.init). Only after success: a failed process must not wait for peers blocked in another
    collective.
    """
    distributed = sys.modules.get("privimage.distributed")
    if distributed is not None and distributed.active():
        distributed.barrier()


def rank_prefix() -> str:
    """"rank R: " in a process of a distributed run (torchrun interleaves their stderr), else ""."""
    distributed = sys.modules.get("privimage.distributed")
    return f"rank {distributed.rank()}: " if distributed is not None and distributed.world_size() > 1 else ""


if __name__ == "__main__":
    sys.exit(main())
