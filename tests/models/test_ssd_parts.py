"""SSD's parts against torchvision's: the VGG-16 feature maps and the default boxes."""

import pytest
import torch
from torchvision.models import vgg16
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.ssd import _vgg_extractor

from detkit.models.anchors import DefaultBoxes
from detkit.models.backbones.vgg import VGG16SSD

SSD300 = {"aspect_ratios": [[2], [2, 3], [2, 3], [2, 3], [2], [2]],
          "scales": [0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05], "steps": [8, 16, 32, 64, 100, 300]}


@pytest.fixture(scope="module")
def vgg_pair():
    torch.manual_seed(0)
    reference = _vgg_extractor(vgg16(), False, 5).eval()
    model = VGG16SSD()
    model.load_state_dict(reference.state_dict())  # same module names: loads unchanged
    return reference, model.eval()


def test_vgg_feature_maps_equal_torchvision(vgg_pair):
    reference, model = vgg_pair
    x = torch.rand(1, 3, 300, 300)
    with torch.no_grad():
        expected, actual = list(reference(x).values()), model(x)
    assert list(actual) == ["conv4_3", "fc7", "conv8_2", "conv9_2", "conv10_2", "conv11_2"]
    assert [m.shape[-1] for m in actual.values()] == [38, 19, 10, 5, 3, 1]  # the paper's grids at 300 px
    for (name, a), e, shape in zip(actual.items(), expected, model.out_shapes.values()):
        assert a.shape[1] == shape.channels
        assert torch.allclose(a, e, atol=1e-5, rtol=1e-5), name


def test_vgg_frozen_stages_fix_the_first_blocks():
    model = VGG16SSD(frozen_stages=1).train()
    assert not model.features[0].weight.requires_grad and not model.features[2].weight.requires_grad
    assert model.features[5].weight.requires_grad  # conv2_1: the second block trains
    with pytest.raises(ValueError, match="vgg16 frozen_stages must be in 0..4"):
        VGG16SSD(frozen_stages=5)


@pytest.mark.parametrize("size", [(300, 300), (320, 256)])
def test_default_boxes_equal_torchvision(size):
    grids = [(38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1)] if size == (300, 300) else \
        [(40, 32), (20, 16), (10, 8), (5, 4), (3, 2), (1, 1)]
    reference = DefaultBoxGenerator(**SSD300)
    maps = [torch.zeros(1, 1, h, w) for h, w in grids]
    expected = reference(ImageList(torch.zeros(1, 3, *size), [size]), maps)[0]
    boxes = DefaultBoxes(**SSD300)
    actual = torch.cat(boxes(size, grids, torch.float32, "cpu"))
    assert boxes.num_anchors() == [4, 6, 6, 6, 4, 4]
    assert torch.allclose(actual, expected, atol=1e-4, rtol=0)
    if size == (300, 300):
        assert len(actual) == 8732  # the paper's count for SSD300


def test_default_boxes_by_hand():
    # one level, one 2x2 grid on a 100 px image, step 50: centres at 25 and 75; scales 0.2 -> 0.8
    boxes = DefaultBoxes([[4]], [0.2, 0.8], [50])
    level = boxes((100, 100), [(2, 2)], torch.float32, "cpu")[0]
    s_prime = (0.2 * 0.8) ** 0.5 * 100  # 40 px
    expected_cell0 = torch.tensor([[15.0, 15.0, 35.0, 35.0],  # 20 x 20
                                   [25 - s_prime / 2, 25 - s_prime / 2, 25 + s_prime / 2, 25 + s_prime / 2],
                                   [5.0, 20.0, 45.0, 30.0],  # ratio 4: 40 x 10
                                   [20.0, 5.0, 30.0, 45.0]])  # its transpose: 10 x 40
    assert torch.allclose(level[:4], expected_cell0, atol=1e-4)
    assert torch.allclose(level[4:8], expected_cell0 + torch.tensor([50.0, 0, 50.0, 0]), atol=1e-4)  # cell (0, 1)
    with pytest.raises(ValueError, match="1 levels need 2 scales"):
        DefaultBoxes([[2]], [0.2], [8])
