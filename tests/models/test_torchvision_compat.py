"""torchvision's Faster R-CNN and RetinaNet weights in detkit: the same proposals, detections and
losses, and back."""

import pytest
import torch
import torchvision

from detkit.models import from_torchvision, to_torchvision

FASTER_RCNN = ["fasterrcnn_resnet50_fpn", "fasterrcnn_resnet50_fpn_v2"]
RETINANET = ["retinanet_resnet50_fpn", "retinanet_resnet50_fpn_v2"]
NAMES = FASTER_RCNN + RETINANET + ["ssd300_vgg16"]
DETECTIONS = {"retinanet_resnet50_fpn": 300, "retinanet_resnet50_fpn_v2": 300, "ssd300_vgg16": 200}  # else 100
SIZES = [(200, 300), (181, 243), (320, 160)]  # several sizes and aspect ratios, batched together


def canonical(boxes: torch.Tensor, scores: torch.Tensor | None = None, labels: torch.Tensor | None = None):
    """Rows sorted by (score descending, label, box): equal-score rows (torch's sort orders ties
    arbitrarily) come out in one order for both models."""
    keys = [(-(scores[i].item() if scores is not None else 0.0), labels[i].item() if labels is not None else 0,
             *boxes[i].tolist()) for i in range(len(boxes))]
    order = sorted(range(len(boxes)), key=lambda i: keys[i])
    return torch.tensor(order, dtype=torch.int64)


@pytest.fixture(scope="module", params=NAMES)
def pair(request):
    torch.manual_seed(0)
    # random weights; a score threshold of 0 keeps a full set of detections per image to compare
    # (at the default 0.05 a random classifier, all ~1/91 or ~0.01, would give none)
    retinanet, ssd = request.param in RETINANET, request.param == "ssd300_vgg16"
    threshold = {"score_thresh": 0.0} if retinanet or ssd else {"box_score_thresh": 0.0}
    sizes = {} if ssd else {"min_size": 320, "max_size": 512}  # SSD: always 300 x 300
    reference = getattr(torchvision.models.detection, request.param)(
        weights=None, weights_backbone=None, **sizes, **threshold
    ).eval()
    model = from_torchvision(request.param, reference.state_dict()).eval()
    if retinanet or ssd:
        model.score_threshold = 0.0
    else:
        model.roi_heads.score_threshold = 0.0
    if not ssd:
        model.transform.min_size, model.transform.max_size = (320,), 512
    images = [torch.rand(3, h, w, generator=torch.Generator().manual_seed(h)) for h, w in SIZES]
    return request.param, reference, model, images


def test_detections_agree(pair):
    name, reference, model, images = pair
    with torch.no_grad():
        expected, actual = reference(images), model(images)
    # detkit's Faster R-CNN and SSD labels are torchvision's class index - 1 (torchvision's 0 is
    # the background); RetinaNet has no background class and keeps torchvision's labels
    shift = 0 if name in RETINANET else 1
    for e, a in zip(expected, actual):
        assert len(e["boxes"]) == len(a["boxes"]) == DETECTIONS.get(name, 100)
        ie = canonical(e["boxes"], e["scores"], e["labels"])
        ia = canonical(a["boxes"], a["scores"], a["labels"] + shift)
        assert torch.allclose(e["boxes"][ie], a["boxes"][ia], atol=1e-3, rtol=0)
        assert torch.allclose(e["scores"][ie], a["scores"][ia], atol=1e-5, rtol=0)
        assert torch.equal(e["labels"][ie], a["labels"][ia] + shift)


@pytest.mark.parametrize("pair", FASTER_RCNN, indirect=True)
def test_proposals_agree(pair):
    name, reference, model, images = pair
    with torch.no_grad():
        batch, _ = reference.transform(images)
        expected, _ = reference.rpn(batch, reference.backbone(batch.tensors))
        actual = model.propose(images)
    for e, a in zip(expected, actual):
        assert e.shape == a.shape
        assert torch.allclose(e[canonical(e)], a[canonical(a)], atol=1e-3, rtol=0)


def test_weights_go_back_to_torchvision(pair):
    name, reference, model, _ = pair
    state = to_torchvision(model, name)
    assert state.keys() == reference.state_dict().keys()
    fresh = getattr(torchvision.models.detection, name)(weights=None, weights_backbone=None)
    fresh.load_state_dict(state)
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in fresh.state_dict().items())


def test_pretrained_style_weights_use_frozen_batchnorm():
    # torchvision's COCO v1 weights come from a FrozenBatchNorm backbone: no num_batches_tracked
    reference = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    state = {k: v for k, v in reference.state_dict().items() if not k.endswith("num_batches_tracked")}
    model = from_torchvision("fasterrcnn_resnet50_fpn", state)
    assert isinstance(model.backbone.bn1, torchvision.ops.FrozenBatchNorm2d)
    assert model.class_names[0] == "person" and len(model.class_names) == 90


