"""Adaptive-NMS density targets: each ground-truth box's highest IoU with another one, by hand."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from detkit.models.heads.density_head import density_targets


def test_density_is_the_highest_iou_with_another_box():
    boxes = torch.tensor([
        [0.0, 0.0, 10.0, 10.0],  # a: area 100
        [5.0, 0.0, 15.0, 10.0],  # b: area 100, overlaps a by 5 x 10
        [100.0, 100.0, 110.0, 110.0],  # c: touches nobody
        [0.0, 0.0, 10.0, 12.5],  # d: area 125, holds a whole, overlaps b by 5 x 10
    ])
    # IoU(a, b) = 50 / 150, IoU(a, d) = 100 / 125, IoU(b, d) = 50 / (100 + 125 - 50)
    expected = torch.tensor([max(50 / 150, 100 / 125), max(50 / 150, 50 / 175), 0.0, max(100 / 125, 50 / 175)])
    assert torch.allclose(density_targets(boxes), expected)


def test_a_box_alone_has_density_zero_not_its_iou_with_itself():
    assert torch.equal(density_targets(torch.tensor([[0.0, 0.0, 10.0, 10.0]])), torch.zeros(1))
    assert density_targets(torch.zeros(0, 4)).shape == (0,)
    twins = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]])
    assert torch.allclose(density_targets(twins), torch.ones(2))


# ------------------------------------------------------------------------------ the RPN's density subnet

TINY = {"type": "faster_rcnn", "num_classes": 3,
        "backbone": {"type": "resnet", "depth": 18, "frozen_stages": -1, "norm": "bn"},
        "neck": {"type": "fpn", "out_channels": 32},
        "rpn": {"pre_nms_top_n": [200, 100], "post_nms_top_n": [100, 50], "density": {"channels": 16}},
        "roi_heads": {"box_head": {"type": "two_mlp", "representation": 64}, "batch_per_image": 32,
                      "score_threshold": 0.0},
        "transform": {"min_size": 96, "max_size": 96}, "postprocess": {"type": "adaptive_nms"}}


def test_the_subnet_is_the_papers_shape():
    from detkit.models.heads.density_head import DensitySubnet

    subnet = DensitySubnet(32, 9, channels=16)
    assert subnet.reduce.kernel_size == (1, 1) and subnet.reduce.out_channels == 16
    # the reduced features, the 9 objectness logits and the 36 offsets in; one density per anchor out
    assert subnet.predict.kernel_size == (5, 5) and subnet.predict.in_channels == 16 + 9 + 36
    assert subnet.predict.out_channels == 9
    features = [torch.randn(2, 32, 12, 10), torch.randn(2, 32, 6, 5)]
    out = subnet(features, [torch.randn(2, 9, 12, 10), torch.randn(2, 9, 6, 5)],
                 [torch.randn(2, 36, 12, 10), torch.randn(2, 36, 6, 5)])
    assert [tuple(o.shape) for o in out] == [(2, 9, 12, 10), (2, 9, 6, 5)]
    assert all(((o >= 0) & (o <= 1)).all() for o in out)


@pytest.mark.parametrize("convs", [0, 1, 2])
def test_context_convs_widen_what_one_density_sees_by_two_cells_each(convs):
    from detkit.models.heads.density_head import DensitySubnet

    subnet = DensitySubnet(8, 3, channels=4, convs=convs)
    assert len(subnet.context) == convs and subnet.predict.kernel_size == (5, 5)
    with torch.no_grad():  # positive weights and inputs: every ReLU passes, the footprint is the receptive field
        for p in subnet.parameters():
            p.fill_(0.01)
    feature = torch.rand(1, 8, 21, 21, requires_grad=True) + 0.1
    out = subnet([feature], [torch.rand(1, 3, 21, 21) + 0.1], [torch.rand(1, 12, 21, 21) + 0.1])[0]
    (grad,) = torch.autograd.grad(out[0, 0, 10, 10], feature)
    seen = (grad[0].abs().sum(0) > 0).nonzero()
    assert (seen.min(0).values.tolist(), seen.max(0).values.tolist()) == ([8 - convs] * 2, [12 + convs] * 2)
    with pytest.raises(ValueError, match="density convs"):
        DensitySubnet(8, 3, convs=-1)


def test_positive_anchors_learn_their_objects_density():
    """Anchors equal to two objects at IoU 0.6 (both foreground), and far background ones: the
    loss is smooth-L1 (beta 1/9) of the positives' density error, averaged over them."""
    from detkit.models.detectors.faster_rcnn import FasterRCNNCriterion
    from detkit.models.heads.rpn import RPNOutput

    gt = torch.tensor([[0.0, 0.0, 50.0, 100.0], [12.5, 0.0, 62.5, 100.0]])  # IoU 37.5 * 100 / 6250 = 0.6
    anchors = torch.cat([gt, torch.tensor([[200.0, 200.0, 220.0, 220.0], [300.0, 300.0, 310.0, 310.0]])])
    criterion = FasterRCNNCriterion()

    def loss(densities):
        rpn = RPNOutput([], [], torch.zeros(1, 4), torch.zeros(1, 4, 4), anchors, [], densities[None])
        return criterion.rpn_losses(rpn, [{"boxes": gt, "labels": torch.tensor([0, 0])}])["rpn_density"]

    assert float(loss(torch.tensor([0.6, 0.6, 0.9, 0.9]))) == pytest.approx(0.0, abs=1e-6)  # negatives do not count
    # an error of 0.1 on both positives, inside beta (1/9): 0.5 x^2 / beta = 0.045 each, averaged
    assert float(loss(torch.tensor([0.7, 0.5, 0.0, 0.0]))) == pytest.approx(0.5 * 0.1**2 * 9, abs=1e-6)
    # 0.3 beyond beta: 0.3 - 0.5 / 9 on one, 0 on the other, averaged over the two positives
    assert float(loss(torch.tensor([0.9, 0.6, 0.0, 0.0]))) == pytest.approx((0.3 - 0.5 / 9) / 2, abs=1e-6)


