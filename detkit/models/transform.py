"""The model's input side: normalise, resize and batch images; map detections back.

``DetectionTransform`` does what torchvision's GeneralizedRCNNTransform does, with the same
arithmetic (so torchvision's weights give torchvision's detections): each image is
normalised with the ImageNet mean and std, resized so that its shorter side is
``min_size`` unless its longer side would exceed ``max_size`` (bilinear), and the batch is
zero-padded to a common size divisible by ``size_divisible``. Targets' boxes are scaled
with their image. ``postprocess`` maps detections back to each original image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's backbones were trained on these
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ImageBatch:
    """Padded images and the size of each before padding.

    tensors (Tensor[N, 3, H, W]): the padded batch.
    image_sizes (list[(h, w)]): each image's size after resizing, before padding.
    """

    tensors: Tensor
    image_sizes: list[tuple[int, int]]


class DetectionTransform(nn.Module):
    """Args:
        min_size: the shorter side after resizing; a sequence picks one at random per image
            in training (multi-scale training) and uses the last in evaluation.
        max_size: the cap on the longer side.
        mean, std: per-channel normalisation of images in [0, 1].
        size_divisible: the batch is padded to a multiple of it (the coarsest stride).
        fixed_size: (h, w) to resize every image to exactly, ignoring min/max_size.
    """

    def __init__(
        self,
        min_size: int | Sequence[int] = 800,
        max_size: int = 1333,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        size_divisible: int = 32,
        fixed_size: Sequence[int] | None = None,
    ):
        super().__init__()
        self.min_size = tuple(min_size) if isinstance(min_size, (list, tuple)) else (min_size,)
        self.max_size = max_size
        self.mean = list(mean)
        self.std = list(std)
        self.size_divisible = size_divisible
        self.fixed_size = tuple(fixed_size) if fixed_size else None

    def forward(self, images: list[Tensor], targets: list[dict] | None = None) -> tuple[ImageBatch, list[dict] | None]:
        """Args:
            images: each Tensor[3, H, W], float in [0, 1] or uint8 in [0, 255].
            targets: each with "boxes" (Tensor[K, 4], xyxy pixels of its image); copied, not changed.
        """
        resized, new_targets = [], []
        for i, image in enumerate(images):
            if image.dim() != 3 or image.shape[0] != 3:
                raise ValueError(f"images[{i}] must be a [3, H, W] tensor, got {list(image.shape)}")
            if not image.is_floating_point():
                image = image.float() / 255.0
            image = self.normalize(image)
            size = image.shape[-2:]
            image = self.resize(image)
            resized.append(image)
            if targets is not None:
                target = dict(targets[i])
                target["boxes"] = resize_boxes(target["boxes"], size, image.shape[-2:])
                new_targets.append(target)
        sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in resized]
        return ImageBatch(self.batch(resized), sizes), (new_targets if targets is not None else None)

    def normalize(self, image: Tensor) -> Tensor:
        mean = torch.as_tensor(self.mean, dtype=image.dtype, device=image.device)
        std = torch.as_tensor(self.std, dtype=image.dtype, device=image.device)
        return (image - mean[:, None, None]) / std[:, None, None]

    def resize(self, image: Tensor) -> Tensor:
        if self.fixed_size is not None:
            size, scale = [self.fixed_size[0], self.fixed_size[1]], None
        else:
            target = self.min_size[-1]
            if self.training and len(self.min_size) > 1:
                target = self.min_size[int(torch.empty(1).uniform_(0.0, float(len(self.min_size))).item())]
            h, w = image.shape[-2:]
            size, scale = None, min(target / min(h, w), self.max_size / max(h, w))
        return F.interpolate(
            image[None], size=size, scale_factor=scale, mode="bilinear",
            recompute_scale_factor=True if scale is not None else None, align_corners=False,
        )[0]

    def batch(self, images: list[Tensor]) -> Tensor:
        """Zero-pad to the largest height and width, rounded up to ``size_divisible``."""
        stride = float(self.size_divisible)
        height = int(math.ceil(max(img.shape[1] for img in images) / stride) * stride)
        width = int(math.ceil(max(img.shape[2] for img in images) / stride) * stride)
        batch = images[0].new_full((len(images), 3, height, width), 0)
        for img, slot in zip(images, batch):
            slot[:, : img.shape[1], : img.shape[2]].copy_(img)
        return batch

    def postprocess(
        self, detections: list[dict], image_sizes: list[tuple[int, int]], original_sizes: list[tuple[int, int]]
    ) -> list[dict]:
        """Detections' boxes from the resized images back to the original ones."""
        for det, size, original in zip(detections, image_sizes, original_sizes):
            det["boxes"] = resize_boxes(det["boxes"], size, original)
        return detections


def resize_boxes(boxes: Tensor, original_size: Sequence[int], new_size: Sequence[int]) -> Tensor:
    """Scale xyxy boxes from an image of ``original_size`` (h, w) to one of ``new_size``
    (ratios in float32, as torchvision computes them)."""
    ratio_h, ratio_w = (
        torch.tensor(float(new), dtype=torch.float32, device=boxes.device)
        / torch.tensor(float(old), dtype=torch.float32, device=boxes.device)
        for new, old in zip(new_size, original_size)
    )
    x1, y1, x2, y2 = boxes.unbind(1)
    return torch.stack((x1 * ratio_w, y1 * ratio_h, x2 * ratio_w, y2 * ratio_h), dim=1)
