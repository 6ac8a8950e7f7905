"""torchvision's detection weights in detkit's models, and back.

``from_torchvision(name, state_dict)`` builds the detkit model that matches torchvision's
builder ``name`` (Faster R-CNN v1/v2, RetinaNet v1/v2, SSD300-VGG16) and loads the state dict into it;
its detections equal torchvision's
(tests/models/test_torchvision_compat.py). ``to_torchvision(model, name)`` gives the state
dict back in torchvision's names, loadable into ``torchvision.models.detection.<name>()``.

    import torchvision
    sd = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights="DEFAULT").state_dict()
    model = detkit.models.from_torchvision("fasterrcnn_resnet50_fpn", sd)
    model.set_postprocess(detkit.ops.Suppressor("soft_nms"))   # torchvision's COCO model with Soft-NMS

torchvision's COCO models have 91 classes with 0 the background and 1..90 COCO's category
ids (some unused): detkit's Faster R-CNN and SSD labels are the class index minus one, so a detkit
label l is COCO category id l + 1. RetinaNet has no background class but torchvision keeps the
91 outputs (index 0 never trained): detkit keeps them too, so its labels equal torchvision's.
``model.class_names`` holds torchvision's names.
"""

from __future__ import annotations

import re
from typing import Mapping

from torch import Tensor, nn

from detkit.checkpoints import load_checked
from detkit.models.build import build_faster_rcnn, build_model

# (torchvision key pattern, detkit replacement), applied in order; the inverse table is derived
_COMMON = [
    (r"^backbone\.body\.", "backbone."),
    (r"^backbone\.fpn\.inner_blocks\.", "neck.lateral."),
    (r"^backbone\.fpn\.layer_blocks\.", "neck.output."),
    (r"^rpn\.head\.conv\.(weight|bias)$", r"rpn.head.conv.0.0.\1"),  # torchvision < 0.13 RPN heads
    (r"^rpn\.head\.cls_logits\.", "rpn.head.objectness."),
    (r"^rpn\.head\.bbox_pred\.", "rpn.head.deltas."),
    (r"^roi_heads\.box_predictor\.", "roi_heads.predictor."),
]
_V2_BOX_HEAD = [  # FastRCNNConvFCHead is a Sequential: 4 conv blocks, Flatten (4), Linear (5), ReLU (6)
    (r"^roi_heads\.box_head\.([0-3])\.", r"roi_heads.box_head.convs.\1."),
    (r"^roi_heads\.box_head\.5\.", "roi_heads.box_head.fcs.0."),
]


def _config(name: str, num_classes: int, norm: str) -> dict:
    v2 = name == "fasterrcnn_resnet50_fpn_v2"
    return {
        "num_classes": num_classes,
        # torchvision trains all stages from random weights, keeps conv1 and layer1 fixed on pretrained ones
        "backbone": {"type": "resnet", "depth": 50, "norm": norm, "frozen_stages": -1 if norm == "bn" else 1},
        "neck": {"type": "fpn", "out_channels": 256, "extra": "pool", "norm": v2},
        "rpn": {
            "in_levels": ["P2", "P3", "P4", "P5", "P6"],
            "anchor_sizes": [[32], [64], [128], [256], [512]],  # torchvision: 3 anchors per cell per level
            "aspect_ratios": [0.5, 1.0, 2.0],
            "head_depth": 2 if v2 else 1,
        },
        "roi_heads": {
            "in_levels": ["P2", "P3", "P4", "P5"],
            "box_head": {"type": "conv_fc"} if v2 else {"type": "two_mlp", "representation": 1024},
        },
        "postprocess": {"type": "nms", "iou_threshold": 0.5},
        "transform": {"min_size": 800, "max_size": 1333},
    }


_RETINANET = [
    (r"^backbone\.body\.", "backbone."),
    (r"^backbone\.fpn\.inner_blocks\.", "neck.lateral."),
    (r"^backbone\.fpn\.layer_blocks\.", "neck.output."),
    (r"^backbone\.fpn\.extra_blocks\.p([67])\.", r"neck.p\1."),
    # torchvision < 0.13 heads: conv.0, conv.2, ... (conv, ReLU pairs) -> conv.0.0, conv.1.0, ...
    (r"^head\.(classification|regression)_head\.conv\.([0246])\.(weight|bias)$",
     lambda m: f"head.{m.group(1)}_head.conv.{int(m.group(2)) // 2}.0.{m.group(3)}"),
    (r"^head\.classification_head\.conv\.", "head.classification.conv."),
    (r"^head\.classification_head\.cls_logits\.", "head.classification.out."),
    (r"^head\.regression_head\.conv\.", "head.regression.conv."),
    (r"^head\.regression_head\.bbox_reg\.", "head.regression.out."),
]

_SSD = [
    (r"^head\.classification_head\.module_list\.", "head.classification."),
    (r"^head\.regression_head\.module_list\.", "head.regression."),
]

NAMES = ("fasterrcnn_resnet50_fpn", "fasterrcnn_resnet50_fpn_v2", "retinanet_resnet50_fpn", "retinanet_resnet50_fpn_v2",
         "ssd300_vgg16")


def _rules(name: str):
    if name not in NAMES:
        raise ValueError(f"from_torchvision: unsupported builder {name!r} (supported: {', '.join(NAMES)})")
    if name.startswith("retinanet"):
        return _RETINANET
    if name == "ssd300_vgg16":
        return _SSD
    return _COMMON + (_V2_BOX_HEAD if name.endswith("_v2") else [])