def test_density_target_variants_same_class_and_crowd_weight():
    """The measured variants of issue 16: same-class targets count only neighbours of the object's
    class; crowd_weight multiplies the loss of the targets above 0.5 (hand-computed)."""
    from detkit.models.detectors.faster_rcnn import FasterRCNNCriterion
    from detkit.models.heads.density_head import density_loss
    from detkit.models.heads.rpn import RPNOutput

    gt = torch.tensor([[0.0, 0.0, 50.0, 100.0], [12.5, 0.0, 62.5, 100.0]])  # IoU 0.6
    anchors = torch.cat([gt, torch.tensor([[200.0, 200.0, 220.0, 220.0]])])

    def loss(criterion, labels, densities):
        rpn = RPNOutput([], [], torch.zeros(1, 3), torch.zeros(1, 3, 4), anchors, [], densities[None])
        return float(criterion.rpn_losses(rpn, [{"boxes": gt, "labels": labels}])["rpn_density"])

    same = FasterRCNNCriterion(density_same_class=True)
    # the two objects of different classes: each alone for its class, target 0
    assert loss(same, torch.tensor([0, 1]), torch.tensor([0.0, 0.0, 0.5])) == pytest.approx(0.0, abs=1e-7)
    assert loss(FasterRCNNCriterion(), torch.tensor([0, 1]), torch.tensor([0.6, 0.6, 0.0])) == pytest.approx(0, abs=1e-7)
    # an error of 0.3 on both (target 0.6, crowded): (0.3 - 0.5/9) each, x3 with the weight, averaged over 2
    heavy = FasterRCNNCriterion(density_crowd_weight=3.0)
    assert loss(heavy, torch.tensor([0, 0]), torch.tensor([0.3, 0.3, 0.0])) == pytest.approx(3 * (0.3 - 0.5 / 9))
    # targets at or below 0.5 keep weight 1
    low = density_loss(torch.tensor([0.2, 0.8]), torch.tensor([0.5, 0.6]), crowd_weight=3.0)
    assert float(low) == pytest.approx((0.3 - 0.5 / 9) + 3 * (0.2 - 0.5 / 9))
    with pytest.raises(ValueError, match="density_crowd_weight"):
        FasterRCNNCriterion(density_crowd_weight=0)


