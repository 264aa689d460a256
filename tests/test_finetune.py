"""DP fine-tuning: the ledger matches the accountant, privacy is spent once across a kill and resume."""

import json

import numpy as np
import pytest
import torch

from privimage.data import ImageSet
from privimage.errors import UserError
from privimage.models.edm import EDMPrecond
from privimage.models.unet import CONFIGS, UNet
from privimage.privacy.accountant import epsilon_pld
from privimage.privacy import dpsgd as dpsgd_module
from privimage.privacy.ledger import Ledger, Mechanism
from privimage.privacy.rng import NoiseSource
from privimage.train import finetune as finetune_module
from privimage.train.finetune import FinetuneConfig, calibrate_for_ledger, finetune, plan

CONFIG = FinetuneConfig(steps=4, batch_size=6, micro_batch=4, multiplicity=2, checkpoint_every=2, log_every=2)


@pytest.fixture(scope="module")
def sensitive():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (30, 16, 16, 1), dtype=np.uint8)
    return ImageSet(x, np.arange(30) % 10, [str(i) for i in range(10)], source="random test images")


def fresh_net():
    torch.manual_seed(0)
    return EDMPrecond(UNet(CONFIGS["tiny"]))


def run(tmp, sensitive, *, resume=False, config=CONFIG, sigma=1.5):
    ledger = Ledger(tmp / "ledger.json", delta=1e-5)
    net = fresh_net()
    ema = finetune(net, sensitive, config=config, noise_multiplier=sigma, ledger=ledger, out_dir=tmp / "ft",
                   seed=3, device="cpu", resume=resume, progress=False)
    return net, ema, ledger


def test_three_steps_ledger_epsilon_equals_the_accountant(tmp_path, sensitive):
    config = FinetuneConfig(steps=3, batch_size=6, micro_batch=4, multiplicity=2)
    net, _, ledger = run(tmp_path, sensitive, config=config)
    q = 6 / 30
    (entry,) = ledger.entries
    assert (entry.steps, entry.sample_rate, entry.noise_multiplier) == (3, q, 1.5)
    expected = epsilon_pld([Mechanism("finetune", "poisson_gaussian", 1.5, q, 3)], delta=1e-5)
    assert ledger.epsilon() == pytest.approx(expected, rel=1e-9)
    saved = json.loads((tmp_path / "ledger.json").read_text())
    assert saved["entries"][0]["steps"] == 3 and saved["epsilon_pld"] == pytest.approx(expected)
    state = json.loads((tmp_path / "ft" / "state.json").read_text())
    assert state["step"] == 3 and state["epsilon"] == pytest.approx(expected)
    assert "test seed 3" in saved["noise_seed"]


