"""Crash safety of the files a resume reads: atomic samples, a torn log line, failed writes that name their
file, and one-line errors for bad input files and budgets."""

import errno
import json
import os

import numpy as np
import pytest

from privimage import files, sample
from privimage.cli import main
from privimage.errors import UserError
from privimage.sample import load_samples, save_samples
from privimage.train.runlog import RunLog, read_log


def test_samples_npz_is_atomic(tmp_path, monkeypatch):
    """A kill while samples.npz is written leaves the previous file (or none), never a truncated one."""
    path = tmp_path / "samples.npz"
    x, y = np.zeros((4, 8, 8, 1), np.uint8), np.arange(4)
    save_samples(path, x, y)
    before = path.read_bytes()

    def killed(f, **arrays):
        f.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt  # kill mid-write

    monkeypatch.setattr(sample.np, "savez_compressed", killed)
    with pytest.raises(KeyboardInterrupt):
        save_samples(path, x + 1, y)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["samples.npz"]
    with pytest.raises(KeyboardInterrupt):
        save_samples(tmp_path / "new.npz", x, y)
    assert not (tmp_path / "new.npz").exists()
    monkeypatch.undo()
    np.testing.assert_array_equal(load_samples(path)[0], x)


def test_unreadable_samples_are_one_line(tmp_path):
    path = tmp_path / "samples.npz"
    path.write_bytes(b"")
    with pytest.raises(UserError, match=f"{path}: not a readable samples .npz"):
        load_samples(path)


def test_torn_last_log_line_is_dropped_on_resume(tmp_path):
    lines = [json.dumps({"step": s, "epsilon": 0.1 * s}) for s in (10, 20, 30)]
    (tmp_path / "log.jsonl").write_text("\n".join(lines) + '\n{"step": 40, "eps')  # killed mid-append
    log = RunLog(tmp_path, start_step=20)
    assert (tmp_path / "log.jsonl").read_text() == lines[0] + "\n" + lines[1] + "\n"
    log.write(30, epsilon=3.0)
    assert [r["step"] for _, r in read_log(tmp_path / "log.jsonl")] == [10, 20, 30]


def test_damaged_log_line_before_the_last_is_one_line_naming_the_file(tmp_path):
    (tmp_path / "log.jsonl").write_text('{"step": 10}\nnot json\n{"step": 30}\n')
    with pytest.raises(UserError, match="log.jsonl: line 2 is not a log record"):
        RunLog(tmp_path, start_step=30)


def test_failed_writes_name_their_file(tmp_path, monkeypatch):
    """write() raises ENOSPC without a file name; safetensors reports it as "(os error 28)"."""
    target = tmp_path / "ledger.json"

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files.os, "fsync", full)
    with pytest.raises(OSError, match="No space left") as err:
        files.write_json_atomic(target, {"a": 1})
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(target)
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind
    rust = Exception("Error while serializing: I/O error: No space left on device (os error 28)")
    named = files.naming(rust, target)
    assert isinstance(named, OSError) and named.errno == errno.ENOSPC and named.filename == str(target)
    assert files.naming(ValueError("a bug"), target).__class__ is ValueError  # anything else is left alone


def test_non_utf8_config_is_one_line(tmp_path, capsys):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("privacy:\n  epsilon: 5  # caf\xe9\n".encode("latin-1"))
    assert main(["run", str(path), "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not UTF-8 text" in err[0] and str(path) in err[0]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flags, message", [
    (["--epsilon", "0"], "--epsilon must be a finite number > 0, got 0.0"),
    (["--epsilon", "nan"], "--epsilon must be a finite number > 0, got nan"),
    (["--epsilon", "inf"], "--epsilon must be a finite number > 0, got inf"),
    (["--delta", "1"], "--delta must be in (0, 1), got 1.0"),
])
def test_finetune_budget_is_one_line_before_reading_data(tmp_path, capsys, flags, message):
    argv = ["finetune", "--config", "tiny", "--sensitive", str(tmp_path / "missing"), "--out", str(tmp_path / "ft"),
            "--epsilon", "1", "--delta", "1e-5", *flags]  # argparse keeps the last value of a flag
    assert main(argv) == 1
    assert capsys.readouterr().err.strip() == f"privimage: error: {message}"
    assert not (tmp_path / "ft").exists()

