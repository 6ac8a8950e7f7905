"""COCO evaluation: pycocotools' numbers on the peers' data, through detkit's whole path."""

import json

import numpy as np
import pytest
import torch

from detkit.data import open_dataset
from detkit.data.coco import load_coco
from detkit.evaluation import (
    STAT_NAMES,
    coco_ground_truth,
    detections_to_results,
    evaluate,
    load_results,
    plot_pr_curves,
    results_to_detections,
)
from tests.conftest import shared_path

BACKENDS = ["numpy", "pycocotools", "faster-coco-eval"]
PEERS = {  # name: (ground truth, results)
    "cocoapi_fake100": ("cocoapi_fake100/instances_val2014_100.json",
                        "cocoapi_fake100/instances_val2014_fakebbox100_results.json"),
    "review_odm_coco": ("review_odm_coco/sampled_gts_bbox_area.json", "review_odm_coco/sampled_bbox_results.json"),
    "faster_coco_eval_small": ("faster_coco_eval_small/gt_dataset.json", "faster_coco_eval_small/dt_dataset.json"),
}


def expected_stats(name):
    expected = json.loads(shared_path("peer", "coco_eval", "EXPECTED.json").read_text())[name]["bbox"]
    return next(v for k, v in expected.items() if k.startswith("pycocotools"))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", PEERS)
def test_peer_values_through_detkits_path(name, backend):
    gt_file, dt_file = (shared_path("peer", "coco_eval", f) for f in PEERS[name])
    index = load_coco(gt_file, images=False)  # detkit's loading
    results = load_results(dt_file, index.coco)
    detections = results_to_detections(results, index.category_ids)  # detkit's detections: xyxy, labels
    exported = detections_to_results(  # detkit's export: tensors -> COCO results
        ((i, {k: torch.from_numpy(v) for k, v in d.items()}) for i, d in detections.items()), index.category_ids
    )
    evaluation = evaluate(index, exported, backend=backend)
    stats = [evaluation.stats[k] for k in STAT_NAMES]
    assert np.allclose(stats, expected_stats(name), rtol=0, atol=1e-12)


def test_ground_truth_as_perfect_detections_gives_ap_1_on_coco128():
    train = open_dataset(shared_path("coco128", "annotations", "instances_train2017.json"))
    val = open_dataset(shared_path("coco128"), split="val2017", names=train.class_names)
    for index in (train, val):
        detections = [
            (r.image_id, {"boxes": r.boxes[~r.iscrowd], "scores": np.ones((~r.iscrowd).sum()),
                          "labels": r.labels[~r.iscrowd]})
            for r in index.records
        ]
        evaluation = evaluate(index, detections_to_results(detections, index.category_ids))
        assert evaluation.stats["AP"] == pytest.approx(1.0) and evaluation.stats["AR100"] == pytest.approx(1.0)
        assert all(ap in (-1.0, pytest.approx(1.0)) for ap in evaluation.per_class.values())
        assert coco_ground_truth(index)["categories"][0]["name"] == "person"


def test_no_detections_is_zero_not_a_crash():
    index = load_coco(shared_path("peer", "coco_eval", PEERS["cocoapi_fake100"][0]), images=False)
    evaluation = evaluate(index, [])
    assert evaluation.stats["AP"] == 0.0 and evaluation.stats["AR100"] == 0.0
    assert set(evaluation.per_class.values()) <= {0.0, -1.0}


def test_table_and_pr_curves(tmp_path):
    gt_file, dt_file = (shared_path("peer", "coco_eval", f) for f in PEERS["cocoapi_fake100"])
    evaluation = evaluate(gt_file, dt_file)
    lines = evaluation.table().splitlines()
    assert lines[0] == " Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 0.505"
    assert lines[11] == " Average Recall     (AR) @[ IoU=0.50:0.95 | area= large | maxDets=100 ] = 0.564"
    recall, precision = evaluation.pr_curve(0.5)
    assert recall.shape == precision.shape == (101,)
    # the area under the mean PR curve at IoU 0.5 is AP50, by COCO's 101-point definition
    assert precision.mean() == pytest.approx(evaluation.stats["AP50"], abs=1e-12)
    png = plot_pr_curves(evaluation, tmp_path / "pr.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "results,message",
    [
        ({"x": 1}, "a COCO results file is a list of detections"),
        ([{"image_id": 42, "category_id": 1, "bbox": [1, 2, 3, 4]}], "result 0: needs image_id, category_id, bbox and score"),
        ([{"image_id": 42, "category_id": 1, "bbox": [1, 2, 3], "score": 0.5}], "result 0: bbox must be"),
        ([{"image_id": 42, "category_id": 1, "bbox": [1, 2, -3, 4], "score": 0.5}], "must be finite with width"),
        ([{"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5}], "image_id 1 is not in the ground truth"),
        ([{"image_id": 42, "category_id": 1000, "bbox": [1, 2, 3, 4], "score": 0.5}],
         "category_id 1000 is not in the ground truth"),
    ],
)
def test_bad_results_files(tmp_path, results, message):
    gt = load_coco(shared_path("peer", "coco_eval", PEERS["cocoapi_fake100"][0]), images=False).coco
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    with pytest.raises(ValueError, match=message):
        load_results(path, gt)


def test_backends_agree_on_a_large_random_case():
    from tools.bench_eval import make_case

    gt, results = make_case(150, seed=5)
    a = evaluate(gt, results, backend="pycocotools")
    b = evaluate(gt, results, backend="faster-coco-eval")
    assert np.allclose([a.stats[k] for k in STAT_NAMES], [b.stats[k] for k in STAT_NAMES], rtol=0, atol=1e-12)
    assert np.allclose(a.precision, b.precision, rtol=0, atol=1e-12)
