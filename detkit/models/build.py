"""The one place where a model config becomes objects. Plain dicts in, modules out.

Each config mapping mirrors a constructor: ``{"type": name, **arguments}``, so a reader goes
from a config key straight to the argument it sets. A key nobody reads is an error that
names it and suggests the nearest known one. Example (configs/faster_rcnn_r50_fpn.yaml):

    model:
      type: faster_rcnn
      num_classes: 80
      backbone: {type: resnet, depth: 50, weights: DEFAULT}
      neck: {type: fpn, out_channels: 256, extra: pool}
      rpn: {in_levels: [P2, P3, P4, P5, P6]}
      roi_heads: {in_levels: [P2, P3, P4, P5], box_head: {type: two_mlp}}
      postprocess: {type: soft_nms, method: gaussian}
"""

from __future__ import annotations

import inspect
from typing import Any, Mapping

from torchvision.ops import MultiScaleRoIAlign

from detkit.config import Number, check_typed, unknown_choice, unknown_key
from detkit.models.anchors import AnchorGenerator, DefaultBoxes, octave_sizes
from detkit.models.backbones.base import ShapeSpec
from detkit.models.backbones.resnet import ResNet
from detkit.models.detectors.faster_rcnn import FasterRCNN, FasterRCNNCriterion
from detkit.models.detectors.dense import DenseCriterion, DenseDetector
from detkit.models.detectors.efficientdet import EFFICIENTDET_SCALING, efficientdet_parts
from detkit.models.detectors.ssd import SSD, SSD300_TRANSFORM, SSDCriterion
from detkit.models.detectors.yolo import LETTERBOX_416, YOLO, YOLOV3_ANCHORS, YOLOCriterion
from detkit.models.heads.dense_heads import EfficientDetHead, RetinaHead
from detkit.models.heads.density_head import DensityHead, DensitySubnet
from detkit.models.heads.roi_heads import ConvFCHead, FastRCNNPredictor, RoIHeads, TwoMLPHead
from detkit.models.heads.rpn import RPN, RPNHead
from detkit.models.heads.ssd_head import SSDHead
from detkit.models.heads.yolo_head import YOLOHead
from detkit.models.necks.fpn import FPN
from detkit.models.transform import DetectionTransform
from detkit.ops import Suppressor, build_suppressor


def _split(config: Mapping[str, Any] | None, where: str, kinds: Mapping[str, Any]) -> tuple[str, dict]:
    """(type, the other keys) of a ``{"type": ..., ...}`` mapping, with a clear error for a bad type."""
    config = dict(config or {})
    kind = config.pop("type", None)
    if kind is None:
        raise ValueError(f"{where}.type is missing (one of {', '.join(kinds)})")
    if kind not in kinds:
        raise unknown_choice(kind, kinds, f"{where}.type")
    return kind, config


def _call(factory, arguments: Mapping[str, Any], where: str, **fixed):
    """``factory(**fixed, **arguments)``, naming an argument the factory does not take."""
    known = inspect.signature(factory).parameters
    for key in arguments:
        if key not in known or key in fixed:
            raise unknown_key(key, [k for k in known if k not in fixed and k != "self"], where)
    arguments = {key: _checked(value, known[key], f"{where}.{key}") for key, value in arguments.items()}
    try:
        return factory(**fixed, **arguments)
    except TypeError as error:
        raise ValueError(f"{where}: {error}") from None


_SCALARS = {"int": Number(integer=True), "float": Number(), "bool": bool}


def _checked(value: Any, parameter: inspect.Parameter, where: str) -> Any:
    """A value for an argument annotated plainly ``int``, ``float`` or ``bool`` (optionally
    ``| None``) must be one: ``score_threshold: "high"`` is an error naming the key, not a
    TypeError deep inside a forward pass."""
    annotation = parameter.annotation if isinstance(parameter.annotation, str) else \
        getattr(parameter.annotation, "__name__", "")
    optional = annotation.endswith(" | None")
    kind = _SCALARS.get(annotation.removesuffix(" | None"))
    if kind is None or (value is None and (optional or parameter.default is None)):
        return value
    return check_typed(value, kind, where)


def _efficientnet():
    from detkit.models.backbones.efficientnet import EfficientNet

    return EfficientNet


def _vgg16_ssd():
    from detkit.models.backbones.vgg import VGG16SSD

    return VGG16SSD


def _darknet53():
    from detkit.models.backbones.darknet import Darknet53

    return Darknet53


