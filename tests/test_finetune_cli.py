"""The generator's CLI end to end on tiny data: pretrain -> finetune (with a query ledger) -> sample."""

import json

import numpy as np
import pytest

from privimage.cli import main
from privimage.data import load_images
from privimage.privacy.accountant import epsilon_pld
from privimage.privacy.ledger import Ledger, Mechanism


def write_set(path, n, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 16, 16), dtype=np.uint8)
    np.savez(path, x=x, y=np.arange(n) % 3, classes=np.array(["a", "b", "c"]))
    return path


def test_pretrain_finetune_sample(tmp_path, capsys):
    public, private = write_set(tmp_path / "pub.npz", 24, 0), write_set(tmp_path / "priv.npz", 30, 1)
    query = Ledger(tmp_path / "query.json", delta=1e-4)
    query.charge(Mechanism("semantic_query", "gaussian", noise_multiplier=30.0))

    assert main(["pretrain", "--data", str(public), "--out", str(tmp_path / "pre"), "--config", "tiny",
                 "--steps", "2", "--batch", "4", "--seed", "0", "--device", "cpu"]) == 0
    capsys.readouterr()
    assert main(["finetune", "--ckpt", str(tmp_path / "pre"), "--sensitive", str(private), "--out",
                 str(tmp_path / "ft"), "--epsilon", "8", "--delta", "1e-4", "--query-ledger", str(tmp_path / "query.json"),
                 "--steps", "2", "--batch", "6", "--multiplicity", "2", "--seed", "1", "--device", "cpu",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    ledger = json.loads((tmp_path / "ft" / "ledger.json").read_text())
    assert [e["name"] for e in ledger["entries"]] == ["semantic_query", "finetune"]
    assert ledger["entries"][1]["steps"] == 2 and ledger["epsilon_budget"] == 8
    spent = epsilon_pld([Mechanism("q", "gaussian", 30.0),
                         Mechanism("f", "poisson_gaussian", result["sigma"], 0.2, 2)], delta=1e-4)
    assert result["epsilon"] == pytest.approx(spent) and result["epsilon"] <= 8

    assert main(["sample", "--ckpt", str(tmp_path / "ft"), "--n", "7", "--out", str(tmp_path / "s.npz"),
                 "--grid", str(tmp_path / "g.png"), "--steps", "2", "--device", "cpu"]) == 0
    samples = load_images(tmp_path / "s.npz", cache=False, progress=False)
    assert samples.x.shape == (7, 16, 16, 1) and samples.classes == ["a", "b", "c"]
    assert (tmp_path / "g.png").is_file()


def test_user_errors_are_one_line(tmp_path, capsys):
    assert main(["sample", "--ckpt", str(tmp_path / "missing"), "--n", "2", "--out", str(tmp_path / "s.npz")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("privimage: error:") and "\n" not in err
    private = write_set(tmp_path / "priv.npz", 30, 1)
    assert main(["finetune", "--config", "tiny", "--sensitive", str(private), "--out", str(tmp_path / "ft"),
                 "--epsilon", "1", "--delta", "1e-4", "--batch", "100"]) == 1
    assert "lower --batch" in capsys.readouterr().err


def test_no_progress_silences_every_stage_bar(tmp_path, capsys, monkeypatch):
    """--no-progress reaches the bars of the stage commands (they were drawn anyway: disable= was explicit)."""
    monkeypatch.setenv("TQDM_DISABLE", "0")  # restored after the test (--no-progress sets it)
    public, private = write_set(tmp_path / "pub.npz", 24, 0), write_set(tmp_path / "priv.npz", 30, 1)
    common = ["--seed", "0", "--device", "cpu", "--no-progress"]
    assert main(["pretrain", "--data", str(public), "--out", str(tmp_path / "pre"), "--config", "tiny",
                 "--steps", "2", "--batch", "4", *common]) == 0
    assert main(["finetune", "--ckpt", str(tmp_path / "pre"), "--sensitive", str(private), "--out",
                 str(tmp_path / "ft"), "--epsilon", "8", "--delta", "1e-4", "--steps", "2", "--batch", "6",
                 *common]) == 0
    assert main(["sample", "--ckpt", str(tmp_path / "ft"), "--n", "3", "--out", str(tmp_path / "s.npz"),
                 "--steps", "2", *common]) == 0
    err = capsys.readouterr().err
    assert "privimage: DP fine-tuning" in err  # the messages stay
    assert "it/s" not in err and "img/s" not in err and "%|" not in err, err


def test_pretrain_resume_reads_images_at_the_checkpoints_size(tmp_path, capsys):
    """--resume continues the checkpoint's own U-Net: images at its 16 px grey, whatever --config says."""
    public = write_set(tmp_path / "pub.npz", 24, 0)
    common = ["--data", str(public), "--out", str(tmp_path / "pre"), "--batch", "4", "--seed", "0", "--device", "cpu"]
    assert main(["pretrain", *common, "--config", "tiny", "--steps", "2"]) == 0
    assert main(["pretrain", *common, "--config", "cifar10", "--steps", "4", "--resume"]) == 0  # 32 px RGB config
    assert "resumed from" in capsys.readouterr().err
    state = json.loads((tmp_path / "pre" / "state.json").read_text())
    assert state["step"] == 4 and state["model"]["unet"]["nf"] == 8  # still the tiny U-Net
