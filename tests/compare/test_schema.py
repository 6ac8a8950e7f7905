"""results.json's schema: the shipped studies follow it, each kind of damage is refused with
the JSON path of the field, and --report-only, --reference and the writer all check it."""

import copy
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from detkit.cli import main
from detkit.compare import write
from detkit.compare.schema import SCHEMA_VERSION, load_results, validate

DOCS = Path(__file__).resolve().parents[2] / "docs" / "compare"


@pytest.fixture(scope="module")
def cpu():
    return json.loads((DOCS / "cpu" / "results.json").read_text())


@pytest.mark.parametrize("study", ["cpu", "cpu-rerun"])
def test_the_shipped_results_follow_the_schema(study):
    results = load_results(DOCS / study / "results.json")
    assert results["detkit_compare"] == SCHEMA_VERSION


DELETE = object()


def _set(path, value):
    """A change to results at ``path`` (keys and indices): ``value``, or the key removed when
    ``value`` is DELETE."""

    def change(results):
        *parents, last = path
        for key in parents:
            results = results[key]
        if value is DELETE:
            del results[last]
        else:
            results[last] = value

    return change


DAMAGE = {
    "a wrong type deep in a run": (_set(["runs", "faster_rcnn", "eval", "stats", "AP"], "x"),
                                   "runs.faster_rcnn.eval.stats.AP: expected a number, got 'x'"),
    "a missing required key": (_set(["runs", "ssd", "latency", "cpu"], DELETE), "runs.ssd.latency.cpu: missing"),
    "a missing top-level section": (_set(["provenance"], DELETE), "provenance: missing"),
    "a run name with a dot": (_set(["runs", "retinanet.seed+1", "reused"], "yes"),
                              'runs["retinanet.seed+1"].reused: expected true or false, got \'yes\''),
    "an unknown verdict": (_set(["claims", 3, "verdict"], "probably"),
                           "claims[3].verdict: expected one of 'reproduced', 'not reproduced at this budget', "
                           "'not measurable here', 'not tested', got 'probably'"),
    "a newer version": (_set(["detkit_compare"], SCHEMA_VERSION + 1),
                        f"detkit_compare: schema version {SCHEMA_VERSION + 1}: written by a newer detkit"),
    "no version": (_set(["detkit_compare"], DELETE), "detkit_compare: missing"),
    "a version as text": (_set(["detkit_compare"], "1"), "detkit_compare: expected an integer, got '1'"),
    "an unknown suite": (_set(["suites", "transformers"], {}), "suites.transformers: unknown name"),
    "a suite's run not in runs": (_set(["suites", "focal", "variant"], "retinanet_v2"),
                                  "suites.focal.variant: 'retinanet_v2' is not a run of this file"),
    "curves of unequal length": (_set(["runs", "yolo", "eval", "pr", "iou50"], [0.5] * 100),
                                 "runs.yolo.eval.pr.iou50: expected 101 values (as many as recall), got a list of 100"),
    "a bootstrap of other length": (_set(["noise", "bootstrap_draws"], 199),
                                    "runs.faster_rcnn.bootstrap.AP: expected 199 values (noise.bootstrap_draws)"),
    "suppressors without nms": (_set(["suites", "nms", "splits", "crowded", "rows", "nms"], DELETE),
                                "suites.nms.splits.crowded.rows.nms: missing"),
    "a null where a list is read": (_set(["runs", "ssd", "loss"], None), "runs.ssd.loss: expected a list, got null"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_damage_is_refused_naming_the_json_path(cpu, damage):
    change, message = DAMAGE[damage]
    results = copy.deepcopy(cpu)
    change(results)
    with pytest.raises(ValueError) as error:
        validate(results)
    assert str(error.value).startswith(f"results.json: {message}")
    assert "docs/compare/results-schema.md" in str(error.value) and "\n" not in str(error.value)


def test_a_newer_version_says_to_upgrade(cpu):
    with pytest.raises(ValueError, match=rf"reads versions up to {SCHEMA_VERSION}\); upgrade detkit"):
        validate({**cpu, "detkit_compare": SCHEMA_VERSION + 1})


def test_a_file_of_an_older_version_is_read_and_rewritten_as_this_one(cpu, tmp_path):
    from detkit.compare import rebuild_report

    (tmp_path / "results.json").write_text(json.dumps({**cpu, "detkit_compare": 1}))
    validate({**cpu, "detkit_compare": 1})
    rebuild_report(tmp_path)
    assert json.loads((tmp_path / "results.json").read_text())["detkit_compare"] == SCHEMA_VERSION


def test_not_an_object_is_refused():
    with pytest.raises(ValueError, match=r"^results.json: \(top level\): expected an object, got a list of 0"):
        validate([])


def test_unknown_keys_are_allowed(cpu):
    results = copy.deepcopy(cpu)
    results["written_by_a_later_detkit"] = {"anything": [1, 2]}
    results["runs"]["ssd"]["energy_joules"] = 3.5
    results["runs"]["ssd"]["eval"]["stats"]["AP_tiny"] = 0.1
    results["claims"][0]["confidence"] = "high"
    validate(results)


def test_load_results_names_the_file(tmp_path, cpu):
    path = tmp_path / "results.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match=f"^{path}: not JSON"):
        load_results(path)
    path.write_text(json.dumps({**cpu, "seed": 0.5}))
    with pytest.raises(ValueError, match=f"^{path}: seed: expected an integer, got 0.5"):
        load_results(path)


def test_the_writer_checks_what_it_writes(tmp_path, cpu):
    results = copy.deepcopy(cpu)
    results["runs"]["ssd"]["params"] = "12 M"
    with pytest.raises(ValueError, match=r"results.json: runs.ssd.params: expected an integer, got '12 M'"):
        write(results, tmp_path)
    assert not (tmp_path / "results.json").exists() and not (tmp_path / "report.md").exists()


def test_report_only_reads_through_the_schema(tmp_path, cpu):
    """results.json alone rebuilds the shipped report; a damaged one is a one-line usage error
    naming the file and the field, and nothing is written."""
    intact, damaged = tmp_path / "intact", tmp_path / "damaged"
    for folder in (intact, damaged):
        folder.mkdir()
    shutil.copy(DOCS / "cpu" / "results.json", intact / "results.json")
    result = CliRunner().invoke(main, ["compare", "--report-only", "--out", str(intact)])
    assert result.exit_code == 0, result.output
    assert (intact / "report.md").read_text() == (DOCS / "cpu" / "report.md").read_text()

    bad = copy.deepcopy(cpu)
    bad["suites"]["nms"]["splits"]["crowded"]["rows"]["diou_nms"]["lost"] = "99"
    (damaged / "results.json").write_text(json.dumps(bad))
    result = CliRunner().invoke(main, ["compare", "--report-only", "--out", str(damaged)])
    assert result.exit_code == 2
    error = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert error == [f"Error: {damaged / 'results.json'}: suites.nms.splits.crowded.rows.diou_nms.lost: "
                     "expected an integer, got '99'; see docs/compare/results-schema.md for the fields"]
    assert sorted(p.name for p in damaged.iterdir()) == ["results.json"]


def test_a_damaged_reference_is_refused_before_training(tmp_path, cpu):
    reference = tmp_path / "old.json"
    reference.write_text(json.dumps({key: value for key, value in cpu.items() if key != "detkit_compare"}))
    result = CliRunner().invoke(main, ["compare", "--budget", "smoke", "--suite", "focal", "--out",
                                       str(tmp_path / "out"), "--runs", str(tmp_path / "runs"),
                                       "--reference", str(reference)])
    assert result.exit_code == 2
    assert f"Error: {reference}: detkit_compare: missing" in result.output
    assert not (tmp_path / "runs").exists()
