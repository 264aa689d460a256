"""`privimage privacy epsilon|calibrate`: --json prints one parseable object; bad values fail cleanly."""

import json

import pytest

from privimage.cli import main
from privimage.privacy.accountant import epsilon_pld
from privimage.privacy.ledger import Mechanism


def run_json(capsys, argv):
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1  # exactly one JSON object, one line
    return json.loads(out)


def test_epsilon_json(capsys):
    result = run_json(capsys, ["privacy", "epsilon", "--sigma", "2", "--sample-rate", "0.05", "--steps", "100",
                               "--delta", "1e-5", "--query-sigma", "50", "--json"])
    expected = epsilon_pld([Mechanism("q", "gaussian", 50.0), Mechanism("f", "poisson_gaussian", 2.0, 0.05, 100)],
                           delta=1e-5)
    assert result["epsilon_pld"] == pytest.approx(expected)
    assert result["epsilon_rdp"] >= result["epsilon_pld"]
    assert result["sigma"] == 2.0 and result["steps"] == 100


def test_calibrate_json(capsys):
    result = run_json(capsys, ["privacy", "calibrate", "--epsilon", "2", "--sample-rate", "0.05", "--steps", "100",
                               "--delta", "1e-5", "--accountant", "rdp", "--json"])
    assert {"sigma", "epsilon_pld", "epsilon_rdp"} <= set(result)
    assert result["epsilon_rdp"] <= 2.0 and result["epsilon_pld"] <= result["epsilon_rdp"]


def test_plain_output_is_human_readable(capsys):
    assert main(["privacy", "epsilon", "--sigma", "5", "--sample-rate", "1", "--steps", "3", "--delta", "1e-5"]) == 0
    assert "epsilon (PLD)" in capsys.readouterr().out


@pytest.mark.parametrize(
    "bad",
    [["--sigma", "-1"], ["--sigma", "nan"], ["--sample-rate", "1.5"], ["--delta", "1"], ["--steps", "-1"],
     ["--steps", "2.5"]],
)
def test_bad_values_are_usage_errors(capsys, bad):
    argv = dict(zip(["--sigma", "--sample-rate", "--steps", "--delta"], ["1", "0.1", "10", "1e-5"]))
    argv.update(dict([bad]))
    with pytest.raises(SystemExit) as exit_info:
        main(["privacy", "epsilon", *[x for kv in argv.items() for x in kv]])
    assert exit_info.value.code == 2
    assert bad[0] in capsys.readouterr().err


def test_calibrate_needs_at_least_one_step(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["privacy", "calibrate", "--epsilon", "1", "--sample-rate", "0.1", "--steps", "0", "--delta", "1e-5"])
    assert exit_info.value.code == 2 and "--steps" in capsys.readouterr().err


def test_epsilon_of_the_query_alone_with_zero_steps(capsys):
    result = run_json(capsys, ["privacy", "epsilon", "--sigma", "1", "--sample-rate", "1", "--steps", "0",
                               "--delta", "1e-5", "--query-sigma", "20", "--json"])
    assert result["epsilon_pld"] == pytest.approx(epsilon_pld([Mechanism("q", "gaussian", 20.0)], delta=1e-5))


def test_unreachable_target_is_one_line_user_error(capsys):
    code = main(["privacy", "calibrate", "--epsilon", "0.001", "--sample-rate", "0.1", "--steps", "10",
                 "--delta", "1e-5", "--query-sigma", "484"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "query alone" in err
