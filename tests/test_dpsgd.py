"""DP-SGD: exact per-sample gradients (vs a one-example loop), clipping, noise level, Poisson sampling."""

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from privimage.errors import UserError
from privimage.privacy.dpsgd import (
    DPSGD,
    check_dp_compatible,
    max_relative_error_vs_loop,
    per_sample_grads,
    poisson_batches,
)
from privimage.privacy.ledger import Ledger
from privimage.privacy.rng import NoiseSource


def cross_entropy(module, x, y):
    return F.cross_entropy(module(x), y, reduction="none")  # (B,)


def small_cnn():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.GroupNorm(4, 8), nn.SiLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.GroupNorm(4, 8), nn.SiLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5),
    )


class AttentionNet(nn.Module):
    """Conv + single-head self-attention whose output feeds a conv as a NON-contiguous tensor (like a U-Net block)."""

    def __init__(self, channels=8, classes=5):
        super().__init__()
        self.conv_in = nn.Conv2d(3, channels, 3, padding=1)
        self.norm = nn.GroupNorm(2, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 3, padding=1)
        self.head = nn.Linear(channels, classes)
        self.register_buffer("temperature", torch.tensor(0.5))  # a buffer passed through functional_call
        self.seen_non_contiguous = False

    def forward(self, x):
        h = self.conv_in(x)  # (B, C, H, W)
        b, c, height, width = h.shape
        q, k, v = self.qkv(self.norm(h)).reshape(b, 3, c, height * width).unbind(1)  # each (B, C, HW)
        w = torch.softmax(torch.einsum("bci,bcj->bij", q, k) * self.temperature / math.sqrt(c), dim=-1)  # (B, HW, HW)
        a = torch.einsum("bij,bcj->bic", w, v)  # (B, HW, C), contiguous
        a = a.permute(0, 2, 1).unflatten(2, (height, width))  # (B, C, H, W) view, NOT contiguous
        self.seen_non_contiguous |= not a.is_contiguous()
        h = h + self.proj(a)
        return self.head(h.mean(dim=(2, 3)))


def batch(n=6, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g), torch.randint(0, 5, (n,), generator=g)


def test_per_sample_grads_match_loop_on_groupnorm_cnn():
    torch.manual_seed(0)
    assert max_relative_error_vs_loop(small_cnn(), cross_entropy, *batch()) < 1e-4


@pytest.mark.parametrize("channels_last", [False, True])
def test_per_sample_grads_match_loop_on_attention_with_non_contiguous_conv_input(channels_last):
    torch.manual_seed(1)
    net = AttentionNet()
    x, y = batch()
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        x = x.to(memory_format=torch.channels_last)
    assert max_relative_error_vs_loop(net, cross_entropy, x, y) < 1e-4
    assert net.seen_non_contiguous


def test_per_sample_grads_shapes_losses_and_frozen_parameters():
    torch.manual_seed(2)
    net = small_cnn()
    net[0].requires_grad_(False)  # frozen first conv: skipped, but still used in forward
    x, y = batch(n=4)
    grads, losses = per_sample_grads(net, cross_entropy, x, y)
    trainable = {k: p for k, p in net.named_parameters() if p.requires_grad}
    assert set(grads) == set(trainable) and "0.weight" not in grads
    for name, g in grads.items():
        assert g.shape == (4, *trainable[name].shape)
    assert torch.allclose(losses, cross_entropy(net, x, y).detach(), atol=1e-6)
    assert max_relative_error_vs_loop(net, cross_entropy, x, y) < 1e-4


def test_dropout_draws_differently_per_example():
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(16, 64), nn.Dropout(0.5), nn.Linear(64, 1)).train()
    x = torch.randn(1, 16).expand(8, 16).contiguous()  # eight identical examples
    grads, _ = per_sample_grads(net, lambda m, x: m(x).sum(-1), x)
    g = grads["2.weight"].flatten(1)  # (8, 64): zero where that example's dropout mask dropped a unit
    assert len({tuple((row != 0).tolist()) for row in g}) > 1


def test_batchnorm_is_rejected():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    with pytest.raises(ValueError, match="BatchNorm2d at '1'.*GroupNorm"):
        check_dp_compatible(net)
    with pytest.raises(ValueError, match="BatchNorm"):
        DPSGD(net, torch.optim.SGD(net.parameters(), lr=0.1), noise_multiplier=1.0, max_grad_norm=1.0,
              expected_batch_size=4.0, sample_rate=0.5, noise=NoiseSource.from_test_seed(0))


