"""Ledger: atomic append-only file, budget enforcement, exact resume of spent DP-SGD steps."""

import json
import warnings

import pytest

from privimage.errors import UserError
from privimage import files
from privimage.privacy.accountant import epsilon_pld
from privimage.privacy.ledger import Ledger, Mechanism, check_delta

QUERY = Mechanism("semantic_query", "gaussian", noise_multiplier=20.0)


def read(path):
    return json.loads(path.read_text())


def test_file_records_entries_seed_and_planned_steps(tmp_path):
    path = tmp_path / "run" / "ledger.json"
    ledger = Ledger(path, delta=1e-5, epsilon_budget=10.0, noise_seed="seed=7")
    ledger.charge(QUERY)
    ledger.open_dpsgd("finetune", sample_rate=0.1, noise_multiplier=2.0, planned_steps=20)
    ledger.charge_step("finetune", 3)
    data = read(path)
    assert data["delta"] == 1e-5 and data["epsilon_budget"] == 10.0 and data["noise_seed"] == "seed=7"
    assert [e["name"] for e in data["entries"]] == ["semantic_query", "finetune"]
    assert data["entries"][1] == {"name": "finetune", "kind": "poisson_gaussian", "noise_multiplier": 2.0,
                                  "sample_rate": 0.1, "steps": 3, "planned_steps": 20}
    assert "planned_steps" not in data["entries"][0]
    assert data["epsilon_pld"] is None  # stale after charge_step, which does no accounting


def test_epsilon_composes_steps_taken_and_refreshes_file(tmp_path):
    path = tmp_path / "ledger.json"
    ledger = Ledger(path, delta=1e-5)
    ledger.charge(QUERY)
    ledger.open_dpsgd("finetune", sample_rate=0.1, noise_multiplier=2.0, planned_steps=50)
    ledger.charge_step("finetune", 10)
    expected = epsilon_pld([QUERY, Mechanism("f", "poisson_gaussian", 2.0, 0.1, 10)], delta=1e-5)
    assert ledger.epsilon() == pytest.approx(expected)
    on_disk = read(path)
    assert on_disk["epsilon_pld"] == pytest.approx(expected) and on_disk["epsilon_rdp"] is None  # RDP on demand
    summary = ledger.summary()
    assert summary["epsilon_pld"] == pytest.approx(expected)
    assert summary["epsilon_rdp"] > summary["epsilon_pld"]
    assert read(path) == json.loads(json.dumps(summary))


def test_write_is_atomic_and_leaves_no_temporary_files(tmp_path, monkeypatch):
    path = tmp_path / "ledger.json"
    ledger = Ledger(path, delta=1e-5)
    ledger.charge(QUERY)
    before = path.read_text()

    def broken_fsync(*args, **kwargs):  # the temporary file is written, then the disk fails
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        ledger.charge(Mechanism("second", "gaussian", noise_multiplier=30.0))
    assert path.read_text() == before  # the old ledger survives a failed write intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ledger.json"]


def test_resume_keeps_spent_steps_exactly_once(tmp_path):
    path = tmp_path / "ledger.json"
    first = Ledger(path, delta=1e-5, epsilon_budget=10.0)
    first.charge(QUERY)
    first.open_dpsgd("finetune", sample_rate=0.1, noise_multiplier=2.0, planned_steps=10)
    for _ in range(3):
        first.charge_step("finetune")

    resumed = Ledger(path, delta=1e-5, epsilon_budget=10.0)
    assert resumed.entries == first.entries
    resumed.open_dpsgd("finetune", sample_rate=0.1, noise_multiplier=2.0, planned_steps=10)
    assert resumed.entries[1].steps == 3
    resumed.charge_step("finetune", 7)
    assert read(path)["entries"][1]["steps"] == 10
    with pytest.raises(UserError, match="planned"):
        resumed.charge_step("finetune")
    assert Ledger(path, delta=1e-5, epsilon_budget=10.0).entries[1].steps == 10


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(sample_rate=0.2), "sample_rate"),
        (dict(noise_multiplier=1.5), "noise_multiplier"),
        (dict(planned_steps=2), "already spent"),
    ],
)
def test_resume_refuses_a_different_dpsgd_run(tmp_path, change, message):
    path = tmp_path / "ledger.json"
    ledger = Ledger(path, delta=1e-5)
    ledger.open_dpsgd("finetune", sample_rate=0.1, noise_multiplier=2.0, planned_steps=10)
    ledger.charge_step("finetune", 5)
    params = {**dict(sample_rate=0.1, noise_multiplier=2.0, planned_steps=10), **change}
    with pytest.raises(UserError, match=message):
        Ledger(path, delta=1e-5).open_dpsgd("finetune", **params)


