"""The CA classifiers' training recipe: one-cycle warm-up, label smoothing, random crops and flips."""

import dataclasses

import pytest
import torch

from privimage.evaluate.ca import augment, schedule
from privimage.evaluate.classifiers import CLASSIFIERS


def learning_rates(recipe, total: int) -> list[float]:
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=recipe.lr)
    sched, rates = schedule(opt, recipe, total=total), []
    for _ in range(total):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return rates


def test_resnet9_warms_up_before_its_peak_rate():
    recipe = CLASSIFIERS["resnet9"]  # diverged at lr 0.1 from a cold start
    rates = learning_rates(recipe, total=100)
    warm = int(recipe.warmup * 100)
    assert rates[0] == pytest.approx(recipe.lr / (warm + 1))  # starts small
    assert rates[:warm + 1] == sorted(rates[:warm + 1]) and rates[warm] == pytest.approx(recipe.lr)  # linear ramp
    assert rates[warm:] == sorted(rates[warm:], reverse=True) and rates[-1] < 0.01 * recipe.lr  # cosine down
    assert recipe.label_smoothing > 0
    assert learning_rates(recipe, total=4)[0] < recipe.lr  # a short run (4 steps) still starts below the peak


def test_cnn_keeps_its_cosine_schedule_and_no_augmentation():
    recipe = CLASSIFIERS["cnn"]
    rates = learning_rates(recipe, total=10)
    assert rates[0] == pytest.approx(recipe.lr) and rates == sorted(rates, reverse=True)
    x = torch.randn(4, 3, 8, 8)
    assert torch.equal(augment(x, recipe, generator=torch.Generator().manual_seed(0)), x)


def test_random_crop_is_a_shift_within_the_padding():
    recipe = dataclasses.replace(CLASSIFIERS["resnet9"], flip=False, crop_padding=2)
    x = torch.arange(16 * 16, dtype=torch.float32).reshape(1, 1, 16, 16).repeat(400, 3, 1, 1)  # (400, 3, 16, 16)
    out = augment(x, recipe, generator=torch.Generator().manual_seed(0))
    centre = out[:, 0, 2:-2, 2:-2] - x[:, 0, 2:-2, 2:-2]  # inside the padding a crop is a shift: dy * 16 + dx
    shifts = centre.reshape(400, -1)
    assert torch.equal(shifts, shifts[:, :1].expand_as(shifts))  # one shift per image
    assert set(shifts[:, 0].tolist()) == {dy * 16 + dx for dy in range(-2, 3) for dx in range(-2, 3)}
    assert torch.equal(out[:, 0], out[:, 2])  # the same crop for every channel