def _bifpn():
    from detkit.models.necks.bifpn import BiFPN

    return BiFPN


BACKBONES = {"resnet": lambda: ResNet, "efficientnet": _efficientnet, "vgg16_ssd": _vgg16_ssd, "darknet53": _darknet53}
NECKS = {"fpn": lambda: FPN, "bifpn": _bifpn}


def build_backbone(config: Mapping[str, Any], where: str = "model.backbone"):
    kind, arguments = _split(config, where, BACKBONES)
    return _call(BACKBONES[kind](), arguments, where)


def build_neck(config: Mapping[str, Any] | None, in_shapes: Mapping[str, ShapeSpec], where: str = "model.neck"):
    """None for no neck (heads then read backbone levels)."""
    if config is None:
        return None
    kind, arguments = _split(config, where, NECKS)
    return _call(NECKS[kind](), arguments, where, in_shapes=in_shapes)


def build_postprocess(config: Mapping[str, Any] | None, where: str = "model.postprocess") -> Suppressor | None:
    """The suppressor of a ``postprocess`` key (``{type: soft_nms, sigma: 0.5}``): the one place a
    suppressor is made from config. None when the key is absent or empty: the detector's
    constructor then uses its own default (NMS at the threshold of its paper)."""
    return build_suppressor(config, where=where) if config else None


def default_anchor_sizes(levels: list[str], shapes: Mapping[str, ShapeSpec]) -> list[tuple[float, ...]]:
    """Ren et al.'s 3 sizes per cell: (128, 256, 512) on a single level; on a pyramid, 3
    octave sizes per level from 8x its stride (32 px on P2 ... 512 px on P6)."""
    if len(levels) == 1:
        return [(128.0, 256.0, 512.0)]
    return [octave_sizes(8.0 * shapes[lvl].stride) for lvl in levels]


def build_rpn(config: Mapping[str, Any] | None, shapes: Mapping[str, ShapeSpec], where: str = "model.rpn") -> RPN:
    """Keys: in_levels, anchor_sizes (per level; default ``default_anchor_sizes``),
    aspect_ratios (default 0.5, 1, 2), head_depth, head_norm, postprocess, density (true, or
    ``{channels: 128, bins: 10}``: Adaptive-NMS's density subnet, ``DensitySubnet``), and RPN's own arguments."""
    config = dict(config or {})
    if "suppressor" in config:
        raise ValueError(f"{where}.suppressor is now {where}.postprocess (every suppressor is configured as "
                         "postprocess), e.g. postprocess: {type: nms, iou_threshold: 0.7}")
    levels = _head_levels(config.pop("in_levels", None), shapes, where)
    sizes = config.pop("anchor_sizes", None) or default_anchor_sizes(levels, shapes)
    ratios = config.pop("aspect_ratios", None) or (0.5, 1.0, 2.0)
    anchors = AnchorGenerator(sizes, ratios)
    counts = set(anchors.num_anchors())
    if len(counts) != 1:
        raise ValueError(f"{where}: every level needs the same number of anchors (the head is shared), got {counts}")
    channels = {shapes[lvl].channels for lvl in levels}
    if len(channels) != 1:
        raise ValueError(f"{where}.in_levels: the shared head needs equal channels, got {channels}")
    in_channels, num_anchors = channels.pop(), counts.pop()
    head = RPNHead(in_channels, num_anchors, depth=config.pop("head_depth", 1), norm=config.pop("head_norm", False))
    postprocess = build_postprocess(config.pop("postprocess", None), f"{where}.postprocess")
    density = config.pop("density", False)
    if density:
        density = _call(DensitySubnet, {} if density is True else density, f"{where}.density", in_channels=in_channels,
                        num_anchors=num_anchors)
    return _call(RPN, config, where, anchors=anchors, head=head, in_levels=levels, postprocess=postprocess,
                 density=density or None)


BOX_HEADS = {"two_mlp": TwoMLPHead, "conv_fc": ConvFCHead}


