"""``detkit compare`` end to end at the smoke budget: every suite writes its report, JSON and
plots; the same seed reproduces the numbers; finished runs are loaded; an interrupted run
resumes; a folder of another config is refused."""

import json
import struct

import pytest
import torch
from click.testing import CliRunner

from detkit.cli import main
from detkit.compare.claims import CLAIMS
from detkit.compare.study import SUITES
from tests.conftest import COCO128

PLOTS = ("speed_accuracy", "ap_by_size", "pr_curves", "training", "nms", "nms_sweep", "crowd_densities")


def compare(root, *args, runs="runs", out="out"):
    data = [f"--set=datasets.{name}.synthetic.out={root / 'data' / name}" for name in ("shapes", "crowded")]
    coco128 = f"--set=datasets.coco128.train.path={COCO128 / 'annotations' / 'instances_train2017.json'}"
    return CliRunner().invoke(main, ["compare", "--budget", "smoke", "--out", str(root / out), "--runs",
                                     str(root / runs), *data, coco128, *map(str, args)])


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    result = compare(root)
    assert result.exit_code == 0, result.output
    return root, json.loads((root / "out" / "results.json").read_text())


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", data[16:24])


def test_every_suite_writes_its_report_json_and_plots(smoke):
    root, results = smoke
    assert set(results["suites"]) == set(SUITES)
    assert {c["id"] for c in results["claims"]} == {c.id for c in CLAIMS}
    assert all(c["verdict"] in ("reproduced", "not reproduced at this budget", "not measurable here", "not tested")
               for c in results["claims"])
    report = (root / "out" / "report.md").read_text()
    for plot in PLOTS:
        width, height = png_size(root / "out" / f"{plot}.png")
        assert width > 400 and height > 300
        assert f"({plot}.png)" in report
    for heading in ("## Verdicts", "## Noise", "## Detectors", "## Focal loss", "## FPN against BiFPN",
                    "## ResNet against EfficientNet", "## Suppressors", "## Provenance"):
        assert heading in report
    provenance = results["provenance"]
    assert provenance["packages"]["torch"] and provenance["cores"] and "platform" in provenance
    for name, run in results["runs"].items():
        assert run["config"]["train"]["seed"] == run["seed"] and run["steps"] == 2, name
        assert len(run["bootstrap"]["AP"]) == 10 and run["params"] > 0 and run["gflops"] > 0
        assert run["threads"] == [provenance["torch_threads"]], name  # trained straight on this count
        # the bootstrap's own accumulation of every image is the evaluation's numbers
        for metric in ("AP", "AP50", "AP75"):
            assert run["eval"]["check"][metric] == pytest.approx(run["eval"]["stats"][metric], abs=1e-9)
    nms = results["suites"]["nms"]
    crowded = nms["splits"]["crowded"]
    rows = {"none", "nms", "soft_nms_linear", "soft_nms_gaussian", "adaptive_nms", "diou_nms", "adaptive_nms_margin",
            "adaptive_nms_oracle", "adaptive_nms_oracle_margin", "adaptive_nms_oracle_same_class"}
    assert set(crowded["rows"]) == rows | {"adaptive_nms_box_readout"}  # the model has densities, two readouts
    assert crowded["rows"]["adaptive_nms_box_readout"]["readout"] == "box" and "densities_box_readout" in crowded
    assert nms["margin"]["chosen"] in nms["margin"]["margins"] and len(nms["margin"]["AP"]) == len(nms["margin"]["margins"])
    assert crowded["rows"]["adaptive_nms_margin"]["margin"] == nms["margin"]["chosen"]
    assert set(crowded["sigma_vs_nms"]["adaptive_nms"]) == {"AP", "AP50", "AR100", "recall_covered"}
    retinanet = nms["also"]["retinanet_crowded"]  # the one-stage detector's tables, on the same splits
    assert set(retinanet["splits"]) == {"normal", "crowded", "dense"} and set(retinanet["splits"]["dense"]["rows"]) == rows
    assert "### `retinanet_crowded`" in report and "chosen delta" in report
    assert all(0 <= row["MR2"] <= 1 for row in crowded["rows"].values())
    assert 0 <= crowded["rows"]["adaptive_nms"]["raised"] <= 1 and crowded["rows"]["adaptive_nms_oracle_margin"][
        "oracle_margin"] == 0.1
    assert crowded["densities"]["iou_threshold"] == 0.5 and -1 <= crowded["densities"]["pearson"] <= 1
    assert "MR-2" in report and "Predicted densities on the crowded split" in report
    assert nms["splits"]["crowded"]["min_pair_iou"] == 0.3
    assert set(nms["crowd_statistics"]) == {"shapes", "crowded", "dense", "coco128"}
    dense = nms["crowd_statistics"]["dense"]
    assert sum(dense["density_counts"]) == dense["objects"] and "The objects' densities" in report
    assert (root / "runs" / "faster_rcnn_crowded" / "raw_crowded.pt").is_file()  # saved once


