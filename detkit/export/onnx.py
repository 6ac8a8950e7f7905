"""detkit detectors to ONNX, pre- and post-processing inside the graph.

    graph = DenseGraph(model, image_size=(256, 256))    # RetinaNet, EfficientDet
    export_onnx(graph, "model.onnx")
    boxes, scores, labels, count = OnnxDetector("model.onnx")(images)

The graph's input is ``images``: uint8 [N, 3, H, W] (RGB, 0..255, the layout of
``torchvision.io.read_image``), N fixed at export, (H, W) too unless exported ``dynamic`` (then the
sizes, the network's input and the anchors follow the input's shape). Inside: the model's transform
(scaled to [0, 1], ImageNet-normalised, resized as ``DetectionTransform`` resizes, zero-padded
to its ``size_divisible``), the network, decoding (per level the best ``top_k`` (anchor, class)
pairs above the score threshold, decoded and clipped), the model's suppressor as an exact loop
(``graph_suppressors``), its cap of detections, and the boxes mapped back to the input's
pixels. Outputs, padded to the cap C: ``boxes`` float32 [N, C, 4] (xyxy), ``scores`` float32
[N, C], ``labels`` int64 [N, C] (0..K-1), ``count`` int64 [N]: the first ``count[i]`` rows of
image i are its detections, in descending score; the rest are zeros.

Two differences from eager ``detkit predict`` can move a detection, both on exact ties: the
per-level top-k picks among equal scores by ONNX TopK's rule, and onnxruntime's convolutions
round differently from torch's (scores agree to about 1e-6 here). The resize and the sigmoid
are written in plain ops with torch's arithmetic (``bilinear_resize``, ``exact_logistic``):
onnxruntime's own Resize and Sigmoid are approximations that EfficientNet amplifies.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import roi_align

from detkit.export.graph_suppressors import graph_suppress
from detkit.models.anchors import AnchorGenerator
from detkit.models.backbones.base import read_levels
from detkit.models.detectors.dense import DenseDetector
from detkit.ops import box_iou, remove_small_boxes

OPSET = 17


def bilinear_resize(x: Tensor, size: Sequence[int]) -> Tensor:
    """``F.interpolate(x, size, mode="bilinear", align_corners=False)`` as torch computes it on the
    CPU (source index ``(dst + 0.5) * in / out - 0.5`` clamped at 0, its two neighbours, the width
    blended before the height, all in float32), written in Gather, Mul and Add. ONNX's Resize
    would do, but onnxruntime's linear Resize is 1e-5 relative from the exact result where torch's
    is 5e-7 (measured on unit-variance images, 120x150 to 128x160), and EfficientNet amplifies
    that into boxes 0.02 px from eager ones; this is torch's arithmetic. The input's height and
    width are read from its shape, so a dynamic-size graph keeps them."""
    out = x
    for dim, n_out in ((3, torch.as_tensor(size[1])), (2, torch.as_tensor(size[0]))):  # ints, or tensors in a graph
        n_in = torch._shape_as_tensor(x)[dim]  # traced: follows the input
        scale = n_in.to(torch.float32) / n_out.to(torch.float32)
        source = ((torch.arange(n_out, dtype=torch.float32) + 0.5) * scale - 0.5).clamp(min=0.0)
        last = n_in - 1
        first = torch.minimum(source.floor().to(torch.int64), last)
        second = torch.minimum(first + 1, last)
        weight = (source - first.to(torch.float32)).clamp(0.0, 1.0)
        if dim == 2:
            weight = weight[:, None]
        out = out.index_select(dim, first) * (1.0 - weight) + out.index_select(dim, second) * weight
    return out


def top_k_above(scores: Tensor, k: int, threshold: float) -> tuple[Tensor, Tensor]:
    """The best ``k`` of ``scores`` (1-D) that are above ``threshold``, and their indices, in
    descending order: ``scores.topk(min(k, len(scores)))`` then the threshold, with the scores
    padded by k times -inf, so that the graph's k is a constant whatever their count."""
    top, index = torch.cat([scores, scores.new_full((k,), -math.inf)]).topk(k)
    above = top > threshold
    return top[above], index[above]


