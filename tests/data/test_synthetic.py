"""The synthetic-shapes dataset, checked against its peers: pycocotools reads the json and
measures the masks, torchvision measures the box overlaps, OpenCV reads the pixels."""

import contextlib
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from torchvision.ops import box_iou

from detkit.data.synthetic import CLASSES, generate

SIZE = 256

# pycocotools' mask.decode trips numpy 2's copy-keyword deprecation; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def normal(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("normal"), 60, seed=0, size=SIZE)


@pytest.fixture(scope="module")
def crowded(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("crowded"), 30, seed=0, size=SIZE, crowded=True)


def _files(out: Path) -> dict[str, bytes]:
    """Every file under ``out``, by relative path."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def _load(path: Path) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):  # COCO prints progress
        return COCO(str(path))


def _rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def _xyxy(annotations: list[dict]) -> torch.Tensor:
    boxes = torch.tensor([a["bbox"] for a in annotations], dtype=torch.float64).reshape(-1, 4)
    boxes[:, 2:] += boxes[:, :2]  # (x, y, w, h) -> (x1, y1, x2, y2)
    return boxes


# --------------------------------------------------------------------------- determinism


def test_same_parameters_give_identical_files_whatever_the_workers(tmp_path):
    first = _files(generate(tmp_path / "a", 6, seed=3, size=128, crowded=True).parent)
    again = _files(generate(tmp_path / "b", 6, seed=3, size=128, crowded=True, progress=True).parent)
    pooled = _files(generate(tmp_path / "c", 6, seed=3, size=128, crowded=True, workers=2).parent)
    assert len(first) == 7  # 6 images and the json
    assert first == again
    assert first == pooled

    other = _files(generate(tmp_path / "d", 6, seed=4, size=128, crowded=True).parent)
    assert other["annotations.json"] != first["annotations.json"]
    assert all(other[name] != first[name] for name in first if name.endswith(".jpg"))

    # image i depends on (seed, i) alone, not on how many images there are
    fewer = _files(generate(tmp_path / "e", 2, seed=3, size=128, crowded=True).parent)
    assert all(fewer[name] == first[name] for name in ("images/000000.jpg", "images/000001.jpg"))


# --------------------------------------------------------------------------- the COCO file


def test_json_is_a_coco_instances_file(normal):
    coco = _load(normal)
    assert [(c["id"], c["name"]) for c in coco.loadCats(coco.getCatIds())] == list(enumerate(CLASSES, start=1))
    info = coco.dataset["info"]["detkit_synthetic"]
    assert {k: info[k] for k in ("seed", "size", "crowded", "images")} == {
        "seed": 0, "size": SIZE, "crowded": False, "images": 60
    }  # fmt: skip
    assert coco.dataset["licenses"] == []
    images = coco.dataset["images"]
    assert [im["id"] for im in images] == list(range(1, 61))
    assert [im["file_name"] for im in images] == [f"{i:06d}.jpg" for i in range(60)]
    for im in images:
        assert (im["width"], im["height"]) == (SIZE, SIZE)
        assert _rgb(normal.parent / "images" / im["file_name"]).shape == (SIZE, SIZE, 3)

    annotations = coco.dataset["annotations"]
    assert [a["id"] for a in annotations] == list(range(1, len(annotations) + 1))
    for a in annotations:
        x, y, w, h = a["bbox"]
        assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= SIZE and y + h <= SIZE, a["id"]
        assert a["iscrowd"] == 0 and 1 <= a["category_id"] <= len(CLASSES)
        assert a["area"] == float(mask_utils.area(a["segmentation"])), a["id"]
        assert a["bbox"] == mask_utils.toBbox(a["segmentation"]).tolist(), a["id"]
    json.dumps(coco.dataset)  # the RLE counts are str, not bytes


def test_boxes_sit_on_drawn_objects(normal):
    coco = _load(normal)
    ring_kernel = np.ones((5, 5), np.uint8)
    for image_id in coco.getImgIds():
        image = _rgb(normal.parent / "images" / coco.imgs[image_id]["file_name"]).astype(float)
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        assert annotations, f"image {image_id} has no object"
        for a in annotations:
            mask = mask_utils.decode(a["segmentation"]).astype(bool)
            rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
            extent = [cols[0], rows[0], cols[-1] + 1 - cols[0], rows[-1] + 1 - rows[0]]
            assert a["bbox"] == [float(v) for v in extent], a["id"]

            # drawn: the pixels just outside the mask stray from the object's colour far
            # more than the pixels inside it (noise and JPEG) do
            ring = cv2.dilate(mask.view(np.uint8), ring_kernel).view(bool) & ~mask
            colour = np.median(image[mask], axis=0)
            inside = np.linalg.norm(image[mask] - colour, axis=1).mean()
            outside = np.linalg.norm(image[ring] - colour, axis=1).mean()
            assert outside > inside + 30, (a["id"], inside, outside)


def test_every_coco_area_range_occurs(normal):
    areas = np.array([a["area"] for a in _load(normal).dataset["annotations"]])
    assert (areas < 32**2).any()
    assert ((areas >= 32**2) & (areas <= 96**2)).any()
    assert (areas > 96**2).any()


# --------------------------------------------------------------------------- crowded mode


def test_crowds_hold_same_class_pairs_that_nms_would_merge(crowded):
    coco = _load(crowded)
    with_pair = 0
    for image_id in coco.getImgIds():
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        for group in {a["group"] for a in annotations} - {0}:
            classes = {a["category_id"] for a in annotations if a["group"] == group}
            assert len(classes) == 1, f"image {image_id}, crowd {group}: classes {classes}"
        labels = torch.tensor([a["category_id"] for a in annotations])
        iou = box_iou(_xyxy(annotations), _xyxy(annotations))
        pairs = (iou > 0.5) & (labels[:, None] == labels[None, :])
        with_pair += bool(pairs.triu(diagonal=1).any())
    assert with_pair >= 0.3 * len(coco.getImgIds())


def test_dense_crowds_reach_the_densities_of_a_pedestrian_crowd(tmp_path):
    """Dense mode: most objects overlap another above IoU 0.5 (where Adaptive-NMS at N_t 0.5
    acts) and up to about 0.85; the translucent members stay whole, so each box is its shape's
    full extent, and the crowded mode's own output is untouched by the new mode."""
    path = generate(tmp_path / "dense", 40, seed=0, size=SIZE, crowded="dense")
    coco = _load(path)
    densities, translucent = [], 0
    for image_id in coco.getImgIds():
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        iou = box_iou(_xyxy(annotations), _xyxy(annotations))
        iou.fill_diagonal_(0)
        densities += iou.max(dim=1).values.tolist() if len(annotations) > 1 else [0.0]
        image = _rgb(path.parent / "images" / coco.imgs[image_id]["file_name"]).astype(float)
        for a in annotations:  # a member seen through another: two colours inside one annotated mask
            mask = mask_utils.decode(a["segmentation"]).astype(bool)
            translucent += a["group"] > 0 and np.linalg.norm(image[mask] - np.median(image[mask], axis=0), axis=1).max() > 60
    densities = np.array(densities)
    assert (densities > 0.5).mean() >= 0.5 and (densities > 0.7).mean() >= 0.15, np.histogram(densities, 10, (0, 1))
    assert translucent > 0
    assert json.loads(path.read_text())["info"]["detkit_synthetic"]["crowded"] == "dense"
    crowded = _files(generate(tmp_path / "crowded", 4, seed=0, size=SIZE, crowded=True).parent)
    assert crowded == _files(generate(tmp_path / "again", 4, seed=0, size=SIZE, crowded=True).parent)
    dense = _files(generate(tmp_path / "dense4", 4, seed=0, size=SIZE, crowded="dense").parent)
    assert crowded["annotations.json"] != dense["annotations.json"]


