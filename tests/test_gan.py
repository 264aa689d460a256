"""The GAN family: D's per-example gradients are exact, real and fake terms combine as documented, the registry."""

import functools

import numpy as np
import pytest
import torch

from privimage.errors import UserError
from privimage.generators import GENERATORS, checkpoint_family, family, load_generator
from privimage.models.gan import GAN, GANConfig, d_fake_loss, d_real_loss, generate
from privimage.privacy.clipping.exact import clipped_sum_by_loop
from privimage.privacy.dpsgd import DPSGD, check_dp_compatible, max_relative_error_vs_loop
from privimage.privacy.rng import NoiseSource
from privimage.run_config import load_run_config
from privimage.train.gan_checkpoint import save_gan_checkpoint
from privimage.train.gan_finetune import fake_term
from privimage.train.ema import make_ema

TINY = GANConfig(img_resolution=16, in_channels=1, num_classes=10, z_dim=8, g_width=16, d_width=4)


def tiny_gan(seed=0, config=TINY) -> GAN:
    torch.manual_seed(seed)
    return GAN(config)


def real_batch(b=6, seed=1, resolution=16, channels=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand((b, channels, resolution, resolution), generator=g) * 2 - 1, torch.arange(b) % 10


@pytest.mark.parametrize("resolution, channels", [(16, 1), (32, 3)])
def test_real_term_per_example_gradients_equal_a_per_example_loop(resolution, channels):
    gan = tiny_gan(config=GANConfig(img_resolution=resolution, in_channels=channels, z_dim=8, g_width=16, d_width=4))
    x, y = real_batch(5, resolution=resolution, channels=channels)
    real_loss = functools.partial(d_real_loss, ac_weight=1.0)  # hinge + auxiliary CE: what fine-tuning clips
    assert max_relative_error_vs_loop(gan.D, real_loss, x, y) < 1e-4
    # and the engine's clipping implementations (fast: per-layer rules) give the loop's clipped sum
    for clipping in ("exact", "fast"):
        engine = DPSGD(gan.D, torch.optim.SGD(gan.D.parameters(), lr=1.0), noise_multiplier=0.0,
                       max_grad_norm=0.05, expected_batch_size=5.0, sample_rate=0.5, noise=NoiseSource.from_test_seed(0),
                       clipping=clipping)
        sums, _ = engine.clipping(gan.D, real_loss, (x, y), max_grad_norm=0.05)
        loop = clipped_sum_by_loop(gan.D, real_loss, (x, y), max_grad_norm=0.05)
        for name, s in sums.items():
            assert torch.allclose(s.double(), loop[name].double(), rtol=1e-4, atol=1e-7), (clipping, name)


def test_discriminator_is_dp_compatible_and_the_generator_is_not():
    gan = tiny_gan()
    check_dp_compatible(gan.D)  # no BatchNorm: one example's score depends on that example only
    with pytest.raises(ValueError, match="BatchNorm"):
        check_dp_compatible(gan.G)  # G's conditional BN is fine only because G never sees sensitive data


def test_one_step_is_noisy_clipped_real_sum_plus_clipped_fake_sum_over_expected_batch():
    """D's update = (sum_i clip(g_real_i) + N(0, (sigma C)^2)) / E[B] + (sum_j clip(g_fake_j)) / E[B]."""
    gan, C, eb = tiny_gan(), 0.05, 4.0
    x, y = real_batch(3)
    z, y_fake = torch.randn(4, TINY.z_dim, generator=torch.Generator().manual_seed(2)), torch.arange(4) % 10
    before = {k: p.detach().clone() for k, p in gan.D.named_parameters()}
    gan.G.eval()  # BN with fixed statistics: fake_term draws the same fakes
    with torch.no_grad():
        x_fake = gan.G(z, y_fake)
    real = clipped_sum_by_loop(gan.D, d_real_loss, (x, y), max_grad_norm=C)
    fake = clipped_sum_by_loop(gan.D, d_fake_loss, (x_fake, y_fake), max_grad_norm=C)
    noise = NoiseSource.from_test_seed(5)
    engine = DPSGD(gan.D, torch.optim.SGD(gan.D.parameters(), lr=1.0), noise_multiplier=2.0, max_grad_norm=C,
                   expected_batch_size=eb, sample_rate=0.5, noise=noise, clipping="exact")
    engine.accumulate(d_real_loss, x, y)
    engine.step(public_grads=fake_term(engine, gan.G, gan.D, z, y_fake, micro_batch=3))
    draws = NoiseSource.from_test_seed(5).gaussian((sum(p.numel() for p in before.values()),), std=2.0 * C,
                                                   stream="finetune/noise", counter=1)
    for (name, p0), z_part in zip(before.items(), draws.split([p.numel() for p in before.values()])):
        expected = p0 - ((real[name].float() + z_part.view(p0.shape)) / eb + fake[name].float() / eb)
        assert torch.allclose(gan.D.get_parameter(name), expected, rtol=1e-5, atol=1e-6), name


def test_samples_do_not_depend_on_the_batch_size_and_are_class_balanced():
    gan = tiny_gan()
    x1, y1 = generate(gan, 13, seed=4, batch_size=3, progress=False)
    x2, y2 = generate(gan, 13, seed=4, batch_size=13, progress=False)
    assert x1.shape == (13, 16, 16, 1) and x1.dtype == np.uint8
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert np.bincount(y1).tolist() == [2, 2, 2] + [1] * 7
    assert len(np.unique(x1.reshape(13, -1), axis=0)) == 13  # different latents, different images


def test_registry_refuses_an_unknown_family_naming_the_known_ones():
    assert set(GENERATORS) == {"diffusion", "gan"}
    with pytest.raises(UserError, match=r"generator: unknown family 'vae' \(known: diffusion, gan\)"):
        family("vae")
    with pytest.raises(UserError, match="unknown family 'stylegan'"):
        load_run_config(None, ["generator=stylegan"])


def test_gan_geometry_is_checked_against_the_data_naming_the_gan_section():
    with pytest.raises(UserError, match=r"gan.model is 32px x 1 channels but data is 16px.*gan.model.img_resolution"):
        load_run_config(None, ["generator=gan", "gan.model.img_resolution=32"])


def test_checkpoint_records_its_family_and_loads_back(tmp_path):
    gan = tiny_gan()
    opts = {"d": torch.optim.Adam(gan.D.parameters()), "g": torch.optim.Adam(gan.G.parameters())}
    save_gan_checkpoint(tmp_path, gan=gan, ema_g=make_ema(gan.G), optimizers=opts, step=0, kind="pretrain", config={})
    assert checkpoint_family(tmp_path) == "gan"
    loaded = load_generator(tmp_path)
    assert isinstance(loaded, GAN) and loaded.config == TINY
    for a, b in zip(gan.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