def _retinanet_config(name: str, num_classes: int, norm: str) -> dict:
    v2 = name.endswith("_v2")
    return {
        "type": "retinanet",
        "num_classes": num_classes,  # torchvision's 91 sigmoid outputs, index 0 included: labels equal its own
        "backbone": {"type": "resnet", "depth": 50, "out_levels": ["C3", "C4", "C5"], "norm": norm,
                     "frozen_stages": -1 if norm == "bn" else 1},
        "neck": {"type": "fpn", "out_channels": 256, "extra": "p6p7", "extra_from": "input" if v2 else "output"},
        "head": {"norm": v2},
        # torchvision truncates the octave sizes to whole pixels
        "anchors": {"sizes": [[x, int(x * 2 ** (1 / 3)), int(x * 2 ** (2 / 3))] for x in (32, 64, 128, 256, 512)],
                    "aspect_ratios": [0.5, 1.0, 2.0]},
        "criterion": {"box_loss": "giou" if v2 else "l1"},
        "postprocess": {"type": "nms", "iou_threshold": 0.5},
        "transform": {"min_size": 800, "max_size": 1333},
        "score_threshold": 0.05,
        "top_k": 1000,
        "detections_per_image": 300,
    }


def _rename(key: str, rules) -> str:
    """Apply the rules in order (a rule's replacement may be a string or a function of the match)."""
    for pattern, replacement in rules:
        key = re.sub(pattern, replacement, key)
    return key


def _class_names(name: str, num_classes: int) -> list[str] | None:
    import torchvision.models.detection as tvd

    enums = {"fasterrcnn_resnet50_fpn": tvd.FasterRCNN_ResNet50_FPN_Weights,
             "fasterrcnn_resnet50_fpn_v2": tvd.FasterRCNN_ResNet50_FPN_V2_Weights,
             "retinanet_resnet50_fpn": tvd.RetinaNet_ResNet50_FPN_Weights,
             "retinanet_resnet50_fpn_v2": tvd.RetinaNet_ResNet50_FPN_V2_Weights,
             "ssd300_vgg16": tvd.SSD300_VGG16_Weights}
    categories = list(enums[name].COCO_V1.meta["categories"])
    if name.startswith("retinanet"):
        return categories if len(categories) == num_classes else None
    return categories[1:] if len(categories) - 1 == num_classes else None


def from_torchvision(name: str, state_dict: Mapping[str, Tensor]) -> nn.Module:
    """The detkit model matching torchvision's builder ``name``, with ``state_dict`` loaded.

    The backbone's normalisation follows the weights: BatchNorm if they carry its running
    counters (a randomly initialised or v2 model), FrozenBatchNorm otherwise (torchvision's
    pretrained v1), so the arithmetic matches torchvision's exactly.

    Raises:
        ValueError: an unsupported name, or weights that do not fit (naming the keys).
    """
    rules = _rules(name)
    retinanet = name.startswith("retinanet")
    key = "head.classification_head.cls_logits.bias" if retinanet else "roi_heads.box_predictor.cls_score.weight"
    if name == "ssd300_vgg16":
        key = "head.classification_head.module_list.0.bias"
    if key not in state_dict:
        raise ValueError(f"from_torchvision: not a {name} state dict (no {key})")
    batch_norm = any(k.startswith("backbone.body.") and k.endswith("num_batches_tracked") for k in state_dict)
    norm = "bn" if batch_norm else "frozen_bn"
    if retinanet:
        num_classes = state_dict[key].shape[0] // 9
        model = build_model(_retinanet_config(name, num_classes, norm))
    elif name == "ssd300_vgg16":  # 4 default boxes per cell on conv4_3, K + 1 scores each
        num_classes = state_dict[key].shape[0] // 4 - 1
        model = build_model({"type": "ssd", "num_classes": num_classes})
    else:
        num_classes = state_dict[key].shape[0] - 1
        model = build_faster_rcnn(_config(name, num_classes, norm))
    model.class_names = _class_names(name, num_classes) or model.class_names
    load_checked(model, {_rename(k, rules): v for k, v in state_dict.items()}, f"from_torchvision({name!r})")
    return model


def detkit_key(name: str, key: str) -> str:
    """The detkit name of torchvision's state-dict (or parameter) key ``key`` of builder ``name``."""
    return _rename(key, _rules(name))


def to_torchvision(model: nn.Module, name: str) -> dict[str, Tensor]:
    """``model``'s state dict in torchvision's names (for ``torchvision...<name>().load_state_dict``)."""
    rules = _rules(name)
    forward = {}
    for key in _torchvision_keys(name, model):
        forward[_rename(key, rules)] = key
    state = model.state_dict()
    return {forward.get(k, k): v for k, v in state.items() if forward.get(k) is not None}


def _torchvision_keys(name: str, model: nn.Module) -> list[str]:
    import torchvision.models.detection as tvd

    if name.startswith("retinanet"):
        num_classes = model.head.num_classes
    elif name == "ssd300_vgg16":
        num_classes = model.head.num_classes + 1
    else:
        num_classes = model.roi_heads.predictor.cls_score.out_features
    norm = "frozen" if not isinstance(getattr(model.backbone, "bn1", None), (nn.BatchNorm2d, type(None))) else "bn"
    kwargs = {"weights": None, "weights_backbone": None, "num_classes": num_classes}
    reference = getattr(tvd, name)(**kwargs)
    keys = list(reference.state_dict())
    if norm == "frozen":  # FrozenBatchNorm2d has no num_batches_tracked
        keys = [k for k in keys if not (k.startswith("backbone.body.") and k.endswith("num_batches_tracked"))]
    return keys
