"""Checkpoints: round trip, resumed pre-training equals an uninterrupted run, interrupted saves detected."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from privimage.data import ImageSet
from privimage.errors import UserError
from privimage.models.edm import EDMPrecond
from privimage.models.unet import CONFIGS, UNet
from privimage.train import pretrain as pretrain_module
from privimage.train.checkpoint import load_checkpoint, load_model
from privimage.train.pretrain import PretrainConfig, pretrain

CONFIG = PretrainConfig(steps=6, batch_size=4, checkpoint_every=2, log_every=1, hflip=True)


@pytest.fixture(scope="module")
def images():
    x = np.random.default_rng(1).integers(0, 256, (40, 16, 16, 1), dtype=np.uint8)
    return ImageSet(x, np.arange(40) % 10, [str(i) for i in range(10)])


def run(out, images, resume=False):
    torch.manual_seed(0)
    net = EDMPrecond(UNet(CONFIGS["tiny"]))
    ema = pretrain(net, images, config=CONFIG, out_dir=out, seed=5, device="cpu", resume=resume, progress=False)
    return net, ema


def test_round_trip_and_contents(tmp_path, images):
    net, ema = run(tmp_path, images)
    ckpt = load_checkpoint(tmp_path)
    assert ckpt.step == 6 and ckpt.state["kind"] == "pretrain" and ckpt.state["config"]["hflip"] is True
    for a, b in zip(ckpt.model(ema=False).state_dict().values(), net.state_dict().values()):
        assert torch.equal(a, b)
    model = load_model(tmp_path)
    assert model.config == CONFIGS["tiny"] and model.sigma_data == 0.5
    weights = load_file(tmp_path / "model.safetensors")
    assert all(v.dtype == torch.float32 for v in weights.values())
    assert any(k.startswith("opt.") for k in load_file(tmp_path / "state.safetensors"))
    assert not list(tmp_path.glob("*.tmp"))


def test_killed_then_resumed_pretraining_equals_uninterrupted(tmp_path, images, monkeypatch):
    net_a, ema_a = run(tmp_path / "a", images)
    calls = {"n": 0}
    real_update = pretrain_module.update_ema

    def killed_at_step_5(ema, net, *, decay, step):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        real_update(ema, net, decay=decay, step=step)

    monkeypatch.setattr(pretrain_module, "update_ema", killed_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", images)
    monkeypatch.setattr(pretrain_module, "update_ema", real_update)
    assert load_checkpoint(tmp_path / "b").step == 4
    net_b, ema_b = run(tmp_path / "b", images, resume=True)
    for (k, a), b in zip(net_a.state_dict().items(), net_b.state_dict().values()):
        assert torch.equal(a, b), k
    for a, b in zip(ema_a.state_dict().values(), ema_b.state_dict().values()):
        assert torch.equal(a, b)
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_save_cut_short_is_detected(tmp_path, images):
    run(tmp_path, images)
    weights = load_file(tmp_path / "model.safetensors")
    save_file(weights, tmp_path / "model.safetensors", metadata={"step": "8", "kind": "pretrain", "model": "{}"})
    with pytest.raises(UserError, match="save interrupted"):
        load_checkpoint(tmp_path)


def test_missing_checkpoint_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not a checkpoint"):
        load_checkpoint(tmp_path)
    with pytest.raises(UserError):
        load_model(tmp_path)
