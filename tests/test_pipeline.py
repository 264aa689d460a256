"""`privimage run` end to end on a tiny config: every artefact, one-line config errors, resume."""

import json
from pathlib import Path

import numpy as np
import pytest

from privimage import generators, pipeline
from privimage.cli import main
from privimage.privacy.accountant import epsilon_pld
from privimage.privacy.ledger import Ledger
from privimage.run_config import load_run_config

# configs/tiny.yaml: the demo data with tiny models and a few steps of every stage (artefacts all real).
TINY_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"
TINY = ["privacy.seed=0"]


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PRIVIMAGE_CACHE", str(tmp_path / "cache"))


def write_config(tmp_path, extra: str = "") -> str:
    path = tmp_path / "tiny.yaml"
    path.write_text(f"base: {TINY_CONFIG}\n" + extra)
    return str(path)


def test_run_produces_every_artefact(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setenv("TQDM_DISABLE", "0")  # restored after the test (--no-progress sets it)
    assert main(["run", write_config(tmp_path), *TINY, "--out", str(out), "--device", "cpu", "--no-progress"]) == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "privimage" in printed and "none" in printed and "all methods composed: epsilon" in printed
    assert "privimage: 4/5 pre-training on 120 selected public images (4 steps)" in captured.err  # stage headers
    assert "privimage: 5/5 DP fine-tuning on the sensitive images: 3 noisy steps" in captured.err
    assert "DP fine-tune (sigma" not in captured.err and "it/s" not in captured.err  # no progress bars

    for name in ["config.json", "selection.json", "metrics.json", "report.html", "classifier/meta.json",
                 "provenance.json", "previews.npz",
                 "classifier/weights.safetensors", "privimage/ledger.json", "privimage/samples.npz",
                 "privimage/pretrain/model.safetensors", "privimage/finetune/model.safetensors",
                 "none/ledger.json", "none/samples.npz", "none/finetune/model.safetensors"]:
        assert (out / name).is_file(), name
    assert not (out / "none" / "pretrain").exists()  # the DPDM baseline has no pre-training
    with np.load(out / "previews.npz") as previews:  # the demo's digits are public: shown (show_real_images)
        assert {"held_out_x", "public_x"} <= set(previews.files)

    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) >= {"epsilon_composed", "delta", "selection_precision", "methods"}
    # Wall clock follows the realised Poisson batch sizes: it is kept in timings.json, out of the released files.
    assert "seconds" not in metrics and all("seconds" not in m and "step_seconds" not in m
                                            for m in metrics["methods"].values())
    timings = json.loads((out / "timings.json").read_text())
    assert timings["seconds"] > 0 and set(timings["methods"]["privimage"]["step_seconds"]) >= {"pretrain", "finetune"}
    assert all("images_per_s" not in json.loads(line) for name in ("privimage", "none")
               for line in (out / name / "finetune" / "log.jsonl").read_text().splitlines())
    assert "epsilon" not in metrics  # no single headline: each method is a release, see epsilon_composed
    assert set(metrics["methods"]) == {"privimage", "none"}
    for name, m in metrics["methods"].items():
        assert 0.0 <= m["ca"] <= 1.0 and m["fid"] is None
        written = json.loads((out / name / "ledger.json").read_text())  # as the run left it
        assert written["epsilon_pld"] == pytest.approx(m["epsilon"]) and written["epsilon_rdp"] >= m["epsilon"] * 0.9
        ledger = Ledger(out / name / "ledger.json", delta=1e-5, epsilon_budget=10.0)
        # The reported epsilon is the ledger's composition of every mechanism, and meets the budget.
        assert m["epsilon"] == pytest.approx(epsilon_pld(ledger.entries, delta=1e-5), rel=1e-6)
        assert m["epsilon"] <= 10.0
    assert [e.name for e in Ledger(out / "privimage" / "ledger.json", delta=1e-5, epsilon_budget=10.0).entries] == \
        ["semantic_query", "finetune"]
    assert [e.name for e in Ledger(out / "none" / "ledger.json", delta=1e-5, epsilon_budget=10.0).entries] == ["finetune"]
    assert 0.0 <= metrics["selection_precision"] <= 1.0
    # The methods are releases of the same data: metrics.json composes them all (PLD), above each alone.
    everything = [e for name in ("privimage", "none") for e in
                  Ledger(out / name / "ledger.json", delta=1e-5, epsilon_budget=10.0).entries]
    assert metrics["epsilon_composed"] == pytest.approx(epsilon_pld(everything, delta=1e-5), rel=1e-6)
    assert metrics["epsilon_composed"] > max(m["epsilon"] for m in metrics["methods"].values())

    with np.load(out / "privimage" / "samples.npz") as npz:
        assert npz["x"].shape == (40, 16, 16, 1) and npz["x"].dtype == np.uint8
        assert sorted(set(npz["y"].tolist())) == list(range(10))
    html = (out / "report.html").read_text()
    assert "semantic_query" in html and "selection" in html


