"""Eager torch against onnxruntime on the CPU, per exported detector family.

For each family's config (its architecture and input size; random weights, nothing to
download), the model with detkit's default post-processing (NMS) and with gaussian Soft-NMS is
exported by ``detkit.export.onnx`` and run side by side in one process: batch 1, the config's
input size, median of --runs calls, eager and onnxruntime alternating so drifts in the machine's
speed hit both alike. Random class weights score every anchor alike (RetinaNet's prior: 0.01,
below its threshold); the class biases are set so that about as many candidates reach the
suppressor as a trained model sends (each family's top-k per level or class), which is what the
graph's suppression loop costs. Each pair's detections are checked equal: the same count, and
the same labels rank for rank, except that two detections whose scores are within 1e-4 may swap
ranks (onnxruntime's convolutions round about 1e-6 away from torch's; random weights give
thousands of nearly equal scores), as the export tests allow.

Usage: python tools/bench_export.py [--runs 20] [--families faster_rcnn retinanet efficientdet ssd yolo]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from detkit.config import load_config
from detkit.export.onnx import DenseGraph, FasterRCNNGraph, OnnxDetector, SSDGraph, YOLOGraph, export_onnx
from detkit.models import build_model
from detkit.ops import Suppressor

REPO = Path(__file__).resolve().parent.parent
FAMILIES = {  # config, graph
    "faster_rcnn": ("faster_rcnn_r50_fpn.yaml", FasterRCNNGraph),
    "retinanet": ("retinanet_r50_fpn.yaml", DenseGraph),
    "efficientdet": ("efficientdet_d0.yaml", DenseGraph),
    "ssd": ("ssd300_vgg16.yaml", SSDGraph),
    "yolo": ("yolov3_darknet53.yaml", YOLOGraph),
}


def random_model(family: str) -> torch.nn.Module:
    """The family's config model, random weights (no ImageNet download), the class scores lifted
    so that 1,000-4,000 candidates reach the suppressor (module docstring)."""
    config = load_config(REPO / "configs" / FAMILIES[family][0])["model"]
    config["backbone"] = {k: v for k, v in config.get("backbone", {}).items() if k != "weights"}
    torch.manual_seed(0)
    model = build_model(config).eval()
    size = size_of(model)
    image = torch.randint(0, 256, (1, 3, *size), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    low, high = -8.0, 4.0
    for _ in range(12):  # bisect the class logits' offset on the candidate count
        offset = (low + high) / 2
        lift(model, family, offset)
        with torch.no_grad():
            n = count_candidates(model, image)
        if 1000 <= n <= 4000:
            break
        low, high = (offset, high) if n < 1000 else (low, offset)
    return model


def lift(model, family: str, offset: float) -> None:
    """Set the biases of the class logits (and YOLO's objectness) to ``offset`` plus a spread."""
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        if family == "yolo":
            for conv in model.head.outputs:  # per anchor: 4 offsets, objectness, K classes
                per_anchor = conv.bias.view(-1, conv.bias.shape[0] // len(model.anchor_sizes[0]))
                per_anchor[:, 4:] = offset + torch.rand(per_anchor[:, 4:].shape, generator=generator)
        elif family == "faster_rcnn":  # the RoI classifier: background, then the K classes
            bias = model.roi_heads.predictor.cls_score.bias
            bias[0] = 0.0
            bias[1:] = offset + torch.rand(bias[1:].shape, generator=generator)
        elif family == "ssd":
            for conv in model.head.classification:  # per anchor: background, then the K classes
                per_anchor = conv.bias.view(-1, model.head.num_classes + 1)
                per_anchor[:, 0] = 0.0
                per_anchor[:, 1:] = offset + torch.rand(per_anchor[:, 1:].shape, generator=generator)
        else:
            out = model.head.classification.out
            bias = (out[-1] if isinstance(out, torch.nn.Sequential) else out).bias
            bias.copy_(offset + torch.rand(bias.shape, generator=generator))


def size_of(model) -> tuple[int, int]:
    transform = model.transform
    return tuple(transform.fixed_size) if transform.fixed_size else (transform.min_size[-1],) * 2


def timed(routes: dict, runs: int) -> dict:
    samples = {name: [] for name in routes}
    for _ in range(runs):
        for name, run in routes.items():
            start = time.perf_counter()
            run()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(s) for name, s in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; median of {args.runs}, batch 1")
    print(f"{'family':<13}{'suppressor':<20}{'size':>10}{'candidates':>11}{'eager ms':>10}{'onnx ms':>10}"
          f"{'ratio':>8}  same")
    for family in args.families:
        graph_kind = FAMILIES[family][1]
        model = random_model(family)
        size = size_of(model)
        image = torch.randint(0, 256, (1, 3, *size), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
        for suppressor in (Suppressor("nms", {"iou_threshold": 0.5}), Suppressor("soft_nms", {"method": "gaussian"})):
            model.set_postprocess(suppressor)
            with tempfile.TemporaryDirectory() as folder:
                exported = OnnxDetector(export_onnx(graph_kind(model, size), Path(folder) / "m.onnx"))
                with torch.no_grad():
                    want = model(list(image))[0]
                    candidates = count_candidates(model, image)
                got = exported(image)[0]
                same = same_detections(got, want)
                times = timed({"eager": lambda: model(list(image)), "onnx": lambda: exported(image)}, args.runs)
            print(f"{family:<13}{suppressor.type + ' ' + suppressor.options.get('method', ''):<20}"
                  f"{'x'.join(map(str, size)):>10}{candidates:>11}{1000 * times['eager']:>10.1f}"
                  f"{1000 * times['onnx']:>10.1f}{times['eager'] / times['onnx']:>7.2f}x  {same}")


def same_detections(got: dict, want: dict, tolerance: float = 1e-4) -> str:
    """"yes" when the count and the labels rank for rank agree, "yes (N near-tie swaps)" when the
    labels that differ belong to detections within ``tolerance`` of a neighbour's score (the
    same labels in all), else "NO"."""
    got_labels, want_labels = got["labels"].tolist(), want["labels"].tolist()
    if len(got_labels) != len(want_labels) or sorted(got_labels) != sorted(want_labels):
        return "NO"
    scores = want["scores"].tolist()
    differ = [i for i, (a, b) in enumerate(zip(got_labels, want_labels)) if a != b]
    near = [i for i in differ if any(abs(scores[i] - scores[j]) < tolerance for j in (i - 1, i + 1)
                                     if 0 <= j < len(scores))]
    if len(near) < len(differ):
        return "NO"
    return f"yes ({len(differ)} ranks of near-equal scores swap)" if differ else "yes"


def count_candidates(model, image) -> int:
    """How many candidates reach the suppressor: the model read out with none."""
    kept, cap = model.postprocess, model.detections_per_image
    model.set_postprocess(Suppressor("none", {}), cap=10**6)
    try:
        return len(model(list(image))[0]["scores"])
    finally:
        model.set_postprocess(kept, cap=cap)


if __name__ == "__main__":
    main()
