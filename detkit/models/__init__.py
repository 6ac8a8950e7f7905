"""detkit.models: detectors composed from backbones, necks, heads and a configurable post-processing.

    model = build_model({"type": "faster_rcnn", "num_classes": 5, "backbone": {"type": "resnet", "depth": 18},
                         "neck": {"type": "fpn"}})
    model = from_torchvision("fasterrcnn_resnet50_fpn", torchvision_state_dict)
"""

from detkit.models.build import build_backbone, build_model, build_neck
from detkit.models.detectors.faster_rcnn import FasterRCNN
from detkit.models.torchvision_compat import from_torchvision, to_torchvision

__all__ = ["FasterRCNN", "build_backbone", "build_model", "build_neck", "from_torchvision", "to_torchvision"]