def test_killed_after_pretraining_resumes_without_redoing_it(tmp_path, monkeypatch):
    out = tmp_path / "run"
    config = load_run_config(write_config(tmp_path), TINY + ["methods=[privimage]", "evaluate.show_real_images=false"])

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(generators, "finetune", killed)  # the diffusion family's fine-tuning step
        with pytest.raises(KeyboardInterrupt):
            pipeline.run(config, out, device="cpu", progress=False)
    pretrained = (out / "privimage" / "pretrain" / "model.safetensors").stat().st_mtime_ns
    selection = (out / "selection.json").read_text()

    pretrain_calls = []
    original = generators.pretrain
    monkeypatch.setattr(generators, "pretrain", lambda *a, **k: pretrain_calls.append(1) or original(*a, **k))
    metrics = pipeline.run(config, out, device="cpu", progress=False)

    assert (out / "privimage" / "pretrain" / "model.safetensors").stat().st_mtime_ns == pretrained  # not redone
    assert (out / "selection.json").read_text() == selection  # the query was not released again
    with np.load(out / "previews.npz") as previews:  # real held-out images only when the config asks
        assert "public_x" in previews.files and "held_out_x" not in previews.files
    ledger = Ledger(out / "privimage" / "ledger.json", delta=1e-5, epsilon_budget=10.0)
    assert [e.name for e in ledger.entries] == ["semantic_query", "finetune"]  # charged once each
    assert ledger.entries[1].steps == 3
    assert metrics["methods"]["privimage"]["epsilon"] <= 10.0


@pytest.mark.parametrize("override, message", [
    ("privacy.epsilon=0", "privacy.epsilon must be a finite number > 0"),
    ("privacy.delta=1.5", "privacy.delta must be in (0, 1)"),
    ("semantic.k=0", "semantic.k must be >= 1"),
    ("data.resolution=32", "model is 16px"),
    ("data.public=/no/such/folder", "data.public: path not found"),
    ("privacy.epsilonn=3", "unknown key 'epsilonn'"),
    ("privacy.delta=tiny", "privacy.delta: expected a number"),
    ("methods=[privimage, dpgan]", "methods must be a non-empty subset"),
])
def test_bad_config_is_one_line_error(tmp_path, capsys, override, message):
    assert main(["run", write_config(tmp_path), override, "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "run").exists()  # nothing was started


def test_yaml_exponent_without_dot_is_a_number():
    config = load_run_config(TINY_CONFIG, ["privacy.delta=1e-5"])  # YAML 1.1 reads this as a string
    assert config.privacy.delta == 1e-5


def test_run_dir_of_another_config_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"hash": "0123", "config": {}}))
    (out / "selection.json").write_text("{}")  # results of that config (a bare config.json would be replaced)
    assert main(["run", write_config(tmp_path), *TINY, "--out", str(out)]) == 1
    assert "different config" in capsys.readouterr().err


def test_missing_config_file(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.yaml")]) == 1
    assert "config file not found" in capsys.readouterr().err
