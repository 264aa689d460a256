"""Fast clipping: its clipped sums equal a one-example-at-a-time loop, per layer type and on the U-Net."""

import logging
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from privimage.models.edm import EDMLoss, EDMPrecond
from privimage.models.unet import CONFIGS, UNet
from privimage.privacy.clipping import ExactClipping, FastClipping, make_clipping
from privimage.privacy.clipping.exact import clipped_sum_by_loop, loop_grads


def rel_error(sums, ref):
    """Largest per-parameter relative error ||s - ref|| / ||ref|| (floored at 1e-6 of the total norm)."""
    total = math.sqrt(sum(float((v ** 2).sum()) for v in ref.values()))
    return max(float((sums[k].double() - v).norm()) / max(float(v.norm()), 1e-6 * total) for k, v in ref.items())


def median_norm(module, loss_fn, batch):
    """A clipping norm that clips about half of the examples (so both branches are exercised)."""
    norms = []
    for i in range(len(batch[0])):
        g = loop_grads(module, loss_fn, *(b[i:i + 1] for b in batch))
        norms.append(math.sqrt(sum(float((v.double() ** 2).sum()) for v in g.values())))
    return sorted(norms)[len(norms) // 2]


def check(module, loss_fn, batch, tol=1e-4, **options):
    c = median_norm(module, loss_fn, batch)
    ref = clipped_sum_by_loop(module, loss_fn, batch, max_grad_norm=c)
    sums, losses = FastClipping(**options)(module, loss_fn, batch, max_grad_norm=c)
    assert set(sums) == set(ref) and losses.shape == (len(batch[0]),)
    assert rel_error(sums, ref) < tol
    return sums


def seq_loss(module, x):
    out = module(x)
    return out.pow(2).mean(dim=tuple(range(1, out.dim())))  # (B,)


def test_linear_on_sequences_and_frozen_bias():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 5), nn.SiLU(), nn.Linear(5, 4))
    net[2].bias.requires_grad_(False)
    sums = check(net, seq_loss, (torch.randn(7, 3, 6),))  # 3 rows per example
    assert "2.bias" not in sums


def test_wide_linear_instantiates_and_narrow_uses_ghost_norm():
    torch.manual_seed(1)
    check(nn.Linear(3, 2), seq_loss, (torch.randn(5, 40, 3),))  # T (3 + 2) > 6: instantiated
    check(nn.Linear(64, 64), seq_loss, (torch.randn(5, 2, 64),))  # T (64 + 64) < 64 * 64: ghost


@pytest.mark.parametrize("conv", [
    dict(in_channels=3, out_channels=4, kernel_size=3, padding=1),
    dict(in_channels=3, out_channels=4, kernel_size=3, stride=2, padding=1, bias=False),
    dict(in_channels=3, out_channels=64, kernel_size=(3, 2), dilation=2, padding=(2, 1)),  # ghost at 2x2 output
    dict(in_channels=3, out_channels=5, kernel_size=1),
])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("per_example", ["grouped", "unfold"])
def test_conv2d_any_geometry_and_channels_last(conv, channels_last, per_example):
    torch.manual_seed(2)
    net = nn.Sequential(nn.Conv2d(**conv), nn.SiLU(), nn.Conv2d(conv["out_channels"], 2, 3, stride=2))
    x = torch.randn(6, 3, 8, 8) if conv["kernel_size"] != (3, 2) else torch.randn(6, 3, 5, 5)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        x = x.to(memory_format=torch.channels_last)
    check(net, seq_loss, (x,), conv_per_example=per_example)


def test_conv_input_that_is_a_non_contiguous_view():
    torch.manual_seed(3)
    conv = nn.Conv2d(4, 4, 3, padding=1)

    def loss(module, x):  # the conv sees a permuted (non-contiguous) view, as after an attention reshape
        h = x.permute(0, 1, 3, 2)  # (B, C, W, H) view: not contiguous
        assert not h.is_contiguous()
        return module(h).pow(2).mean((1, 2, 3))

    check(conv, loss, (torch.randn(5, 4, 6, 6),))


def test_groupnorm_and_embedding_with_padding_index():
    torch.manual_seed(4)
    norm, emb = nn.GroupNorm(2, 4), nn.Embedding(7, 4, padding_idx=0)
    nn.init.normal_(norm.weight); nn.init.normal_(norm.bias)
    model = nn.ModuleDict({"norm": norm, "emb": emb})

    def loss(module, x, ids):  # ids (B, 3): repeated indices inside one example, index 0 = padding
        h = module["norm"](x) * module["emb"](ids).mean(1)[:, :, None, None]
        return h.pow(2).mean((1, 2, 3))

    ids = torch.tensor([[1, 1, 0], [2, 3, 2], [0, 0, 0], [6, 5, 1], [4, 4, 4]])
    check(model, loss, (torch.randn(5, 4, 3, 3), ids))