def build_roi_heads(config: Mapping[str, Any] | None, shapes: Mapping[str, ShapeSpec], num_classes: int,
                    postprocess: Suppressor | None, where: str = "model.roi_heads",
                    densities_from_rpn: bool = False) -> RoIHeads:
    """Keys: in_levels, resolution (7), sampling_ratio (2), box_head ({type: two_mlp |
    conv_fc, ...}), density_head (true, or ``{hidden: 256, bins: 10}``: ``DensityHead``), and
    RoIHeads' own arguments."""
    config = dict(config or {})
    levels = config.pop("in_levels", None) or [lvl for lvl in shapes][:4]
    resolution = config.pop("resolution", 7)
    pool = MultiScaleRoIAlign(levels, resolution, config.pop("sampling_ratio", 2))
    channels = shapes[levels[0]].channels
    kind, head_arguments = _split(config.pop("box_head", None) or {"type": "two_mlp"}, f"{where}.box_head", BOX_HEADS)
    if kind == "two_mlp":
        box_head = _call(TwoMLPHead, head_arguments, f"{where}.box_head", in_features=channels * resolution**2)
    else:
        box_head = _call(ConvFCHead, head_arguments, f"{where}.box_head", in_channels=channels, resolution=resolution)
    density = config.pop("density_head", False)
    if density:
        density = _call(DensityHead, {} if density is True else density, f"{where}.density_head",
                        in_features=box_head.out_features)
    predictor = FastRCNNPredictor(box_head.out_features, num_classes + 1)
    return _call(RoIHeads, config, where, roi_pool=pool, box_head=box_head, predictor=predictor,
                 density_head=density or None, postprocess=postprocess, densities_from_rpn=densities_from_rpn)


def _head_levels(levels: list[str] | None, shapes: Mapping[str, ShapeSpec], where: str) -> list[str]:
    """The levels a head reads: ``in_levels`` if given (each must be a feature), else all features."""
    levels = levels or list(shapes)
    missing = [lvl for lvl in levels if lvl not in shapes]
    if missing:
        raise ValueError(f"{where}.in_levels: {missing} are not among the features ({', '.join(shapes)})")
    return levels


def _checked_detector_keys(config: Mapping[str, Any], allowed: set[str], where: str) -> int:
    """The detector config's num_classes, after naming any key outside ``allowed``."""
    for key in config:
        if key not in allowed:
            raise unknown_key(key, allowed, where)
    num_classes = config.get("num_classes")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"{where}.num_classes must be a positive integer, got {num_classes!r}")
    return num_classes


def build_faster_rcnn(config: Mapping[str, Any], where: str = "model") -> FasterRCNN:
    config = dict(config)
    config.pop("type", None)
    allowed = {"num_classes", "class_names", "backbone", "neck", "rpn", "roi_heads", "postprocess", "transform",
               "criterion", "density_readout"}
    num_classes = _checked_detector_keys(config, allowed, where)
    backbone = build_backbone(config.get("backbone") or {"type": "resnet"}, f"{where}.backbone")
    # no "neck" key: the standard FPN; "neck: null": none (the heads read backbone levels, e.g. C4)
    neck = build_neck(config.get("neck", {"type": "fpn"}), backbone.out_shapes, f"{where}.neck")
    shapes = neck.out_shapes if neck is not None else backbone.out_shapes
    rpn = build_rpn(config.get("rpn"), shapes, f"{where}.rpn")
    postprocess = build_postprocess(config.get("postprocess"), f"{where}.postprocess")
    roi_heads = build_roi_heads(config.get("roi_heads"), shapes, num_classes, postprocess, f"{where}.roi_heads",
                                densities_from_rpn=rpn.density is not None)
    transform = _call(DetectionTransform, config.get("transform") or {}, f"{where}.transform")
    criterion = _call(FasterRCNNCriterion, config.get("criterion") or {}, f"{where}.criterion")
    return FasterRCNN(backbone, neck, rpn, roi_heads, transform, criterion, config.get("class_names"),
                      config.get("density_readout", "anchor"))


