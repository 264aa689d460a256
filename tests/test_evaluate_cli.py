"""`privimage evaluate` end to end on a real image-folder dataset written by the test."""

import json

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from privimage.cli import main


@pytest.fixture
def digits_folder(tmp_path, monkeypatch):
    """tmp/real/{train,test}/<digit>/<i>.png, 16x16 grey (40 train + 15 test per class); cache under tmp."""
    monkeypatch.setenv("PRIVIMAGE_CACHE", str(tmp_path / "cache"))
    d = load_digits()
    x = (d.images / 16 * 255).round().astype(np.uint8).repeat(2, axis=1).repeat(2, axis=2)  # (N, 16, 16)
    root = tmp_path / "real"
    for label in range(10):
        idx = np.flatnonzero(d.target == label)
        for split, chosen in (("train", idx[:40]), ("test", idx[40:55])):
            (root / split / f"digit{label}").mkdir(parents=True)
            for i in chosen:
                Image.fromarray(x[i]).save(root / split / f"digit{label}" / f"{i}.png")
    train_idx = np.concatenate([np.flatnonzero(d.target == c)[:40] for c in range(10)])
    samples = tmp_path / "samples.npz"  # a perfect "generator": real train images with their labels
    np.savez(samples, x=x[train_idx][..., None], y=d.target[train_idx].astype(np.int64))
    return root, samples


def test_evaluate_ca_writes_json_and_prints_one_object(digits_folder, tmp_path, capsys):
    root, samples = digits_folder
    out = tmp_path / "metrics.json"
    code = main(["evaluate", "--samples", str(samples), "--real", str(root), "--metrics", "ca", "--epochs", "8",
                 "--out", str(out), "--json"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)  # exactly one JSON object on stdout
    assert printed == json.loads(out.read_text())
    assert printed["n_synthetic"] == 400 and printed["ca_split"] == "test"
    assert printed["ca"] == printed["ca_per_classifier"]["cnn"] > 0.6
    assert printed["ca_real_per_classifier"] == {} and "fid" not in printed


def test_evaluate_user_errors_exit_1(digits_folder, tmp_path, capsys):
    root, samples = digits_folder
    assert main(["evaluate", "--samples", str(samples), "--real", str(root), "--metrics", "ca,is"]) == 1
    assert "unknown metric is" in capsys.readouterr().err
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((3, 16, 16, 1), np.uint8), y=np.array([0, 1, 12]))
    assert main(["evaluate", "--samples", str(bad), "--real", str(root)]) == 1
    assert "labels must lie in [0, 10)" in capsys.readouterr().err
    missing = tmp_path / "nope.pt"
    assert main(["evaluate", "--samples", str(samples), "--real", str(root), "--metrics", "fid",
                 "--fid-weights", str(missing)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "FID is unavailable" in err and str(missing) in err


def test_fid_against_the_training_split_is_refused_unless_labelled_nonprivate(digits_folder, tmp_path, capsys):
    root, samples = digits_folder
    missing = str(tmp_path / "nope.pt")  # the refusal must come before any Inception is loaded
    base = ["evaluate", "--samples", str(samples), "--real", str(root), "--fid-weights", missing]
    assert main(base + ["--metrics", "fid", "--fid-real-split", "train"]) == 1
    assert "not covered by the privacy guarantee" in capsys.readouterr().err
    assert main(base + ["--metrics", "prd", "--fid-real-split", "train"]) == 1
    assert "--allow-nonprivate-fid" in capsys.readouterr().err
    # Asked for explicitly, it goes on (and then stops at the missing weights).
    assert main(base + ["--metrics", "fid", "--fid-real-split", "train", "--allow-nonprivate-fid"]) == 1
    assert "FID is unavailable" in capsys.readouterr().err
    # CA alone never reads the training split for FID: no flag needed.
    assert main(base + ["--metrics", "ca", "--epochs", "1", "--fid-real-split", "train"]) == 0


def test_evaluate_reads_the_demo_digits(tmp_path, capsys, monkeypatch):
    """`--real demo:digits` is the demo's held-out test split: the same images the demo's own CA uses."""
    monkeypatch.setenv("PRIVIMAGE_CACHE", str(tmp_path / "cache"))
    from privimage.data import demo

    train, test = demo.load_digits_split()
    samples = tmp_path / "samples.npz"  # a perfect "generator": the demo's training digits
    np.savez(samples, x=train.x, y=train.y)
    assert main(["evaluate", "--samples", str(samples), "--real", "demo:digits", "--epochs", "4", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["ca_split"] == "test" and printed["ca"] > 0.8
    assert main(["evaluate", "--samples", str(samples), "--real", "demo:digits", "--split", "val"]) == 1
    assert "demo:digits has the splits train and test" in capsys.readouterr().err
    assert main(["fid-stats", "demo:digits", "--split", "val", "--out", str(tmp_path / "stats.npz")]) == 1
    assert "demo:digits has the splits train and test" in capsys.readouterr().err


def test_fid_stats_of_the_training_split_are_refused_unless_marked_nonprivate(digits_folder, tmp_path, capsys):
    """`fid-stats` defaults to the held-out split; train statistics need the flag and carry a marker that makes
    `evaluate --fid-stats` refuse them (and label the FID non-private when allowed)."""
    from privimage.evaluate.fid import load_stats, save_stats, stats_nonprivate

    root, samples = digits_folder
    missing = str(tmp_path / "nope.pt")  # every refusal must come before any Inception is loaded
    assert main(["fid-stats", str(root), "--split", "train", "--fid-weights", missing,
                 "--out", str(tmp_path / "s.npz")]) == 1
    err = capsys.readouterr().err
    assert "not covered by the privacy guarantee" in err and "--allow-nonprivate-fid" in err
    assert not (tmp_path / "s.npz").exists()
    assert main(["fid-stats", str(root), "--fid-weights", missing, "--out", str(tmp_path / "s.npz")]) == 1
    assert "FID is unavailable" in capsys.readouterr().err  # the default (test) goes on to the weights

    mu, sigma = np.zeros(2048), np.eye(2048)
    save_stats(tmp_path / "train.npz", mu, sigma, nonprivate=True)
    save_stats(tmp_path / "test.npz", mu, sigma)
    np.savez(tmp_path / "other.npz", mu=mu, sigma=sigma)  # pytorch-fid's own files have no marker
    assert stats_nonprivate(tmp_path / "train.npz")
    assert not stats_nonprivate(tmp_path / "test.npz") and not stats_nonprivate(tmp_path / "other.npz")
    np.testing.assert_array_equal(load_stats(tmp_path / "train.npz")[1], sigma)

    base = ["evaluate", "--samples", str(samples), "--real", str(root), "--metrics", "fid", "--fid-weights", missing]
    assert main(base + ["--fid-stats", str(tmp_path / "train.npz")]) == 1
    assert "holds statistics of training images" in capsys.readouterr().err
    for ok in (["--fid-stats", str(tmp_path / "train.npz"), "--allow-nonprivate-fid"],
               ["--fid-stats", str(tmp_path / "other.npz")]):
        assert main(base + ok) == 1  # goes on, and stops only at the missing weights
        assert "FID is unavailable" in capsys.readouterr().err