def test_the_same_seed_reproduces_the_numbers(smoke):
    root, first = smoke
    result = compare(root, "--suite", "focal", "--reference", root / "out" / "results.json", runs="rerun", out="again")
    assert result.exit_code == 0, result.output
    again = json.loads((root / "again" / "results.json").read_text())
    rows = again["reference"]["runs"]
    assert set(rows) == {"retinanet", "retinanet_ce", "retinanet.seed+1"}
    assert all(row["identical"] for row in rows.values())
    for name in rows:
        assert not again["runs"][name]["reused"]  # trained again from scratch, in another folder
        assert again["runs"][name]["eval"]["stats"] == first["runs"][name]["eval"]["stats"]
    assert "## Reproduction against an earlier run" in (root / "again" / "report.md").read_text()


def test_reuse_records_the_nms_suites_runs_and_evaluates_only_a_new_verdict_run(smoke):
    """--reuse without a sweep: every run of the nms suite recorded (nothing trained: an empty
    runs folder), its tables the earlier ones; then with another verdict run, whose earlier
    table lacks the sweeps, that run alone is trained and evaluated, and the former verdict
    run's tables serve as an also table without their sweeps."""
    root, first = smoke
    earlier = root / "out" / "results.json"
    result = compare(root, "--suite", "nms", "--reuse", earlier, runs="empty-runs", out="reused")
    assert result.exit_code == 0, result.output
    assert "2 runs recorded from" in result.output and not (root / "empty-runs").exists()
    reused = json.loads((root / "reused" / "results.json").read_text())
    for name in ("faster_rcnn_crowded", "retinanet_crowded"):
        assert reused["runs"][name]["reused"] and reused["runs"][name]["reused_from"] == first["command"]
        assert reused["runs"][name]["eval"] == first["runs"][name]["eval"]
    for key in ("splits", "margin", "also"):
        assert reused["suites"]["nms"][key] == first["suites"]["nms"][key]
    assert reused["claims"] == [claim for claim in first["claims"] if claim["suite"] == "nms"]
    swapped = ["--set", "suites.nms.run=retinanet_crowded", "--set", "suites.nms.also=[faster_rcnn_crowded]"]
    result = compare(root, "--suite", "nms", "--reuse", earlier, *swapped, runs="new-runs", out="swapped")
    assert result.exit_code == 0, result.output
    assert "1 runs recorded from" in result.output
    swapped = json.loads((root / "swapped" / "results.json").read_text())
    assert not swapped["runs"]["retinanet_crowded"]["reused"] and "reused_from" not in swapped["runs"]["retinanet_crowded"]
    assert (root / "new-runs" / "retinanet_crowded").is_dir() and not (root / "new-runs" / "faster_rcnn_crowded").exists()
    nms = swapped["suites"]["nms"]
    assert nms["run"] == "retinanet_crowded" and all(split["sweep"] for split in nms["splits"].values())
    former = nms["also"]["faster_rcnn_crowded"]["splits"]
    for label, split in first["suites"]["nms"]["splits"].items():
        assert former[label] == {**split, "sweep": {}}


