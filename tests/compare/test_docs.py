"""The documented study is the command's own output, and docs/survey.md quotes it truly."""

import json
from pathlib import Path

import pytest

from detkit.compare.claims import CLAIMS, verdicts
from detkit.compare.report import verdict_table

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.fixture(scope="module")
def cpu():
    return json.loads((DOCS / "compare" / "cpu" / "results.json").read_text())


def test_the_cpu_report_is_the_commands_output(cpu):
    assert cpu["budget"] == "cpu" and cpu["command"].startswith("detkit compare --suite all --budget cpu")
    assert set(cpu["suites"]) == {"detectors", "focal", "necks", "backbones", "nms"}
    assert {c["id"] for c in cpu["claims"]} == {c.id for c in CLAIMS}
    assert verdicts(cpu) == cpu["claims"]  # the verdicts follow from the numbers by today's rules
    report = (DOCS / "compare" / "cpu" / "report.md").read_text()
    assert "\n".join(verdict_table(cpu["claims"])) in report
    for png in ("speed_accuracy", "ap_by_size", "pr_curves", "training", "nms", "nms_sweep"):
        assert (DOCS / "compare" / "cpu" / f"{png}.png").stat().st_size > 10_000


def test_survey_md_quotes_the_verdicts(cpu):
    survey = (DOCS / "survey.md").read_text()
    assert "\n".join(verdict_table(cpu["claims"])) in survey


def test_the_rerun_reproduced_the_table(cpu):
    rerun = json.loads((DOCS / "compare" / "cpu-rerun" / "results.json").read_text())
    rows = rerun["reference"]["runs"]
    assert set(rows) == set(cpu["runs"])
    assert all(row["within_noise"] for row in rows.values())
    assert rerun["reference"]["verdicts_changed"] == []
    assert not any(run["reused"] for run in rerun["runs"].values())  # trained again, not loaded
