"""Every detector family, trained a little on the synthetic shapes so that its detections are a
trained model's (confident, spread scores, boxes on objects), exported with every suppressor it
can run: onnxruntime gives eager ``detkit predict``'s detections on 10 validation images.

Tolerances (``assert_same_detections``): the same number of detections, labels equal, boxes
within 1e-3 px and scores within 1e-4, in the same ranks (two detections whose scores are within
1e-4 may swap). onnxruntime's convolutions and RoIAlign round
differently from torch's by about 1e-6 relative; that moves scores by ~1e-6 and boxes (up to
~130 px here) by ~1e-4 px, so both tolerances leave a margin of 10-100x while catching any
real difference (a wrong decode, anchor, resize or suppression order moves them by pixels or
drops detections).

EfficientDet is trained with GroupNorm (``trained_tiny.FAMILIES``: with its BatchNorm, 40 steps
at 2 images per step leave statistics under which its scores saturate or vanish); its BatchNorm
graph is held to eager by ``test_onnx_export.py::test_efficientdet_exported_gives_eager_detections``.
"""

import pytest
import torch

from detkit.export.onnx import OnnxDetector, export_onnx
from tests.trained_tiny import FAMILIES, SIZE, assert_same_detections, cases, make_shapes, trained, with_suppressor

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_shapes(tmp_path_factory.mktemp("export-shapes"))


@pytest.mark.parametrize("family,suppressor", list(cases()))
def test_trained_model_exported_gives_eager_detections(tmp_path, shapes, family, suppressor):
    model = with_suppressor(trained(family, shapes), suppressor)
    _, images = shapes
    path = export_onnx(FAMILIES[family][1](model, (SIZE, SIZE)), tmp_path / "model.onnx")
    with torch.no_grad():
        eager = model(list(images))
    exported = [OnnxDetector(path)(image[None].numpy())[0] for image in images]
    assert sum(len(d["labels"]) for d in eager) >= len(images)  # a trained model's detections, not none
    for i, (want, got) in enumerate(zip(eager, exported)):
        assert_same_detections({k: v.numpy() for k, v in want.items()}, got, f"{family}, {suppressor}, image {i}")


def other_sizes(images: torch.Tensor) -> list[torch.Tensor]:
    """The validation images at three other sizes and aspect ratios: cut to 70 x 96 and 96 x 60,
    and enlarged to 150 x 110."""
    enlarged = torch.nn.functional.interpolate(images.float(), size=(150, 110), mode="bilinear")
    return [images[:, :, :70], images[:, :, :, :60], enlarged.round().clamp(0, 255).to(torch.uint8)]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_dynamic_size_gives_eager_detections_at_other_sizes(tmp_path, shapes, family):
    """Every family exported with a dynamic size (traced at 96 x 96) gives eager detkit's
    detections on images of three other sizes. Faster R-CNN, RetinaNet and EfficientDet resize
    by min_size/max_size, so their network input, levels and anchors change with the image
    (computed in the graph); SSD resizes to a fixed size and YOLO letterboxes, so only the
    resize and the mapping back change."""
    model = with_suppressor(trained(family, shapes), "soft_nms_gaussian" if family == "retinanet" else "nms")
    path = export_onnx(FAMILIES[family][1](model, (SIZE, SIZE)), tmp_path / "model.onnx", dynamic=True)
    exported = OnnxDetector(path)
    assert exported.image_size is None
    _, images = shapes
    for pictures in other_sizes(images):
        with torch.no_grad():
            eager = model(list(pictures))
        assert sum(len(d["labels"]) for d in eager) >= len(pictures)
        for i, (want, picture) in enumerate(zip(eager, pictures)):
            got = exported(picture[None].numpy())[0]
            where = f"{family}, image {i} at {tuple(pictures.shape[-2:])}"
            assert_same_detections({k: v.numpy() for k, v in want.items()}, got, where)
