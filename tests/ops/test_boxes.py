"""Box formats, IoU family, clipping and validation."""

import pytest
import torch

from detkit.ops import (
    box_area,
    box_convert,
    box_iou,
    check_boxes,
    clip_boxes_to_image,
    distance_box_iou,
    generalized_box_iou,
    remove_small_boxes,
)

XYXY = torch.tensor([[10.0, 20.0, 30.0, 60.0]])


def test_conversions_by_hand():
    assert box_convert(XYXY, "xyxy", "xywh").tolist() == [[10, 20, 20, 40]]
    assert box_convert(XYXY, "xyxy", "cxcywh").tolist() == [[20, 40, 20, 40]]
    for fmt in ("xywh", "cxcywh"):
        assert torch.equal(box_convert(box_convert(XYXY, "xyxy", fmt), fmt, "xyxy"), XYXY)


def test_area_and_iou_family_by_hand():
    a = torch.tensor([[0.0, 0, 2, 2]])
    b = torch.tensor([[1.0, 1, 3, 3], [4.0, 0, 6, 2]])
    assert box_area(a).tolist() == [4]
    assert box_iou(a, b)[0].tolist() == pytest.approx([1 / 7, 0])
    assert generalized_box_iou(a, b)[0].tolist() == pytest.approx([1 / 7 - 2 / 9, 0 - 4 / 12])
    # DIoU: centres (1,1),(2,2): rho^2 = 2, c^2 = 18 ; centres (1,1),(5,1): rho^2 = 16, c^2 = 40
    assert distance_box_iou(a, b, eps=0)[0].tolist() == pytest.approx([1 / 7 - 2 / 18, 0 - 16 / 40])


def test_clip_and_remove_small():
    boxes = torch.tensor([[-5.0, -5, 10, 10], [5, 5, 200, 90], [0, 0, 0.5, 9]])
    assert clip_boxes_to_image(boxes, (80, 100)).tolist() == [[0, 0, 10, 10], [5, 5, 100, 80], [0, 0, 0.5, 9]]
    assert remove_small_boxes(boxes, 1.0).tolist() == [0, 1]


def test_check_boxes_messages():
    check_boxes(torch.empty(0, 4))
    with pytest.raises(ValueError, match="^data.json: gt boxes\\[1\\] = \\(3, 3, 1, 5\\) has x2 < x1"):
        check_boxes(torch.tensor([[0.0, 0, 1, 1], [3, 3, 1, 5]]), "gt boxes", "data.json")
    with pytest.raises(ValueError, match="must have shape \\[N, 4\\]"):
        check_boxes(torch.zeros(2, 3))
