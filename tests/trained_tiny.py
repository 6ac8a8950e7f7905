"""Tiny detectors of every family trained a little on the synthetic shapes, so that their
detections are a trained model's (confident, spread scores, boxes on objects), and the
comparison of two detection lists that tolerates float rounding. Shared by the tests that hold
one way of running a model to another: onnxruntime vs eager (tests/export), CUDA vs CPU
(tests/models/test_cuda.py).
"""

import numpy as np
import pytest
import torch

from detkit.data import DetectionDataset, eval_transforms
from detkit.data.coco import load_coco
from detkit.data.synthetic import generate
from detkit.export.onnx import DenseGraph, FasterRCNNGraph, SSDGraph, YOLOGraph
from detkit.models import build_model
from detkit.models.batchnorm import recalibrate_batchnorm
from detkit.ops import Suppressor
from tests.models.test_dense_detectors import TINY_EFFICIENTDET, TINY_RETINANET
from tests.models.test_ssd import TINY_SSD
from tests.models.test_yolo import TINY_YOLO

SIZE = 96  # the synthetic images' side; every tiny config resizes them to its own input size
STEPS = 40
FAMILIES = {  # config, graph, whether it predicts densities (Adaptive-NMS)
    "faster_rcnn": ({"type": "faster_rcnn", "backbone": {"type": "resnet", "depth": 18, "frozen_stages": -1},
                     "neck": {"type": "fpn", "out_channels": 32},
                     "rpn": {"pre_nms_top_n": [200, 100], "post_nms_top_n": [100, 50], "density": True},
                     "roi_heads": {"box_head": {"type": "two_mlp", "representation": 64}, "batch_per_image": 32},
                     "transform": {"min_size": SIZE, "max_size": SIZE}}, FasterRCNNGraph, True),
    "retinanet": ({**TINY_RETINANET, "head": {"depth": 2, "density": True},
                   "transform": {"min_size": SIZE, "max_size": SIZE}}, DenseGraph, True),
    # EfficientDet with GroupNorm (the cpu-long study's gn recipe): with its BatchNorm (momentum
    # 0.01) 40-60 steps at 2 images per step leave running statistics that fit no batch, and
    # recomputing them saturates some images' scores at 1.0 (99 of 100 tied) while others keep
    # none; with GN the same 40 steps give 23-57 detections per image, best scores 0.53-0.65.
    # The BatchNorm graph is test_onnx_export.py's random-weight EfficientDet.
    "efficientdet": ({**TINY_EFFICIENTDET, "backbone": {"norm": "gn"}, "neck": {**TINY_EFFICIENTDET["neck"], "norm": "gn"},
                      "head": {"depth": 2, "density": True, "norm": "gn"},
                      "transform": {"min_size": SIZE, "max_size": SIZE, "size_divisible": 128}}, DenseGraph, True),
    "ssd": (TINY_SSD, SSDGraph, False),
    "yolo": (TINY_YOLO, YOLOGraph, False),
}
SUPPRESSORS = {
    "nms": {"type": "nms", "iou_threshold": 0.5},
    "soft_nms_gaussian": {"type": "soft_nms", "method": "gaussian", "sigma": 0.5},
    "soft_nms_linear": {"type": "soft_nms", "method": "linear", "iou_threshold": 0.3},
    "diou_nms": {"type": "diou_nms", "iou_threshold": 0.5},
    "adaptive_nms": {"type": "adaptive_nms", "iou_threshold": 0.5},
}


def cases():
    """Every (family, suppressor) pair, Adaptive-NMS only for the families that predict densities."""
    for family, (_, _, densities) in FAMILIES.items():
        for name in SUPPRESSORS:
            if name != "adaptive_nms" or densities:
                yield pytest.param(family, name, id=f"{family}-{name}")


def with_suppressor(model, name: str):
    """``model`` with the suppressor ``SUPPRESSORS[name]`` in place of its own."""
    config = SUPPRESSORS[name]
    model.set_postprocess(Suppressor(config["type"], {k: v for k, v in config.items() if k != "type"}))
    return model


def make_shapes(root):
    """(training dataset, the 10 validation images as uint8 [10, 3, SIZE, SIZE]) under ``root``."""
    generate(root / "train", 16, seed=3, size=SIZE)
    generate(root / "val", 10, seed=4, size=SIZE)
    train = DetectionDataset(load_coco(root / "train" / "annotations.json"), eval_transforms())
    val = DetectionDataset(load_coco(root / "val" / "annotations.json"), eval_transforms())
    return train, torch.stack([val[i][0] for i in range(len(val))])


TRAINED: dict = {}


def batches(train, count: int):
    """``count`` batches of two training images, in order, as the models' training call takes them."""
    for step in range(count):
        batch = [train[(2 * step + k) % len(train)] for k in range(2)]
        yield ([image.float() / 255 for image, _ in batch],
               [{"boxes": t["boxes"], "labels": t["labels"]} for _, t in batch])


def trained(family: str, shapes) -> torch.nn.Module:
    """The family's tiny model after ``STEPS`` steps of AdamW on the training images (cached)."""
    if family not in TRAINED:
        train, _ = shapes
        config = {**FAMILIES[family][0], "num_classes": len(train.index.categories)}
        torch.manual_seed(0)
        model = build_model(config).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        for images, targets in batches(train, STEPS):
            losses = model(images, targets)
            optimizer.zero_grad()
            sum(losses.values()).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            optimizer.step()
        with torch.no_grad():  # BatchNorm statistics of the trained weights (EfficientDet's momentum 0.01
            recalibrate_batchnorm(model, batches(train, 8))  # leaves 40 steps' running stats near their init)
        TRAINED[family] = model.eval()
    return TRAINED[family]


def assert_same_detections(want: dict, got: dict, where: str, box_tol: float = 1e-3, score_tol: float = 1e-4):
    """The same detections: equal counts, and each of ``got``'s matched to one of ``want``'s of
    the same label, box within ``box_tol`` px, score within ``score_tol``. The match goes in rank
    order and may only pair detections whose scores are within ``score_tol`` of each other: two
    detections whose scores differ by float rounding may swap ranks (onnxruntime rounds
    differently from torch), anything else must be in the same place."""
    assert len(got["labels"]) == len(want["labels"]), f"{where}: {len(got['labels'])} != {len(want['labels'])}"
    unused = list(range(len(want["labels"])))
    for j in range(len(got["labels"])):
        match = next((k for k in unused if abs(float(want["scores"][k] - got["scores"][j])) <= score_tol
                      and want["labels"][k] == got["labels"][j]
                      and np.abs(want["boxes"][k] - got["boxes"][j]).max() <= box_tol), None)
        assert match is not None, (f"{where}: exported detection {j} (label {got['labels'][j]}, score "
                                   f"{got['scores'][j]:.6f}, box {got['boxes'][j].tolist()}) has no eager twin")
        assert abs(match - j) <= 1 or abs(float(want["scores"][match] - want["scores"][j])) <= score_tol, where
        unused.remove(match)
