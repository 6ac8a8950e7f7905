"""The CUDA path of every detector: each family's tiny trained model gives on the GPU the
detections it gives on the CPU, with every suppressor (Adaptive-NMS with the model's own
densities). Skipped without CUDA: CI has none; on a GPU machine run
``pytest tests/models/test_cuda.py tests/engine/test_cuda.py tests/ops -k cuda``.

Tolerances are the export tests' (``tests.trained_tiny.assert_same_detections``): equal counts
and labels, boxes within 1e-3 px, scores within 1e-4, ranks swapped only between scores within
1e-4. TF32 is switched off for these tests: cuDNN convolutions default to it on Ampere and
later, and its 10-bit mantissa moves a 96 px box by ~0.05 px, which is a precision setting, not
a defect; in float32 the GPU's convolutions differ from the CPU's by float rounding (~1e-6).
"""

import copy

import pytest
import torch

from tests.trained_tiny import assert_same_detections, cases, make_shapes, trained, with_suppressor

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_shapes(tmp_path_factory.mktemp("cuda-shapes"))


@pytest.fixture(scope="module", autouse=True)
def float32_convolutions():
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


@pytest.mark.parametrize("family,suppressor", list(cases()))
def test_detections_on_cuda_equal_the_cpu_ones(shapes, family, suppressor):
    model = with_suppressor(trained(family, shapes), suppressor)
    gpu = copy.deepcopy(model).cuda()
    _, images = shapes
    with torch.no_grad():
        want = model(list(images))
        got = gpu([image.cuda() for image in images])
    assert sum(len(d["labels"]) for d in want) >= len(images)  # a trained model's detections, not none
    for i, (a, b) in enumerate(zip(want, got)):
        assert {v.device.type for v in b.values()} == {"cuda"}, f"{family}: image {i}'s detections left the GPU"
        assert_same_detections({k: v.numpy() for k, v in a.items()}, {k: v.cpu().numpy() for k, v in b.items()},
                               f"{family}, {suppressor}, image {i}")