def test_the_roi_density_heads_targets_follow_density_same_class():
    """``criterion.density_same_class`` reaches the per-RoI density head's targets too (it once
    changed only the RPN subnet's): two objects of different classes at IoU 0.6 each have target
    0.6 counting any class, 0 counting only their own."""
    from detkit.models import build_model

    gt = torch.tensor([[0.0, 0.0, 50.0, 100.0], [12.5, 0.0, 62.5, 100.0]])  # IoU 0.6
    roi_config = {**TINY, "rpn": {**TINY["rpn"], "density": False},
                  "roi_heads": {**TINY["roi_heads"], "density_head": True}, "transform": {"min_size": 128, "max_size": 128}}
    for same_class, expected in ((False, 0.6), (True, 0.0)):
        torch.manual_seed(0)
        model = build_model({**roi_config, "criterion": {"density_same_class": same_class}}).train()
        seen = []
        sample = model.roi_heads.sample
        model.roi_heads.sample = lambda *args: seen.append(sample(*args)) or seen[-1]
        model([torch.rand(3, 128, 128)], [{"boxes": gt, "labels": torch.tensor([0, 1])}])
        labels, densities = seen[0].labels[0], seen[0].densities[0]
        assert (labels > 0).any()
        assert torch.allclose(densities[labels > 0], torch.full_like(densities[labels > 0], expected), atol=1e-6)


def test_each_detection_carries_the_density_of_its_proposals_anchor():
    """A forced density map with a distinct value per anchor: each proposal's density is the map
    at its anchor, and each detection's is one of the proposals' (the RoI keeps its proposal's)."""
    from detkit.models import build_model

    torch.manual_seed(0)
    model = build_model(TINY).eval()
    forced = {}

    def distinct(features, objectness, deltas):
        maps = []
        for level, logits in enumerate(objectness):
            n, a, h, w = logits.shape
            values = torch.arange(n * a * h * w, dtype=torch.float32).reshape(n, a, h, w)
            maps.append((values + 1000 * level) / 1e5)  # unique, below 1
        forced["maps"] = maps
        return maps

    model.rpn.density.forward = distinct
    images = [torch.rand(3, 96, 96)]
    with torch.no_grad():
        batch, _ = model.transform(images)
        rpn = model.rpn(batch, model.features(batch.tensors))
        flat = torch.cat([m.permute(0, 2, 3, 1).reshape(1, -1) for m in forced["maps"]], dim=1)[0]
        assert torch.equal(rpn.proposal_densities()[0], flat[rpn.anchor_index[0]])
        detection = model(images)[0]
    assert len(detection["densities"]) > 0
    assert set(detection["densities"].tolist()) <= set(rpn.proposal_densities()[0].tolist())


