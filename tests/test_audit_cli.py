"""`privimage audit` end to end on the tiny config: one JSON object, audit.json + its ledger, both settings."""

import json

import pytest

from privimage.audit.run import audit
from privimage.cli import main
from privimage.privacy.ledger import Ledger
from privimage.run_config import load_run_config

KEYS = {"epsilon_claimed", "epsilon_lower_bound", "confidence", "canaries", "setting"}


def test_cli_prints_one_json_object_and_writes_audit_json(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["audit", "privimage:tiny.yaml", "--canaries", "40", "--json", "--out", str(out), "--no-progress",
                 "privacy.seed=0"]) == 0
    record = json.loads(capsys.readouterr().out)  # exactly one object: anything else fails to parse
    assert KEYS <= set(record) and record["setting"] == "gradient" and record["canaries"] == 40
    assert record["epsilon_claimed"] == pytest.approx(10.0, rel=1e-2) and record["confidence"] == 0.95
    assert 0 <= record["epsilon_lower_bound"] <= record["epsilon_claimed"]
    assert json.loads((out / "audit.json").read_text()) == record
    ledger = Ledger(out / "audit_ledger.json", delta=1e-5)
    assert [(e.name, e.steps) for e in ledger.entries] == [("audit-1", 3)]  # tiny: 3 noisy steps, all charged


def test_cli_refuses_too_few_canaries(capsys):
    with pytest.raises(SystemExit):
        main(["audit", "privimage:tiny.yaml", "--canaries", "1"])
    assert "expected an integer >= 2" in capsys.readouterr().err


def test_input_setting_runs_finetune_and_stays_below_the_claim(tmp_path):
    config = load_run_config("privimage:tiny.yaml", ["privacy.seed=1"])
    result = audit(config, setting="input", canaries=20, device="cpu", progress=False,
                   ledger_path=tmp_path / "ledger.json")
    assert result.setting == "input" and result.mechanism == "audit-1" and result.steps == 3
    assert 0 <= result.epsilon_lower_bound <= result.epsilon_claimed
    assert Ledger(tmp_path / "ledger.json", delta=1e-5).entries[0].steps == 3
