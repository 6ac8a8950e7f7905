"""Augmentation keeps boxes on their objects; resizing is invertible; config errors are named."""

import numpy as np
import pytest
import torch

from detkit.data import boxes_to_original, build_transforms, eval_transforms, train_transforms
from detkit.data.transforms import PAD_FILL


def scene(seed):
    """An image whose boxes are painted into a mask (value k+1 inside box k; no overlaps)."""
    rng = np.random.default_rng(seed)
    height, width = int(rng.integers(120, 300)), int(rng.integers(120, 300))
    image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    mask = np.zeros((height, width), np.uint8)
    boxes = []
    for k in range(6):
        w, h = rng.integers(8, 60, 2)
        x, y = rng.integers(0, width - w), rng.integers(0, height - h)
        if mask[y:y + h, x:x + w].any():
            continue
        mask[y:y + h, x:x + w] = len(boxes) + 1
        boxes.append([x, y, x + w, y + h])
    boxes = np.array(boxes, dtype=np.float32)
    return image, mask, boxes, np.arange(len(boxes)), np.zeros(len(boxes), bool)


def visible_fraction(before, after, value):
    """The fraction of an object's pixels (``value`` in the mask) still in the transformed mask."""
    return (after == value).sum() / (before == value).sum()


def mask_extent(mask, value):
    ys, xs = np.nonzero(mask == value)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)


PIPELINES = {
    "train flip+scale+crop": lambda: train_transforms(hflip=0.5, scale=(0.5, 1.5), crop=1.0, color=1.0),
    "train random crop": lambda: train_transforms(hflip=0.5, scale=None, crop_size=(100, 120), min_visibility=0.05),
    "train letterbox": lambda: train_transforms(hflip=0.5, scale=(0.7, 1.3), letterbox=224),
    "eval resize": lambda: eval_transforms(resize=(200, 333)),
    "eval size": lambda: eval_transforms(size=(160, 256)),
    "eval letterbox": lambda: eval_transforms(letterbox=300),
}
# the pipelines whose crop can cut boxes, with their min_visibility; every other pipeline keeps
# every box (the box-safe crop by its definition, flips, scales, resizes and pads cut nothing)
CUTTING = {"train random crop": 0.05}


@pytest.mark.parametrize("name", PIPELINES)
def test_boxes_follow_their_objects(name):
    transforms = PIPELINES[name]()
    for seed in range(15):
        transforms.compose.set_random_seed(seed)  # reproducible draws
        image, mask, boxes, labels, crowd = scene(seed)
        out = transforms.compose(image=image, mask=mask, bboxes=boxes, labels=labels, iscrowd=crowd)
        assert out["image"].shape[:2] == out["mask"].shape[:2]
        expected = labels.tolist()
        if name in CUTTING:  # no resampling in that pipeline: mask pixels measure the visible area exactly
            expected = [k for k in expected if visible_fraction(mask, out["mask"], k + 1) >= CUTTING[name]]
        assert sorted(np.asarray(out["labels"]).tolist()) == expected, (name, seed)
        for box, label in zip(np.asarray(out["bboxes"]), out["labels"]):
            extent = mask_extent(out["mask"], label + 1)
            # masks resample by pixel centres: their edges move by up to half a pixel per resize,
            # scaled by the later resizes (two here at most); a box that missed a flip, a scale
            # or a pad would be off by tens of pixels
            assert np.abs(extent - box).max() <= 1.5, (name, seed, box, extent)


def test_random_crop_clips_boxes_and_drops_the_barely_visible():
    transforms = train_transforms(hflip=0.0, scale=None, color=0.0, crop_size=(90, 110), min_visibility=0.3)
    checked = 0
    for seed in range(30):
        transforms.compose.set_random_seed(seed)
        image, mask, boxes, labels, crowd = scene(seed)
        out = transforms.compose(image=image, mask=mask, bboxes=boxes, labels=labels, iscrowd=crowd)
        kept = set(np.asarray(out["labels"]).tolist())
        for k in range(len(boxes)):
            visible = visible_fraction(mask, out["mask"], k + 1)
            if abs(visible - 0.3) < 0.02:
                continue  # too close to the threshold to call
            assert (k in kept) == (visible >= 0.3), (seed, k, visible)
            checked += 1
        for box, label in zip(np.asarray(out["bboxes"]), out["labels"]):
            assert np.abs(mask_extent(out["mask"], label + 1) - box).max() <= 1e-3  # clipped exactly
    assert checked > 100


@pytest.mark.parametrize("kwargs", [dict(resize=(200, 333)), dict(size=(150, 90)), dict(letterbox=256)])
def test_eval_affine_maps_boxes_back(kwargs):
    image, _, boxes, labels, crowd = scene(7)
    out_image, out_boxes, _, _, affine = eval_transforms(**kwargs)(image, boxes, labels, crowd)
    back = boxes_to_original(torch.from_numpy(out_boxes).double(), torch.tensor(affine, dtype=torch.float64))
    assert torch.allclose(back, torch.from_numpy(boxes).double(), atol=1e-3)


def test_resize_follows_torchvision_rule():
    image = np.zeros((100, 400, 3), np.uint8)  # shorter side 100 -> 200 would make the longer 800 > 333
    out = eval_transforms(resize=(200, 333))(image, np.zeros((0, 4)), np.zeros(0), np.zeros(0, bool))
    assert out[0].shape[:2] == (83, 333)


def test_config_errors():
    with pytest.raises(ValueError, match=r"data.train_transforms.hlfip: unknown option; did you mean 'hflip'\?"):
        build_transforms({"hlfip": 0.5}, train=True, where="data.train_transforms")
    with pytest.raises(ValueError, match="hflip must be a probability in \\[0, 1\\], got 2"):
        build_transforms({"hflip": 2}, train=True)
    with pytest.raises(ValueError, match="choose one of resize, size and letterbox"):
        eval_transforms(resize=(800, 1333), letterbox=640)
    assert "HorizontalFlip" in repr(build_transforms({"hflip": 0.5}, train=True))


def test_letterbox_pads_right_and_bottom_as_the_model_transform_does():
    """One letterbox convention: the image at the top-left, the padding right and bottom."""
    from detkit.models.transform import DetectionTransform

    image = np.full((60, 120, 3), 200, np.uint8)
    out, boxes, _, _, affine = eval_transforms(letterbox=240)(image, np.array([[10.0, 20.0, 30.0, 40.0]]), [0], [False])
    assert out.shape == (240, 240, 3) and affine == (2.0, 2.0, 0.0, 0.0)
    assert (out[:120] == 200).all() and (out[120:] == PAD_FILL).all()  # the image on top, grey below
    np.testing.assert_allclose(boxes, [[20.0, 40.0, 60.0, 80.0]])
    model = DetectionTransform(min_size=240, max_size=240, size_divisible=240).eval()
    batch, _ = model([torch.full((3, 60, 120), 200 / 255.0)])
    assert batch.tensors.shape[-2:] == (240, 240) and batch.image_sizes == [(120, 240)]  # top-left, padded below