def test_box_readout_gives_each_detection_the_density_of_the_anchor_its_box_overlaps_most():
    """density_readout "box" (issue 16, item 5): a forced density map, then each detection's
    density is the map at the anchor of highest IoU with its (resized) box; "anchor" stays the
    paper's, and "box" needs the RPN's density subnet."""
    from detkit.models import build_model
    from detkit.ops import box_iou

    torch.manual_seed(0)
    model = build_model({**TINY, "density_readout": "box"}).eval()

    def distinct(features, objectness, deltas):
        return [(torch.arange(lg.numel(), dtype=torch.float32).reshape(lg.shape) + 1000 * level) / 1e5
                for level, lg in enumerate(objectness)]

    model.rpn.density.forward = distinct
    images = [torch.rand(3, 96, 96)]  # TINY's transform keeps 96 px: the resized image is the original
    with torch.no_grad():
        batch, _ = model.transform(images)
        rpn = model.rpn(batch, model.features(batch.tensors))
        detection = model(images)[0]
    assert len(detection["boxes"]) > 0
    best = box_iou(detection["boxes"], rpn.anchors).argmax(dim=1)
    assert torch.equal(detection["densities"], rpn.densities[0][best])
    model.set_density_readout("anchor")
    with torch.no_grad():
        carried = model(images)[0]["densities"]
    assert set(carried.tolist()) <= set(rpn.proposal_densities()[0].tolist())
    with pytest.raises(ValueError, match="density_readout must be one of anchor, box, got 'centre'"):
        model.set_density_readout("centre")
    with pytest.raises(ValueError, match=r"reads the predicted densities: enable the RPN's density subnet .* "
                                          r"or the RoI density head"):
        build_model({**TINY, "rpn": {**TINY["rpn"], "density": False}, "postprocess": None, "density_readout": "box"})


def test_the_roi_heads_box_readout_runs_the_density_head_on_each_final_boxs_own_roi():
    """density_readout "box" with the per-RoI density head: each detection's density is the
    head's value on the RoI pooled at its final (regressed) box, computed here through a second,
    independent path; "anchor" keeps its proposal's RoI's, which differs once the box moved."""
    from detkit.models import build_model
    from detkit.ops import Suppressor

    torch.manual_seed(0)
    config = {**TINY, "rpn": {**TINY["rpn"], "density": False},
              "roi_heads": {**TINY["roi_heads"], "density_head": True}, "density_readout": "box"}
    model = build_model(config).eval()
    with torch.no_grad():
        model.roi_heads.predictor.bbox_pred.weight.normal_(std=0.05)  # regressed boxes away from their proposals
    images = [torch.rand(3, 96, 96), torch.rand(3, 96, 96)]  # kept at 96 px: boxes in the resized image
    with torch.no_grad():
        detections = model(images)
        batch, _ = model.transform(images)
        features = model.features(batch.tensors)
        heads = model.roi_heads
        for image, detection in enumerate(detections):
            assert len(detection["boxes"]) > 0
            one = {name: level[image:image + 1] for name, level in features.items()}
            expected = heads.density_head(heads.box_head(heads.roi_pool(one, [detection["boxes"]], [(96, 96)])))[0]
            assert torch.allclose(detection["densities"], expected, atol=1e-6)
        model.set_postprocess(Suppressor("nms", {"iou_threshold": 0.5}))  # the same boxes under both readouts
        at_box = model(images)[0]
        model.set_density_readout("anchor")
        carried = model(images)[0]
    assert torch.equal(carried["boxes"], at_box["boxes"])
    assert not torch.allclose(carried["densities"], at_box["densities"], atol=1e-3)


def test_one_density_predictor_at_a_time_and_adaptive_nms_needs_one():
    from detkit.models import build_model

    with pytest.raises(ValueError, match="choose one"):
        build_model({**TINY, "roi_heads": {**TINY["roi_heads"], "density_head": True}})
    with pytest.raises(ValueError, match=r"needs densities: enable the density head .* or the RPN's density subnet"):
        build_model({**TINY, "rpn": {**TINY["rpn"], "density": False}})
    model = build_model(TINY).train()
    losses = model([torch.rand(3, 96, 96)], [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}])
    losses["rpn_density"].backward(retain_graph=True)  # no object: a zero loss that still reaches every weight
    assert model.rpn.density.predict.weight.grad is not None


# ------------------------------------------------------------------------------ binned densities (detkit's variant)

def test_knot_targets_split_each_density_between_its_two_knots_by_nearness():
    from detkit.models.heads.density_head import knot_targets

    got = knot_targets(torch.tensor([0.63, 0.0, 1.0, 0.5]), 10)
    expected = torch.zeros(4, 11)
    expected[0, 6], expected[0, 7] = 0.7, 0.3  # 0.63 = 0.7 x 0.6 + 0.3 x 0.7
    expected[1, 0] = 1.0  # a lone object: all on the knot 0
    expected[2, 10] = 1.0  # twins: all on the knot 1
    expected[3, 5] = 1.0
    assert torch.allclose(got, expected, atol=1e-6)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=20), st.integers(2, 20))
