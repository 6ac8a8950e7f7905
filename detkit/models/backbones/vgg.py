"""VGG-16 as SSD's backbone (Liu et al., ECCV 2016): six feature maps of falling resolution.

    conv1_1 .. conv4_3 (stride 8, the third max-pool with ceil mode) -> L2-normalised, scaled
      by a learnt per-channel weight (initially 20)                           -> "conv4_3" 512
    max-pool, conv5_1 .. conv5_3, a 3x3/1 max-pool, fc6 as a 3x3 conv dilated 6 (1,024),
      fc7 as a 1x1 conv (1,024)                                                -> "fc7"     1024
    conv8_2 (1x1 256, 3x3/2 512)                                               -> "conv8_2"  512
    conv9_2 (1x1 128, 3x3/2 256)                                               -> "conv9_2"  256
    conv10_2 (1x1 128, 3x3 valid 256)                                          -> "conv10_2" 256
    conv11_2 (1x1 128, 3x3 valid 256)                                          -> "conv11_2" 256

At 300 x 300 the maps are 38, 19, 10, 5, 3 and 1 cells wide; the declared strides are the
default-box steps of SSD300 (8, 16, 32, 64, 100, 300). Submodules keep the names and order of
torchvision's ``SSDFeatureExtractorVGG`` (``features``, ``scale_weight``, ``extra``), so
``ssd300_vgg16`` state dicts load unchanged.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detkit.models.backbones.base import FeatureExtractor, FrozenModules, ShapeSpec, load_pretrained

LEVELS = OrderedDict([("conv4_3", ShapeSpec(512, 8)), ("fc7", ShapeSpec(1024, 16)), ("conv8_2", ShapeSpec(512, 32)),
                      ("conv9_2", ShapeSpec(256, 64)), ("conv10_2", ShapeSpec(256, 100)),
                      ("conv11_2", ShapeSpec(256, 300))])


def _xavier(module: nn.Module) -> None:
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.constant_(layer.bias, 0.0)


def _extra(in_channels: int, middle: int, out_channels: int, stride: int, padding: int) -> nn.Sequential:
    """1x1 conv to ``middle``, then 3x3 conv to ``out_channels``, each with ReLU."""
    return nn.Sequential(nn.Conv2d(in_channels, middle, 1), nn.ReLU(inplace=True),
                         nn.Conv2d(middle, out_channels, 3, stride=stride, padding=padding), nn.ReLU(inplace=True))


class VGG16SSD(FrozenModules, FeatureExtractor):
    """Args:
        frozen_stages: VGG's first conv blocks kept fixed (0..4; torchvision trains 4 of 5
            blocks by default with pretrained weights: 1).
        weights: None (random), a ``VGG16_Weights`` name (SSD uses "IMAGENET1K_FEATURES", the
            weights converted from the original Caffe SSD backbone) or a local .pth file of the
            classification model.
    """

    def __init__(self, frozen_stages: int = 0, weights: str | None = None):
        super().__init__()
        from torchvision.models import VGG16_Weights, vgg16

        if not 0 <= frozen_stages <= 4:
            raise ValueError(f"vgg16 frozen_stages must be in 0..4, got {frozen_stages}")
        layers = vgg16(weights=None).features
        if weights is not None:
            classifier_state = load_pretrained(weights, VGG16_Weights, what="vgg16")
            layers.load_state_dict({k[len("features."):]: v for k, v in classifier_state.items()
                                    if k.startswith("features.")})
        pools = [i for i, layer in enumerate(layers) if isinstance(layer, nn.MaxPool2d)]
        layers[pools[2]].ceil_mode = True  # 75 -> 38 cells at 300 px, as in the paper
        self.features = nn.Sequential(*layers[: pools[3]])  # up to conv4_3 and its ReLU
        self.scale_weight = nn.Parameter(torch.full((512,), 20.0))  # ParseNet's L2 normalisation scale
        fc = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1),  # pool5, 3x3/1 instead of 2x2/2
            nn.Conv2d(512, 1024, kernel_size=3, padding=6, dilation=6),  # fc6, atrous
            nn.ReLU(inplace=True),
            nn.Conv2d(1024, 1024, kernel_size=1),  # fc7
            nn.ReLU(inplace=True),
        )
        _xavier(fc)
        extra = nn.ModuleList([_extra(1024, 256, 512, 2, 1), _extra(512, 128, 256, 2, 1),
                               _extra(256, 128, 256, 1, 0), _extra(256, 128, 256, 1, 0)])
        _xavier(extra)
        # (N, 512, 38, 38) -> pool4, conv5_x (skipping VGG's last max-pool), fc6, fc7 -> (N, 1024, 19, 19)
        extra.insert(0, nn.Sequential(*layers[pools[3]: -1], fc))
        self.extra = extra
        self.out_shapes = OrderedDict(LEVELS)
        starts = [0] + pools[:-1]  # where each of VGG's five conv blocks begins
        if frozen_stages:
            self.freeze(*(f"features.{i}" for i in range(starts[frozen_stages])
                          if any(True for _ in self.features[i].parameters())))

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        x = self.features(x)
        outputs = [self.scale_weight.view(1, -1, 1, 1) * F.normalize(x)]
        for block in self.extra:
            x = block(x)
            outputs.append(x)
        return OrderedDict(zip(self.out_shapes, outputs))