def test_weights_of_another_architecture_are_named():
    state = torchvision.models.detection.fasterrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None).state_dict()
    with pytest.raises(ValueError, match=r"do not fit this model: \d+ missing: neck.lateral.0.0.bias.*; \d+ unexpected: "
                                         r"neck.lateral.0.1.weight"):
        from_torchvision("fasterrcnn_resnet50_fpn", state)
    with pytest.raises(ValueError, match="unsupported builder 'ssdlite320_mobilenet_v3_large'"):
        from_torchvision("ssdlite320_mobilenet_v3_large", state)
    with pytest.raises(ValueError, match=r"not a retinanet_resnet50_fpn state dict"):
        from_torchvision("retinanet_resnet50_fpn", state)


@pytest.mark.parametrize("name", RETINANET)
def test_retinanet_training_losses_agree(name):
    # the same weights, images and targets give torchvision's focal and box losses (L1 for v1,
    # GIoU for v2): matching, encoding and normalisation are the same
    torch.manual_seed(1)
    reference = getattr(torchvision.models.detection, name)(
        weights=None, weights_backbone=None, min_size=256, max_size=384).train()
    model = from_torchvision(name, reference.state_dict()).train()
    model.transform.min_size, model.transform.max_size = (256,), 384
    images = [torch.rand(3, h, w, generator=torch.Generator().manual_seed(h)) for h, w in [(200, 300), (240, 180)]]
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 120.0, 150.0], [100.0, 30.0, 180.0, 90.0]]),
                "labels": torch.tensor([3, 17])},
               {"boxes": torch.tensor([[5.0, 5.0, 60.0, 200.0]]), "labels": torch.tensor([1])}]
    expected = reference(images, [dict(t) for t in targets])
    actual = model(images, [dict(t) for t in targets])
    assert actual["classification"].item() == pytest.approx(expected["classification"].item(), rel=1e-5)
    assert actual["box_regression"].item() == pytest.approx(expected["bbox_regression"].item(), rel=1e-5)


def test_retinanet_checkpoints_from_before_torchvision_0_13_load():
    # old heads were Sequential(conv, ReLU, conv, ReLU, ...): keys conv.0, conv.2, conv.4, conv.6
    reference = torchvision.models.detection.retinanet_resnet50_fpn(weights=None, weights_backbone=None)
    state = {k: v for k, v in reference.state_dict().items() if not k.endswith("num_batches_tracked")}
    old = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[:2] in (["head", "classification_head"], ["head", "regression_head"]) and parts[2] == "conv":
            key = ".".join(parts[:3] + [str(2 * int(parts[3]))] + parts[5:])  # conv.i.0.weight -> conv.(2i).weight
        old[key] = value
    assert "head.classification_head.conv.6.weight" in old
    model = from_torchvision("retinanet_resnet50_fpn", old)
    assert torch.equal(model.head.classification.conv[3][0].weight, state["head.classification_head.conv.3.0.weight"])
    assert isinstance(model.backbone.bn1, torchvision.ops.FrozenBatchNorm2d)  # COCO weights: frozen BatchNorm
    assert model.class_names[1] == "person" and len(model.class_names) == 91


def test_ssd_training_losses_agree():
    # the multibox loss: matching (IoU 0.5 + each object's best box), hard negatives at 3:1
    torch.manual_seed(2)
    reference = torchvision.models.detection.ssd300_vgg16(weights=None, weights_backbone=None).train()
    model = from_torchvision("ssd300_vgg16", reference.state_dict()).train()
    images = [torch.rand(3, h, w, generator=torch.Generator().manual_seed(h)) for h, w in [(200, 300), (240, 180)]]
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 120.0, 150.0], [100.0, 30.0, 180.0, 90.0], [2.0, 2.0, 9.0, 8.0]]),
                "labels": torch.tensor([3, 17, 1])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]  # a negative image
    expected = reference(images, [dict(t) for t in targets])
    actual = model(images, [{"boxes": t["boxes"], "labels": t["labels"] - 1} for t in targets])
    assert actual["classification"].item() == pytest.approx(expected["classification"].item(), rel=1e-5)
    assert actual["box_regression"].item() == pytest.approx(expected["bbox_regression"].item(), rel=1e-5)


def test_retinanet_trains_like_torchvisions():
    """Training parity (tools/bench_train_parity.py, issue 17): from the same random weights on
    the same batch, detkit's RetinaNet gives torchvision's loss terms and gradients (every
    parameter's), so an optimizer step moves both alike."""
    from tools.bench_train_parity import first_step, pair

    theirs, ours = pair("retinanet", 3, 128, seed=0)
    generator = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 128, 128, generator=generator) for _ in range(2)]
    targets = [{"boxes": torch.tensor([[10.0, 12.0, 60.0, 70.0], [50.0, 40.0, 120.0, 100.0]]),
                "labels": torch.tensor([0, 2])},
               {"boxes": torch.tensor([[5.0, 5.0, 30.0, 25.0]]), "labels": torch.tensor([1])}]
    result = first_step(theirs, ours, "retinanet", images, targets, seed=0)
    for name, value in result["torchvision"].items():
        assert result["detkit"][name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
    assert result["gradients_compared"] > 150
    assert result["gradient_max_relative_difference"] < 1e-4
