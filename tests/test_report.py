"""The HTML report: built from a small but valid run directory, escaped, tolerant, and renderable."""

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from privimage.cli import main
from privimage.errors import UserError
from privimage.evaluate.report import render_report, write_report
from privimage.privacy.accountant import epsilon_pld
from privimage.privacy.mechanism import Mechanism

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


def make_run_dir(root: Path) -> Path:
    """A run directory in the layout of docs/architecture.md: privimage complete, `none` half-written."""
    run = root / "run"
    (run / "privimage" / "pretrain").mkdir(parents=True)
    (run / "privimage" / "finetune").mkdir()
    (run / "none").mkdir()
    (run / "config.json").write_text(json.dumps({"hash": "abc123", "config": {"seed": 0, "privacy": {"epsilon": 10}}}))
    ledger = {
        "delta": 1e-5, "epsilon_budget": 10.0, "noise_seed": 42,
        "entries": [
            {"name": "semantic_query", "kind": "gaussian", "noise_multiplier": 484.0, "sample_rate": 1.0, "steps": 1},
            {"name": "finetune", "kind": "poisson_gaussian", "noise_multiplier": 1.23, "sample_rate": 0.01,
             "steps": 500, "planned_steps": 600},
        ],
        "epsilon_pld": 9.8765, "epsilon_rdp": 10.2,
    }
    (run / "privimage" / "ledger.json").write_text(json.dumps(ledger))
    selection = {
        "k": 2, "sigma_q": 484.0, "fraction_target": None, "n_images": 400, "n_public": 1000,
        "fraction_of_public": 0.4,
        "classes": [
            {"sensitive_class": "zero", "public_ids": [3, 7], "public_names": ["ring", "<script>alert(1)</script>"],
             "noisy_counts": [12.5, 3.25], "image_counts": [100, 100]},
            {"sensitive_class": "one", "public_ids": [1, 2], "public_names": ["stick", "pole"],
             "noisy_counts": [20.0, 1.0], "image_counts": [100, 100]},
        ],
    }
    (run / "selection.json").write_text(json.dumps(selection))
    rng = np.random.default_rng(0)
    np.savez_compressed(run / "privimage" / "samples.npz", x=rng.integers(0, 256, (20, 16, 16, 1), dtype=np.uint8),
                        y=np.repeat(np.arange(2), 10).astype(np.int64), classes=np.array(["zero", "one"]))
    np.savez_compressed(run / "previews.npz", held_out_x=np.full((4, 16, 16, 1), 200, np.uint8),
                        held_out_y=np.array([0, 0, 1, 1]), public_x=np.full((2, 16, 16, 1), 90, np.uint8),
                        public_y=np.array([0, 1]), classes=np.array(["zero", "one"]))
    lines = [json.dumps({"step": s, "loss": 1.0 / (s + 1), "lr": 1e-3}) for s in range(50)]
    (run / "privimage" / "pretrain" / "log.jsonl").write_text("\n".join(lines + ["{broken"]) + "\n")
    lines = [json.dumps({"step": s, "epsilon": s / 2, "noisy_grad_norm": 3.0 - s / 10, "images_per_s": 9.0})
             for s in range(1, 21)]
    (run / "privimage" / "finetune" / "log.jsonl").write_text("\n".join(lines + ["{broken"]) + "\n")
    (run / "none" / "ledger.json").write_text("{not json")  # a crashed method: must not break the report
    metrics = {"delta": 1e-5, "seconds": 12.0, "selection_precision": 0.5,
               "epsilon_composed": 13.579,
               "methods": {"privimage": {"ca": 0.81, "fid": 45.6, "epsilon": 9.8765, "fid_nonprivate": True,
                                         "ca_per_class": {"zero": 0.9, "one": 0.72}},
                           "none": {"ca": 0.25, "fid": None, "epsilon": 9.99}}}
    (run / "provenance.json").write_text(json.dumps({
        "privimage": "0.1.0", "torch": "2.13.0", "cuda": None, "device": "cpu",
        "data": {"sensitive": {"source": "/data/mine.tar", "bytes": 123, "modified": "2026-11-27T10:00:00+00:00"},
                 "public": {"source": "/data/pub.tar", "sha256": "feedbeef"}}}))
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run


