"""The suppressor study on hand-made cases: diagnostics, the perfect-box ceiling, crowded
subsets, and re-suppressed raw candidates that equal the detector's own detections."""

from pathlib import Path

import numpy as np
import pytest
import torch

from detkit.compare.runs import crowded_subset, raw_candidates, read_raw
from detkit.compare.suppression import crowd_statistics, diagnose, evaluate_suppressor, suppress
from detkit.data import DetectionDataset, open_dataset
from detkit.data.records import Category, DataIssues, DatasetIndex, ImageRecord
from detkit.data.synthetic import generate
from detkit.engine import predict
from detkit.models import build_model


def index_of(*images) -> DatasetIndex:
    """A DatasetIndex from (boxes, labels) per image (ids 1, 2, ...), two classes."""
    records = []
    for i, (boxes, labels) in enumerate(images, start=1):
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        records.append(ImageRecord(i, Path(f"{i}.jpg"), f"{i}.jpg", 200, 200, boxes, np.asarray(labels, np.int64),
                                   np.zeros(len(boxes), bool), (boxes[:, 2:] - boxes[:, :2]).prod(1),
                                   np.arange(len(boxes)) + 10 * i))
    return DatasetIndex(records, [Category(1, "a"), Category(2, "b")], Path("."), "hand-made", "coco",
                        DataIssues("hand-made"))


# two objects of one class side by side at IoU 0.43, one raw duplicate of the first, one stray box
GT = ([[0, 0, 10, 10], [4, 0, 14, 10]], [0, 0])
RAW = {1: {"boxes": torch.tensor([[0, 0, 10, 10], [4, 0, 14, 10], [0, 0, 10, 10.5], [50, 50, 60, 60.]]),
           "scores": torch.tensor([0.9, 0.8, 0.7, 0.6]), "labels": torch.tensor([0, 0, 0, 0])}}


def test_diagnostics_count_what_each_suppressor_keeps_and_loses():
    index = index_of(GT)
    kept_all = suppress(RAW, {"type": "none"}, cap=100)
    d = diagnose(index, RAW, kept_all, score_threshold=0.5)
    assert (d["objects"], d["recoverable"], d["covered"], d["lost"]) == (2, 2, 2, 0)
    assert (d["tp"], d["duplicates"], d["other_fp"]) == (2, 1, 1)  # the 0.7 box re-detects object 1
    assert d["precision_at_threshold"] == 0.5 and d["recall_at_threshold"] == 1.0

    strict = diagnose(index, RAW, suppress(RAW, {"type": "nms", "iou_threshold": 0.4}, cap=100), 0.5)
    assert (strict["covered"], strict["lost"], strict["tp"], strict["duplicates"]) == (1, 1, 1, 0)  # object 2 gone
    usual = diagnose(index, RAW, suppress(RAW, {"type": "nms", "iou_threshold": 0.5}, cap=100), 0.5)
    assert (usual["lost"], usual["tp"], usual["duplicates"], usual["other_fp"]) == (0, 2, 0, 1)

    capped = diagnose(index, RAW, suppress(RAW, {"type": "none"}, cap=1), 0.5)
    assert capped["lost"] == 1 and capped["kept"] == 1  # the cap removes objects too, and is counted

    soft = diagnose(index, RAW, suppress(RAW, {"type": "soft_nms", "method": "gaussian", "sigma": 0.5}, cap=100), 0.85)
    assert soft["lost"] == 0 and soft["tp"] == 1  # decayed, not removed: object 2 is below 0.85 now


def test_evaluate_suppressor_rows_carry_coco_numbers():
    index = index_of(GT)
    row, evaluation, matches = evaluate_suppressor(index, RAW, {"type": "nms", "iou_threshold": 0.5}, 100, 0.5, [1, 2],
                                                  matches=True)
    assert row["AP50"] == evaluation.stats["AP50"] == pytest.approx(1.0)  # both objects first in the ranking
    assert row["config"] == {"type": "nms", "iou_threshold": 0.5} and matches.matches.image_ids == [1]
    assert matches.covered.tolist() == [[2.0, 2.0]]  # the image's two objects, both covered
    assert row["errors"]["counts"]["bkg"] == 1 and row["errors"]["miss_causes"]["unmatched"] == 0


