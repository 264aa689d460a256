"""The conditional U-Net: shapes, the paper's parameter count, conditioning, DP-compatibility."""

import pytest
import torch

from privimage.models.unet import CONFIGS, UNet, UNetConfig, count_parameters


def test_paper_cifar10_config_has_about_1_75M_parameters():
    n = count_parameters(UNet(CONFIGS["cifar10"]))
    assert 1.70e6 < n < 1.80e6, n


@pytest.mark.parametrize("name", ["tiny", "demo"])
def test_output_has_input_shape(name):
    cfg = CONFIGS[name]
    net = UNet(cfg)
    x = torch.randn(3, cfg.in_channels, cfg.img_resolution, cfg.img_resolution)
    out = net(x, torch.randn(3), torch.tensor([0, 1, cfg.num_classes]))
    assert out.shape == x.shape and out.dtype == torch.float32


def test_rgb_32_and_64_resolutions():
    for res in (32, 64):
        cfg = UNetConfig(img_resolution=res, in_channels=3, num_classes=3, nf=8, ch_mult=(1, 2, 2),
                         num_blocks=1, attn_resolutions=(res // 4,), dropout=0.0)
        x = torch.randn(2, 3, res, res)
        assert UNet(cfg)(x, torch.zeros(2), torch.tensor([0, 3])).shape == x.shape


def test_class_label_and_noise_level_change_the_output():
    torch.manual_seed(0)
    net = UNet(CONFIGS["tiny"])
    for p in net.parameters():  # move the zero-initialised output layers away from zero
        torch.nn.init.normal_(p, std=0.1)
    x = torch.randn(1, 1, 16, 16)
    a = net(x, torch.zeros(1), torch.tensor([0]))
    assert not torch.allclose(a, net(x, torch.zeros(1), torch.tensor([10])))  # null class
    assert not torch.allclose(a, net(x, torch.ones(1), torch.tensor([0])))


def test_no_batchnorm_only_groupnorm():
    net = UNet(CONFIGS["cifar10"])
    kinds = {type(m).__name__ for m in net.modules()}
    assert "GroupNorm" in kinds and not any("BatchNorm" in k for k in kinds)


@pytest.mark.parametrize("bad", [dict(img_resolution=8), dict(in_channels=2), dict(img_resolution=18),
                                 dict(dropout=1.0)])
def test_invalid_config_raises(bad):
    with pytest.raises(ValueError):
        UNetConfig(**bad)


def test_config_dict_round_trip():
    cfg = CONFIGS["cifar10"]
    assert UNetConfig.from_dict(cfg.to_dict()) == cfg
