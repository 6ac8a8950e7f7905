"""detkit detectors to ONNX, pre- and post-processing inside the graph.

    graph = DenseGraph(model, image_size=(256, 256))    # RetinaNet, EfficientDet
    export_onnx(graph, "model.onnx")
    boxes, scores, labels, count = OnnxDetector("model.onnx")(images)

The graph's input is ``images``: uint8 [N, 3, H, W] (RGB, 0..255, the layout of
``torchvision.io.read_image``), N and (H, W) fixed at export. Inside: the model's transform
(scaled to [0, 1], ImageNet-normalised, resized as ``DetectionTransform`` resizes, zero-padded
to its ``size_divisible``), the network, decoding (per level the best ``top_k`` (anchor, class)
pairs above the score threshold, decoded and clipped), the model's suppressor as an exact loop
(``graph_suppressors``), its cap of detections, and the boxes mapped back to the input's
pixels. Outputs, padded to the cap C: ``boxes`` float32 [N, C, 4] (xyxy), ``scores`` float32
[N, C], ``labels`` int64 [N, C] (0..K-1), ``count`` int64 [N]: the first ``count[i]`` rows of
image i are its detections, in descending score; the rest are zeros.

Two differences from eager ``detkit predict`` can move a detection, both on exact ties: the
per-level top-k picks among equal scores by ONNX TopK's rule, and onnxruntime's bilinear
resize and convolutions round differently from torch's (scores agree to about 1e-6 here).
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detkit.export.graph_suppressors import graph_suppress
from detkit.models.backbones.base import read_levels
from detkit.models.detectors.dense import DenseDetector
from detkit.ops import clip_boxes_to_image

OPSET = 17


class DetectorGraph(nn.Module):
    """What every exported detector shares: from uint8 images of ``image_size`` (h, w) through the
    model's transform and network to each image's padded detections (module docstring). A
    family's subclass decodes one image's candidates (``detect_one``)."""

    def __init__(self, model: nn.Module, image_size: Sequence[int]):
        super().__init__()
        self.model = model.eval()
        transform = model.transform
        self.image_size = (int(image_size[0]), int(image_size[1]))
        h, w = self.image_size
        if transform.fixed_size is not None:
            self.scale, self.resized = None, tuple(transform.fixed_size)
        else:  # DetectionTransform.resize's arithmetic, at the export's size
            self.scale = min(transform.min_size[-1] / min(h, w), transform.max_size / max(h, w))
            self.resized = (int(math.floor(h * self.scale)), int(math.floor(w * self.scale)))
        stride = float(transform.size_divisible)
        self.padded = tuple(int(math.ceil(s / stride) * stride) for s in self.resized)
        self.register_buffer("mean", torch.tensor(transform.mean)[:, None, None], persistent=False)
        self.register_buffer("std", torch.tensor(transform.std)[:, None, None], persistent=False)
        with torch.no_grad():  # the anchors depend on the sizes only: constants of the graph
            maps = read_levels(model.backbone, model.neck, torch.zeros(1, 3, *self.padded), model.in_levels)
        self.grids = [tuple(m.shape[-2:]) for m in maps]
        if hasattr(model, "anchors"):  # YOLO has anchor sizes per level instead
            anchors = model.anchors(self.padded, self.grids, torch.float32, "cpu")
            self.per_level = [len(a) for a in anchors]
            self.register_buffer("anchors", torch.cat(anchors), persistent=False)
        self.eval()

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        model = self.model
        x = (images.float() / 255.0 - self.mean) / self.std
        x = F.interpolate(x, size=list(self.resized) if self.scale is None else None, scale_factor=self.scale,
                          mode="bilinear", recompute_scale_factor=True if self.scale is not None else None,
                          align_corners=False)
        x = F.pad(x, [0, self.padded[1] - self.resized[1], 0, self.padded[0] - self.resized[0]])
        outputs = model.head(read_levels(model.backbone, model.neck, x, model.in_levels))
        out = [self.detect_one(outputs, i) for i in range(images.shape[0])]
        return tuple(torch.stack(parts) for parts in zip(*out))

    def detect_one(self, outputs: dict, i: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        raise NotImplementedError

    def suppressed(self, boxes: Tensor, scores: Tensor, labels: Tensor, densities: Tensor | None):
        """The candidates through the model's suppressor, capped and padded (``padded_detections``)."""
        keep, final = graph_suppress(self.model.postprocess, boxes, scores, labels, densities)
        return self.padded_detections(boxes[keep], final, labels[keep])

    def padded_detections(self, boxes: Tensor, scores: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The best ``cap`` detections, boxes back in the input's pixels, zero-padded to the cap."""
        cap = self.model.detections_per_image
        # resize_boxes' ratios, divided in float32 as it divides them
        ratio_h, ratio_w = (torch.tensor(float(new), dtype=torch.float32) / torch.tensor(float(old), dtype=torch.float32)
                            for new, old in zip(self.image_size, self.resized))
        boxes = boxes * torch.stack([ratio_w, ratio_h, ratio_w, ratio_h])
        count = torch.clamp(torch.ones_like(labels).sum(), max=cap)
        return (torch.cat([boxes, boxes.new_zeros(cap, 4)])[:cap], torch.cat([scores, scores.new_zeros(cap)])[:cap],
                torch.cat([labels, labels.new_zeros(cap)])[:cap], count)

    def top_above(self, scores: Tensor) -> tuple[Tensor, Tensor]:
        """``top_pairs``' choice without its data-dependent k: the best ``top_k`` above the score
        threshold are the best ``top_k``, then those above it."""
        top, index = scores.topk(min(self.model.top_k, scores.shape[0]))
        above = top > self.model.score_threshold
        return top[above], index[above]


class DenseGraph(DetectorGraph):
    """RetinaNet and EfficientDet (``DenseDetector``)."""

    def __init__(self, model: DenseDetector, image_size: Sequence[int]):
        if not isinstance(model, DenseDetector):
            raise ValueError(f"DenseGraph exports RetinaNet and EfficientDet, got {type(model).__name__}")
        super().__init__(model, image_size)

    def detect_one(self, outputs: dict, i: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``DenseDetector.detect`` for image i, in graph form."""
        model = self.model
        boxes, scores, labels, densities = [], [], [], []
        level_densities = outputs["densities"][i].split(self.per_level) if "densities" in outputs else None
        for lvl, (logits, deltas, anchor) in enumerate(zip(outputs["logits"][i].split(self.per_level),
                                                           outputs["deltas"][i].split(self.per_level),
                                                           self.anchors.split(self.per_level))):
            top, index = self.top_above(torch.sigmoid(logits).flatten())
            anchor_index = torch.div(index, logits.shape[1], rounding_mode="floor")
            decoded = model.coder.decode(deltas[anchor_index], anchor[anchor_index])[:, 0]
            boxes.append(clip_boxes_to_image(decoded, self.resized))
            scores.append(top)
            labels.append(index % logits.shape[1])
            if level_densities is not None:
                densities.append(level_densities[lvl][anchor_index])
        return self.suppressed(torch.cat(boxes), torch.cat(scores), torch.cat(labels),
                               torch.cat(densities) if densities else None)

class SSDGraph(DetectorGraph):
    """SSD: softmax over the classes and background, per class the best ``top_k`` above the
    threshold (``SSD.detect``)."""

    def __init__(self, model, image_size: Sequence[int]):
        from detkit.models.detectors.ssd import SSD

        if not isinstance(model, SSD):
            raise ValueError(f"SSDGraph exports SSD, got {type(model).__name__}")
        super().__init__(model, image_size)

    def detect_one(self, outputs: dict, i: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        probabilities = F.softmax(outputs["logits"][i], dim=-1)
        decoded = clip_boxes_to_image(self.model.coder.decode(outputs["deltas"][i], self.anchors)[:, 0], self.resized)
        boxes, scores, labels = [], [], []
        for label in range(1, probabilities.shape[-1]):
            top, index = self.top_above(probabilities[:, label])
            boxes.append(decoded[index])
            scores.append(top)
            labels.append(torch.full_like(index, label - 1))
        return self.suppressed(torch.cat(boxes), torch.cat(scores), torch.cat(labels), None)

class YOLOGraph(DetectorGraph):
    """YOLO: objectness x class probability, per scale the best ``top_k`` (cell, anchor, class)
    above the threshold (``YOLO.detect``)."""

    def __init__(self, model, image_size: Sequence[int]):
        from detkit.models.detectors.yolo import YOLO

        if not isinstance(model, YOLO):
            raise ValueError(f"YOLOGraph exports YOLO, got {type(model).__name__}")
        super().__init__(model, image_size)
        self.strides = [self.padded[0] // grid[0] for grid in self.grids]

    def detect_one(self, outputs: list, i: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        boxes, scores, labels = [], [], []
        for lvl, (out, grid, stride) in enumerate(zip(outputs, self.grids, self.strides)):
            decoded = self.model.decode(out[i:i + 1], grid, stride, self.model.anchor_sizes[lvl])[0]
            probabilities = torch.sigmoid(out[i, :, 4:5]) * torch.sigmoid(out[i, :, 5:])
            top, index = self.top_above(probabilities.flatten())
            boxes.append(clip_boxes_to_image(decoded[torch.div(index, probabilities.shape[1], rounding_mode="floor")],
                                             self.resized))
            scores.append(top)
            labels.append(index % probabilities.shape[1])
        return self.suppressed(torch.cat(boxes), torch.cat(scores), torch.cat(labels), None)


def export_checkpoint(config: dict, weights: str | Path, out: str | Path, *, postprocess: dict | None = None,
                      size: Sequence[int] | None = None, batch: int = 1, opset: int = OPSET) -> Path:
    """``detkit export``: the config's detector with ``weights`` (and ``postprocess``, a suppressor
    config, in place of the config's) to ``out`` as ONNX, for ``batch`` images of ``size`` (h, w;
    default: the transform's fixed size, else its min_size square)."""
    import importlib.util

    if importlib.util.find_spec("onnx") is None:  # the exporter writes through it
        raise ImportError("detkit export needs onnx (and onnxruntime to run the file): pip install -e \".[export]\"")
    from detkit.engine import load_model

    if postprocess is not None:
        config = {**config, "model": {**config["model"], "postprocess": postprocess}}
    from detkit.models.detectors.ssd import SSD
    from detkit.models.detectors.yolo import YOLO

    model = load_model(config, weights)
    graphs = {DenseDetector: DenseGraph, SSD: SSDGraph, YOLO: YOLOGraph}
    graph = next((g for kind, g in graphs.items() if isinstance(model, kind)), None)
    if graph is None:
        raise ValueError(f"detkit export: {config['model'].get('type')} models cannot be exported yet; RetinaNet, "
                         "EfficientDet, SSD and YOLO can (Faster R-CNN is planned: issue 19)")
    transform = model.transform
    if size is None:
        size = transform.fixed_size or (transform.min_size[-1],) * 2
    if len(size) != 2 or min(size) < 1 or batch < 1:
        raise ValueError(f"detkit export: --size must be two positive numbers (height width) and --batch >= 1, got "
                         f"{list(size)} and {batch}")
    return export_onnx(graph(model, size), out, batch=batch, opset=opset)


def export_onnx(graph: nn.Module, path: str | Path, *, batch: int = 1, opset: int = OPSET) -> Path:
    """Write ``graph`` (e.g. a ``DenseGraph``) to ``path`` as ONNX, traced on ``batch`` images of its size."""
    import warnings

    path = Path(path)
    images = torch.zeros(batch, 3, *graph.image_size, dtype=torch.uint8)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(graph, (images,), buffer, dynamo=False, opset_version=opset, input_names=["images"],
                          output_names=["boxes", "scores", "labels", "count"])
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(buffer.getvalue())
    temporary.replace(path)  # atomically: a crash leaves the old file or the new one
    return path


class OnnxDetector:
    """An exported detector run by onnxruntime: ``detections = OnnxDetector(path)(images)``, images
    uint8 [N, 3, H, W] (numpy or torch), detections per image as ``detkit predict`` gives them:
    {"boxes" float32 [K, 4], "scores" [K], "labels" int64 [K]}."""

    def __init__(self, path: str | Path):
        try:
            import onnxruntime
        except ImportError:
            raise ImportError("running an exported model needs onnxruntime: pip install -e \".[export]\"") from None
        self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        shape = self.session.get_inputs()[0].shape
        self.batch, self.image_size = shape[0], tuple(shape[2:])

    def __call__(self, images) -> list[dict]:
        images = images.numpy() if isinstance(images, Tensor) else images
        if tuple(images.shape[1:]) != (3, *self.image_size) or str(images.dtype) != "uint8":
            raise ValueError(f"images must be uint8 [N, 3, {self.image_size[0]}, {self.image_size[1]}] "
                             f"(the exported size), got {images.dtype} {list(images.shape)}")
        boxes, scores, labels, count = self.session.run(None, {"images": images})
        return [{"boxes": boxes[i, :n], "scores": scores[i, :n], "labels": labels[i, :n]}
                for i, n in enumerate(count.tolist())]
