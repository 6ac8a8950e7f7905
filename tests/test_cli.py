"""The detkit command line: help and version."""

from click.testing import CliRunner

from detkit import __version__
from detkit.cli import main


def test_help_reads_like_a_manual():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    assert "train, evaluate and compare object detectors" in result.output


def test_version():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


# ------------------------------------------------------------------ data and eval commands

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from tests.conftest import shared_path  # noqa: E402


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "synth"
    result = run("data", "synth", "--out", out, "--images", 6, "--seed", 4)
    assert result.exit_code == 0, result.output
    return out


def test_data_synth_stats_show_convert(synth, tmp_path):
    result = run("data", "stats", synth, "--json", tmp_path / "stats.json", "--plot", tmp_path / "sizes.png")
    assert result.exit_code == 0 and "images: 6" in result.output and "small (< 32^2)" in result.output
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["images"] == 6 and sum(stats["sizes"].values()) == stats["objects"]
    assert (tmp_path / "sizes.png").is_file()

    result = run("data", "show", synth, "--out", tmp_path / "show", "--max-images", 3)
    assert result.exit_code == 0 and len(list((tmp_path / "show").glob("*.jpg"))) == 3

    result = run("data", "convert", synth, "--to", "yolo", "--out", tmp_path / "yolo")
    assert result.exit_code == 0 and (tmp_path / "yolo" / "data.yaml").is_file()
    assert len(list((tmp_path / "yolo" / "labels" / "train").glob("*.txt"))) == 6
    result = run("data", "stats", tmp_path / "yolo" / "data.yaml")
    assert f"objects: {stats['objects']}" in result.output


def test_eval_of_a_results_file_writes_the_usual_names(tmp_path):
    gt = shared_path("peer", "coco_eval", "cocoapi_fake100", "instances_val2014_100.json")
    results = shared_path("peer", "coco_eval", "cocoapi_fake100", "instances_val2014_fakebbox100_results.json")
    result = run("eval", "--gt", gt, "--predictions", results, "--json", tmp_path / "m.json", "--plots", tmp_path)
    assert result.exit_code == 0
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 0.505" in result.output
    numbers = json.loads((tmp_path / "m.json").read_text())
    assert list(numbers)[:12] == ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
    assert numbers["AP"] == pytest.approx(0.5045806987249628, abs=1e-12)
    assert (tmp_path / "pr_curves.png").is_file()


def test_eval_errors_of_a_results_file(tmp_path):
    """--errors: TIDE's table printed, the analysis in the JSON (the same numbers as the
    library's), the pictures drawn; bad results get the same one-line errors as without it."""
    from detkit.evaluation.errors import tide

    gt = shared_path("peer", "coco_eval", "cocoapi_fake100", "instances_val2014_100.json")
    results = shared_path("peer", "coco_eval", "cocoapi_fake100", "instances_val2014_fakebbox100_results.json")
    result = run("eval", "--gt", gt, "--predictions", results, "--errors", "--json", tmp_path / "m.json",
                 "--plots", tmp_path)
    assert result.exit_code == 0, result.output
    assert "TIDE errors at IoU 0.5" in result.output and "by crowding" in result.output
    errors = json.loads((tmp_path / "m.json").read_text())["errors"]
    expected = tide(json.loads(Path(gt).read_text()), json.loads(Path(results).read_text()))
    assert errors["tide"]["delta_ap"] == pytest.approx(expected.delta)
    assert sum(row["objects"] for row in errors["crowding"]) == sum(row["objects"] for row in errors["sizes"])
    assert "miss_causes" not in errors  # a results file has no raw candidates
    assert (tmp_path / "errors.png").is_file() and (tmp_path / "confusion.png").is_file()

    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5}]))
    result = CliRunner().invoke(main, ["eval", "--gt", str(gt), "--predictions", str(unknown), "--errors"])
    assert result.exit_code == 2 and "result 0: image_id 1 is not in the ground truth" in result.output


def test_user_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    result = CliRunner().invoke(main, ["eval", "--gt", str(bad), "--predictions", str(bad)])
    assert result.exit_code == 2 and "bad.json:1:2: malformed json" in result.output
    assert "Traceback" not in result.output
