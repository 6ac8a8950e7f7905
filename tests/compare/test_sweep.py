"""``detkit compare`` with a sweep (``--budget cpu-long``): the runs it expands to, each run's
part recorded at once and never trained again, a study continued from its parts or from an
earlier results.json, and the trend of each claim in results.json, the report and a plot."""

import datetime
import json

import pytest
from click.testing import CliRunner

from detkit.cli import main
from detkit.compare.report import sweep_table
from detkit.compare.study import load_study
from detkit.config import shipped_configs
from tests.compare.test_compare_cli import png_size


def test_cpu_long_is_the_cpu_study_at_three_budgets_and_two_recipes():
    study, cpu = load_study("cpu-long"), load_study("cpu")
    assert study.sweep["multiples"] == [1, 2, 4] and study.sweep["recipes"] == ["bn", "gn"]
    swept = ["faster_rcnn", "retinanet", "retinanet_ce", "retinanet_b3", "yolo", "efficientdet", "efficientdet_fpn"]
    assert study.sweep["runs"] == swept
    assert set(study.sweep["slices"]) == {f"{r}@{k}x" for r in ("bn", "gn") for k in (1, 2, 4)}
    names = study.runs_for(study.chosen(["all"]))
    assert len(names) == 7 * 6 + 2  # and the seed probe's two runs, at 1x
    for name in swept:  # the base runs are the cpu study's own, so its recorded results serve
        assert study.runs[name].config["model"] == cpu.runs[name].config["model"]
        for k in (2, 4):
            assert study.runs[f"{name}@{k}x"].config["train"]["epochs"] == 5 * k
            assert study.runs[f"{name}@{k}x"].config["model"] == cpu.runs[name].config["model"]
        assert study.runs[f"{name}+gn@4x"].config["train"]["epochs"] == 20
        assert study.runs[f"{name}+gn"].config["model"]["backbone"]["norm"] == "gn"
    assert study.runs["retinanet+gn"].config["model"]["head"] == {"norm": True}
    assert study.runs["yolo+gn@2x"].config["model"]["head"] == {"norm": "gn"}
    assert study.sweep["slices"]["gn@2x"]["efficientdet"] == "efficientdet+gn@2x"
    assert "nms" not in study.suites


def write_study(tmp_path, sweep, suites=None, data=None, **extra):
    spec = {"base": str(shipped_configs() / "compare" / "smoke.yaml"), "budget": "sweep-test",
            "datasets": {"shapes": {"synthetic": {"out": str(data or tmp_path / "shapes")}}},
            "suites": suites or {"focal": {"focal": "retinanet", "cross_entropy": "retinanet_ce"}},
            "sweep": sweep, **extra}
    path = tmp_path / "study.yaml"
    path.write_text(json.dumps(spec))
    return path


GN = {"gn": {"retinanet": {"backbone": {"norm": "gn"}}, "retinanet_ce": {"backbone": {"norm": "gn"}}}}


@pytest.mark.parametrize("sweep,message", [
    ({"multiples": [2, 1]}, "increasing whole numbers"),
    ({"multiples": [1, 2], "recipes": {"gn": {"retinanet": {}}}}, "no model settings for retinanet_ce"),
    ({"multiples": [1], "recipes": {"gn": {"retinanet": {}, "retinanet_ce": {}, "ssd": {}}}}, "swept run"),
    ({"multiples": [1], "recipes": {"bn": {"retinanet": {}, "retinanet_ce": {}}}, "base_recipe": "bn"},
     "other than the base recipe"),
    ({"multiples": [1], "step": 2}, r"sweep.step: unknown option \(known: base_recipe, multiples, recipes\)"),
])
def test_a_bad_sweep_names_what_is_wrong(tmp_path, sweep, message):
    with pytest.raises(ValueError, match=message):
        load_study(str(write_study(tmp_path, sweep)))


def test_a_base_that_leads_back_to_itself_is_refused(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ValueError, match="leads back to itself"):
        load_study(str(tmp_path / "a.yaml"))


def sweep_compare(tmp_path, study, out, *args):
    return CliRunner().invoke(main, ["compare", "--budget", str(study), "--out", str(out), "--runs",
                                     str(tmp_path / "runs"), *map(str, args)])


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    study = write_study(root, {"multiples": [1, 2], "base_recipe": "bn", "recipes": GN},
                        measure={"seed_probe": None})
    result = sweep_compare(root, study, root / "out")
    assert result.exit_code == 0, result.output
    return root, study, json.loads((root / "out" / "results.json").read_text())


RUNS = {"retinanet", "retinanet_ce", "retinanet@2x", "retinanet_ce@2x", "retinanet+gn", "retinanet_ce+gn",
        "retinanet+gn@2x", "retinanet_ce+gn@2x"}


