"""EfficientDet (Tan, Pang, Le, CVPR 2020): its parts and their compound scaling, D0..D7.

    images -> transform (the scale's square input) -> EfficientNet (C3..C5) -> BiFPN (P3..P7)
           -> EfficientDetHead -> (criterion | detect)

The detector is a ``DenseDetector`` (``dense.py``), RetinaNet's machinery, with these parts:
``backbones/efficientnet.py``, ``necks/bifpn.py`` and ``heads/dense_heads.py::EfficientDetHead``,
the focal loss at gamma 1.5 and smooth-L1 (beta 0.1) on the offsets. One scale (``scale: d0``
in config) sets them all: ``efficientdet_parts`` gives the default part configs that
``models/build.py`` merges the config over, the input size among them (the transform).
"""

from __future__ import annotations

# Compound scaling of EfficientDet D0..D7: Tan, Pang, Le, CVPR 2020, Table 1, checked against
# google/automl efficientdet/hparams_config.py (efficientdet_model_param_dict). D7 reuses the
# b6 backbone at a larger input (D7x, not listed, is b7 with P3..P8); the official D6 and D7
# use unweighted "sum" fusion, and D7 anchor_scale 5.0 instead of 4.0.
EFFICIENTDET_SCALING = {
    "d0": dict(backbone="b0", width=64, repeats=3, head_depth=3, image_size=512, attention="fast"),
    "d1": dict(backbone="b1", width=88, repeats=4, head_depth=3, image_size=640, attention="fast"),
    "d2": dict(backbone="b2", width=112, repeats=5, head_depth=3, image_size=768, attention="fast"),
    "d3": dict(backbone="b3", width=160, repeats=6, head_depth=4, image_size=896, attention="fast"),
    "d4": dict(backbone="b4", width=224, repeats=7, head_depth=4, image_size=1024, attention="fast"),
    "d5": dict(backbone="b5", width=288, repeats=7, head_depth=4, image_size=1280, attention="fast"),
    "d6": dict(backbone="b6", width=384, repeats=8, head_depth=5, image_size=1280, attention="sum"),
    "d7": dict(backbone="b6", width=384, repeats=8, head_depth=5, image_size=1536, attention="sum"),
}


def efficientdet_parts(scale: str) -> dict:
    """The default parts of EfficientDet-``scale`` as config mappings (build.py merges a config
    over them): backbone, neck, criterion, transform (the scale's input size) and the cap."""
    rule = EFFICIENTDET_SCALING[scale]
    size = rule["image_size"]
    return {
        "backbone": {"type": "efficientnet", "variant": rule["backbone"], "out_levels": ["C3", "C4", "C5"]},
        "neck": {"type": "bifpn", "width": rule["width"], "repeats": rule["repeats"],
                 **({"attention": rule["attention"]} if "attention" in rule else {})},
        "criterion": {"gamma": 1.5, "box_loss": "smooth_l1", "box_beta": 0.1},
        "transform": {"min_size": size, "max_size": size, "size_divisible": 128},  # P7: stride 128
        "detections_per_image": 100,
    }