def test_report_shows_every_piece_escaped(tmp_path):
    run = make_run_dir(tmp_path)
    path = write_report(run)
    assert path == run / "report.html"
    page = path.read_text()
    assert "9.877" in page  # headline epsilon
    assert "composed" in page and "NOT covered by the privacy guarantee" in page  # FID vs the training images
    assert "484" in page and "poisson_gaussian" in page and "500" in page  # ledger entries
    assert "planned_steps" in page and "600" in page  # extra per-mechanism fields are shown too
    query_alone = epsilon_pld([Mechanism("semantic_query", "gaussian", noise_multiplier=484.0)], delta=1e-5)
    assert f"<td>{query_alone:.4g}</td>" in page  # per-mechanism epsilon breakdown
    assert "ring (12.5)" in page and "stick" in page  # selection
    # one row per class: real held-out, selected public, privimage's samples
    assert page.count("data:image/png;base64,") == 6 and "not covered by the DP guarantee" in page
    assert page.count("<svg") == 5  # CA and FID bars; epsilon, noisy gradient norm and pretrain loss curves
    assert "epsilon spent (ledger)" in page and "noisy gradient norm" in page
    assert "0.81" in page and "45.6" in page  # metrics
    assert "NON-PRIVATE" in page  # FID against the sensitive training split is labelled
    assert "All 2 releases together: &epsilon; = 13.579" in page  # the composed value next to each release's
    assert "<td>zero</td><td>0.9</td>" in page and "<td>one</td><td>0.72</td>" in page  # CA per class
    assert "feedbeef" in page and "/data/mine.tar" in page and "2.13.0" in page  # provenance
    assert page.count('<li><a href="#') == 10 and 'id="provenance"' in page  # table of contents
    assert "abc123" in page  # config
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "not available" in page  # the `none` method has no readable ledger, samples or logs
    assert "http" not in page.replace("http://www.w3.org/2000/svg", "")  # nothing external


def test_report_over_methods_run_in_separate_directories(tmp_path):
    """bench/cifar10.py's one report of a rung: each method brings its own folder and metrics."""
    run = make_run_dir(tmp_path)
    other = tmp_path / "elsewhere" / "random"  # a method run in its own run directory
    shutil.copytree(run / "privimage", other)
    (other / "ledger.json").write_text((run / "privimage" / "ledger.json").read_text().replace("9.8765", "9.1234"))
    merged = {"delta": 1e-5, "epsilon_composed": 14.5, "methods": {"privimage": {"ca": 0.81, "epsilon": 9.8765},
                                                                   "random": {"ca": 0.33, "epsilon": 9.1234}}}
    out = tmp_path / "rung.html"
    assert write_report(run, path=out, methods=[run / "privimage", other], metrics=merged, title="rung <x>") == out
    page = out.read_text()
    assert "<h1>rung &lt;x&gt;</h1>" in page and "0.33" in page and "9.123" in page and "14.5" in page
    assert "samples: random" in page and "samples: privimage" in page
    assert not (run / "report.html").exists()  # the run's own report is left alone


def test_report_of_a_bare_directory_says_not_available(tmp_path):
    page = render_report(tmp_path)
    assert page.count("not available") >= 8
    with pytest.raises(UserError, match="not a run directory"):
        render_report(tmp_path / "missing")


def test_report_command(tmp_path, capsys):
    run = make_run_dir(tmp_path)
    assert main(["report", str(run)]) == 0
    assert capsys.readouterr().out.strip() == str(run / "report.html")
    assert main(["report", str(tmp_path / "missing")]) == 1


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed")
def test_report_renders_in_headless_chromium(tmp_path):
    run = make_run_dir(tmp_path)
    path = write_report(run)
    ARTIFACTS.mkdir(exist_ok=True)
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
             "--enable-logging=stderr", "--v=0"]
    dom = subprocess.run(flags + ["--dump-dom", path.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "(9.877, 1e-05)" in dom.stdout  # the headline (epsilon, delta) made it into the rendered DOM
    assert "CONSOLE" not in dom.stderr and "Uncaught" not in dom.stderr, dom.stderr[-2000:]
    shot = ARTIFACTS / "report.png"
    subprocess.run(flags + [f"--screenshot={shot}", "--window-size=1200,2400", path.as_uri()],
                   capture_output=True, text=True, timeout=120, check=True)
    assert shot.is_file() and shot.stat().st_size > 10_000
