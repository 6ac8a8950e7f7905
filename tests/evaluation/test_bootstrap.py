"""The bootstrap's re-accumulation gives pycocotools' numbers on the identity resample, and
its resamples behave like samples of images."""

import json

import numpy as np
import pytest

from detkit.evaluation import evaluate
from detkit.evaluation.bootstrap import accumulate, bootstrap, match_images, resample_indices
from tests.conftest import shared_path
from tests.evaluation.test_coco_eval import PEERS, expected_stats


@pytest.mark.parametrize("name", PEERS)
def test_identity_resample_is_pycocotools(name):
    gt_file, dt_file = (shared_path("peer", "coco_eval", f) for f in PEERS[name])
    gt, results = json.loads(gt_file.read_text()), json.loads(dt_file.read_text())
    results = results if isinstance(results, list) else results["annotations"]
    stats = accumulate(match_images(gt, results))
    expected = expected_stats(name)  # pycocotools' 12 numbers, as the peer published them
    for ours, index in (("AP", 0), ("AP50", 1), ("AP75", 2), ("AR100", 8)):
        assert stats[ours] == pytest.approx(expected[index], abs=1e-12), ours


def _toy():
    """Three images, one class: image 1 detected perfectly, image 2 missed, image 3 with a
    false positive above a true one."""
    gt = {"images": [{"id": i, "width": 100, "height": 100} for i in (1, 2, 3)],
          "categories": [{"id": 7, "name": "thing"}],
          "annotations": [{"id": j, "image_id": i, "category_id": 7, "bbox": [10, 10, 40, 40], "area": 1600,
                           "iscrowd": 0} for j, i in ((1, 1), (2, 2), (3, 3))]}
    results = [{"image_id": 1, "category_id": 7, "bbox": [10, 10, 40, 40], "score": 0.9},
               {"image_id": 3, "category_id": 7, "bbox": [60, 60, 30, 30], "score": 0.8},
               {"image_id": 3, "category_id": 7, "bbox": [10, 10, 40, 40], "score": 0.7}]
    return gt, results


def test_resamples_are_collections_of_images():
    gt, results = _toy()
    matches = match_images(gt, results)
    only_first = accumulate(matches, [0, 0, 0])  # image 1 three times: every object found at once
    assert only_first["AP"] == pytest.approx(1.0) and only_first["AR100"] == pytest.approx(1.0)
    only_missed = accumulate(matches, [1])
    assert only_missed["AP"] == 0.0 and only_missed["AR100"] == 0.0
    # images 1 and 3: ranked 0.9 TP, 0.8 FP, 0.7 TP over 2 objects -> precision 1 up to recall
    # 0.5, then 2/3 up to 1 (the envelope): AP50 = (51 * 1 + 50 * 2/3) / 101
    assert accumulate(matches, [0, 2])["AP50"] == pytest.approx((51 + 50 * 2 / 3) / 101)
    # the same through pycocotools, with the images renumbered
    assert accumulate(matches)["AP"] == pytest.approx(evaluate(gt, results, backend="pycocotools").stats["AP"],
                                                      abs=1e-12)


def test_no_results_and_no_ground_truth():
    gt, _ = _toy()
    assert accumulate(match_images(gt, []))["AP"] == 0.0
    empty = {**gt, "annotations": []}
    assert accumulate(match_images(empty, []))["AP"] == -1.0


def test_bootstrap_spread_shrinks_with_more_images():
    rng = np.random.default_rng(0)
    gt = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
    results = []
    for i in range(1, 121):
        gt["images"].append({"id": i, "width": 200, "height": 200})
        for _ in range(3):
            x, y, c = rng.uniform(0, 150), rng.uniform(0, 150), int(rng.integers(1, 3))
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": i, "category_id": c,
                                      "bbox": [x, y, 30, 30], "area": 900, "iscrowd": 0})
            if rng.random() < 0.7:  # found, a little off
                results.append({"image_id": i, "category_id": c, "bbox": [x + rng.normal(0, 3), y, 30, 30],
                                "score": float(rng.random())})
            results.append({"image_id": i, "category_id": c, "bbox": [rng.uniform(0, 150), 10, 20, 20],
                            "score": float(rng.random())})
    matches = match_images(gt, results)
    full = accumulate(matches)["AP"]
    spread = bootstrap(matches, resample_indices(120, 100, seed=1))["AP"]
    assert abs(np.median(spread) - full) < 0.02  # centred on the full-sample AP
    small = bootstrap(match_images({**gt, "images": gt["images"][:30]},
                                   [r for r in results if r["image_id"] <= 30]), resample_indices(30, 100, seed=1))
    assert 0 < spread.std() < small["AP"].std()  # about 1/sqrt(n): 120 images spread half as much as 30
    assert resample_indices(5, 3, seed=2).tolist() == resample_indices(5, 3, seed=2).tolist()
    with pytest.raises(ValueError, match="at least one image"):
        resample_indices(0, 10)


@pytest.mark.parametrize("seed", range(6))
def test_matches_are_pycocotools_evaluate_image_by_image(seed):
    """Every (category, image) entry equals pycocotools' evalImgs at area all, 100 detections."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from tests.evaluation.test_coco_numpy import corner_case

    gt, results = corner_case(seed, 10, 3)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {**gt, "annotations": [dict(a) for a in gt["annotations"]]}
        coco.createIndex()
        e = COCOeval(coco, coco.loadRes([dict(r) for r in results]), "bbox")
        e.params.areaRng, e.params.areaRngLbl, e.params.maxDets = [[0, 1e10]], ["all"], [100]
        e.evaluate()
    ours, n = match_images(gt, results), len(e.params.imgIds)
    assert ours.image_ids == list(e.params.imgIds)
    for k in range(len(e.params.catIds)):
        for i in range(n):
            theirs, mine = e.evalImgs[k * n + i], ours.per_class[k][i]
            if theirs is None:
                assert mine is None
                continue
            np.testing.assert_array_equal(mine[0], theirs["dtScores"])
            np.testing.assert_array_equal(mine[1], np.asarray(theirs["dtMatches"]) > 0)
            np.testing.assert_array_equal(mine[2], theirs["dtIgnore"])
            assert mine[3] == int(np.count_nonzero(np.asarray(theirs["gtIgnore"]) == 0))