def linear_engine(noise_multiplier=0.0, max_grad_norm=1.0, expected_batch_size=1.0, ledger=None, seed=0, dim=10,
                  clipping="fast", noise=None):
    """A bias-free linear model with loss w.x: the per-sample gradient is exactly x."""
    net = nn.Linear(dim, 1, bias=False)
    nn.init.zeros_(net.weight)
    engine = DPSGD(net, torch.optim.SGD(net.parameters(), lr=1.0), noise_multiplier=noise_multiplier,
                   max_grad_norm=max_grad_norm, expected_batch_size=expected_batch_size, sample_rate=0.01,
                   noise=noise or NoiseSource.from_test_seed(seed), ledger=ledger, clipping=clipping)
    return net, engine


def linear_loss(module, x):
    return module(x).sum(-1)  # (B,), gradient wrt weight = x


def test_each_example_is_clipped_to_max_grad_norm():
    net, engine = linear_engine(max_grad_norm=1.0)
    small = torch.zeros(10); small[0] = 0.5  # norm 0.5: kept as is
    large = torch.zeros(10); large[1] = 3.0; large[2] = 4.0  # norm 5: scaled to norm 1
    engine.accumulate(linear_loss, small[None])
    engine.accumulate(linear_loss, large[None])  # a second micro-batch of the same logical batch
    engine.step()
    expected = -(small + large / 5.0)  # SGD lr=1, no noise, expected batch size 1
    assert torch.allclose(net.weight[0], expected, atol=1e-5)


def test_clipped_contributions_never_exceed_max_grad_norm():
    torch.manual_seed(4)
    x = torch.randn(32, 10) * torch.logspace(-2, 2, 32)[:, None]  # norms from ~0.03 to ~300
    for i in range(len(x)):
        net, engine = linear_engine(max_grad_norm=0.7)
        engine.accumulate(linear_loss, x[i : i + 1])
        engine.step()
        norm = net.weight.detach().norm().item()
        assert norm <= 0.7 * (1 + 1e-5)
        assert norm == pytest.approx(min(x[i].norm().item(), 0.7), rel=1e-4)


def test_noise_std_is_sigma_times_c_over_expected_batch_size():
    net = nn.Linear(100, 100)
    engine = DPSGD(net, torch.optim.SGD(net.parameters(), lr=0.0), noise_multiplier=2.0, max_grad_norm=0.5,
                   expected_batch_size=4.0, sample_rate=0.5, noise=NoiseSource.from_test_seed(5))
    zero_loss = lambda m, x: m(x).sum(-1) * 0.0  # noqa: E731 -- zero gradients: p.grad is pure noise
    samples = []
    for _ in range(20):
        engine.accumulate(zero_loss, torch.randn(3, 100))
        engine.step()
        samples += [p.grad.flatten() for p in net.parameters()]
    noise = torch.cat(samples)  # (20 * 10100,)
    assert noise.std().item() == pytest.approx(2.0 * 0.5 / 4.0, rel=0.02)
    assert abs(noise.mean().item()) < 0.01


def test_same_seed_same_noise_different_seed_different_noise():
    weights = []
    for seed in (11, 11, 12):
        net, engine = linear_engine(noise_multiplier=1.0, seed=seed)
        engine.accumulate(linear_loss, torch.ones(2, 10))
        engine.step()
        weights.append(net.weight.detach().clone())
    assert torch.equal(weights[0], weights[1]) and not torch.equal(weights[0], weights[2])


def test_poisson_batch_sizes_have_binomial_mean_and_variance():
    n, q, steps = 1000, 0.1, 2000
    sizes = []
    for _, idx in poisson_batches(n, sample_rate=q, steps=steps, noise=NoiseSource.from_test_seed(6)):
        assert idx.dtype == torch.int64 and len(idx.unique()) == len(idx)
        assert len(idx) == 0 or (idx.min() >= 0 and idx.max() < n)
        sizes.append(len(idx))
    sizes = torch.tensor(sizes, dtype=torch.float64)
    assert len(sizes) == steps
    assert sizes.mean().item() == pytest.approx(n * q, abs=1.0)  # ~5 standard errors
    assert sizes.var().item() == pytest.approx(n * q * (1 - q), rel=0.15)  # ~5 standard errors


def test_poisson_batches_can_be_empty():
    src = NoiseSource.from_test_seed(7)
    sizes = [len(i) for _, i in poisson_batches(10, sample_rate=0.05, steps=200, noise=src)]
    assert 0 in sizes and max(sizes) > 0


