"""Never spend twice, and a finished run stays as it is: the run-directory lock (two real processes), the
ledger as the source of truth (a deleted or edited ledger is refused, never recreated), one-line errors for
damaged files, a no-op rerun that changes no byte, and `data.holdout` end to end (the ledger's N)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from privimage import pipeline, rundir
from privimage.cli import main
from privimage.errors import UserError
from privimage.run_config import load_run_config

TINY_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"
# The tiny config with a seeded hold-out instead of the demo's test split. Epsilon 3: sigma is calibrated
# (once per process, cached) 2x faster than at 10.
ARGS = [str(TINY_CONFIG), "privacy.seed=0", "privacy.epsilon=3", "data.holdout=0.2"]
N_TRAIN = 1347 - 269  # the demo's training split minus round(0.2 * 1347) held-out images
SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def cache(cache_dir, monkeypatch):
    monkeypatch.setenv("PRIVIMAGE_CACHE", str(cache_dir))


@pytest.fixture(scope="module")
def finished(tmp_path_factory, cache_dir):
    """A finished tiny run (privimage + none) with data.holdout; the query's input size is recorded."""
    out = tmp_path_factory.mktemp("finished") / "run"
    seen = []
    real_query = pipeline.dp_semantic_distribution
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PRIVIMAGE_CACHE", str(cache_dir))
        mp.setattr(pipeline, "dp_semantic_distribution",
                   lambda model, sensitive, **kw: seen.append(len(sensitive)) or real_query(model, sensitive, **kw))
        assert main(["run", *ARGS, "--out", str(out), "--device", "cpu"]) == 0
    return out, seen


def copy_of(finished, tmp_path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(finished[0], out)  # copy2: mtimes kept
    return out


def snapshot(out: Path) -> dict:
    """Every file's bytes and mtime."""
    return {str(p.relative_to(out)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(out.rglob("*")) if p.is_file()}


def rerun(out: Path, capsys) -> tuple[int, str]:
    code = main(["run", *ARGS, "--out", str(out), "--device", "cpu"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("privimage: ")]
    assert "Traceback" not in err
    return code, "\n".join(lines)


def test_holdout_run_reads_only_the_training_part(finished):
    out, seen = finished
    assert seen == [N_TRAIN]  # the query read the training part only, once
    ledger = json.loads((out / "privimage" / "ledger.json").read_text())
    finetune = next(e for e in ledger["entries"] if e["name"] == "finetune")
    assert finetune["sample_rate"] == pytest.approx(32 / N_TRAIN)  # DP-SGD's N is the training part
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["ca_split"] == "holdout 0.2 of train (seed 0)"


def test_rerun_of_a_finished_run_changes_no_byte(finished, tmp_path, capsys):
    out = copy_of(finished, tmp_path)
    before = snapshot(out)
    code, _ = rerun(out, capsys)
    assert code == 0
    assert snapshot(out) == before  # metrics.json, report.html, ledgers: same bytes, same mtimes


@pytest.mark.parametrize("method", ["privimage", "none"])
def test_deleted_ledger_is_refused_not_recreated(finished, tmp_path, capsys, method):
    out = copy_of(finished, tmp_path)
    (out / method / "ledger.json").unlink()
    before = snapshot(out)
    code, line = rerun(out, capsys)
    assert code == 1 and f"{method}/ledger.json is missing but" in line and "privacy was spent" in line
    assert snapshot(out) == before  # no new ledger, the query did not run again, selection.json untouched


def test_ledger_without_its_query_entry_is_refused(finished, tmp_path, capsys):
    out = copy_of(finished, tmp_path)
    path = out / "privimage" / "ledger.json"
    ledger = json.loads(path.read_text())
    ledger["entries"] = [e for e in ledger["entries"] if e["name"] != "semantic_query"]
    path.write_text(json.dumps(ledger))
    (out / "metrics.json").unlink()  # even with the results gone, selection.json shows the query was released
    (out / "privimage" / "metrics.json").unlink()
    code, line = rerun(out, capsys)
    assert code == 1 and "has no 'semantic_query' entry" in line
    assert json.loads(path.read_text()) == ledger  # the query was not charged (nor run) again


def test_corrupt_ledger_is_one_line_naming_it(finished, tmp_path, capsys):
    out = copy_of(finished, tmp_path)
    path = out / "none" / "ledger.json"
    path.write_bytes(path.read_bytes()[:40])  # truncated
    code, line = rerun(out, capsys)
    assert code == 1 and f"{path}: not a readable privimage ledger" in line


def test_truncated_samples_are_one_line_naming_them(finished, tmp_path, capsys):
    out = copy_of(finished, tmp_path)
    (out / "metrics.json").unlink()
    (out / "none" / "metrics.json").unlink()
    (out / "none" / "samples.npz").write_bytes(b"")  # what kill -9 during np.savez left before
    code, line = rerun(out, capsys)
    assert code == 1 and "none/samples.npz: not a readable samples .npz" in line


@pytest.mark.parametrize("name, message", [("model.safetensors", "not a readable safetensors file"),
                                           ("state.json", "not valid JSON")])
def test_truncated_checkpoint_is_one_line_naming_the_file(finished, tmp_path, capsys, name, message):
    out = copy_of(finished, tmp_path)
    ckpt = out / "privimage" / "finetune"
    (ckpt / name).write_bytes((ckpt / name).read_bytes()[:100])
    (out / "metrics.json").unlink()  # a resumed run reads the fine-tuning checkpoint again
    (out / "privimage" / "metrics.json").unlink()
    (out / "privimage" / "samples.npz").unlink()
    code, line = rerun(out, capsys)
    assert code == 1 and f"{ckpt / name}: {message}" in line
    if name == "model.safetensors":  # `privimage sample` reads the weights only
        code = main(["sample", "--ckpt", str(ckpt), "--n", "2", "--out", str(tmp_path / "s.npz"), "--steps", "1"])
        err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("privimage: ")]
        assert code == 1 and len(err) == 1 and f"{ckpt / name}: {message}" in err[0], err


def test_a_second_process_is_refused_while_the_directory_is_locked(finished, tmp_path, capsys):
    """Two real processes: one holds the run directory, the other (`privimage run`) exits with one line;
    after the holder is killed (-9), the kernel has released the lock."""
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from privimage.rundir import locked\n"
         "out = Path(sys.argv[1]); out.mkdir()\nwith locked(out):\n    print('locked', flush=True); time.sleep(300)",
         str(out)], stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": SRC})
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, line = rerun(out, capsys)
        assert code == 1 and "is in use by another privimage run" in line
        assert not (out / "config.json").exists()  # the refused run wrote nothing
    finally:
        holder.kill()  # SIGKILL: no cleanup runs in the holder
        holder.wait()
    with rundir.locked(out):  # free again
        pass


def test_the_lock_is_held_for_the_whole_run(finished, tmp_path, monkeypatch):
    """While the steps run, another process cannot take the directory."""
    out, attempts = tmp_path / "run", []

    def steps(config, inputs, out, **kwargs):
        probe = subprocess.run(
            [sys.executable, "-c", "import sys; from pathlib import Path; from privimage.rundir import locked\n"
             "with locked(Path(sys.argv[1])): pass", str(out)],
            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": SRC})
        attempts.append(probe)
        return {"methods": {}}

    monkeypatch.setattr(pipeline, "run_methods", steps)
    pipeline.run(load_run_config(ARGS[0], ARGS[1:]), out, device="cpu", progress=False)
    assert attempts[0].returncode != 0 and "in use by another privimage run" in attempts[0].stderr
    with rundir.locked(out):  # released when the run returned
        pass


def test_out_that_is_a_file_is_one_line(finished, tmp_path, capsys):
    out = tmp_path / "run"
    out.write_text("my notes")
    code, line = rerun(out, capsys)
    assert code == 1 and "exists and is not a directory" in line and out.read_text() == "my notes"


def test_read_only_out_is_one_line(finished, tmp_path, capsys):
    out = tmp_path / "ro"
    out.mkdir()
    if os.geteuid() != 0:
        out.chmod(0o555)
    elif subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(out)],
                        capture_output=True).returncode != 0:
        pytest.skip("root cannot be denied by permissions and cannot mount a read-only file system here")
    try:
        code, line = rerun(out, capsys)
        assert code == 1 and f"cannot write to run directory {out}" in line
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(out)], check=True)


