"""Anchors: boxes of a few sizes and aspect ratios at every cell of every feature map.

An ``AnchorGenerator`` holds, per level, ``len(sizes) * len(ratios)`` base anchors centred on
the origin, ratio-major (for each aspect ratio h/w, every size), rounded to whole pixels,
and shifts them to every cell of its feature map: anchor a of cell (y, x) is at index
``(y * W + x) * A + a``. This is torchvision's AnchorGenerator, arithmetic and order, so
its trained RPN weights line up with detkit's anchors.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn


def octave_sizes(base: float, octaves: int = 3) -> tuple[float, ...]:
    """``base * 2**(i / octaves)`` for i < octaves: RetinaNet's 3 scales per level (32, 40.3, 50.8)."""
    return tuple(base * 2 ** (i / octaves) for i in range(octaves))


class AnchorGenerator(nn.Module):
    """Args:
        sizes: per level, the anchor sizes (sqrt of the area, in input pixels).
        aspect_ratios: per level (or one list for all levels), the ratios h / w.

    Example: Ren et al.'s single-level RPN has ``sizes=[(128, 256, 512)]`` and
    ``aspect_ratios=[(0.5, 1.0, 2.0)]``: 9 anchors per cell.
    """

    def __init__(self, sizes: Sequence[Sequence[float]], aspect_ratios: Sequence[Sequence[float]] | Sequence[float]):
        super().__init__()
        if aspect_ratios and not isinstance(aspect_ratios[0], (list, tuple)):
            aspect_ratios = [aspect_ratios] * len(sizes)
        if len(aspect_ratios) != len(sizes):
            raise ValueError(f"anchors: {len(sizes)} levels of sizes but {len(aspect_ratios)} of aspect_ratios")
        self.sizes = [tuple(float(s) for s in level) for level in sizes]
        self.aspect_ratios = [tuple(float(r) for r in level) for level in aspect_ratios]
        self.cell_anchors = [self.base_anchors(s, r) for s, r in zip(self.sizes, self.aspect_ratios)]

    @staticmethod
    def base_anchors(sizes: Sequence[float], ratios: Sequence[float]) -> Tensor:
        """Tensor[len(ratios) * len(sizes), 4]: xyxy anchors centred on (0, 0), rounded."""
        scales = torch.as_tensor(sizes, dtype=torch.float32)
        ratios = torch.as_tensor(ratios, dtype=torch.float32)
        h_ratios = torch.sqrt(ratios)
        w_ratios = 1 / h_ratios
        ws = (w_ratios[:, None] * scales[None, :]).view(-1)
        hs = (h_ratios[:, None] * scales[None, :]).view(-1)
        return (torch.stack([-ws, -hs, ws, hs], dim=1) / 2).round()

    def num_anchors(self) -> list[int]:
        """Anchors per cell, per level."""
        return [len(s) * len(r) for s, r in zip(self.sizes, self.aspect_ratios)]

    def forward(self, image_size: Sequence[int], feature_sizes: Sequence[Sequence[int]], dtype, device) -> list[Tensor]:
        """Anchors of each level, Tensor[H * W * A, 4] xyxy in input pixels.

        Args:
            image_size: (h, w) of the padded batch.
            feature_sizes: (h, w) of each level's feature map.

        The stride of a level is ``image_size // feature_size`` (torchvision's rule: it is the
        level's nominal stride whenever the padded size is a multiple of it).
        """
        if len(feature_sizes) != len(self.cell_anchors):
            raise ValueError(f"anchors: {len(self.cell_anchors)} levels configured, {len(feature_sizes)} feature maps given")
        return [self.grid_anchors(base.to(dtype=dtype, device=device), int(height), int(width),
                                  int(image_size[0]) // int(height), int(image_size[1]) // int(width))
                for (height, width), base in zip(feature_sizes, self.cell_anchors)]

    @staticmethod
    def grid_anchors(base: Tensor, height, width, stride_y, stride_x) -> Tensor:
        """One level's anchors, Tensor[H * W * A, 4]: the base anchors (A, 4) shifted to every
        cell. The sizes and strides are ints, or 0-dim int tensors in an exported graph
        (``detkit.export``: the level's grid follows the input's size)."""
        shifts_x = torch.arange(width, dtype=torch.int32, device=base.device) * stride_x
        shifts_y = torch.arange(height, dtype=torch.int32, device=base.device) * stride_y
        shift_x = (shifts_x[None, :] + torch.zeros_like(shifts_y)[:, None]).reshape(-1)  # (H, W) by broadcasting:
        shift_y = (shifts_y[:, None] + torch.zeros_like(shifts_x)[None, :]).reshape(-1)  # no size as an int
        shifts = torch.stack((shift_x, shift_y) * 2, dim=1)
        return (shifts[:, None, :] + base[None]).reshape(-1, 4)  # (HW, A, 4) -> (HWA, 4)


class DefaultBoxes(nn.Module):
    """SSD's default boxes (Liu et al., ECCV 2016, section 2.2), torchvision's arithmetic and order.

    On level k, a cell gets a box of scale s_k and one of sqrt(s_k s_{k+1}) at aspect ratio 1,
    then, for each ratio r of the level, a w x h = s_k sqrt(r) x s_k / sqrt(r) box and its
    transpose: 2 + 2 len(ratios) boxes per cell. Scales are fractions of the image side; box
    centres are ((i + 0.5) * step / size) of the image.

    Args:
        aspect_ratios: per level, the ratios besides 1 (SSD300: [2], [2, 3], [2, 3], [2, 3], [2], [2]).
        scales: one more than the levels (SSD300: 0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05).
        steps: per level, input pixels between cell centres (SSD300: 8, 16, 32, 64, 100, 300).
        clip: clip widths and heights (as fractions) to [0, 1].
    """

    def __init__(self, aspect_ratios: Sequence[Sequence[float]], scales: Sequence[float], steps: Sequence[int],
                 clip: bool = True):
        super().__init__()
        if len(scales) != len(aspect_ratios) + 1 or len(steps) != len(aspect_ratios):
            raise ValueError(f"default boxes: {len(aspect_ratios)} levels need {len(aspect_ratios) + 1} scales and "
                             f"{len(aspect_ratios)} steps, got {len(scales)} and {len(steps)}")
        self.aspect_ratios = [tuple(level) for level in aspect_ratios]
        self.scales, self.steps, self.clip = [float(s) for s in scales], [int(s) for s in steps], clip
        self.sizes = []  # per level, Tensor[A, 2]: (w, h) as fractions of the image
        for k, ratios in enumerate(self.aspect_ratios):
            s_k, s_next = self.scales[k], self.scales[k + 1]
            pairs = [[s_k, s_k], [math.sqrt(s_k * s_next)] * 2]
            for r in ratios:
                pairs += [[s_k * math.sqrt(r), s_k / math.sqrt(r)], [s_k / math.sqrt(r), s_k * math.sqrt(r)]]
            sizes = torch.tensor(pairs, dtype=torch.float32)
            self.sizes.append(sizes.clamp(0, 1) if clip else sizes)

    def num_anchors(self) -> list[int]:
        """Boxes per cell, per level."""
        return [len(s) for s in self.sizes]

    def forward(self, image_size: Sequence[int], feature_sizes: Sequence[Sequence[int]], dtype, device) -> list[Tensor]:
        """Default boxes of each level, Tensor[H * W * A, 4] xyxy in input pixels (cell-major, then box)."""
        if len(feature_sizes) != len(self.sizes):
            raise ValueError(f"default boxes: {len(self.sizes)} levels configured, {len(feature_sizes)} maps given")
        image_h, image_w = int(image_size[0]), int(image_size[1])
        scale = torch.tensor([image_w, image_h], dtype=dtype, device=device)
        boxes = []
        for (height, width), sizes, step in zip(feature_sizes, self.sizes, self.steps):
            xs = ((torch.arange(0, width) + 0.5) / (image_w / step)).to(dtype)
            ys = ((torch.arange(0, height) + 0.5) / (image_h / step)).to(dtype)
            cy, cx = torch.meshgrid(ys, xs, indexing="ij")
            # (H*W, 2) centres x (A, 2) sizes -> (H*W*A, 2) each
            centres = torch.stack((cx.reshape(-1), cy.reshape(-1)), dim=1).repeat_interleave(len(sizes), dim=0)
            wh = sizes.to(dtype).repeat(height * width, 1)
            centres, wh = centres.to(device), wh.to(device)
            boxes.append(torch.cat(((centres - 0.5 * wh) * scale, (centres + 0.5 * wh) * scale), dim=1))
        return boxes


def flatten_anchors(x: Tensor, per_anchor: int) -> Tensor:
    """(N, A * C, H, W) -> (N, H * W * A, C), the anchors' order (cell-major, then anchor)."""
    n, _, h, w = x.shape
    return x.view(n, -1, per_anchor, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, per_anchor)