def test_the_error_analysis_counts_the_suppressed_objects_as_lost():
    """One definition: an object a raw candidate covered and suppression removed is ``lost``
    in the diagnostics and ``suppressed`` in the error analysis; NMS at 0.4 removes object 2."""
    index = index_of(GT, ([[20, 20, 40, 40]], [1]))  # + an image whose object nothing proposes
    raw = {**RAW, 2: {"boxes": torch.tensor([[100.0, 100, 120, 120]]), "scores": torch.tensor([0.9]),
                      "labels": torch.tensor([1])}}
    row, _, _ = evaluate_suppressor(index, raw, {"type": "nms", "iou_threshold": 0.4}, 100, 0.5, [1, 2],
                                    matches=True)
    assert row["lost"] == row["errors"]["miss_causes"]["suppressed"] == 1
    assert row["errors"]["miss_causes"]["not_proposed"] == 1 and row["errors"]["counts"]["miss"] == 2


def test_crowd_statistics_on_perfect_boxes():
    # a same-class pair at IoU 70/130 = 0.54, a lone box, and another class's box on top of the pair's first
    index = index_of(([[0, 0, 10, 10], [3, 0, 13, 10], [100, 100, 110, 110], [0, 0, 10, 10]], [0, 0, 0, 1]))
    stats = crowd_statistics(index, [0.3, 0.5, 0.6])
    assert stats["objects"] == 4
    assert stats["nms"] == [0.25, 0.25, 0.0]  # one of the pair, whichever scores lower, while t < 0.54
    assert stats["diou_nms"][2] == 0.0 and stats["diou_nms"][0] == 0.25
    assert stats["neighbour"] == [0.5, 0.5, 0.0]


def test_crowded_subset_keeps_the_images_with_a_close_pair():
    index = index_of(([[0, 0, 10, 10], [3, 0, 13, 10]], [0, 0]),  # IoU 0.54, one class
                     ([[0, 0, 10, 10], [3, 0, 13, 10]], [0, 1]),  # the same boxes, two classes
                     ([[0, 0, 10, 10], [50, 0, 60, 10]], [0, 0]))  # apart
    subset = crowded_subset(index, 0.5)
    assert [r.image_id for r in subset.records] == [1]
    assert {a["image_id"] for a in subset.coco["annotations"]} == {1} and len(subset.coco["images"]) == 1
    with pytest.raises(ValueError, match="no image holds a same-class pair at IoU >= 0.6"):
        crowded_subset(index, 0.6)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("raw")
    generate(folder, 3, seed=5, size=96)
    return DetectionDataset(open_dataset(folder))


SMALL = {"backbone": {"type": "resnet", "depth": 18, "norm": "bn", "frozen_stages": -1}, "num_classes": 5,
         "transform": {"min_size": 96, "max_size": 96}}


@pytest.mark.parametrize("config", [
    {"type": "faster_rcnn", **SMALL, "neck": {"type": "fpn", "out_channels": 16},
     "roi_heads": {"box_head": {"type": "two_mlp", "representation": 32}, "detections_per_image": 20}},
    {"type": "retinanet", **SMALL, "backbone": {**SMALL["backbone"], "out_levels": ["C3", "C4", "C5"]},
     "neck": {"type": "fpn", "out_channels": 16, "extra": "p6p7"}, "score_threshold": 0.0, "detections_per_image": 30,
     "postprocess": {"type": "soft_nms", "method": "linear"}},
])
def test_re_suppressed_raw_candidates_are_the_detectors_own_detections(images, config):
    torch.manual_seed(0)
    model = build_model(config).eval()
    own, _ = predict(model, images, device="cpu", progress=False)
    trained = type("Trained", (), {"model": model, "config": {"data": {"batch_size": 2}}, "device": "cpu"})()
    raw, cap = read_raw(trained, images)
    assert cap == 20 if config["type"] == "faster_rcnn" else cap == 30
    assert max(len(d["scores"]) for d in raw.values()) > cap  # the raw read-out is neither suppressed nor capped
    again = dict(suppress(raw, config.get("postprocess") or {"type": "nms", "iou_threshold": 0.5}, cap))
    for image_id, det in own:
        assert torch.equal(det["labels"], again[image_id]["labels"])
        assert torch.allclose(det["boxes"], again[image_id]["boxes"]) and torch.allclose(det["scores"],
                                                                                         again[image_id]["scores"])
    assert model.postprocess.type != "none" and model.detections_per_image == cap  # restored after the read-out