def test_unsupported_layer_falls_back_to_exact_loudly(caplog):
    torch.manual_seed(5)
    net = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=2), nn.LayerNorm([4, 5, 5]), nn.Flatten(),
                        nn.Linear(100, 1))
    with caplog.at_level(logging.WARNING, logger="privimage.privacy.clipping.fast"):
        check(net, seq_loss, (torch.randn(4, 4, 5, 5),))
    assert "no rule for 0 (Conv2d with groups=2" in caplog.text and "1 (no rule for LayerNorm)" in caplog.text


def test_in_place_op_on_a_layer_output_is_refused():
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(inplace=True), nn.Linear(4, 1))
    with pytest.raises(ValueError, match="layer '0': its output was modified in place"):
        FastClipping()(net, seq_loss, (torch.randn(3, 4),), max_grad_norm=1.0)


def edm_batch(net, b, k, seed=0):
    g = torch.Generator().manual_seed(seed)
    loss_fn = EDMLoss(multiplicity=k)
    c = net.config
    x = torch.randn(b, c.in_channels, c.img_resolution, c.img_resolution, generator=g)
    y = torch.randint(0, c.num_classes + 1, (b,), generator=g)
    return loss_fn, (x, y, *loss_fn.draw(x, y, generator=g))


def unet(seed=0):
    torch.manual_seed(seed)
    net = EDMPrecond(UNet(CONFIGS["tiny"]))  # attention at 8x8, embeddings, GroupNorm, strided conv
    for p in net.parameters():  # the zero-initialised output layers would hide errors downstream
        nn.init.normal_(p, std=0.2)
    return net


@pytest.mark.parametrize("k, channels_last, per_example", [
    (1, False, "grouped"), (3, False, "grouped"), (1, True, "grouped"), (3, True, "grouped"),
    (3, False, "unfold"), (3, True, "unfold"),
])
def test_real_unet_with_attention_and_multiplicity(k, channels_last, per_example):
    net = unet()
    loss_fn, batch = edm_batch(net, 4, k)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        batch = (batch[0].to(memory_format=torch.channels_last), *batch[1:])
    check(net, loss_fn, batch, conv_per_example=per_example)


def test_unknown_conv_per_example_is_refused():
    with pytest.raises(ValueError, match="conv_per_example must be one of"):
        FastClipping(conv_per_example="im2col")


def test_micro_batches_add_up_to_the_logical_batch():
    net = unet(1)
    loss_fn, batch = edm_batch(net, 6, 2, seed=1)
    c = median_norm(net, loss_fn, batch)
    ref = clipped_sum_by_loop(net, loss_fn, batch, max_grad_norm=c)
    fast = FastClipping()
    parts = [fast(net, loss_fn, tuple(t[s] for t in batch), max_grad_norm=c)[0] for s in (slice(0, 4), slice(4, 6))]
    assert rel_error({k: parts[0][k] + parts[1][k] for k in ref}, ref) < 1e-4


def test_bf16_autocast_is_close_to_fp32():
    net = unet(2)
    loss_fn, batch = edm_batch(net, 4, 2, seed=2)
    ref = clipped_sum_by_loop(net, loss_fn, batch, max_grad_norm=1e9)  # no clipping: compare raw sums
    with torch.autocast("cpu", dtype=torch.bfloat16):
        sums, _ = FastClipping()(net, loss_fn, batch, max_grad_norm=1e9)
    assert all(v.dtype == torch.float32 for v in sums.values())
    total = math.sqrt(sum(float((v ** 2).sum()) for v in ref.values()))
    err = math.sqrt(sum(float(((sums[k].double() - v) ** 2).sum()) for k, v in ref.items())) / total
    assert err < 0.05  # bf16 keeps 8 mantissa bits: a few % on the whole gradient


def test_exact_and_fast_agree_and_names_are_checked():
    net = unet(3)
    loss_fn, batch = edm_batch(net, 3, 2, seed=3)
    a, _ = ExactClipping()(net, loss_fn, batch, max_grad_norm=0.5)
    b, _ = make_clipping("fast")(net, loss_fn, batch, max_grad_norm=0.5)
    assert rel_error(b, {k: v.double() for k, v in a.items()}) < 1e-4
    with pytest.raises(ValueError, match="clipping must be one of"):
        make_clipping("ghost")