def test_empty_batch_still_takes_a_charged_noisy_step(tmp_path):
    ledger = Ledger(tmp_path / "ledger.json", delta=1e-5)
    ledger.open_dpsgd("finetune", sample_rate=0.01, noise_multiplier=1.0, planned_steps=2)
    net, engine = linear_engine(noise_multiplier=1.0, ledger=ledger)
    losses = engine.accumulate(linear_loss, torch.zeros(0, 10))
    assert losses.shape == (0,)
    stats = engine.step()
    assert net.weight.abs().sum() > 0  # noise moved the weights
    assert ledger.entries[0].steps == 1 and set(stats) == {"step", "noisy_grad_norm", "replayed"}


def test_step_twice_without_accumulate_raises():
    net, engine = linear_engine()
    engine.accumulate(linear_loss, torch.ones(1, 10))
    engine.step()
    with pytest.raises(RuntimeError, match="twice"):
        engine.step()
    engine.zero_grad()  # an explicit new (empty) logical batch is fine
    engine.step()


def test_ledger_refuses_steps_beyond_planned_and_leaves_model_unchanged(tmp_path):
    ledger = Ledger(tmp_path / "ledger.json", delta=1e-5)
    ledger.open_dpsgd("finetune", sample_rate=0.01, noise_multiplier=1.0, planned_steps=2)
    net, engine = linear_engine(noise_multiplier=1.0, ledger=ledger)
    for _ in range(2):
        engine.accumulate(linear_loss, torch.ones(1, 10))
        engine.step()
    before = net.weight.detach().clone()
    engine.accumulate(linear_loss, torch.ones(1, 10))
    with pytest.raises(UserError, match="planned"):
        engine.step()
    assert torch.equal(net.weight, before) and ledger.entries[0].steps == 2


def test_engine_checks_ledger_entry_and_optimizer(tmp_path):
    net = nn.Linear(4, 1)
    ledger = Ledger(tmp_path / "ledger.json", delta=1e-5)  # no "finetune" entry opened
    with pytest.raises(ValueError, match="open_dpsgd"):
        DPSGD(net, torch.optim.SGD(net.parameters(), lr=0.1), noise_multiplier=1.0, max_grad_norm=1.0,
              expected_batch_size=2.0, sample_rate=0.01, noise=NoiseSource.from_test_seed(0), ledger=ledger)
    with pytest.raises(ValueError, match="optimizer"):
        DPSGD(net, torch.optim.SGD([net.weight], lr=0.1), noise_multiplier=1.0, max_grad_norm=1.0,
              expected_batch_size=2.0, sample_rate=0.01, noise=NoiseSource.from_test_seed(0))
    for bad in (dict(noise_multiplier=-1.0), dict(max_grad_norm=0.0), dict(expected_batch_size=0.0)):
        kwargs = {**dict(noise_multiplier=1.0, max_grad_norm=1.0, expected_batch_size=2.0), **bad}
        with pytest.raises(ValueError):
            DPSGD(net, torch.optim.SGD(net.parameters(), lr=0.1), noise=NoiseSource.from_test_seed(0),
                  sample_rate=0.01, **kwargs)



def test_public_grads_are_added_after_noise_and_division_and_unknown_names_refused():
    net, engine = linear_engine(max_grad_norm=1.0, expected_batch_size=2.0)
    x = torch.zeros(10); x[0] = 0.5
    engine.accumulate(linear_loss, x[None])
    public = torch.zeros(1, 10); public[0, 3] = 7.0  # taken as is: not clipped, not divided by E[B]
    engine.step(public_grads={"weight": public})
    assert torch.allclose(net.weight[0], -(x / 2.0 + public[0]), atol=1e-6)
    engine.accumulate(linear_loss, x[None])
    with pytest.raises(ValueError, match="no trainable parameter named"):
        engine.step(public_grads={"bias": public})


def test_reduce_hook_sees_the_clipped_sum_before_noise():
    seen = []

    def reduce(sums):
        seen.append(sums["weight"].clone())
        return {k: 2 * v for k, v in sums.items()}  # e.g. the all-reduce of two identical ranks

    net = nn.Linear(10, 1, bias=False)
    nn.init.zeros_(net.weight)
    engine = DPSGD(net, torch.optim.SGD(net.parameters(), lr=1.0), noise_multiplier=0.0, max_grad_norm=1.0,
                   expected_batch_size=1.0, sample_rate=0.1, noise=NoiseSource.from_test_seed(0), reduce=reduce)
    x = torch.zeros(1, 10); x[0, 1] = 3.0
    engine.accumulate(linear_loss, x)
    engine.step()
    assert torch.allclose(seen[0], torch.tensor([[0, 1.0] + [0] * 8]), atol=1e-6)  # clipped to norm 1
    assert torch.allclose(net.weight, -2 * seen[0], atol=1e-6)


