"""PrivImage+G end to end on tiny sizes: artefacts, one ledger per method, kill -9 and resume charge once."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from privimage.cli import main
from privimage.data import ImageSet
from privimage.errors import UserError
from privimage.models.gan import GAN, GANConfig
from privimage.privacy.accountant import epsilon_pld
from privimage.privacy.ledger import Ledger
from privimage.privacy.rng import NoiseSource
from privimage.train import gan_finetune
from privimage.train.finetune import FinetuneConfig
from privimage.train.gan_finetune import finetune_gan
from privimage.train.gan_pretrain import GANTrainConfig

TINY_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"
TINY_GAN = GANConfig(img_resolution=16, in_channels=1, num_classes=10, z_dim=8, g_width=16, d_width=4)
CONFIG = FinetuneConfig(steps=4, batch_size=6, micro_batch=4, checkpoint_every=2, log_every=2, clip=0.1, lr=1e-3)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PRIVIMAGE_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def sensitive():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (30, 16, 16, 1), dtype=np.uint8)
    return ImageSet(x, np.arange(30) % 10, [str(i) for i in range(10)], source="random test images")


def run(tmp, sensitive, *, resume=False, sigma=1.5):
    torch.manual_seed(0)
    gan = GAN(TINY_GAN)
    ledger = Ledger(tmp / "ledger.json", delta=1e-5)
    gan = finetune_gan(gan, sensitive, config=CONFIG, train=GANTrainConfig(), noise_multiplier=sigma, ledger=ledger,
                       out_dir=tmp / "ft", seed=3, device="cpu", resume=resume, progress=False)
    return gan, ledger


@pytest.mark.parametrize("killed_at, last_checkpoint", [(3, 2), (1, 0)])
def test_killed_then_resumed_gan_equals_uninterrupted_and_charges_once(tmp_path, sensitive, monkeypatch, killed_at,
                                                                        last_checkpoint):
    gan_a, ledger_a = run(tmp_path / "a", sensitive)
    lines = [json.loads(line) for line in (tmp_path / "a" / "ft" / "log.jsonl").read_text().splitlines()]
    assert all(set(r) == {"step", "epsilon", "noisy_grad_norm"} for r in lines)  # noised / public only
    assert not (tmp_path / "a" / "ft" / "noise.key").exists()  # a finished release keeps no secret

    calls, real_update = {"n": 0}, gan_finetune.update_ema

    def killed(ema, net, *, decay, step):  # the process dies after step `killed_at` was charged
        calls["n"] += 1
        if calls["n"] == killed_at:
            raise KeyboardInterrupt
        real_update(ema, net, decay=decay, step=step)

    monkeypatch.setattr(gan_finetune, "update_ema", killed)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", sensitive)
    assert json.loads((tmp_path / "b" / "ft" / "state.json").read_text())["step"] == last_checkpoint
    assert Ledger(tmp_path / "b" / "ledger.json", delta=1e-5).entries[0].steps == killed_at
    assert (tmp_path / "b" / "ft" / "noise.key").read_bytes() == NoiseSource.from_test_seed(3).secret()
    monkeypatch.setattr(gan_finetune, "update_ema", real_update)

    gan_b, ledger_b = run(tmp_path / "b", sensitive, resume=True)
    assert ledger_b.entries[0].steps == 4 == ledger_a.entries[0].steps  # replayed steps are not charged again
    assert ledger_b.epsilon() == pytest.approx(ledger_a.epsilon(), rel=1e-12)
    for (k, a), b in zip(gan_a.state_dict().items(), gan_b.state_dict().values()):
        assert torch.equal(a, b), k  # G (EMA), D and BN statistics: the same release, bit for bit


def test_rerun_without_resume_cannot_reuse_spent_steps(tmp_path, sensitive):
    run(tmp_path, sensitive)
    with pytest.raises(UserError, match="already spent 4 steps"):
        run(tmp_path, sensitive)


def test_gan_pipeline_end_to_end(tmp_path, capsys):
    config = tmp_path / "tiny_gan.yaml"
    config.write_text(f"base: {TINY_CONFIG}\ngenerator: gan\n"
                      "gan: {model: {z_dim: 8, g_width: 16, d_width: 4}}\n")
    out = tmp_path / "run"
    assert main(["run", str(config), "privacy.seed=0", "--out", str(out), "--device", "cpu", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "4/5 pre-training on 120 selected public images (4 steps)" in err and "sampling 40 images (GAN" in err
    for name in ["metrics.json", "report.html", "privimage/pretrain/model.safetensors", "privimage/samples.npz",
                 "privimage/finetune/model.safetensors", "none/finetune/model.safetensors", "none/samples.npz"]:
        assert (out / name).is_file(), name
    assert not list(out.rglob("noise.key")) and not (out / "none" / "pretrain").exists()
    for ckpt, kind in [("privimage/pretrain", "pretrain"), ("privimage/finetune", "finetune"), ("none/finetune", "finetune")]:
        state = json.loads((out / ckpt / "state.json").read_text())
        assert state["kind"] == kind and state["model"]["family"] == "gan", ckpt
    metrics = json.loads((out / "metrics.json").read_text())
    for method in ("privimage", "none"):
        ledger = Ledger(out / method / "ledger.json", delta=1e-5, epsilon_budget=10.0)
        assert metrics["methods"][method]["epsilon"] == pytest.approx(epsilon_pld(ledger.entries, delta=1e-5))
        assert metrics["methods"][method]["epsilon"] <= 10.0 and 0 <= metrics["methods"][method]["ca"] <= 1
    assert [e.name for e in Ledger(out / "privimage" / "ledger.json", delta=1e-5, epsilon_budget=10.0).entries] == \
        ["semantic_query", "finetune"]
    with np.load(out / "privimage" / "samples.npz") as npz:
        assert npz["x"].shape == (40, 16, 16, 1) and list(npz["classes"]) == [str(i) for i in range(10)]
    assert "gan" in (out / "report.html").read_text()
    # `privimage sample --ckpt` reads the family from the checkpoint: the GAN samples like the diffusion model
    assert main(["sample", "--ckpt", str(out / "privimage" / "finetune"), "--n", "20", "--out",
                 str(tmp_path / "more.npz"), "--device", "cpu", "--seed", "5"]) == 0
    with np.load(tmp_path / "more.npz") as npz:
        assert npz["x"].shape == (20, 16, 16, 1) and npz["x"].dtype == np.uint8
        assert np.bincount(npz["y"], minlength=10).tolist() == [2] * 10
    # a rerun of the finished run changes nothing and charges nothing
    before = (out / "privimage" / "ledger.json").read_text()
    assert main(["run", str(config), "privacy.seed=0", "--out", str(out), "--device", "cpu", "--no-progress"]) == 0
    assert (out / "privimage" / "ledger.json").read_text() == before


def test_api_fit_and_sample_with_the_gan(tmp_path, sensitive):
    """PrivImage(config).fit on in-memory images with generator: gan, then fit.sample (no privacy cost)."""
    import privimage

    config = privimage.load_config(str(TINY_CONFIG), ["generator=gan", "gan.model={z_dim: 8, g_width: 16, d_width: 4}",
                                                      "privacy.seed=0", "finetune.batch_size=6",
                                                      "finetune.micro_batch=6"])
    five = ImageSet(sensitive.x, sensitive.y % 5, [f"c{i}" for i in range(5)], source="five classes")
    fit = privimage.PrivImage(config).fit(five, five, out_dir=tmp_path / "run", device="cpu", progress=False)
    assert isinstance(fit.model, GAN) and fit.model.config.num_classes == 5  # follows the in-memory classes
    assert [m.name for m in fit.ledger.entries] == ["semantic_query", "finetune"] and fit.epsilon <= 10.0
    first, again = fit.sample(15, seed=1), fit.sample(15, seed=1)
    assert first.x.shape == (15, 16, 16, 1) and first.classes == five.classes
    assert np.bincount(first.y, minlength=5).tolist() == [3] * 5
    assert np.array_equal(first.x, again.x) and not np.array_equal(first.x, fit.sample(15, seed=2).x)