def split_as(x: Tensor, parts: list[Tensor]) -> list[Tensor]:
    """``x`` cut along its first dimension into pieces as long as ``parts`` (``split`` with sizes
    read from the tensors, so that they follow the input's size in the graph)."""
    pieces, start = [], 0
    for part in parts:
        end = start + torch._shape_as_tensor(part)[0]
        pieces.append(x[start:end])
        start = end
    return pieces


class DetectorGraph(nn.Module):
    """What every exported detector shares: from uint8 images of ``image_size`` (h, w) through the
    model's transform and network to each image's padded detections (module docstring). A
    family's subclass decodes one image's candidates (``detect_one``)."""

    def __init__(self, model: nn.Module, image_size: Sequence[int]):
        super().__init__()
        self.model = model.eval()
        transform = model.transform
        self.image_size = (int(image_size[0]), int(image_size[1]))
        # while tracing, the sizes of the images at hand, as tensors that follow the input's shape:
        self.input_size = None  # (h, w) float32
        self.resized_size = None  # (h, w) int64: the transform's resized size
        self.padded_size = None  # (h, w) int64: the network's input, padded to size_divisible
        self.level_anchors = None  # per level, its anchors, where the graph computes them (follows_size)
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
        with torch.no_grad():  # the levels' grids at the export's size
            maps = self.feature_maps(torch.zeros(1, 3, *self.padded))
        self.grids = [tuple(m.shape[-2:]) for m in maps]
        generator = self.anchor_generator()
        # an AnchorGenerator's anchors are computed in the graph from each level's size, so they
        # follow the input's size; SSD's default boxes are constants at the export's size
        self.follows_size = isinstance(generator, AnchorGenerator)
        if generator is not None and not self.follows_size:  # YOLO has anchor sizes per level instead
            self.register_buffer("anchors", torch.cat(generator(self.padded, self.grids, torch.float32, "cpu")),
                                 persistent=False)
        self.eval()

    def feature_maps(self, x: Tensor) -> list[Tensor]:
        """The levels the model's head reads, from the network's input."""
        return read_levels(self.model.backbone, self.model.neck, x, self.model.in_levels)

    def anchor_generator(self):
        """The model's anchors (called with sizes and grids), or None."""
        return getattr(self.model, "anchors", None)

    @property
    def dynamic_size(self) -> bool:
        """Whether the graph can take any image size: its anchors follow the network input's size
        (an AnchorGenerator's), or that input is the same for every image (a fixed-size
        transform, or a letterbox: padded to a ``size_divisible`` of at least ``max_size``)."""
        transform = self.model.transform
        return self.follows_size or self.scale is None or transform.max_size <= transform.size_divisible

    def preprocess(self, images: Tensor) -> Tensor:
        """uint8 images to the network's input, as the model's transform makes it; the sizes
        (``input_size``, ``resized_size``, ``padded_size``) are read from the input's shape."""
        transform = self.model.transform
        shape = torch._shape_as_tensor(images)[2:]  # traced: follows the input
        self.input_size = shape.to(torch.float32)
        if self.scale is None:
            resized = torch.tensor(self.resized)
        else:
            # DetectionTransform.resize's arithmetic in float64, as Python does it: the limits are
            # float64 tensors because a Python number here would become a float32 constant
            hw = shape.to(torch.float64)
            limits = torch.tensor([float(transform.min_size[-1]), float(transform.max_size)], dtype=torch.float64)
            scale = (limits / torch.stack([hw.min(), hw.max()])).min()
            resized = torch.floor(hw * scale).to(torch.int64)
        stride = int(transform.size_divisible)
        self.resized_size = resized
        self.padded_size = torch.div(resized + (stride - 1), stride, rounding_mode="floor") * stride
        x = bilinear_resize((images.float() / 255.0 - self.mean) / self.std, resized)
        # zero-padded to the next multiple of the stride: stride - 1 rows and columns, then cut
        return F.pad(x, [0, stride - 1, 0, stride - 1])[..., :self.padded_size[0], :self.padded_size[1]]

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        maps = self.feature_maps(self.preprocess(images))
        self.anchors_at(maps)
        outputs = self.model.head(maps)
        out = [self.detect_one(outputs, i) for i in range(images.shape[0])]
        return tuple(torch.stack(parts) for parts in zip(*out))

    def anchors_at(self, maps: list[Tensor]) -> None:
        """``level_anchors`` for these feature maps: ``AnchorGenerator``'s, each level's stride
        the padded size over its grid, as the eager model computes them."""
        if self.follows_size:
            generator = self.anchor_generator()
            self.level_anchors = []
            for level, base in zip(maps, generator.cell_anchors):
                grid = torch._shape_as_tensor(level)[-2:]
                stride = torch.div(self.padded_size, grid, rounding_mode="floor")
                self.level_anchors.append(generator.grid_anchors(base, grid[0], grid[1], stride[0], stride[1]))

    def clip(self, boxes: Tensor) -> Tensor:
        """``clip_boxes_to_image`` at the resized size (a tensor in the graph)."""
        h, w = self.resized_size.to(boxes.dtype).unbind()
        return torch.minimum(boxes.clamp(min=0.0), torch.stack([w, h, w, h]))

    def detect_one(self, outputs, i: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        raise NotImplementedError

    def suppressed(self, boxes: Tensor, scores: Tensor, labels: Tensor, densities: Tensor | None):
        """The candidates through the model's suppressor, capped and padded (``padded_detections``)."""
        keep, final = graph_suppress(self.model.postprocess, boxes, scores, labels, densities,
                                     limit=self.model.detections_per_image)
        return self.padded_detections(boxes[keep], final, labels[keep])

    def padded_detections(self, boxes: Tensor, scores: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The best ``cap`` detections, boxes back in the input's pixels, zero-padded to the cap."""
        cap = self.model.detections_per_image
        # resize_boxes' ratios, divided in float32 as it divides them
        ratio_h, ratio_w = (self.input_size / self.resized_size.to(torch.float32)).unbind()
        boxes = boxes * torch.stack([ratio_w, ratio_h, ratio_w, ratio_h])
        count = torch.clamp(torch.ones_like(labels).sum(), max=cap)
        return (torch.cat([boxes, boxes.new_zeros(cap, 4)])[:cap], torch.cat([scores, scores.new_zeros(cap)])[:cap],
                torch.cat([labels, labels.new_zeros(cap)])[:cap], count)

    def top_above(self, scores: Tensor) -> tuple[Tensor, Tensor]:
        """``top_pairs``' choice without its data-dependent k: the best ``top_k`` above the score
        threshold are the best ``top_k`` (of the scores padded with -inf, since a level's count
        follows the input's size), then those above it."""
        return top_k_above(scores, self.model.top_k, self.model.score_threshold)


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
        anchors = self.level_anchors
        level_densities = split_as(outputs["densities"][i], anchors) if "densities" in outputs else None
        for lvl, (logits, deltas, anchor) in enumerate(zip(split_as(outputs["logits"][i], anchors),
                                                           split_as(outputs["deltas"][i], anchors), anchors)):
            top, index = self.top_above(torch.sigmoid(logits).flatten())
            anchor_index = torch.div(index, logits.shape[1], rounding_mode="floor")
            decoded = model.coder.decode(deltas[anchor_index], anchor[anchor_index])[:, 0]
            boxes.append(self.clip(decoded))
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
        decoded = self.clip(self.model.coder.decode(outputs["deltas"][i], self.anchors)[:, 0])
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
            boxes.append(self.clip(decoded[torch.div(index, probabilities.shape[1], rounding_mode="floor")]))
            scores.append(top)
            labels.append(index % probabilities.shape[1])
        return self.suppressed(torch.cat(boxes), torch.cat(scores), torch.cat(labels), None)


class FasterRCNNGraph(DetectorGraph):
    """Faster R-CNN: the RPN's proposals (per level the best ``pre_nms_top_n``, decoded, clipped,
    tiny ones dropped, suppressed per level, the best ``post_nms_top_n`` kept), RoIAlign on them,
    the box head, and ``RoIHeads.detect``: per (RoI, class) boxes and softmax scores above the
    threshold, through the suppressor. Densities come from the RPN's density subnet (at the
    proposal's anchor, or at the anchor each box overlaps most: the model's ``density_readout``)
    or from the RoI density head (on the proposal's RoI, or on each final box's own RoI)."""

    def __init__(self, model, image_size: Sequence[int]):
        from detkit.models.detectors.faster_rcnn import FasterRCNN

        if not isinstance(model, FasterRCNN):
            raise ValueError(f"FasterRCNNGraph exports Faster R-CNN, got {type(model).__name__}")
        super().__init__(model, image_size)

    def feature_maps(self, x: Tensor) -> list[Tensor]:
        features = self.model.features(x)
        pooler = self.model.roi_heads.roi_pool
        if pooler.scales is None:  # its levels' scales are set on its first call, from the sizes alone
            pooler(features, [x.new_tensor([[0.0, 0.0, 8.0, 8.0]])], [self.resized])
        return [features[level] for level in self.model.rpn.in_levels]

    def pool(self, features: dict, proposals: Tensor) -> Tensor:
        """``MultiScaleRoIAlign`` on one image's proposals, without its per-level selection (whose
        traced form fails in onnxruntime on levels holding one RoI): every RoI pooled on every
        level, then each RoI's level taken; RoIAlign pools each RoI alone, so the values are its."""
        pooler = self.model.roi_heads.roi_pool
        levels = [features[name] for name in pooler.featmap_names]
        rois = torch.cat([torch.zeros_like(proposals[:, :1]), proposals], dim=1)
        pooled = torch.stack([roi_align(level, rois, pooler.output_size, scale, pooler.sampling_ratio)
                              for level, scale in zip(levels, pooler.scales)])  # (L, R, C, S, S)
        if len(levels) == 1:
            return pooled[0]
        level = pooler.map_levels([proposals])
        ones = torch.ones_like(level)  # the RoIs' count and positions from the data (len() would trace a constant)
        return pooled.flatten(0, 1)[level * ones.sum() + ones.cumsum(0) - 1]

    def anchor_generator(self):
        return self.model.rpn.anchors

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        from detkit.models.heads.rpn import flatten_levels

        rpn = self.model.rpn
        features = self.model.features(self.preprocess(images))
        maps = [features[level] for level in rpn.in_levels]
        self.anchors_at(maps)
        logits, deltas = rpn.head(maps)
        densities = rpn.density.flatten(rpn.density(maps, logits, deltas))[0] if rpn.density is not None else None
        objectness, deltas = flatten_levels(logits, deltas)
        out = []
        for i in range(images.shape[0]):
            image_features = {name: level[i:i + 1] for name, level in features.items()}
            out.append(self.detect_one(image_features, objectness[i], deltas[i],
                                       densities[i] if densities is not None else None))
        return tuple(torch.stack(parts) for parts in zip(*out))

    def propose(self, objectness: Tensor, deltas: Tensor) -> tuple[Tensor, Tensor]:
        """``RPN.select`` for one image: its proposals and the anchor (row) each came from."""
        rpn = self.model.rpn
        chosen, levels, start = [], [], 0
        for lvl, level_logits in enumerate(split_as(objectness, self.level_anchors)):
            index = top_k_above(level_logits, rpn.pre_nms_top_n[1], -math.inf)[1]
            chosen.append(index + start)
            levels.append(torch.full_like(index, lvl))
            start = start + torch._shape_as_tensor(level_logits)[0]
        chosen, levels = torch.cat(chosen), torch.cat(levels)
        boxes = self.clip(rpn.coder.decode(deltas[chosen], torch.cat(self.level_anchors)[chosen])[:, 0])
        scores = torch.sigmoid(objectness[chosen])
        keep = remove_small_boxes(boxes, rpn.min_size)
        keep = keep[scores[keep] >= rpn.score_threshold]
        boxes, scores, levels, chosen = boxes[keep], scores[keep], levels[keep], chosen[keep]
        keep = graph_suppress(rpn.postprocess, boxes, scores, levels, None, limit=rpn.post_nms_top_n[1])[0]
        return boxes[keep], chosen[keep]

    def detect_one(self, features: dict, objectness: Tensor, deltas: Tensor, densities: Tensor | None
                   ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        model, heads = self.model, self.model.roi_heads
        proposals, anchor_index = self.propose(objectness, deltas)
        x = heads.box_head(self.pool(features, proposals))
        class_logits, box_regression = heads.predictor(x)
        if heads.density_head is not None:
            roi_densities = heads.density_head(x)[0]
        elif heads.densities_from_rpn and densities is not None:
            roi_densities = densities[anchor_index]
        else:
            roi_densities = None
        boxes, scores, labels, candidate_densities = heads.candidates(
            self.clip(heads.coder.decode(box_regression, proposals)), F.softmax(class_logits, -1), roi_densities, None)
        if model.density_readout == "box" and heads.density_head is not None:  # the density head on each box's RoI
            candidate_densities = heads.density_head(heads.box_head(self.pool(features, boxes)))[0]
        elif model.density_readout == "box" and densities is not None:  # the anchor each box overlaps most
            candidate_densities = densities[box_iou(boxes, torch.cat(self.level_anchors)).argmax(dim=1)]
        return self.suppressed(boxes, scores, labels, candidate_densities)


def export_checkpoint(config: dict, weights: str | Path, out: str | Path, *, postprocess: dict | None = None,
                      size: Sequence[int] | None = None, batch: int = 1, opset: int = OPSET,
                      dynamic: bool = False) -> Path:
    """``detkit export``: the config's detector with ``weights`` (and ``postprocess``, a suppressor
    config, in place of the config's) to ``out`` as ONNX, for ``batch`` images of ``size`` (h, w;
    default: the transform's fixed size, else its min_size square)."""
    import importlib.util

    if importlib.util.find_spec("onnx") is None:  # the exporter writes through it
        raise ImportError("detkit export needs onnx (and onnxruntime to run the file): pip install -e \".[export]\"")
    from detkit.engine import load_model

    if postprocess is not None:
        config = {**config, "model": {**config["model"], "postprocess": postprocess}}
    from detkit.models.detectors.faster_rcnn import FasterRCNN
    from detkit.models.detectors.ssd import SSD
    from detkit.models.detectors.yolo import YOLO

    model = load_model(config, weights)
    graphs = {DenseDetector: DenseGraph, SSD: SSDGraph, YOLO: YOLOGraph, FasterRCNN: FasterRCNNGraph}
    graph = next((g for kind, g in graphs.items() if isinstance(model, kind)), None)
    if graph is None:
        raise ValueError(f"detkit export: {type(model).__name__} models cannot be exported")
    transform = model.transform
    if size is None:
        size = transform.fixed_size or (transform.min_size[-1],) * 2
    if len(size) != 2 or min(size) < 1 or batch < 1:
        raise ValueError(f"detkit export: --size must be two positive numbers (height width) and --batch >= 1, got "
                         f"{list(size)} and {batch}")
    return export_onnx(graph(model, size), out, batch=batch, opset=opset, dynamic=dynamic)


@contextlib.contextmanager
def exact_logistic(opset: int):
    """While exporting, sigmoid as 1 / (1 + exp(-x)) and SiLU as x / (1 + exp(-x)) instead of ONNX's
    Sigmoid: onnxruntime's Sigmoid is an approximation, 1.4e-7 from the exact value (torch's:
    9e-8) but up to 2.6e5 ulp relative where the output is small, and through EfficientNet's
    and the BiFPN's hundred SiLUs that moved boxes 1e-3 px from eager ones; its Exp and Div
    round as torch's do (2 ulp). Measured in docs/export.md."""
    def sigmoid(g, x):
        return g.op("Div", g.op("Constant", value_t=torch.tensor(1.0)), one_plus_exp_minus(g, x))

    def silu(g, x):
        return g.op("Div", x, one_plus_exp_minus(g, x))

    def one_plus_exp_minus(g, x):
        return g.op("Add", g.op("Constant", value_t=torch.tensor(1.0)), g.op("Exp", g.op("Neg", x)))

    names = {"aten::sigmoid": sigmoid, "aten::silu": silu}
    for name, symbolic in names.items():
        torch.onnx.register_custom_op_symbolic(name, symbolic, opset)
    try:
        yield
    finally:
        for name in names:
            torch.onnx.unregister_custom_op_symbolic(name, opset)


def export_onnx(graph: DetectorGraph, path: str | Path, *, batch: int = 1, opset: int = OPSET,
                dynamic: bool = False) -> Path:
    """Write ``graph`` (e.g. a ``DenseGraph``) to ``path`` as ONNX, traced on ``batch`` images of its
    size; with ``dynamic``, the file takes images of any height and width (``graph.dynamic_size``
    must hold: a transform with a fixed size)."""
    import warnings

    if dynamic and not graph.dynamic_size:
        raise ValueError("export: a dynamic image size needs anchors that follow the network input's size, or an "
                         "input that does not change: this model's anchors are constants at the export's size and "
                         "its transform resizes by min_size/max_size, so its network input changes with the image's "
                         "size. Give it a fixed size (model.transform.fixed_size: [H, W]) or a letterbox "
                         "(size_divisible >= max_size), or export it for the size it will see (--size H W)")
    path = Path(path)
    images = torch.zeros(batch, 3, *graph.image_size, dtype=torch.uint8)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad(), exact_logistic(opset):
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(graph, (images,), buffer, dynamo=False, opset_version=opset, input_names=["images"],
                          output_names=["boxes", "scores", "labels", "count"],
                          dynamic_axes={"images": {2: "height", 3: "width"}} if dynamic else None)
    import onnx

    exported = onnx.load_from_string(buffer.getvalue())
    names = exported.metadata_props.add()  # for drawing: OnnxDetector.class_names
    names.key, names.value = "class_names", json.dumps(list(graph.model.class_names))
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(exported.SerializeToString())
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
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: RoIAlign's empty levels raise shape notes on every run
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        shape = self.session.get_inputs()[0].shape
        names = self.session.get_modelmeta().custom_metadata_map.get("class_names")
        self.class_names = json.loads(names) if names else None  # None: not written by detkit export
        self.batch = shape[0]
        self.image_size = tuple(shape[2:]) if all(isinstance(s, int) for s in shape[2:]) else None  # None: any

    def __call__(self, images) -> list[dict]:
        images = images.numpy() if isinstance(images, Tensor) else images
        wanted = "H, W" if self.image_size is None else f"{self.image_size[0]}, {self.image_size[1]}"
        if (images.ndim != 4 or images.shape[1] != 3 or str(images.dtype) != "uint8"
                or (self.image_size is not None and tuple(images.shape[2:]) != self.image_size)):
            raise ValueError(f"images must be uint8 [{self.batch}, 3, {wanted}]"
                             f"{'' if self.image_size is None else ' (the exported size)'}, got {images.dtype} "
                             f"{list(images.shape)}")
        boxes, scores, labels, count = self.session.run(None, {"images": images})
        return [{"boxes": boxes[i, :n], "scores": scores[i, :n], "labels": labels[i, :n]}
                for i, n in enumerate(count.tolist())]


class OnnxPredictor:
    """An exported detector behind the eager models' interface, for ``detkit predict --onnx``:
    called with a list of uint8 images [3, H, W] (torch), it returns per image torch tensors
    {"boxes", "scores", "labels"}, and has the ``class_names`` the file was exported with."""

    def __init__(self, path: str | Path):
        self.detector = OnnxDetector(path)
        if self.detector.class_names is None:
            raise ValueError(f"{path}: no class names in the file's metadata (it was not written by detkit export)")
        self.class_names = self.detector.class_names

    def __call__(self, images: list[Tensor]) -> list[dict]:
        out = []
        for image in images:
            size = self.detector.image_size
            if size is not None and tuple(image.shape[-2:]) != size:
                from detkit.engine.inference import UnsupportedImage

                raise UnsupportedImage(f"the exported model takes {size[0]} x {size[1]} images, this one is "
                                 f"{image.shape[-2]} x {image.shape[-1]}: export it with --size "
                                 f"{image.shape[-2]} {image.shape[-1]}, or with --dynamic (fixed-size transforms)")
            batch = image[None].to(torch.uint8).expand(self.detector.batch, -1, -1, -1).contiguous()
            out.append({k: torch.from_numpy(v) for k, v in self.detector(batch.numpy())[0].items()})
        return out