def test_full_disk_is_one_line_naming_the_file(finished, tmp_path, capsys, monkeypatch):
    """A failed write (ENOSPC, mocked at fsync) names the file it was writing, in one line."""
    import errno

    from privimage import files

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as write()/fsync() raise it: no file name

    monkeypatch.setattr(files.os, "fsync", full)
    out = tmp_path / "run"
    code, line = rerun(out, capsys)
    assert code == 1 and f"{out / 'config.json'}: No space left on device (the disk is full" in line
    assert not (out / "config.json").exists() and not list(out.glob(".config.json*"))  # no half file


def test_full_disk_on_a_real_small_tmpfs(finished, tmp_path, capsys):
    """--out on a 256 KiB tmpfs: the run stops with one line naming the file; resuming elsewhere is possible."""
    out = tmp_path / "small"
    out.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(out)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        code, line = rerun(out / "run", capsys)
        assert code == 1 and "No space left on device (the disk is full" in line and str(out / "run") in line
    finally:
        subprocess.run(["umount", str(out)], check=True)


def test_bare_config_json_takes_the_new_config(tmp_path):
    """A run that stopped before doing anything must not block the corrected command."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"hash": "0123", "config": {}}))
    config = load_run_config(TINY_CONFIG)
    with rundir.open_run_dir(out, config):
        pass
    assert json.loads((out / "config.json").read_text())["hash"] != "0123"


def test_files_without_config_json_are_refused(tmp_path):
    out = tmp_path / "run"
    (out / "privimage").mkdir(parents=True)
    with pytest.raises(UserError, match="holds privimage but no config.json"):
        with rundir.open_run_dir(out, load_run_config(TINY_CONFIG)):
            pass
