"""Refuse before spending: every problem a later step would hit is one line BEFORE anything is written or
charged (the run directory is not even created), and `data.holdout` holds images out of the query and DP-SGD."""

import json
from pathlib import Path

import numpy as np
import pytest

from privimage import preflight as pf
from privimage.cli import main
from privimage.data import demo
from privimage.data.splits import hold_out
from privimage.errors import UserError
from privimage.evaluate.inception import default_weights_path
from privimage.run_config import load_run_config

TINY_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")  # glyphs rendered once for the module


@pytest.fixture(autouse=True)
def cache(shared_cache, monkeypatch):
    monkeypatch.setenv("PRIVIMAGE_CACHE", str(shared_cache))


def refused(tmp_path, capsys, *args) -> str:
    """Run `privimage run tiny.yaml ARGS`; assert exit 1, one line, and no run directory; return the line."""
    out = tmp_path / "run"
    code = main(["run", str(TINY_CONFIG), "privacy.seed=0", *args, "--out", str(out)])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("privimage: ")]  # not the progress bars
    assert code == 1 and len(lines) == 1 and "Traceback" not in err, err[-2000:]
    assert not out.exists()  # nothing written, so nothing charged either (the ledger lives in there)
    return lines[0]


@pytest.mark.parametrize("overrides, message", [
    # found today only after the query / pre-training / fine-tuning had spent the budget:
    (["semantic.k=7"], "k=7 public classes for each of 10 sensitive classes needs 70"),
    (["finetune.batch_size=5000"], "finetune.batch_size (5000) is larger than the 1347 sensitive training images"),
    (["data.channels=3", "model.in_channels=3"], "data.channels is 3 but data.sensitive"),
    (["sample.batch_size=0"], "sample.steps and sample.batch_size must be >= 1"),
    (["sample.sampler=bogus"], "sample.sampler: unknown sampler 'bogus'"),
    (["privacy.epsilon=inf"], "privacy.epsilon must be a finite number > 0, got inf"),
    (["privacy.epsilon=.nan"], "privacy.epsilon must be a finite number > 0, got nan"),
    (["privacy.epsilon=0"], "privacy.epsilon must be a finite number > 0"),
    (["privacy.epsilon=0.5", "semantic.query_epsilon=null", "semantic.sigma_q=5"], "the query alone"),  # 0.73
    (["privacy.epsilon=0.5", "semantic.query_epsilon=0.5"], "semantic.query_epsilon must be > 0 and below"),
    (["data.test_split=train"], "data.test_split equals data.sensitive_split"),
    (["data.holdout=1.5"], "data.holdout must be a fraction in (0, 1)"),
    (["evaluate.classifiers=[bogus]"], "evaluate.classifiers must name some of"),
    (["evaluate.metrics=[ca, fid]", "evaluate.fid_weights=/no/such/inception.pt"],
     "/no/such/inception.pt does not exist"),
    (["evaluate.metrics=[fid]", "evaluate.fid_real_split=train"], "FID is not covered by the privacy guarantee"),
    (["evaluate.metrics=[fid]", "evaluate.fid_n_real=1"], "evaluate.fid_n_real and evaluate.fid_n_synthetic must be"),
    (["semantic.resolution=4"], "semantic.resolution must be null (data.resolution) or an integer in 8..256"),
])
def test_refused_before_anything_is_written(tmp_path, capsys, overrides, message):
    assert message in refused(tmp_path, capsys, *overrides)


@pytest.mark.parametrize("device, message", [
    ("cuda:7", "cuda:7"),
    ("gpu", "'gpu' is not a torch device"),
])
def test_bad_device_refused_before_config_json(tmp_path, capsys, device, message):
    if device == "cuda:7" and __import__("torch").cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    assert message in refused(tmp_path, capsys, "--device", device)


