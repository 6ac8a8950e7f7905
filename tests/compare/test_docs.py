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


@pytest.fixture(scope="module")
def cpu_nms():
    return json.loads((DOCS / "compare" / "cpu-nms" / "results.json").read_text())


def test_the_nms_rerun_is_the_commands_output(cpu_nms):
    """The suppressor study rerun on its own (the dense-crowd detector, issue 16): its report and
    plots are the command's, and its verdicts follow from its numbers by today's rules."""
    assert cpu_nms["command"].startswith("detkit compare --suite nms --budget cpu")
    assert set(cpu_nms["suites"]) == {"nms"} and verdicts(cpu_nms) == cpu_nms["claims"]
    report = (DOCS / "compare" / "cpu-nms" / "report.md").read_text()
    assert "\n".join(verdict_table(cpu_nms["claims"])) in report
    for png in ("nms", "nms_sweep", "crowd_densities"):
        assert (DOCS / "compare" / "cpu-nms" / f"{png}.png").stat().st_size > 10_000


def test_survey_md_quotes_the_verdicts(cpu, cpu_nms):
    """The survey's table: the full study's verdicts, the suppressors' from their rerun."""
    survey = (DOCS / "survey.md").read_text()
    claims = [c for c in cpu["claims"] if c["suite"] != "nms"] + cpu_nms["claims"]
    assert "\n".join(verdict_table(claims)) in survey


def test_the_rerun_reproduced_the_table(cpu):
    rerun = json.loads((DOCS / "compare" / "cpu-rerun" / "results.json").read_text())
    rows = rerun["reference"]["runs"]
    assert set(rows) == set(cpu["runs"])
    assert all(row["within_noise"] for row in rows.values())
    assert rerun["reference"]["verdicts_changed"] == []
    assert not any(run["reused"] for run in rerun["runs"].values())  # trained again, not loaded
