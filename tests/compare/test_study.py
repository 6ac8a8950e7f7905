"""Study files: the shipped budgets build every model; mistakes name the file and the key."""

import pytest
import yaml

from detkit.compare.study import BUDGETS, SUITES, load_study, probe_names
from detkit.models import build_model


@pytest.mark.parametrize("budget", BUDGETS)
def test_every_shipped_study_builds_every_model(budget):
    study = load_study(budget, runs_dir="/nonexistent/runs")
    assert set(study.suites) == set(SUITES) - ({"nms"} if study.sweep else set())  # a sweep compares budgets
    built = set()
    for name in study.runs_for(list(study.suites)):
        assert study.runs[name].config["train"]["out"] == f"/nonexistent/runs/{name}"
        model = dict(study.runs[name].config["model"], num_classes=5)
        if (model.get("backbone") or {}).get("weights"):
            model["backbone"] = {**model["backbone"], "weights": None}  # no downloads in tests
        if repr(model) not in built:  # a sweep trains each model at several budgets
            build_model(model)
            built.add(repr(model))


def test_the_recipe_is_every_runs_budget():
    study = load_study("cpu")
    trains = [run.config["train"] for run in study.runs.values()]
    for key in ("epochs", "optimizer", "schedule", "clip_grad_norm"):
        assert all(t[key] == trains[0][key] for t in trains), key
    assert {run.config["data"]["batch_size"] for run in study.runs.values()} == {4}


def test_from_inherits_and_changes_one_part():
    study = load_study("cpu")
    base, ce = study.runs["retinanet"].config["model"], study.runs["retinanet_ce"].config["model"]
    assert ce == {**base, "criterion": {"classification_loss": "cross_entropy", "alpha": 0.75}}
    b3 = study.runs["retinanet_b3"].config["model"]["backbone"]
    assert b3 == {"type": "efficientnet", "variant": "b3", "out_levels": ["C3", "C4", "C5"], "frozen_stages": -1}
    crowded = study.runs["faster_rcnn_crowded"]
    assert crowded.dataset == "dense" and crowded.config["data"]["synthetic"]["crowded"] == "dense"
    assert crowded.config["model"]["rpn"]["density"] is True
    assert study.runs["retinanet_crowded"].config["model"]["head"]["density"] is True
    assert study.runs_for(["nms"]) == ["faster_rcnn_crowded", "retinanet_crowded", "faster_rcnn_crowded_same_class",
                                       "faster_rcnn_crowded_crowd_weight", "faster_rcnn_crowded_bins",
                                       "faster_rcnn_crowded_bins_light", "faster_rcnn_crowded_roi_density",
                                       "faster_rcnn_crowded_roi_same_class", "faster_rcnn_crowded_roi_bins", "faster_rcnn_crowded_bins_detached",
                                       "faster_rcnn_crowded_context"]
    light = study.runs["faster_rcnn_crowded_bins_light"].config["model"]  # from a run that is itself from one
    assert light["rpn"]["density"] == {"bins": 10} and light["criterion"] == {"weights": {"rpn_density": 0.25}}
    assert study.runs["faster_rcnn_crowded_context"].config["model"]["rpn"]["density"] == {"convs": 2}
    roi_same = study.runs["faster_rcnn_crowded_roi_same_class"].config["model"]
    assert roi_same["roi_heads"]["density_head"] is True and roi_same["criterion"] == {"density_same_class": True}


def test_seed_and_overrides():
    study = load_study("smoke", ["recipe.train.epochs=3"], seed=7)
    probe = study.measure["seed_probe"]
    assert study.runs["retinanet"].config["train"]["seed"] == 7
    assert study.runs[probe_names(probe)[0]].config["train"]["seed"] == 8
    assert {run.config["train"]["epochs"] for run in study.runs.values()} == {3}
    assert study.runs_for(["focal"]) == ["retinanet", "retinanet_ce", "retinanet.seed+1"]
    assert study.runs_for(["nms"]) == ["faster_rcnn_crowded", "retinanet_crowded"]  # same predictions: no seed probe


def write(tmp_path, spec):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


MINIMAL = {
    "datasets": {"a": {"synthetic": {"out": "x", "images": 2}}, "b": {"synthetic": {"out": "y", "images": 2}}},
    "runs": {"one": {"data": "a", "model": {"type": "retinanet"}}},
    "suites": {"detectors": {"runs": ["one"]}},
}


@pytest.mark.parametrize("change,message", [
    ({"budgte": "x"}, r"study.yaml.budgte: unknown study key; did you mean 'budget'\?"),
    ({"runs": {"one": {"data": "c", "model": {}}}}, r"runs.one.data: unknown dataset 'c'"),
    ({"runs": {"one": {"data": "a", "modle": {}}}}, r"runs.one.modle: unknown option; did you mean 'model'\?"),
    ({"runs": {"one": {"from": "two"}}}, r"runs.one.from: 'two' is not a run defined above it"),
    ({"runs": {"one": {"data": "a"}}}, r"runs.one: a model .* is required"),
    ({"runs": {"one": {"data": "a", "model": {"type": "retinanet"}, "train": {"epoch": 1}}}},
     r"runs.one: train.epoch: unknown option; did you mean 'epochs'\?"),
    ({"suites": {"detectors": {"runs": ["two"]}}}, r"suites.detectors.runs: unknown run 'two'"),
    ({"suites": {"focal": {"focal": "one"}}}, r"suites.focal.cross_entropy is required"),
    ({"suites": {"nmss": {}}}, r"suites: unknown suite 'nmss'; did you mean 'nms'\?"),
    ({"suites": {"nms": {"run": "one", "splits": {"x": "c"}}}}, r"splits.x.dataset: unknown dataset 'c'"),
    ({"suites": {"nms": {"run": "one", "also": ["two"], "splits": {"x": "a"}}}}, r"suites.nms.also: unknown run 'two'"),
    ({"suites": {"nms": {"run": "one", "also": "one", "splits": {"x": "a"}}}},
     r"suites.nms.also must be a list of runs besides its run \(one\), got .one."),
    ({"measure": {"bootstrap": 1}}, r"measure.bootstrap must be a whole number >= 2"),
    ({"measure": {"seed_probe": {"run": "one"}}}, r"measure.seed_probe must be \{run: <a run>, seeds"),
])
def test_mistakes_name_the_file_and_key(tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        load_study(write(tmp_path, {**MINIMAL, **change}))


def test_a_pair_must_share_its_dataset(tmp_path):
    spec = {**MINIMAL, "runs": {"one": {"data": "a", "model": {"type": "retinanet"}},
                                "two": {"from": "one", "data": "b"}},
            "suites": {"necks": {"fpn": "one", "bifpn": "two"}}}
    with pytest.raises(ValueError, match="one and two must train on the same dataset"):
        load_study(write(tmp_path, spec))


def test_budget_names_and_paths():
    with pytest.raises(ValueError, match=r"--budget: unknown budget \(or a study .yaml\) 'cpuu'; did you mean 'cpu'"):
        load_study("cpuu")