def test_every_run_is_recorded_and_each_claim_has_its_trend(swept):
    root, _, results = swept
    assert {p.stem for p in (root / "out" / "runs").glob("*.json")} == RUNS == set(results["runs"])
    assert {name: results["runs"][name]["steps"] for name in ("retinanet", "retinanet@2x")} == {
        "retinanet": 2, "retinanet@2x": 4}
    trend = results["sweep"]["trends"]["focal_beats_cross_entropy"]
    assert [(p["recipe"], p["steps"]) for p in trend] == [("bn", 2), ("gn", 2), ("bn", 4), ("gn", 4)]
    for point in trend:  # each the difference of the slice's own runs, with their paired bootstrap
        runs = results["sweep"]["slices"][point["slice"]]["runs"]
        assert (point["variant"], point["baseline"]) == ("retinanet", "retinanet_ce")
        variant, baseline = (results["runs"][runs[n]] for n in ("retinanet", "retinanet_ce"))
        assert point["delta"] == pytest.approx(variant["eval"]["stats"]["AP"] - baseline["eval"]["stats"]["AP"])
        assert point["sigma"] >= 0 and point["verdict"] in ("reproduced", "not reproduced at this budget")
    gn = results["runs"]["retinanet+gn@2x"]["config"]
    assert gn["model"]["backbone"]["norm"] == "gn" and gn["train"]["epochs"] == 2
    assert results["claims"] == results["sweep"]["slices"]["bn@1x"]["claims"]
    report = (root / "out" / "report.md").read_text()
    assert "## As the budget grows" in report and "(sweep_focal_beats_cross_entropy.png)" in report
    table = sweep_table(results)  # one row per recipe and multiple, BatchNorm's first
    assert "\n".join(table) in report and len(table) == 2 + 4
    assert [row.split(" | ")[:3] for row in table[2:]] == [
        ["| focal loss vs cross-entropy", recipe, steps] for recipe in ("BatchNorm", "GroupNorm")
        for steps in ("2 (1x)", "4 (2x)")]
    width, height = png_size(root / "out" / "sweep_focal_beats_cross_entropy.png")
    assert width > 400 and height > 300
    (root / "out" / "report.md").unlink()  # rebuilt, the slices re-judged, from results.json alone
    rebuilt = CliRunner().invoke(main, ["compare", "--out", str(root / "out"), "--report-only"])
    assert rebuilt.exit_code == 0, rebuilt.output
    assert (root / "out" / "report.md").read_text() == report


def test_recorded_runs_are_not_trained_again(swept, monkeypatch):
    import detkit.compare.sweep as sweep

    root, study, results = swept
    trained = []
    real = sweep.train_or_load
    monkeypatch.setattr(sweep, "train_or_load", lambda run, **kw: trained.append(run.name) or real(run, **kw))
    (root / "out" / "runs" / "retinanet_ce+gn@2x.json").unlink()  # as if that run was cut off
    result = sweep_compare(root, study, root / "out")
    assert result.exit_code == 0, result.output
    assert trained == ["retinanet_ce+gn@2x"]
    again = json.loads((root / "out" / "results.json").read_text())
    assert again["sweep"]["trends"] == results["sweep"]["trends"]  # CPU training is deterministic here
    plan = sweep_compare(root, study, root / "out", "--plan")
    assert plan.exit_code == 0 and "8 of 8 recorded" in plan.output