def _dense_common(config: dict, where: str, defaults: dict, head_factory) -> DenseDetector:
    """RetinaNet and EfficientDet: backbone, neck, head, anchors, criterion, post-processing.

    A part given in config is merged over the default part when both have the same type, so
    ``backbone: {weights: DEFAULT}`` keeps the default backbone and only adds its weights."""
    config = {**defaults, **config}
    for key, default in defaults.items():
        given = config[key]
        if isinstance(default, dict) and isinstance(given, dict) and given.get("type", default.get("type")) == \
                default.get("type"):
            config[key] = {**default, **given}
    config.pop("type", None)
    name = config.pop("name")
    allowed = {"num_classes", "class_names", "backbone", "neck", "head", "anchors", "in_levels", "postprocess",
               "transform", "criterion", "score_threshold", "top_k", "detections_per_image"}
    num_classes = _checked_detector_keys(config, allowed, where)
    backbone = build_backbone(config["backbone"], f"{where}.backbone")
    neck = build_neck(config["neck"], backbone.out_shapes, f"{where}.neck")
    shapes = neck.out_shapes if neck is not None else backbone.out_shapes
    levels = _head_levels(config.get("in_levels"), shapes, where)
    anchor_config = dict(config.get("anchors") or {})
    unknown = set(anchor_config) - {"sizes", "aspect_ratios"}
    if unknown:
        raise unknown_key(sorted(unknown)[0], ["sizes", "aspect_ratios"], f"{where}.anchors")
    # Lin et al.: 3 octave sizes from 4x the stride (32 px on P3 ... 512 px on P7) x 3 ratios: 9 per cell
    sizes = anchor_config.get("sizes") or [octave_sizes(4.0 * shapes[lvl].stride) for lvl in levels]
    anchors = AnchorGenerator(sizes, anchor_config.get("aspect_ratios") or (0.5, 1.0, 2.0))
    channels = {shapes[lvl].channels for lvl in levels}
    if len(channels) != 1:
        raise ValueError(f"{where}.in_levels: the shared head needs equal channels, got {channels}")
    head = head_factory(channels.pop(), anchors.num_anchors()[0], num_classes, dict(config.get("head") or {}),
                        len(levels))
    postprocess = build_postprocess(config.get("postprocess"), f"{where}.postprocess")
    transform = _call(DetectionTransform, config.get("transform") or {}, f"{where}.transform")
    criterion = _call(DenseCriterion, config.get("criterion") or {}, f"{where}.criterion")
    fixed = {k: config[k] for k in ("score_threshold", "top_k", "detections_per_image") if k in config}
    return DenseDetector(backbone, neck, head, anchors, levels, transform, criterion, postprocess=postprocess,
                         class_names=config.get("class_names"), name=name, **fixed)


def build_retinanet(config: Mapping[str, Any], where: str = "model") -> DenseDetector:
    """RetinaNet: ResNet-50 (C3..C5) + FPN with P6, P7 + RetinaHead + focal loss, by default."""
    defaults = {
        "name": "retinanet",
        "backbone": {"type": "resnet", "depth": 50, "out_levels": ["C3", "C4", "C5"]},
        "neck": {"type": "fpn", "out_channels": 256, "extra": "p6p7"},
    }

    def head(channels, anchors, classes, arguments, levels):
        return _call(RetinaHead, arguments, f"{where}.head", channels=channels, num_anchors=anchors,
                     num_classes=classes)

    return _dense_common({k: v for k, v in config.items() if k != "scale"}, where, defaults, head)


def build_efficientdet(config: Mapping[str, Any], where: str = "model") -> DenseDetector:
    """EfficientDet-D0..D7 (``scale: d0``): EfficientNet + BiFPN + EfficientDetHead, focal loss
    with gamma 1.5 and smooth-L1 (beta 0.1) on the offsets, input resized to the scale's size."""
    scale = str(config.get("scale", "d0"))
    if scale not in EFFICIENTDET_SCALING:
        raise unknown_choice(scale, EFFICIENTDET_SCALING, f"{where}.scale", "scale")
    rule = EFFICIENTDET_SCALING[scale]
    defaults = {"name": "efficientdet", **efficientdet_parts(scale)}

    def head(channels, anchors, classes, arguments, levels):
        arguments.setdefault("depth", rule["head_depth"])
        return _call(EfficientDetHead, arguments, f"{where}.head", channels=channels, num_anchors=anchors,
                     num_classes=classes, levels=levels)

    return _dense_common({k: v for k, v in config.items() if k != "scale"}, where, defaults, head)


# SSD300's default boxes (Liu et al., section 2.2, as torchvision trains them): 8,732 boxes at 300 px
SSD300_DEFAULT_BOXES = {"aspect_ratios": [[2], [2, 3], [2, 3], [2, 3], [2], [2]],
                        "scales": [0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05], "steps": [8, 16, 32, 64, 100, 300]}


