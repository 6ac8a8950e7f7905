"""detkit.models: detectors composed from backbones, necks, heads and a configurable post-processing.

    model = build_model({"type": "faster_rcnn", "num_classes": 5, "backbone": {"type": "resnet", "depth": 18},
                         "neck": {"type": "fpn"}})
    model = build_model({"type": "retinanet", "num_classes": 5, "criterion": {"classification_loss": "focal"}})
    model = build_model({"type": "efficientdet", "scale": "d0", "num_classes": 90})
    model = from_torchvision("fasterrcnn_resnet50_fpn", torchvision_state_dict)   # or retinanet_resnet50_fpn
"""

from detkit.models.batchnorm import recalibrate_batchnorm
from detkit.models.build import build_backbone, build_model, build_neck
from detkit.models.detectors.faster_rcnn import FasterRCNN
from detkit.models.detectors.dense import DenseDetector
from detkit.models.torchvision_compat import from_torchvision, to_torchvision

__all__ = ["DenseDetector", "FasterRCNN", "build_backbone", "build_model", "build_neck", "from_torchvision",
           "recalibrate_batchnorm", "to_torchvision"]
