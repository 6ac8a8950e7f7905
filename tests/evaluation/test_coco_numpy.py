"""detkit's numpy COCO evaluation against pycocotools: every number, on cases built to reach
the rules' corners (crowd regions, ties in score and IoU, sizes on the range bounds, more than
100 detections per image and class, an annotation id 0, IoU exactly 1)."""

import contextlib
import io
import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from detkit.evaluation import coco_numpy, evaluate
from tests.conftest import shared_path


def pycocotools(gt, results):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {**gt, "annotations": [dict(a) for a in gt["annotations"]]}
        coco.createIndex()
        e = COCOeval(coco, coco.loadRes([dict(r) for r in results]), "bbox")
        e.evaluate()
        e.accumulate()
        e.summarize()
    return e


def assert_same(gt, results):
    theirs, ours = pycocotools(gt, results), coco_numpy.evaluate(gt, results)
    np.testing.assert_array_equal(ours.precision, theirs.eval["precision"])
    np.testing.assert_array_equal(ours.recall, theirs.eval["recall"])
    np.testing.assert_array_equal(ours.stats, np.asarray(theirs.stats))


def corner_case(seed: int, images: int = 12, classes: int = 3) -> tuple[dict, list[dict]]:
    """Small boxes on a coarse grid (so IoUs and scores tie), some on the size bounds exactly."""
    rng = np.random.default_rng(seed)
    gt = {"images": [{"id": int(i), "file_name": f"{i}.jpg", "width": 200, "height": 200}
                     for i in rng.permutation(np.arange(1, images + 1))],
          "categories": [{"id": int(c), "name": f"c{c}"} for c in (7, 2, 11)[:classes]], "annotations": []}
    cats = [c["id"] for c in gt["categories"]]
    results = []
    sides = [4.0, 8.0, 32.0, 96.0, 20.0, 60.0]  # 32 and 96: areas exactly on COCO's bounds
    ann_id = int(rng.integers(0, 2))  # an annotation id 0 in half the cases (pycocotools' quirk)
    for image in gt["images"]:
        for _ in range(rng.integers(0, 6)):
            w, h = rng.choice(sides), rng.choice(sides)
            x, y = float(rng.integers(0, 10) * 8), float(rng.integers(0, 10) * 8)
            crowd = int(rng.random() < 0.15)
            area = w * h if rng.random() < 0.7 else float(rng.choice([32.0**2, 96.0**2, w * h / 2]))
            gt["annotations"].append({"id": ann_id, "image_id": image["id"], "category_id": int(rng.choice(cats)),
                                      "bbox": [x, y, w, h], "area": area, "iscrowd": crowd})
            ann_id += 1
            for _ in range(rng.integers(0, 4)):
                jitter = rng.integers(-1, 2, 4) * 4.0
                results.append({"image_id": image["id"], "category_id": int(rng.choice(cats)),
                                "bbox": [x + jitter[0], y + jitter[1], max(1.0, w + jitter[2]), max(1.0, h + jitter[3])],
                                "score": float(rng.integers(1, 6)) / 5})
        for _ in range(rng.integers(0, 8)):
            results.append({"image_id": image["id"], "category_id": int(rng.choice(cats)),
                            "bbox": [float(rng.integers(0, 20) * 8), float(rng.integers(0, 20) * 8),
                                     float(rng.choice(sides)), float(rng.choice(sides))],
                            "score": float(rng.integers(1, 6)) / 5})
    return gt, results


@pytest.mark.parametrize("seed", range(8))
def test_corner_cases_equal_pycocotools(seed):
    assert_same(*corner_case(seed))


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 8), st.integers(1, 3))
def test_random_corner_cases_equal_pycocotools(seed, images, classes):
    gt, results = corner_case(seed, images, classes)
    if results:
        assert_same(gt, results)


def test_more_than_100_detections_per_image_and_class():
    rng = np.random.default_rng(3)
    gt = {"images": [{"id": 1, "file_name": "1.jpg"}, {"id": 2, "file_name": "2.jpg"}],
          "categories": [{"id": 1, "name": "a"}], "annotations": []}
    for i in range(30):
        x, y = rng.uniform(0, 300, 2)
        gt["annotations"].append({"id": i + 1, "image_id": 1 + i % 2, "category_id": 1, "bbox": [x, y, 40.0, 30.0],
                                  "area": 1200.0, "iscrowd": 0})
    results = [{"image_id": int(rng.integers(1, 3)), "category_id": 1,
                "bbox": [float(v) for v in rng.uniform(0, 300, 2)] + [40.0, 30.0],
                "score": float(rng.integers(0, 50)) / 50} for _ in range(400)]
    results += [{"image_id": a["image_id"], "category_id": 1, "bbox": a["bbox"], "score": 0.5}  # IoU exactly 1
                for a in gt["annotations"]]
    assert_same(gt, results)


@pytest.mark.parametrize("name,files", [
    ("cocoapi_fake100", ("instances_val2014_100.json", "instances_val2014_fakebbox100_results.json")),
    ("review_odm_coco", ("sampled_gts_bbox_area.json", "sampled_bbox_results.json")),
])
def test_peer_files_equal_pycocotools_bit_for_bit(name, files):
    gt, results = (json.loads(shared_path("peer", "coco_eval", name, f).read_text()) for f in files)
    assert_same(gt, results["annotations"] if isinstance(results, dict) else results)


def test_the_default_backend_is_numpy_and_equals_the_others_on_a_large_case():
    from tools.bench_eval import make_case

    gt, results = make_case(150, seed=7)
    ours = evaluate(gt, results)
    assert ours.backend == "numpy"
    theirs = evaluate(gt, results, backend="pycocotools")
    assert ours.stats == theirs.stats  # bit for bit
    np.testing.assert_array_equal(ours.precision, theirs.precision)
    twin = evaluate(gt, results, backend="faster-coco-eval")  # its own float order: equal to 1e-15
    np.testing.assert_allclose(ours.precision, twin.precision, rtol=0, atol=1e-12)


def test_box_iou_is_pycocotools_arithmetic():
    from pycocotools import mask

    rng = np.random.default_rng(0)
    d, g = rng.uniform(0, 50, (500, 4)), rng.uniform(0, 50, (500, 4))
    crowd = rng.random(500) < 0.3
    theirs = np.array([mask.iou(d[i:i + 1], g[i:i + 1], [int(crowd[i])])[0, 0] for i in range(500)])
    np.testing.assert_array_equal(coco_numpy.box_iou(d, g, crowd), theirs)