def test_raw_candidates_restores_the_model_on_error():
    model = build_model({"type": "retinanet", **SMALL, "backbone": {**SMALL["backbone"], "out_levels": ["C3", "C4", "C5"]},
                         "neck": {"type": "fpn", "out_channels": 16, "extra": "p6p7"}})
    before = (model.postprocess, model.detections_per_image)
    with pytest.raises(RuntimeError), raw_candidates(model) as cap:
        assert model.postprocess.type == "none" and cap == before[1]
        raise RuntimeError("boom")
    assert (model.postprocess, model.detections_per_image) == before


def test_oracle_densities_give_each_matched_candidate_its_objects_true_density():
    from detkit.compare.suppression import oracle_densities, suppress
    from detkit.models.heads.density_head import density_targets
    from types import SimpleNamespace

    from detkit.data.records import ImageRecord

    # two people overlapping at IoU 0.6 (50x100 boxes offset by 12.5 px), a lone one, and a dog beside person 2
    people = np.array([[0, 0, 50, 100], [12.5, 0, 62.5, 100], [200, 0, 250, 100]], np.float32)
    dog = np.array([[20, 0, 70, 100]], np.float32)
    boxes = np.concatenate([people, dog])
    labels = np.array([0, 0, 0, 1])
    record = ImageRecord(image_id=1, path=Path("a.jpg"), file_name="a.jpg", width=300, height=120, boxes=boxes,
                         labels=labels, iscrowd=np.zeros(4, bool))
    index = SimpleNamespace(records=[record])  # what the oracle reads of a dataset
    truth = density_targets(torch.as_tensor(boxes))
    assert truth[0] == pytest.approx(0.6) and truth[2] == 0
    same = density_targets(torch.as_tensor(boxes), torch.as_tensor(labels))
    assert same[1] == pytest.approx(0.6) and truth[1] > same[1]  # the dog crowds person 2 only class-agnostically
    candidates = torch.tensor([[1, 0, 51, 100], [12, 0, 62, 100], [201, 0, 251, 100], [120, 0, 170, 100]],
                              dtype=torch.float32)
    raw = {1: {"boxes": candidates, "scores": torch.tensor([0.9, 0.8, 0.7, 0.6]),
               "labels": torch.tensor([0, 0, 0, 0]), "densities": torch.tensor([0.1, 0.1, 0.1, 0.3])}}
    oracle = oracle_densities(index, raw, same_class=True)[1]["densities"]
    assert oracle[:3].tolist() == pytest.approx([0.6, 0.6, 0.0], abs=1e-6)
    assert oracle[3] == pytest.approx(0.3)  # covers no object: its predicted density stays
    assert oracle_densities(index, raw, same_class=True, margin=0.5)[1]["densities"][0] == 1.0  # at most 1
    # the crowd pair: NMS at 0.5 keeps one of the two people, Adaptive-NMS with the oracle (+ a margin) both
    nms = dict(suppress(raw, {"type": "nms", "iou_threshold": 0.5}, 100))[1]
    adaptive = dict(suppress(oracle_densities(index, raw, same_class=True, margin=0.05), {"type": "adaptive_nms"},
                             100))[1]
    assert len(nms["boxes"]) == 3 and len(adaptive["boxes"]) == 4


def test_density_report_by_hand_per_candidate_and_once_per_object():
    """Two objects at IoU 0.6 (crowded) and a lone one; the lone object has three candidates, the
    best-scoring predicted lone, the other two crowded: per candidate 1 of 3 lone candidates is
    below N_t, per object (at its best-scoring candidate) the lone object is."""
    from detkit.compare.suppression import density_report

    index = index_of(([[0, 0, 50, 100], [12.5, 0, 62.5, 100], [100, 0, 150, 100]], [0, 0, 0]))
    raw = {1: {"boxes": torch.tensor([[0, 0, 50, 100], [12.5, 0, 62.5, 100], [100, 0, 150, 100], [101, 0, 151, 100],
                                      [99, 0, 149, 100], [170, 150, 190, 170]], dtype=torch.float32),
               "scores": torch.tensor([0.9, 0.4, 0.5, 0.8, 0.3, 0.9]), "labels": torch.tensor([0, 0, 0, 0, 0, 0]),
               "densities": torch.tensor([0.7, 0.4, 0.6, 0.2, 0.9, 0.9])}}  # the last covers no object
    d = density_report(index, raw, 0.5)
    assert d["candidates"] == 5 and d["crowded"] == 2 and d["lone"] == 3
    assert d["crowded_predicted_above"] == pytest.approx(0.5) and d["lone_predicted_below"] == pytest.approx(1 / 3)
    p, t = np.array([0.7, 0.4, 0.6, 0.2, 0.9]), np.array([0.6, 0.6, 0, 0, 0])
    assert d["pearson"] == pytest.approx(np.corrcoef(p, t)[0, 1])
    o = d["objects"]  # each object at its best-scoring candidate: 0.7 (score 0.9), 0.4 (0.4), 0.2 (0.8)
    assert o["objects"] == 3 and o["crowded"] == 2 and o["lone"] == 1
    assert o["crowded_predicted_above"] == pytest.approx(0.5) and o["lone_predicted_below"] == 1.0
    assert o["pearson"] == pytest.approx(np.corrcoef([0.7, 0.4, 0.2], [0.6, 0.6, 0])[0, 1])