def test_a_partial_sweep_reports_what_is_pending_and_reuse_records_runs(swept, tmp_path, monkeypatch):
    import detkit.compare.sweep as sweep

    root, study, results = swept
    bigger = write_study(tmp_path, {"multiples": [1, 2, 3], "base_recipe": "bn", "recipes": GN},
                         data=root / "shapes", measure={"seed_probe": None})
    plan = sweep_compare(root, bigger, tmp_path / "out", "--reuse", root / "out" / "results.json", "--plan")
    assert plan.exit_code == 0, plan.output
    assert "8 of 12 recorded" in plan.output and "retinanet_ce+gn@3x" in plan.output and "[to train: ~" in plan.output

    def stop(run, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(sweep, "train_or_load", stop)
    with pytest.raises(KeyboardInterrupt):
        sweep.compare_sweep(load_study(str(bigger), runs_dir=tmp_path / "runs"), ["focal"], tmp_path / "out",
                            reuse=results, say=lambda _: None, progress=False)
    assert len(list((tmp_path / "out" / "runs").glob("*.json"))) == 8  # the reused parts, written first
    # the same study, without the 3x runs yet: every recorded slice judged, the rest listed as pending
    study = load_study(str(bigger))
    partial = sweep._results(study, ["focal"], sweep.recorded_parts(study, sorted(RUNS), tmp_path / "out"), "",
                             datetime.datetime.now(datetime.timezone.utc), 0)
    assert partial["sweep"]["slices"]["bn@3x"]["pending"] == ["retinanet@3x", "retinanet_ce@3x"]
    assert len(partial["sweep"]["trends"]["focal_beats_cross_entropy"]) == 4


def test_a_claim_is_judged_where_its_own_runs_are_recorded(swept):
    """A slice with a run still missing judges the claims whose runs it has, and no other: the
    missing run's base run (another recipe or budget) never stands in for it. Here a second
    pair (backbones: retinanet against a 'retinanet_b3' that is a copy of retinanet_ce) is swept
    too, and its gn@2x run is not recorded yet: focal is judged at gn@2x, backbones is not."""
    import copy

    from detkit.compare.sweep import judge_sweep

    _, _, results = swept
    results = copy.deepcopy(results)
    for name in ("retinanet_b3", "retinanet_b3@2x", "retinanet_b3+gn"):
        results["runs"][name] = results["runs"][name.replace("retinanet_b3", "retinanet_ce")]
    backbones = {"variant": "retinanet_b3", "baseline": "retinanet", "roles": {}}
    results["suites"]["backbones"] = results["sweep"]["suites"]["backbones"] = backbones
    for label, entry in results["sweep"]["slices"].items():
        recipe, multiple = label.split("@")
        entry["runs"]["retinanet_b3"] = "retinanet_b3" + ("+gn" if recipe == "gn" else "") + (
            "" if multiple == "1x" else f"@{multiple}")
    judged = judge_sweep(results)
    assert judged["slices"]["gn@2x"]["pending"] == ["retinanet_b3+gn@2x"]
    assert [c["id"] for c in judged["slices"]["gn@2x"]["claims"]] == ["focal_beats_cross_entropy"]
    focal, backbones = judged["trends"]["focal_beats_cross_entropy"], judged["trends"]["efficientnet_beats_resnet"]
    assert [p["slice"] for p in focal] == ["bn@1x", "gn@1x", "bn@2x", "gn@2x"]
    assert focal == results["sweep"]["trends"]["focal_beats_cross_entropy"]  # as when the slice was complete
    assert [p["slice"] for p in backbones] == ["bn@1x", "gn@1x", "bn@2x"]
    del results["runs"]["retinanet_ce+gn@2x"]  # now neither pair is whole at gn@2x: nothing judged there
    judged = judge_sweep(results)
    assert judged["slices"]["gn@2x"]["claims"] == [] and judged["slices"]["gn@2x"]["steps"] == 4
    assert "gn@2x" not in {p["slice"] for p in judged["trends"]["focal_beats_cross_entropy"]}


def test_a_suite_sitting_trains_that_suite_and_keeps_the_others_recorded(tmp_path, monkeypatch):
    """``--suite`` chooses what a sitting trains, not what results.json reports: a second pair
    trained into the same folder joins the first, and a sitting of the first alone drops nothing."""
    import detkit.compare.sweep as sweep

    study = write_study(tmp_path, {"multiples": [1]}, measure={"seed_probe": None},
                        suites={"focal": {"focal": "retinanet", "cross_entropy": "retinanet_ce"},
                                "backbones": {"resnet": "retinanet", "efficientnet": "retinanet_b3"}})
    trained = []
    real = sweep.train_or_load
    monkeypatch.setattr(sweep, "train_or_load", lambda run, **kw: trained.append(run.name) or real(run, **kw))
    out = tmp_path / "out"
    claims = {"focal": {"focal_beats_cross_entropy"}, "backbones": {"efficientnet_beats_resnet"}}
    for suite, trains, reported in [("focal", ["retinanet", "retinanet_ce"], ["focal"]),
                                    ("backbones", ["retinanet_b3"], ["focal", "backbones"]),
                                    ("focal", [], ["focal", "backbones"])]:
        trained.clear()
        result = sweep_compare(tmp_path, study, out, "--suite", suite)
        assert result.exit_code == 0, result.output
        assert trained == trains
        results = json.loads((out / "results.json").read_text())
        assert results["suites_run"] == reported and list(results["suites"]) == reported
        runs = {"retinanet", "retinanet_ce"} | ({"retinanet_b3"} if "backbones" in reported else set())
        assert set(results["runs"]) == runs
        assert {c["id"] for c in results["claims"]} == set().union(*(claims[s] for s in reported))
        report = (out / "report.md").read_text()
        assert ("EfficientNet backbones make better detectors" in report) == ("backbones" in reported)
