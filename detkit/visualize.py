"""Boxes drawn on images: ground truth (``detkit data show``) and predictions (``detkit predict``)."""

from __future__ import annotations

import colorsys
from typing import Sequence

import cv2
import numpy as np


def class_colour(label: int) -> tuple[int, int, int]:
    """A distinct, stable RGB colour per class (golden-ratio hues)."""
    r, g, b = colorsys.hsv_to_rgb((label * 0.618033988749895) % 1.0, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_boxes(
    image: np.ndarray,
    boxes: np.ndarray,
    labels: Sequence[int],
    names: Sequence[str],
    scores: Sequence[float] | None = None,
    crowd: Sequence[bool] | None = None,
) -> np.ndarray:
    """A copy of ``image`` (uint8[H, W, 3], RGB) with each box outlined in its class colour and
    captioned with its class name (and score); crowd regions dashed-looking (thin, grey caption).

    Args:
        boxes (float[N, 4]): xyxy pixels of ``image``.
        labels (int[N]): class indices into ``names``.
    """
    out = np.ascontiguousarray(image.copy())
    height, width = out.shape[:2]
    thickness = max(1, round(min(height, width) / 300))
    font_scale = max(0.35, min(height, width) / 900)
    order = np.argsort(np.asarray(scores)) if scores is not None else range(len(boxes))  # best on top
    for i in order:
        x1, y1, x2, y2 = (int(round(v)) for v in np.asarray(boxes[i], dtype=np.float64))
        colour = class_colour(int(labels[i]))
        is_crowd = crowd is not None and bool(crowd[i])
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, 1 if is_crowd else thickness)
        caption = names[int(labels[i])] + (" (crowd)" if is_crowd else "")
        if scores is not None:
            caption += f" {float(scores[i]):.2f}"
        (tw, th), base = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
        top = y1 - th - base - 2 if y1 - th - base - 2 >= 0 else y1
        cv2.rectangle(out, (x1, top), (x1 + tw + 4, top + th + base + 2), colour, -1)
        cv2.putText(out, caption, (x1 + 2, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return out


def save_image(image: np.ndarray, path) -> None:
    """Write an RGB image (PNG or JPEG by the suffix)."""
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise ValueError(f"could not write {path}")


def draw_dataset(index, out, max_images: int = 16) -> tuple[int, list[str]]:
    """``detkit data show``: the ground truth of the first ``max_images`` images of ``index``
    drawn into ``out``, mirroring the dataset's sub-folders (``a/x.jpg`` and ``b/x.jpg`` stay
    two pictures). Returns the number drawn and, for each unreadable image, why."""
    from pathlib import Path

    from detkit.data import read_image

    written, skipped = 0, []
    for record in index.records[:max_images]:
        try:
            image = read_image(record.path)
        except (OSError, SyntaxError, ValueError) as error:
            skipped.append(str(error))
            continue
        drawn = draw_boxes(image, record.boxes, record.labels, index.class_names, crowd=record.iscrowd)
        target = Path(out) / record.file_name
        target.parent.mkdir(parents=True, exist_ok=True)
        save_image(drawn, target)
        written += 1
    return written, skipped
