"""The documented study is the command's own output, and docs/survey.md quotes it truly."""

import json
from pathlib import Path

import pytest

from detkit.compare.claims import CLAIMS, verdicts
from detkit.compare.report import sweep_table, verdict_table

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


def test_the_nms_verdicts_detector_and_the_figures_the_survey_quotes(cpu_nms):
    """The verdicts' detector of the nms suite (issue 16): the per-RoI density head with
    same-class targets; the other predictors' tables recorded from the earlier rerun (--reuse);
    the figures the survey quotes."""
    nms = cpu_nms["suites"]["nms"]
    assert nms["run"] == "faster_rcnn_crowded_roi_same_class" and "--reuse" in cpu_nms["command"]
    assert "faster_rcnn_crowded" in nms["also"] and cpu_nms["runs"]["faster_rcnn_crowded"]["reused"]
    dense = nms["splits"]["dense"]
    rows, densities = dense["rows"], dense["densities"]
    assert (rows["adaptive_nms"]["lost"], rows["nms"]["lost"], rows["adaptive_nms_oracle"]["lost"]) == (62, 107, 65)
    assert rows["adaptive_nms"]["duplicates"] - rows["nms"]["duplicates"] == 15
    assert round(densities["pearson"], 3) == 0.789 and round(100 * densities["lone_predicted_below"], 1) == 93.9
    per_object = densities["objects"]  # once per object, at its best-scoring candidate
    assert (per_object["lone"], round(100 * per_object["lone_predicted_below"], 1)) == (102, 95.1)
    box = dense["densities_box_readout"]  # the density head run again on each final box's RoI
    assert (round(box["pearson"], 3), round(100 * box["lone_predicted_below"], 1)) == (0.803, 94.1)
    assert rows["adaptive_nms_box_readout"]["lost"] == 62 and rows["adaptive_nms_box_readout"]["duplicates"] == 21
    survey = " ".join((DOCS / "survey.md").read_text().split())
    assert "| 0.193 | 0.789 / 0.715 | 93.9% / 97.0% | 45 of 107 (42) | +15 |" in survey
    assert "95.1% of the 102 lone objects below" in survey
    assert "| dense | Adaptive-NMS, predicted density | 0.224 | 0.425 | 0.907 | 62 | 16 | 33.3 | 0.874 |" in survey
    paper = nms["also"]["faster_rcnn_crowded"]["splits"]["dense"]  # the paper's subnet, as the survey quotes it
    assert (paper["rows"]["adaptive_nms"]["lost"], paper["rows"]["nms"]["lost"]) == (79, 104)
    assert round(100 * paper["densities"]["lone_predicted_below"], 1) == 90.3


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


def test_the_cpu_long_sweep_is_the_commands_output_and_survey_md_quotes_it():
    """The budget sweep (issue 17, item 4) as committed so far: every recorded run's part is the
    run in results.json, and the survey quotes the report's table of every claim at every recorded
    slice."""
    folder = DOCS / "compare" / "cpu-long"
    results = json.loads((folder / "results.json").read_text())
    command = results["command"].split()  # a sitting may have trained one suite (--suite necks)
    assert results["budget"] == "cpu-long" and command[:2] == ["detkit", "compare"]
    assert {("--budget", "cpu-long"), ("--out", "docs/compare/cpu-long")} <= set(zip(command, command[1:]))
    assert results["suites_run"] == ["detectors", "focal", "necks", "backbones"]  # every suite reported
    parts = {part.stem: json.loads(part.read_text()) for part in (folder / "runs").glob("*.json")}
    assert set(parts) == set(results["runs"])  # every run the report counts is committed on its own
    assert all(part["eval"] == results["runs"][name]["eval"] for name, part in parts.items())
    table = "\n".join(sweep_table(results))  # every claim at every recorded recipe and multiple
    assert table in (folder / "report.md").read_text() and table in (DOCS / "survey.md").read_text()