@pytest.mark.parametrize("killed_at, last_checkpoint", [(3, 2), (1, 0)])
def test_killed_then_resumed_run_equals_uninterrupted_and_charges_once(tmp_path, sensitive, monkeypatch, killed_at,
                                                                        last_checkpoint):
    before = {k: v.clone() for k, v in fresh_net().state_dict().items()}
    net_a, ema_a, ledger_a = run(tmp_path / "a", sensitive)
    assert any(not torch.equal(before[k], v) for k, v in net_a.state_dict().items())
    # the log holds only noised or public quantities: no loss of the sensitive data
    lines = [json.loads(line) for line in (tmp_path / "a" / "ft" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [2, 4]
    assert all(set(r) == {"step", "epsilon", "noisy_grad_norm"} for r in lines)  # no speed: timings.py
    assert lines[0]["epsilon"] < lines[1]["epsilon"]

    calls = {"n": 0}
    real_update = finetune_module.update_ema

    def killed(ema, net, *, decay, step):  # the process dies after step `killed_at` was charged
        calls["n"] += 1
        if calls["n"] == killed_at:
            raise KeyboardInterrupt
        real_update(ema, net, decay=decay, step=step)

    monkeypatch.setattr(finetune_module, "update_ema", killed)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", sensitive)
    assert json.loads((tmp_path / "b" / "ft" / "state.json").read_text())["step"] == last_checkpoint
    assert Ledger(tmp_path / "b" / "ledger.json", delta=1e-5).entries[0].steps == killed_at
    key = tmp_path / "b" / "ft" / "noise.key"  # the only secret, kept apart, owner-only
    assert key.stat().st_mode & 0o777 == 0o600 and key.read_bytes() == NoiseSource.from_test_seed(3).secret()
    monkeypatch.setattr(finetune_module, "update_ema", real_update)

    net_b, ema_b, ledger_b = run(tmp_path / "b", sensitive, resume=True)
    assert ledger_b.entries[0].steps == 4 == ledger_a.entries[0].steps
    for (k, a), b in zip(net_a.state_dict().items(), net_b.state_dict().values()):
        assert torch.equal(a, b), k
    for a, b in zip(ema_a.state_dict().values(), ema_b.state_dict().values()):
        assert torch.equal(a, b)


def test_rerun_without_resume_cannot_reuse_spent_steps(tmp_path, sensitive):
    config = FinetuneConfig(steps=2, batch_size=6, micro_batch=4, multiplicity=1)
    run(tmp_path, sensitive, config=config)
    with pytest.raises(UserError, match="already spent 2 steps"):
        run(tmp_path, sensitive, config=config)  # fresh noise would be a second, uncharged release


def test_resume_refuses_a_different_config(tmp_path, sensitive):
    run(tmp_path, sensitive, config=FinetuneConfig(steps=1, batch_size=6, micro_batch=4, multiplicity=1))
    with pytest.raises(UserError):
        run(tmp_path, sensitive, resume=True)


def test_budget_is_checked_before_the_first_step(tmp_path, sensitive):
    ledger = Ledger(tmp_path / "ledger.json", delta=1e-5, epsilon_budget=0.5)
    with pytest.raises(UserError):
        finetune(fresh_net(), sensitive, config=CONFIG, noise_multiplier=0.5, ledger=ledger, out_dir=tmp_path,
                 seed=0, progress=False)
    assert ledger.entries == [] or ledger.entries[0].steps == 0
    assert not (tmp_path / "state.json").exists()


def test_plan_and_calibration_against_a_query(tmp_path):
    q, steps = plan(FinetuneConfig(epochs=2, batch_size=10), 100)
    assert (q, steps) == (0.1, 20)
    assert plan(FinetuneConfig(steps=7, batch_size=10), 100) == (0.1, 7)
    with pytest.raises(UserError):
        plan(FinetuneConfig(batch_size=200), 100)
    ledger = Ledger(tmp_path / "ledger.json", delta=1e-5)
    ledger.charge(Mechanism("semantic_query", "gaussian", noise_multiplier=50.0))
    sigma, eps = calibrate_for_ledger(ledger, epsilon=5.0, sample_rate=q, steps=7)
    total = epsilon_pld([*ledger.entries, Mechanism("finetune", "poisson_gaussian", sigma, q, 7)], delta=1e-5)
    assert total <= 5.0 and total == pytest.approx(eps) and total > 4.95


def test_dp_config_is_validated():
    with pytest.raises(ValueError):
        FinetuneConfig(clip=0)
    with pytest.raises(ValueError):
        FinetuneConfig(multiplicity=0)


def test_empty_poisson_batches_still_take_charged_noisy_steps(tmp_path, sensitive, monkeypatch):
    sizes = []
    real_batches = dpsgd_module.poisson_batches

    def recorded(*args, **kwargs):
        for t, idx in real_batches(*args, **kwargs):
            sizes.append(len(idx))
            yield t, idx

    monkeypatch.setattr(dpsgd_module, "poisson_batches", recorded)
    config = FinetuneConfig(steps=6, batch_size=1, micro_batch=4, multiplicity=1)  # q = 1/30: often empty
    before = {k: v.clone() for k, v in fresh_net().state_dict().items()}
    net, _, ledger = run(tmp_path, sensitive, config=config)
    assert 0 in sizes and len(sizes) == 6
    assert ledger.entries[0].steps == 6
    assert any(not torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_finished_run_directory_holds_no_key_and_no_generator_state(tmp_path, sensitive):
    run(tmp_path, sensitive)
    secret = NoiseSource.from_test_seed(3).secret()
    files = [f for f in tmp_path.rglob("*") if f.is_file()]
    assert not list(tmp_path.rglob("noise.key")) and files
    assert not any(secret in f.read_bytes() for f in files)  # the key is nowhere, not even inside a file
    from safetensors import safe_open
    with safe_open(tmp_path / "ft" / "state.safetensors", framework="pt") as f:
        assert not [k for k in f.keys() if k.startswith("rng.")]


def test_resume_without_the_key_refuses_naming_the_file(tmp_path, sensitive, monkeypatch):
    real_update = finetune_module.update_ema

    def killed(ema, net, *, decay, step):
        if step == 3:
            raise KeyboardInterrupt
        real_update(ema, net, decay=decay, step=step)

    monkeypatch.setattr(finetune_module, "update_ema", killed)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, sensitive)
    monkeypatch.setattr(finetune_module, "update_ema", real_update)
    (tmp_path / "ft" / "noise.key").unlink()
    with pytest.raises(UserError, match=r"noise\.key: missing, but 3 DP-SGD steps were charged"):
        run(tmp_path, sensitive, resume=True)
    assert Ledger(tmp_path / "ledger.json", delta=1e-5).entries[0].steps == 3  # nothing new spent