def test_margin_is_chosen_on_the_training_candidates_and_added_to_the_predictions():
    """Two objects of one class at IoU 0.6 whose candidates predict density 0.55: at N_t 0.5 the
    rule keeps the second only when d + delta > 0.6, so a margin of 0.1 or more finds both."""
    from detkit.compare.suppression import choose_margin, with_margin

    index = index_of(([[0, 0, 50, 100], [12.5, 0, 62.5, 100]], [0, 0]))
    raw = {1: {"boxes": torch.tensor([[0.0, 0, 50, 100], [12.5, 0, 62.5, 100]]), "scores": torch.tensor([0.9, 0.8]),
               "labels": torch.tensor([0, 0]), "densities": torch.tensor([0.55, 0.55])}}
    assert with_margin(raw, 0.5)[1]["densities"].tolist() == [1.0, 1.0]  # at most 1
    chosen = choose_margin(index, raw, 100, margins=(0.0, 0.05, 0.1, 0.2))
    assert chosen["AP"][0] == chosen["AP"][1] < chosen["AP"][2] == chosen["AP"][3]
    assert chosen["chosen"] == 0.1  # the smallest of the best


def test_recall_spread_resamples_images():
    """The recall's bootstrap: each resample's covered objects over its objects."""
    from detkit.compare.suppression import Paired, spread

    index = index_of(GT)
    _, _, paired = evaluate_suppressor(index, RAW, {"type": "nms", "iou_threshold": 0.5}, 100, 0.5, [1, 2],
                                       matches=True)
    twin = Paired(paired.matches, np.array([[4.0, 1.0]]))
    assert spread(twin, np.zeros((3, 1), dtype=np.int64))["recall_covered"].tolist() == [0.25] * 3


def test_density_histogram_of_the_objects():
    gt = ([[0, 0, 50, 100], [12.5, 0, 62.5, 100], [150, 150, 170, 170]], [0, 1, 0])  # densities 0.6, 0.6, 0
    stats = crowd_statistics(index_of(gt), [0.5])
    assert stats["density_bins"][0] == 0.0 and stats["density_bins"][-1] == 1.0
    assert stats["density_counts"] == [1, 0, 0, 0, 0, 0, 2, 0, 0, 0]  # any class counts: 0.6 twice


def test_suppressed_equals_lost_when_a_model_keeps_more_than_coco_evaluates():
    """A cap above COCO's 100 detections per image (RetinaNet keeps 300): an object covered only
    by the 101st kept box is neither lost nor suppressed (it is "taken": kept, but beyond the
    100 evaluated)."""
    index = index_of(([[0, 0, 10, 10]], [0]))
    strays = torch.tensor([[50.0 + i, 50, 60 + i, 60] for i in range(100)])
    raw = {1: {"boxes": torch.cat([strays, torch.tensor([[0.0, 0, 10, 10]])]),
               "scores": torch.cat([torch.linspace(0.9, 0.5, 100), torch.tensor([0.1])]),
               "labels": torch.zeros(101, dtype=torch.int64)}}
    row, _, _ = evaluate_suppressor(index, raw, {"type": "none"}, 200, 0.5, [1, 2], matches=True)
    causes = row["errors"]["miss_causes"]
    assert row["lost"] == causes["suppressed"] == 0 and causes == {**causes, "unmatched": 1, "taken": 1}