def test_sums_and_noise_are_fp32_for_any_parameter_dtype():
    net = nn.Linear(50, 50).to(torch.bfloat16)
    engine = DPSGD(net, torch.optim.SGD(net.parameters(), lr=0.0), noise_multiplier=1.0, max_grad_norm=1.0,
                   expected_batch_size=1.0, sample_rate=0.1, noise=NoiseSource.from_test_seed(1))
    assert all(s.dtype == torch.float32 for s in engine._sums.values())
    engine.zero_grad()
    engine.step()
    noise = engine._noise(2)
    assert all(z.dtype == torch.float32 for z in noise.values())
    assert net.weight.grad.dtype == torch.bfloat16


def test_replayed_steps_are_identical_and_not_charged_again(tmp_path):
    x = torch.randn(40, 10)

    def train(ledger, noise, steps, start=0, net=None):
        if net is None:
            net = nn.Linear(10, 1, bias=False)
            nn.init.zeros_(net.weight)
        engine = DPSGD(net, torch.optim.SGD(net.parameters(), lr=0.1), noise_multiplier=1.0, max_grad_norm=1.0,
                       expected_batch_size=4.0, sample_rate=0.1, noise=noise, ledger=ledger)
        replayed = []
        for t, idx in engine.batches(40, steps=steps, start=start):
            engine.accumulate(linear_loss, x[idx])
            replayed.append(engine.step()["replayed"])
        return net, replayed

    key = NoiseSource.fresh().secret()
    source = lambda: NoiseSource.from_secret(key, description="fresh")  # noqa: E731 -- a new process, same key
    la = Ledger(tmp_path / "a.json", delta=1e-5)
    la.open_dpsgd("finetune", sample_rate=0.1, noise_multiplier=1.0, planned_steps=3)
    net_a, replayed = train(la, source(), 3)
    assert replayed == [False] * 3 and la.entries[0].steps == 3
    lb = Ledger(tmp_path / "b.json", delta=1e-5)
    lb.open_dpsgd("finetune", sample_rate=0.1, noise_multiplier=1.0, planned_steps=3)
    train(lb, source(), 2)  # steps 1, 2 charged; killed before a checkpoint: restart from step 0
    net_b, replayed = train(lb, source(), 3)
    assert replayed == [True, True, False] and lb.entries[0].steps == 3
    assert torch.equal(net_a.weight, net_b.weight)


def test_batches_check_the_expected_batch_size_against_q_n():
    net, engine = linear_engine(expected_batch_size=5.0)  # sample_rate 0.01: E[B] = 0.01 * 500
    next(engine.batches(500, steps=1))
    with pytest.raises(ValueError, match="expected_batch_size 5.0 != sample_rate 0.01"):
        next(engine.batches(400, steps=1))


def test_seed_recovery_fails_every_key_bit_matters_and_fresh_keys_differ():
    # MT19937 on CPU used only 32 seed bits: seeds equal mod 2**32 drew identical noise, so a seed search
    # recovered it. Here keys that agree on their first 8 bytes still draw unrelated noise.
    key = bytearray(NoiseSource.fresh().secret())
    other = bytearray(key); other[-1] ^= 1
    draws = [NoiseSource.from_secret(bytes(k), description="t").gaussian((1000,), std=1.0, stream="finetune/noise",
                                                                           counter=1) for k in (key, other)]
    assert torch.corrcoef(torch.stack(draws))[0, 1].abs() < 0.15
    fresh = [NoiseSource.fresh().gaussian((1000,), std=1.0, stream="finetune/noise", counter=1) for _ in range(2)]
    assert not torch.equal(fresh[0], fresh[1]) and len(NoiseSource.fresh().secret()) * 8 == 256
    for seed in range(64):  # nor is the noise any 32/64-bit-seeded torch.Generator's (a sample of the space)
        g = torch.Generator().manual_seed(seed)
        assert not torch.allclose(torch.randn(1000, generator=g), fresh[0], atol=1e-3)