def build_ssd(config: Mapping[str, Any], where: str = "model") -> SSD:
    """SSD300: VGG-16 with its extra layers, 6 maps, 4 or 6 default boxes per cell, by default.
    Any backbone (and neck) works with default boxes configured for its levels, e.g. ResNet +
    FPN P3..P7 with ``anchors: {aspect_ratios: [[2], [2], [2], [2], [2]], scales: [6 values],
    steps: [8, 16, 32, 64, 128]}``."""
    config = dict(config)
    config.pop("type", None)
    allowed = {"num_classes", "class_names", "backbone", "neck", "anchors", "in_levels", "postprocess", "transform",
               "criterion", "score_threshold", "top_k", "detections_per_image"}
    num_classes = _checked_detector_keys(config, allowed, where)
    backbone = build_backbone(config.get("backbone") or {"type": "vgg16_ssd"}, f"{where}.backbone")
    neck = build_neck(config.get("neck"), backbone.out_shapes, f"{where}.neck")
    shapes = neck.out_shapes if neck is not None else backbone.out_shapes
    levels = _head_levels(config.get("in_levels"), shapes, where)
    anchors = _call(DefaultBoxes, {**SSD300_DEFAULT_BOXES, **(config.get("anchors") or {})}, f"{where}.anchors")
    if len(anchors.num_anchors()) != len(levels):
        raise ValueError(f"{where}.anchors: {len(anchors.num_anchors())} levels of default boxes for "
                         f"{len(levels)} feature maps ({', '.join(levels)})")
    head = SSDHead([shapes[lvl].channels for lvl in levels], anchors.num_anchors(), num_classes)
    transform = None
    if config.get("transform"):
        transform = _call(DetectionTransform, {**SSD300_TRANSFORM, **config["transform"]}, f"{where}.transform")
    postprocess = build_postprocess(config.get("postprocess"), f"{where}.postprocess")
    criterion = _call(SSDCriterion, config.get("criterion") or {}, f"{where}.criterion")
    fixed = {k: config[k] for k in ("score_threshold", "top_k", "detections_per_image") if k in config}
    return SSD(backbone, head, anchors, levels, transform, criterion, neck=neck, postprocess=postprocess,
               class_names=config.get("class_names"), **fixed)


def build_yolo(config: Mapping[str, Any], where: str = "model") -> YOLO:
    """YOLOv3: Darknet-53 (C3..C5) + FPN (P3..P5) + YOLOHead, 3 anchors per scale, letterbox 416."""
    config = dict(config)
    config.pop("type", None)
    allowed = {"num_classes", "class_names", "backbone", "neck", "head", "anchors", "in_levels", "postprocess",
               "transform", "criterion", "score_threshold", "top_k", "detections_per_image"}
    num_classes = _checked_detector_keys(config, allowed, where)
    backbone = build_backbone(config.get("backbone") or {"type": "darknet53"}, f"{where}.backbone")
    # no "neck" key: an FPN over the three scales (YOLOv3's top-down path); "neck: null": none
    neck = build_neck(config.get("neck", {"type": "fpn", "out_channels": 256, "extra": None}), backbone.out_shapes,
                      f"{where}.neck")
    shapes = neck.out_shapes if neck is not None else backbone.out_shapes
    levels = _head_levels(config.get("in_levels"), shapes, where)
    anchors = config.get("anchors") or YOLOV3_ANCHORS
    counts = {len(level) for level in anchors}
    if len(anchors) != len(levels) or len(counts) != 1:
        raise ValueError(f"{where}.anchors: need one list of (w, h) per scale ({len(levels)}: {', '.join(levels)}), "
                         f"each as long, got {[len(level) for level in anchors]}")
    head = _call(YOLOHead, config.get("head") or {}, f"{where}.head",
                 channels=[shapes[lvl].channels for lvl in levels], num_anchors=counts.pop(), num_classes=num_classes)
    transform = None
    if config.get("transform"):
        transform = _call(DetectionTransform, {**LETTERBOX_416, **config["transform"]}, f"{where}.transform")
    postprocess = build_postprocess(config.get("postprocess"), f"{where}.postprocess")
    criterion = _call(YOLOCriterion, config.get("criterion") or {}, f"{where}.criterion")
    fixed = {k: config[k] for k in ("score_threshold", "top_k", "detections_per_image") if k in config}
    return YOLO(backbone, neck, head, anchors, levels, transform, criterion, postprocess=postprocess,
                class_names=config.get("class_names"), **fixed)


DETECTORS = {"faster_rcnn": build_faster_rcnn, "retinanet": build_retinanet, "efficientdet": build_efficientdet,
             "ssd": build_ssd, "yolo": build_yolo}


def build_model(config: Mapping[str, Any], where: str = "model"):
    """A detector from its config mapping (``type`` picks the detector)."""
    kind, _ = _split(config, where, DETECTORS)
    return DETECTORS[kind](config, where)