# --------------------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"images": 0}, "images"),
        ({"images": 2.5}, "images"),
        ({"size": 32}, "size"),
        ({"workers": 0}, "workers"),
        ({"seed": -1}, "seed"),
        ({"crowded": "yes"}, "crowded"),
    ],
)
def test_bad_arguments_name_the_argument(tmp_path, kwargs, name):
    arguments = {"images": 1, "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=name):
        generate(tmp_path, **arguments)
    assert not (tmp_path / "annotations.json").exists()


def test_an_existing_dataset_is_reused_or_refused_never_overwritten(tmp_path):
    path = generate(tmp_path, 2, seed=0, size=64)
    written = path.stat().st_mtime_ns
    assert generate(tmp_path, 2, seed=0, size=64) == path
    assert path.stat().st_mtime_ns == written

    with pytest.raises(ValueError, match="already exists"):
        generate(tmp_path, 2, seed=1, size=64)
    with pytest.raises(ValueError, match="already exists"):
        generate(tmp_path, 3, seed=0, size=64)
    assert path.stat().st_mtime_ns == written

    other = tmp_path / "other"
    other.mkdir()
    (other / "annotations.json").write_text('{"images": []}')
    with pytest.raises(ValueError, match="already exists"):
        generate(other, 2)


def _generate_in_step(out, barrier, errors):
    """generate() whose final rename of annotations.json waits until the other process is there
    too: both have written their files, and rename one after the other (what torchrun's two
    processes did when both generated the compare study's data at once)."""
    from detkit.data import synthetic

    real_replace = synthetic.os.replace

    def replace(source, target):
        if Path(target).name == "annotations.json":
            barrier.wait(timeout=60)
        real_replace(source, target)

    synthetic.os.replace = replace
    try:
        synthetic.generate(out, 4, seed=5, size=64)
    except Exception as error:
        errors.put(f"{type(error).__name__}: {error}")


def test_processes_generating_one_dataset_at_once_both_succeed(tmp_path):
    import multiprocessing

    context = multiprocessing.get_context("fork")
    barrier, errors = context.Barrier(2), context.Queue()
    workers = [context.Process(target=_generate_in_step, args=(tmp_path / "shared", barrier, errors))
               for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    failures = [errors.get() for _ in range(errors.qsize())] if not errors.empty() else []
    assert failures == [] and all(worker.exitcode == 0 for worker in workers)
    alone = generate(tmp_path / "alone", 4, seed=5, size=64)
    shared = tmp_path / "shared"
    assert (shared / "annotations.json").read_bytes() == alone.read_bytes()
    assert sorted(p.name for p in shared.rglob("*") if p.is_file()) == sorted(
        p.name for p in alone.parent.rglob("*") if p.is_file())  # no partial files left behind
    for image in (alone.parent / "images").iterdir():
        assert (shared / "images" / image.name).read_bytes() == image.read_bytes()