def test_the_knot_targets_mean_is_the_density_and_the_loss_is_least_there(densities, bins):
    """Property: the target distribution sums to 1 and its mean is the density; the loss at the
    logits of that distribution is its entropy, and no other logits do better (Gibbs)."""
    from detkit.models.heads.density_head import density_loss, knot_targets

    wanted = torch.tensor(densities, dtype=torch.float64)
    target = knot_targets(wanted, bins)
    knots = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    assert torch.allclose(target.sum(1), torch.ones(len(wanted), dtype=torch.float64))
    assert torch.allclose(target @ knots, wanted, atol=1e-9)
    best = torch.log(target.clamp(min=1e-30))
    entropy = -(target * best).sum()
    assert float(density_loss(best, wanted)) == pytest.approx(float(entropy), abs=1e-6)
    assert float(density_loss(torch.zeros_like(best), wanted)) >= float(entropy) - 1e-9


def test_binned_loss_by_hand_and_its_crowd_weight():
    from detkit.models.heads.density_head import density_loss

    # 3 knots (0, 0.5, 1), equal logits: -log(1/3) whatever the target
    assert float(density_loss(torch.zeros(2, 3), torch.tensor([0.25, 1.0]))) == pytest.approx(2 * math.log(3))
    # the crowded target (0.75 > 0.5) weighs 3x
    assert float(density_loss(torch.zeros(2, 3), torch.tensor([0.25, 0.75]), crowd_weight=3.0)) == pytest.approx(
        4 * math.log(3))


def test_a_binned_subnet_predicts_a_distribution_per_anchor_and_its_mean():
    from detkit.models.heads.density_head import DensitySubnet

    with pytest.raises(ValueError, match="density bins must be 0 .* or an integer >= 2, got 1"):
        DensitySubnet(32, 9, bins=1)
    subnet = DensitySubnet(32, 9, channels=16, bins=10)
    assert subnet.predict.out_channels == 9 * 11 and subnet.predict.kernel_size == (5, 5)
    sizes = [(12, 10), (6, 5)]
    with torch.no_grad():
        maps = subnet([torch.randn(2, 32, *s) for s in sizes], [torch.randn(2, 9, *s) for s in sizes],
                      [torch.randn(2, 36, *s) for s in sizes])
        densities, logits = subnet.flatten(maps)
    assert [tuple(m.shape) for m in maps] == [(2, 99, 12, 10), (2, 99, 6, 5)]
    assert densities.shape == (2, 9 * (120 + 30)) and logits.shape == (2, 9 * 150, 11)
    # anchor (cell (y, x) = (3, 4) of level 0, anchor a = 2): its 11 logits are channels 22..32
    row = (3 * 10 + 4) * 9 + 2
    assert torch.equal(logits[1, row], maps[0][1, 22:33, 3, 4])
    expected = (torch.softmax(maps[0][1, 22:33, 3, 4], 0) * torch.linspace(0, 1, 11)).sum()
    assert float(densities[1, row]) == pytest.approx(float(expected), abs=1e-6)