def digits_npz(tmp_path) -> Path:
    """The demo digits (train + test together) as ONE .npz: a dataset without splits."""
    train, test = demo.load_digits_split(resolution=16)
    path = tmp_path / "digits.npz"
    np.savez(path, x=np.concatenate([train.x, test.x]), y=np.concatenate([train.y, test.y]),
             classes=np.array(train.classes))
    return path


def test_test_split_reading_the_training_images_is_refused(tmp_path, capsys):
    """An .npz has no splits: test_split=test reads the training images again; CA would test on them."""
    line = refused(tmp_path, capsys, f"data.sensitive={digits_npz(tmp_path)}")
    assert "holds the same images as data.sensitive_split" in line and "data.holdout" in line


def test_holdout_is_disjoint_public_and_the_training_part_is_what_dp_reads(tmp_path):
    path = digits_npz(tmp_path)
    config = load_run_config(TINY_CONFIG, [f"data.sensitive={path}", "data.holdout=0.2", "data.holdout_seed=3"])
    sensitive, test, _ = pf.load_data(config)  # what preflight checks and the run uses
    pf.check_data(config, sensitive, test, _)  # the held-out part is not the training part
    n = 1797
    assert (len(sensitive), len(test)) == (n - 359, 359)  # round(0.2 * 1797) held out
    train_pos, held_pos = hold_out(n, fraction=0.2, seed=3)
    assert not set(train_pos) & set(held_pos) and len(train_pos) + len(held_pos) == n
    with np.load(path) as npz:
        np.testing.assert_array_equal(test.x, npz["x"][held_pos])  # exactly the held-out positions
        np.testing.assert_array_equal(sensitive.x, npz["x"][train_pos])
    # The choice depends on (n, fraction, seed) only, never on the images: it is public.
    assert hold_out(n, fraction=0.2, seed=3)[1].tolist() == held_pos.tolist()
    assert hold_out(n, fraction=0.2, seed=4)[1].tolist() != held_pos.tolist()


def test_holdout_too_small_a_dataset():
    with pytest.raises(UserError, match="at least 2"):
        hold_out(1, fraction=0.5, seed=0)


@pytest.mark.skipif(default_weights_path() is None, reason="FID weights (privimage[fid]) not installed")
def test_fid_compares_with_held_out_images_unless_nonprivate_is_allowed():
    config = load_run_config(TINY_CONFIG, ["evaluate.metrics=[ca, fid]"])
    sensitive, test, _ = pf.load_data(config)
    real, nonprivate = pf.fid_images(config, sensitive, test)
    assert real is test and not nonprivate  # default: the held-out images
    config = load_run_config(TINY_CONFIG, ["evaluate.metrics=[fid]", "evaluate.fid_real_split=train",
                                           "evaluate.allow_nonprivate_fid=true"])
    real, nonprivate = pf.fid_images(config, sensitive, test)
    assert nonprivate and len(real) == 1347  # the sensitive training split, only when allowed, labelled
    np.testing.assert_array_equal(real.x, sensitive.x)
    config = load_run_config(TINY_CONFIG, ["evaluate.metrics=[ca, fid]", "evaluate.fid_n_real=45"])
    real, nonprivate = pf.fid_images(config, sensitive, test)
    assert len(real) == 45 and not nonprivate  # a class-balanced part of the held-out images, named as such
    assert np.bincount(real.y, minlength=10).tolist() == [5] * 5 + [4] * 5  # round robin: 4 rounds + 5 classes
    assert real.source.endswith("|balanced first 45") and real.source.startswith(test.source)


