"""Pre-training: the EDM loss goes down on real digits; log, checkpoints, flips and input checks."""

import json

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from privimage.data import ImageSet
from privimage.errors import UserError
from privimage.models.edm import EDMLoss, EDMPrecond, to_model_space
from privimage.models.unet import CONFIGS, UNet
from privimage.train.checkpoint import load_model
from privimage.train.pretrain import PretrainConfig, pretrain


@pytest.fixture(scope="module")
def digits():
    """sklearn's 8x8 digits (levels 0..16) upscaled to 16x16 uint8."""
    d = load_digits()
    x = np.kron(d.images / 16 * 255, np.ones((2, 2))).round().astype(np.uint8)[..., None]  # (N, 16, 16, 1)
    return ImageSet(x, d.target, [str(i) for i in range(10)], source="sklearn digits 16x16")


def fixed_loss(net, images: ImageSet, n=128) -> float:
    """The EDM loss on a fixed batch with fixed sigma / noise: comparable before and after training."""
    g = torch.Generator().manual_seed(123)
    x, y = to_model_space(images.x[:n]), torch.from_numpy(images.y[:n])
    loss_fn = EDMLoss(multiplicity=4, label_dropout=0.0)
    with torch.no_grad():
        return loss_fn(net, x, y, *loss_fn.draw(x, y, generator=g)).mean().item()


def test_loss_decreases_on_digits(tmp_path, digits):
    torch.manual_seed(0)
    net = EDMPrecond(UNet(CONFIGS["tiny"]))
    before = fixed_loss(net, digits)
    config = PretrainConfig(steps=80, batch_size=32, lr=2e-3, ema_decay=0.9, log_every=20, checkpoint_every=40)
    ema = pretrain(net, digits, config=config, out_dir=tmp_path, seed=0, device="cpu", progress=False)
    after_net, after_ema = fixed_loss(net, digits), fixed_loss(ema, digits)
    assert after_net < 0.7 * before, (before, after_net)
    assert after_ema < 0.8 * before, (before, after_ema)
    lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [20, 40, 60, 80]
    assert all(set(r) == {"step", "loss", "images_per_s"} and r["images_per_s"] > 0 for r in lines)
    # the checkpoint holds the EMA model that pretrain returned
    loaded = load_model(tmp_path)
    for a, b in zip(loaded.state_dict().values(), ema.state_dict().values()):
        assert torch.equal(a, b)


def test_hflip_trains_and_differs_from_no_flip(tmp_path, digits):
    def train(hflip):
        torch.manual_seed(0)
        net = EDMPrecond(UNet(CONFIGS["tiny"]))
        pretrain(net, digits, config=PretrainConfig(steps=3, batch_size=8, hflip=hflip), out_dir=tmp_path / str(hflip),
                 seed=0, device="cpu", progress=False)
        return net.state_dict()

    a, b = train(False), train(True)
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_images_must_fit_the_model(tmp_path, digits):
    net = EDMPrecond(UNet(CONFIGS["cifar10"]))  # 32x32 RGB
    with pytest.raises(UserError, match="expects 32x32x3"):
        pretrain(net, digits, config=PretrainConfig(steps=1), out_dir=tmp_path, progress=False)
    few_classes = EDMPrecond(UNet(CONFIGS["tiny"].__class__(**{**CONFIGS["tiny"].to_dict(), "num_classes": 5})))
    with pytest.raises(UserError, match="labels outside"):
        pretrain(few_classes, digits, config=PretrainConfig(steps=1), out_dir=tmp_path, progress=False)