def test_binned_densities_train_in_both_detectors():
    """Faster R-CNN (RPN subnet or RoI density head) and RetinaNet (head subnet) with
    ``bins: 10``: the cross-entropy loss is finite and reaches the predictor; at inference each
    detection carries a density in [0, 1]."""
    from detkit.models import build_model

    retina = {"type": "retinanet", "num_classes": 3,
              "backbone": {"type": "resnet", "depth": 18, "frozen_stages": -1, "norm": "bn",
                           "out_levels": ["C3", "C4", "C5"]},
              "neck": {"type": "fpn", "out_channels": 32, "extra": "p6p7"},
              "head": {"depth": 1, "density": {"channels": 16, "bins": 10}}, "score_threshold": 0.0,
              "transform": {"min_size": 96, "max_size": 96}, "postprocess": {"type": "adaptive_nms"}}
    faster = {**TINY, "rpn": {**TINY["rpn"], "density": {"channels": 16, "bins": 10}}}
    roi = {**TINY, "rpn": {**TINY["rpn"], "density": False},
           "roi_heads": {**TINY["roi_heads"], "density_head": {"hidden": 16, "bins": 10}}}
    target = {"boxes": torch.tensor([[10.0, 10.0, 50.0, 60.0], [20.0, 10.0, 60.0, 60.0]]),
              "labels": torch.tensor([1, 1])}
    for config, key, subnet in ((faster, "rpn_density", lambda m: m.rpn.density.predict),
                                (roi, "density", lambda m: m.roi_heads.density_head.out),
                                (retina, "density", lambda m: m.head.density.predict)):
        torch.manual_seed(0)
        model = build_model(config).train()
        losses = model([torch.rand(3, 96, 96)], [target])
        assert torch.isfinite(losses[key]) and float(losses[key].detach()) > 0
        losses[key].backward()
        assert subnet(model).weight.grad.abs().sum() > 0
        with torch.no_grad():
            detection = model.eval()([torch.rand(3, 96, 96)])[0]
        assert len(detection["densities"]) == len(detection["boxes"]) > 0
        assert ((detection["densities"] >= 0) & (detection["densities"] <= 1)).all()


def test_the_roi_density_heads_bins_read_as_their_mean_and_train_by_cross_entropy():
    """``DensityHead(bins=4)``: a RoI's density is the mean of its softmax over 0, .25, .., 1;
    its loss is the cross-entropy towards the two knots around the target, by hand."""
    from detkit.models.heads.density_head import DensityHead, density_loss

    head = DensityHead(6, hidden=5, bins=4)
    with pytest.raises(ValueError, match="got True"):
        DensityHead(6, bins=True)
    x = torch.randn(3, 6)
    with torch.no_grad():
        densities, logits = head(x)
    assert logits.shape == (3, 5) and densities.shape == (3,)
    p = torch.softmax(logits, 1)
    assert torch.allclose(densities, p @ torch.tensor([0, 0.25, 0.5, 0.75, 1]))
    # target 0.6 = 0.6 of knot 0.5 + 0.4 of knot 0.75
    loss = density_loss(logits[:1], torch.tensor([0.6]))
    assert float(loss) == pytest.approx(float(-(0.6 * p[0, 2].log() + 0.4 * p[0, 3].log())), rel=1e-5)
    with torch.no_grad():
        plain_densities, no_logits = DensityHead(6, hidden=5)(x)
    assert no_logits is None and plain_densities.shape == (3,)


def test_a_detached_subnet_trains_alone():
    """``detach``: the density loss reaches the subnet's weights and nothing upstream (the RPN's
    convs, the backbone); without it, it reaches both."""
    from detkit.models import build_model

    target = {"boxes": torch.tensor([[10.0, 10.0, 50.0, 60.0], [20.0, 10.0, 60.0, 60.0]]),
              "labels": torch.tensor([1, 1])}
    for detach in (True, False):
        torch.manual_seed(0)
        model = build_model({**TINY, "rpn": {**TINY["rpn"], "density": {"channels": 16, "bins": 10,
                                                                          "detach": detach}}}).train()
        losses = model([torch.rand(3, 96, 96)], [target])
        losses["rpn_density"].backward()
        assert model.rpn.density.predict.weight.grad.abs().sum() > 0
        upstream = [p.grad for name, p in model.named_parameters() if not name.startswith("rpn.density")]
        reached = any(g is not None and g.abs().sum() > 0 for g in upstream)
        assert reached is not detach
    with pytest.raises(ValueError, match="density.detach must be true or false, got 'yes'"):
        build_model({**TINY, "rpn": {**TINY["rpn"], "density": {"detach": "yes"}}})
