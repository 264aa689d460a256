"""The report shows `privimage audit --out RUN`'s result when audit.json exists, and nothing otherwise."""

import json

from privimage.evaluate.report import render_report

RESULT = {"epsilon_claimed": 10.0, "epsilon_lower_bound": 3.2, "confidence": 0.95, "canaries": 1000,
          "setting": "gradient", "guesses": 200, "correct": 192}


def test_report_shows_the_audit_only_when_it_was_run(tmp_path):
    assert "Privacy audit" not in render_report(tmp_path)
    (tmp_path / "audit.json").write_text(json.dumps(RESULT))
    page = render_report(tmp_path)
    assert 'id="audit"' in page and "<td>3.2</td>" in page and "<td>gradient</td>" in page
    assert "EXCEEDS" not in page
    (tmp_path / "audit.json").write_text(json.dumps({**RESULT, "epsilon_lower_bound": 12.0}))
    assert "EXCEEDS the claimed epsilon" in render_report(tmp_path)