def test_finished_runs_are_loaded_not_retrained(smoke):
    root, first = smoke
    result = compare(root, "--suite", "necks", out="cached")
    assert result.exit_code == 0, result.output
    cached = json.loads((root / "cached" / "results.json").read_text())
    for name in ("efficientdet", "efficientdet_fpn"):
        assert cached["runs"][name]["reused"]
        assert cached["runs"][name]["train_seconds"] == first["runs"][name]["train_seconds"]
        assert cached["runs"][name]["eval"]["stats"] == first["runs"][name]["eval"]["stats"]


def test_report_only_and_plan(smoke):
    root, _ = smoke
    before = (root / "out" / "report.md").read_text()
    (root / "out" / "report.md").unlink()
    (root / "out" / "nms.png").unlink()
    result = CliRunner().invoke(main, ["compare", "--out", str(root / "out"), "--report-only"])
    assert result.exit_code == 0, result.output
    assert (root / "out" / "report.md").read_text() == before and (root / "out" / "nms.png").is_file()
    plan = CliRunner().invoke(main, ["compare", "--budget", "cpu", "--out", str(root / "x"), "--plan"])
    assert plan.exit_code == 0 and "21 runs for detectors, focal, necks, backbones, nms" in plan.output
    assert "retinanet.seed+2" in plan.output and not (root / "x").exists()


def test_a_folder_of_another_config_is_refused(smoke):
    root, _ = smoke
    result = compare(root, "--suite", "focal", "--seed", 5, out="other")
    assert result.exit_code == 2
    assert "holds a run of another config than study run 'retinanet' (train.seed: 0 then, 5 now)" in result.output


def test_an_interrupted_run_resumes(tmp_path, monkeypatch):
    import detkit.compare.runs as runs
    from detkit.compare.study import load_study

    data = [f"datasets.shapes.synthetic.out={tmp_path / 'shapes'}"]
    run = load_study("smoke", data, runs_dir=tmp_path / "runs").runs["retinanet"]
    real_train = runs.train

    def on_threads(threads, config, **overrides):  # the study's config, trained on ``threads`` torch threads
        return {**config, "train": {**config["train"], "threads": threads, **overrides}}

    def one_step_then_ctrl_c(config, resume, progress):
        real_train(on_threads(1, config, max_iters=1), resume=resume, progress=progress)
        raise KeyboardInterrupt

    monkeypatch.setattr(runs, "train", one_step_then_ctrl_c)
    threads = torch.get_num_threads()
    try:
        with pytest.raises(KeyboardInterrupt):
            runs.train_or_load(run, progress=False)
        record = json.loads((tmp_path / "runs" / "retinanet" / "compare.json").read_text())
        assert not record["finished"] and record["seconds"] > 0 and record["threads"] == [1]

        calls = []
        monkeypatch.setattr(runs, "train", lambda config, resume, progress: calls.append(resume) or real_train(
            on_threads(2, config), resume=resume, progress=progress))
        trained = runs.train_or_load(run, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert calls == [True] and trained.steps == 2 and not trained.reused  # one step done, one resumed
    assert trained.train_seconds > record["seconds"]
    assert trained.threads == (1, 2)  # resumed on another thread count: the record says so
    again = runs.train_or_load(run, progress=False)
    assert again.reused and again.threads == (1, 2)  # finished now: loaded, with its record


def test_under_torchrun_every_process_trains_and_one_writes(tmp_path):
    import os
    import subprocess
    import sys

    from tests.engine.test_train import free_port

    data = [f"--set=datasets.shapes.synthetic.out={tmp_path / 'shapes'}"]
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
         "-m", "detkit.cli", "compare", "--budget", "smoke", "--suite", "focal", "--out", str(tmp_path / "out"),
         "--runs", str(tmp_path / "runs"), *data],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert launched.stdout.count("wrote ") == 1  # rank 0 alone evaluated and wrote
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(results["runs"]) == {"retinanet", "retinanet_ce", "retinanet.seed+1"}
    # 8 images in batches of 4, dealt to 2 processes: one step each, gradients averaged
    assert all(run["steps"] == 1 for run in results["runs"].values())