@pytest.mark.skipif(default_weights_path() is None, reason="FID weights (privimage[fid]) not installed")
def test_fid_stats_of_training_images_are_refused_before_privacy_is_spent(tmp_path):
    """evaluate.fid_stats written by `privimage fid-stats --split train` needs allow_nonprivate_fid, and is labelled."""
    from privimage.evaluate.fid import save_stats

    save_stats(tmp_path / "train.npz", np.zeros(2048), np.eye(2048), nonprivate=True)
    save_stats(tmp_path / "test.npz", np.zeros(2048), np.eye(2048))
    config = load_run_config(TINY_CONFIG, ["evaluate.metrics=[fid]", f"evaluate.fid_stats={tmp_path / 'train.npz'}"])
    sensitive, test, _ = pf.load_data(config)
    with pytest.raises(UserError, match="holds statistics of training images"):
        pf.fid_images(config, sensitive, test)
    config.evaluate.allow_nonprivate_fid = True
    assert pf.fid_images(config, sensitive, test) == (None, True)
    config = load_run_config(TINY_CONFIG, ["evaluate.metrics=[fid]", f"evaluate.fid_stats={tmp_path / 'test.npz'}"])
    assert pf.fid_images(config, sensitive, test) == (None, False)


def test_query_views_are_the_same_images_at_semantic_resolution():
    """semantic.resolution: the classifier and query see the same images, larger; the generator's stay as they are."""
    config = load_run_config(TINY_CONFIG, ["semantic.resolution=24"])
    inputs = pf.preflight(config, device="cpu", progress=False)
    query_sensitive, query_public = inputs.query_images()
    assert inputs.sensitive.resolution == inputs.public.resolution == 16
    assert query_sensitive.resolution == query_public.resolution == 24
    np.testing.assert_array_equal(query_sensitive.y, inputs.sensitive.y)  # the ledger's N images, same order
    np.testing.assert_array_equal(query_public.y, inputs.public.y)
    plain = pf.preflight(load_run_config(TINY_CONFIG), device="cpu", progress=False)
    assert plain.query_sensitive is None and plain.query_public is None
    assert plain.query_images()[0] is plain.sensitive and plain.query_images()[1] is plain.public
    with pytest.raises(UserError, match="with images given in memory"):
        pf.preflight(config, device="cpu", data=(inputs.sensitive, inputs.test, inputs.public), progress=False)


def test_preflight_checks_what_python_callers_built(tmp_path):
    """`pipeline.run` is public API: a RunConfig edited in Python is validated again."""
    config = load_run_config(TINY_CONFIG)
    config.sample.sampler = "bogus"
    with pytest.raises(UserError, match="unknown sampler"):
        pf.preflight(config, device="cpu")


@pytest.mark.skipif(default_weights_path() is None, reason="FID weights (privimage[fid]) not installed")
@pytest.mark.parametrize("overrides, nonprivate", [
    ([], False),
    (["evaluate.fid_real_split=train", "evaluate.allow_nonprivate_fid=true"], True),
])
def test_metrics_say_which_images_fid_read(tmp_path, monkeypatch, overrides, nonprivate):
    """metrics.json names FID's real images and labels FID against the training images non-private."""
    import torch

    from privimage import pipeline
    from privimage.evaluate import fid
    from privimage.models.edm import EDMPrecond
    from privimage.models.unet import UNet
    from privimage.privacy.ledger import Ledger

    config = load_run_config(TINY_CONFIG, ["evaluate.metrics=[fid]", "sample.n=4", *overrides])
    sensitive, test, public = pf.load_data(config)
    real, flag = pf.fid_images(config, sensitive, test)
    inputs = pf.Inputs(sensitive, test, public, real, flag, torch.device("cpu"), "test split")
    compared = []
    # FID's value is tested in test_fid.py; here only which real images it is given (Inception on CPU is slow).
    monkeypatch.setattr(fid, "fid_of_sets", lambda synthetic, real, **kw: compared.append(real) or 12.5)
    ledger = Ledger(tmp_path / "ledger.json", delta=1e-5)
    result = pipeline.sample_and_evaluate(config, EDMPrecond(UNet(config.model)), tmp_path, inputs, ledger,
                                          progress=False)
    assert len(compared) == 1 and result["fid"] == 12.5
    np.testing.assert_array_equal(compared[0].x, (sensitive if nonprivate else test).x)
    assert result["fid_nonprivate"] is nonprivate
    assert result["fid_real"] == ("train" if nonprivate else "test split")
    assert json.loads((tmp_path / "metrics.json").read_text()) == result
