"""EDM preconditioning and the per-example EDM loss, including exact per-sample gradients for DP-SGD."""

import pytest
import torch

from privimage.models.edm import EDMLoss, EDMPrecond, to_model_space, to_uint8
from privimage.models.unet import CONFIGS, UNet
from privimage.privacy.dpsgd import max_relative_error_vs_loop, per_sample_grads


def random_net(seed=0, name="tiny"):
    """A tiny model whose (zero-initialised) output layers are randomised, so every gradient is non-zero."""
    torch.manual_seed(seed)
    net = EDMPrecond(UNet(CONFIGS[name]))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net


def batch(b=3, k=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand((b, 1, 16, 16), generator=g) * 2 - 1
    labels = torch.arange(b) % 10
    loss_fn = EDMLoss(multiplicity=k, label_dropout=0.5)
    return loss_fn, (images, labels, *loss_fn.draw(images, labels, generator=g))


def test_preconditioning_of_a_zero_network_is_c_skip():
    net = EDMPrecond(UNet(CONFIGS["tiny"]), sigma_data=0.5)  # output conv is zero-initialised
    x = torch.randn(2, 1, 16, 16)
    sigma = torch.tensor([0.1, 10.0])
    c_skip = 0.25 / (sigma**2 + 0.25)
    assert torch.allclose(net(x, sigma, torch.tensor([0, 10])), c_skip.reshape(-1, 1, 1, 1) * x, atol=1e-6)


def test_draw_shapes_and_lognormal_sigma():
    loss_fn = EDMLoss(multiplicity=4)
    images, labels = torch.zeros(500, 1, 16, 16), torch.zeros(500, dtype=torch.long)
    sigma, noise, drop = loss_fn.draw(images, labels, generator=torch.Generator().manual_seed(0))
    assert sigma.shape == (500, 4) and noise.shape == (500, 4, 1, 16, 16) and drop.shape == (500, 4)
    assert abs(sigma.log().mean().item() - (-1.2)) < 0.1 and abs(sigma.log().std().item() - 1.2) < 0.1
    assert 0.07 < drop.float().mean().item() < 0.13


def test_loss_is_per_example_mean_over_its_K_copies():
    net = random_net()
    loss_fn, (images, labels, sigma, noise, drop) = batch(b=2, k=3)
    losses = loss_fn(net, images, labels, sigma, noise, drop)
    assert losses.shape == (2,)
    single = EDMLoss(multiplicity=1)
    copies = torch.stack([single(net, images, labels, sigma[:, j:j + 1], noise[:, j:j + 1], drop[:, j:j + 1])
                          for j in range(3)], dim=1)  # (B, K)
    assert torch.allclose(losses, copies.mean(dim=1), rtol=1e-5)
    # an example's loss does not depend on the other examples of the batch (GroupNorm, no BatchNorm)
    alone = loss_fn(net, images[1:], labels[1:], sigma[1:], noise[1:], drop[1:])
    assert torch.allclose(losses[1:], alone, rtol=1e-5, atol=1e-7)


def test_per_sample_grads_exact_with_attention_and_multiplicity():
    net = random_net()
    assert any(type(m).__name__ == "AttnBlock" for m in net.modules())
    loss_fn, data = batch(b=3, k=3)
    assert max_relative_error_vs_loop(net, loss_fn, *data) < 1e-4
    grads, losses = per_sample_grads(net, loss_fn, *data)
    assert torch.allclose(losses, loss_fn(net, *data).detach(), rtol=1e-5)
    assert all(g.shape[0] == 3 for g in grads.values())


@pytest.mark.parametrize("bad", [dict(multiplicity=0), dict(label_dropout=1.0)])
def test_invalid_loss_parameters(bad):
    with pytest.raises(ValueError):
        EDMLoss(**bad)


def test_uint8_round_trip():
    x = torch.arange(256, dtype=torch.uint8).reshape(1, 16, 16, 1).numpy()
    t = to_model_space(x)
    assert t.shape == (1, 1, 16, 16) and t.min() == -1 and t.max() == 1
    assert (to_uint8(t) == x).all()
