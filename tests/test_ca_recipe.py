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


def test_dpimagebench_recipe_steps_its_rate_every_20_epochs():
    recipe = CLASSIFIERS["resnet164"]
    assert (recipe.optimizer, recipe.lr, recipe.batch_size, recipe.epochs) == ("adam", 0.01, 256, 50)
    assert recipe.ema == 0.9999 and recipe.weight_decay == 0
    opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=recipe.lr)
    sched, rates = schedule(opt, recipe, total=50 * 3, steps_per_epoch=3), []
    for _ in range(50 * 3):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert rates[0] == rates[59] == pytest.approx(0.01)  # epochs 0-19
    assert rates[60] == rates[119] == pytest.approx(0.002)  # epochs 20-39: x 0.2
    assert rates[120] == rates[-1] == pytest.approx(0.0004)  # epochs 40-49


def test_adam_step_schedule_and_ema_recipe_learns_digits():
    """The DPImageBench training path (Adam, step schedule, warmed-up EMA scored) on the small CNN: real digits."""
    from test_ca import digits_16px

    from privimage.evaluate.ca import per_class_accuracy, train_classifier
    from privimage.evaluate.classifiers import SmallCNN, dpimagebench

    train, test = digits_16px()
    recipe = dataclasses.replace(dpimagebench(SmallCNN), epochs=6, batch_size=64, lr_step=3)
    kwargs = dict(epochs=recipe.epochs, seed=0, device=torch.device("cpu"), progress=False, desc="")
    net = train_classifier(train, recipe, **kwargs)
    assert per_class_accuracy(net, test, device=torch.device("cpu")).mean() > 0.85
    plain = train_classifier(train, dataclasses.replace(recipe, ema=0.0), **kwargs)
    assert any(not torch.equal(a, b) for a, b in zip(net.parameters(), plain.parameters()))  # the EMA was scored
    for a, b in zip(net.buffers(), plain.buffers()):  # BatchNorm statistics: the live network's, identical runs
        assert torch.equal(a, b)