@pytest.mark.parametrize("change", [dict(delta=1e-6), dict(epsilon_budget=5.0), dict(epsilon_budget=None)])
def test_resume_refuses_other_delta_or_budget(tmp_path, change):
    path = tmp_path / "ledger.json"
    Ledger(path, delta=1e-5, epsilon_budget=10.0).charge(QUERY)
    with pytest.raises(UserError, match=str(path)):
        Ledger(path, **{**dict(delta=1e-5, epsilon_budget=10.0), **change})


def test_unreadable_file_is_a_user_error(tmp_path):
    path = tmp_path / "ledger.json"
    path.write_text("{not json")
    with pytest.raises(UserError, match="not a readable privimage ledger"):
        Ledger(path, delta=1e-5)


def test_refuses_to_exceed_budget_and_changes_nothing(tmp_path):
    path = tmp_path / "ledger.json"
    ledger = Ledger(path, delta=1e-5, epsilon_budget=1.0)
    ledger.charge(QUERY)  # epsilon ~0.16
    before = path.read_text()
    with pytest.raises(UserError, match="budget"):
        ledger.charge(Mechanism("loud", "gaussian", noise_multiplier=1.0))  # epsilon ~4.9 alone
    with pytest.raises(UserError, match="budget"):
        ledger.open_dpsgd("finetune", sample_rate=0.5, noise_multiplier=1.0, planned_steps=100)
    assert ledger.entries == [QUERY]
    assert path.read_text() == before


def test_planned_dpsgd_steps_are_reserved_against_later_charges(tmp_path):
    ledger = Ledger(tmp_path / "ledger.json", delta=1e-5, epsilon_budget=2.0)
    sigma_for_budget = 1.2  # 400 steps at q=0.02 spend most of the budget (epsilon ~1.75) ...
    ledger.open_dpsgd("finetune", sample_rate=0.02, noise_multiplier=sigma_for_budget, planned_steps=400)
    assert ledger.epsilon() == 0.0  # ... but none is spent yet
    with pytest.raises(UserError, match="budget"):
        # epsilon ~1.99 alone: it would fit now, but not once the planned run has spent its steps
        ledger.charge(Mechanism("extra", "gaussian", noise_multiplier=2.0))


def test_refuses_duplicate_names(tmp_path):
    ledger = Ledger(tmp_path / "ledger.json", delta=1e-5)
    ledger.charge(QUERY)
    with pytest.raises(UserError, match="already"):
        ledger.charge(Mechanism("semantic_query", "gaussian", noise_multiplier=100.0))
    assert ledger.entries == [QUERY] and ledger.has("semantic_query") and not ledger.has("finetune")


def test_charge_step_needs_an_opened_entry(tmp_path):
    ledger = Ledger(tmp_path / "ledger.json", delta=1e-5)
    with pytest.raises(UserError, match="no ledger entry"):
        ledger.charge_step("finetune")
    ledger.charge(QUERY)
    with pytest.raises(UserError, match="open_dpsgd"):
        ledger.charge_step("semantic_query")


def test_entries_view_cannot_change_the_ledger(tmp_path):
    ledger = Ledger(tmp_path / "ledger.json", delta=1e-5)
    ledger.charge(QUERY)
    ledger.entries.clear()
    assert ledger.entries == [QUERY]


def test_resumed_noise_seed_is_recorded_next_to_the_first(tmp_path):
    path = tmp_path / "ledger.json"
    Ledger(path, delta=1e-5, noise_seed="seed=1").charge(QUERY)
    assert read(path)["noise_seed"] == "seed=1"
    Ledger(path, delta=1e-5, noise_seed="os.urandom")
    assert read(path)["noise_seed"] == "seed=1; resumed with os.urandom"
    Ledger(path, delta=1e-5, noise_seed="os.urandom")  # same generator kind again: nothing new to record
    assert read(path)["noise_seed"] == "seed=1; resumed with os.urandom"


def test_check_delta_warns_when_delta_is_not_below_one_over_n():
    with pytest.warns(UserWarning, match="1/N"):
        check_delta(1e-3, 1000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_delta(1e-5, 1000)
    with pytest.raises(ValueError):
        check_delta(0.0, 1000)
