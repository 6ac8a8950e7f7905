"""MR⁻², the log-average miss rate, on hand-computed cases and against its definition."""

import math

import numpy as np
import pytest

from detkit.evaluation.bootstrap import match_images
from detkit.evaluation.miss_rate import FPPI_POINTS, log_average_miss_rate, miss_rate_curve, mr2


def gt(boxes_per_image, crowd=()):
    images = [{"id": i + 1, "width": 100, "height": 100, "file_name": f"{i}.jpg"} for i in range(len(boxes_per_image))]
    annotations = []
    for image_id, boxes in enumerate(boxes_per_image, start=1):
        for x, y, w, h in boxes:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1,
                                "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
    for image_id, (x, y, w, h) in crowd:
        annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1,
                            "bbox": [x, y, w, h], "area": w * h, "iscrowd": 1})
    return {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "person"}]}


def det(image_id, box, score):
    return {"image_id": image_id, "category_id": 1, "bbox": list(box), "score": score}


def test_a_hand_computed_split():
    """2 images, 4 people; in descending score: hit, false alarm, hit, false alarm, false alarm.
    FPPI after each: 0, .5, .5, 1, 1.5; miss rate .75, .75, .5, .5, .5. The 7 points below
    FPPI 0.5 read .75, the points 10^-0.25 and 10^0 read .5: MR = exp((7 ln .75 + 2 ln .5) / 9)."""
    truth = gt([[(0, 0, 10, 20), (30, 0, 10, 20)], [(0, 0, 10, 20), (50, 50, 10, 20)]])
    results = [det(1, (0, 0, 10, 20), 0.9), det(1, (70, 70, 10, 10), 0.8), det(2, (50, 50, 10, 20), 0.7),
               det(2, (80, 0, 10, 10), 0.6), det(2, (80, 40, 10, 10), 0.5)]
    matches = match_images(truth, results)
    fppi, miss = miss_rate_curve(matches)
    np.testing.assert_allclose(fppi, [0, 0.5, 0.5, 1.0, 1.5])
    np.testing.assert_allclose(miss, [0.75, 0.75, 0.5, 0.5, 0.5])
    assert mr2(matches) == pytest.approx(math.exp((7 * math.log(0.75) + 2 * math.log(0.5)) / 9), abs=1e-12)


def test_the_nine_points_and_the_extremes():
    assert np.allclose(FPPI_POINTS, [10 ** (-2 + 0.25 * k) for k in range(9)])
    assert log_average_miss_rate(np.zeros(0), np.zeros(0)) == 1.0  # nothing detected: everything missed
    assert log_average_miss_rate(np.array([0.0]), np.array([0.0])) == pytest.approx(1e-10)  # all found, no FP
    # every object found, but only after one false alarm per image: the eight points below FPPI 1
    # read the miss rate before any detection (1), the last reads 0 (counted as 1e-10)
    assert log_average_miss_rate(np.array([1.0, 1.0]), np.array([1.0, 0.0])) == pytest.approx(
        math.exp(math.log(1e-10) / 9))


def test_crowd_regions_and_duplicates():
    """A detection on a crowd region is ignored (neither hit nor false alarm); a second detection
    of a found person is a false alarm."""
    truth = gt([[(0, 0, 10, 20)]], crowd=[(1, (50, 50, 40, 40))])
    results = [det(1, (0, 0, 10, 20), 0.9), det(1, (55, 55, 20, 20), 0.8), det(1, (0, 0, 10, 19), 0.7)]
    fppi, miss = miss_rate_curve(match_images(truth, results))
    np.testing.assert_allclose(fppi, [0.0, 1.0])
    np.testing.assert_allclose(miss, [0.0, 0.0])


def test_resampled_images_weigh_as_drawn():
    truth = gt([[(0, 0, 10, 20)], [(0, 0, 10, 20)]])
    results = [det(1, (0, 0, 10, 20), 0.9), det(2, (60, 60, 10, 10), 0.8)]
    matches = match_images(truth, results)
    fppi, miss = miss_rate_curve(matches, indices=[0, 0])  # image 1 twice: two hits, no false alarm
    np.testing.assert_allclose(fppi, [0.0, 0.0])
    np.testing.assert_allclose(miss, [0.5, 0.0])
    fppi, miss = miss_rate_curve(matches, indices=[1])
    np.testing.assert_allclose(fppi, [1.0])
    np.testing.assert_allclose(miss, [1.0])
    with pytest.raises(ValueError, match="IoU thresholds"):
        miss_rate_curve(matches, iou=0.33)
