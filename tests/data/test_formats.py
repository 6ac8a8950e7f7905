"""Reading COCO, YOLO and VOC, and converting between them, on coco128 and synthetic data."""

import json

import numpy as np
import pytest

from detkit.data import convert, open_dataset
from detkit.data.synthetic import generate
from tests.conftest import shared_path


@pytest.fixture(scope="module")
def coco128_train():
    return open_dataset(shared_path("coco128", "annotations", "instances_train2017.json"))


def _by_name(index):
    return {r.file_name: r for r in index.records}


def _same_boxes(a, b, tol=1e-3):
    """Same boxes (within tol px) and labels, up to order: each box of a has its own match in b."""
    assert len(a.boxes) == len(b.boxes)
    if not len(a.boxes):
        return
    distance = np.abs(a.boxes[:, None, :] - b.boxes[None, :, :]).max(axis=2)
    distance[a.labels[:, None] != b.labels[None, :]] = np.inf
    match = distance.argmin(axis=1)
    assert len(set(match.tolist())) == len(match)
    assert distance[np.arange(len(match)), match].max() <= tol


def test_coco128_json_and_yolo_labels_agree(coco128_train):
    yolo = open_dataset(shared_path("coco128", "images", "train2017"), names=coco128_train.class_names)
    assert coco128_train.format == "coco" and yolo.format == "yolo"
    assert len(coco128_train.records) == len(yolo.records) == 128
    coco = _by_name(coco128_train)
    for record in yolo.records:
        expected = coco[record.file_name]
        crowd = expected.iscrowd
        assert (record.width, record.height) == (expected.width, expected.height)
        expected_solid = type(expected)(**{**expected.__dict__, "boxes": expected.boxes[~crowd],
                                           "labels": expected.labels[~crowd]})
        _same_boxes(record, expected_solid)
    assert sum(r.iscrowd.sum() for r in coco128_train.records) == 10
    assert sum(len(r.boxes) == 0 for r in coco128_train.records) == 2  # the two negatives


def test_coco128_val_from_yolo_labels(coco128_train):
    val = open_dataset(shared_path("coco128"), split="val2017", names=coco128_train.class_names)
    assert val.format == "yolo" and len(val.records) == 128
    assert sum(len(r.boxes) for r in val.records) > 0
    for r in val.records:
        assert (r.boxes[:, 2:] > r.boxes[:, :2]).all()
        assert (r.boxes >= 0).all() and (r.boxes[:, [0, 2]] <= r.width).all() and (r.boxes[:, [1, 3]] <= r.height).all()


def test_coco_category_ids_and_crowd(coco128_train):
    assert coco128_train.category_ids[:3] == [1, 2, 3] and coco128_train.category_ids[-1] == 90
    assert len(coco128_train.categories) == 80
    raw = {a["id"]: a for a in coco128_train.coco["annotations"]}
    for r in coco128_train.records:
        for box, label, crowd, ann_id in zip(r.boxes, r.labels, r.iscrowd, r.annotation_ids):
            a = raw[ann_id]
            assert coco128_train.category_ids[label] == a["category_id"] and crowd == bool(a["iscrowd"])
            assert np.allclose(box, [a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                                     a["bbox"][1] + a["bbox"][3]], atol=1.0)  # (sub-pixel overhangs are clipped)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    generate(out, 12, seed=3)
    return open_dataset(out)


@pytest.mark.parametrize("via", ["yolo", "voc"])
def test_round_trips_keep_boxes_and_categories(tmp_path, coco128_train, via):
    src = coco128_train
    middle = convert(src, via, tmp_path / via, split="train2017", images="link")
    back_index = open_dataset(middle, split="train2017")
    again = open_dataset(convert(back_index, "coco", tmp_path / "coco", images="link"))
    assert [(c.id, c.name) for c in again.categories] == [(c.id, c.name) for c in src.categories]
    # every image comes back, the two negatives included, and no box is lost on the way
    assert sorted(r.file_name for r in again.records) == sorted(image["file_name"] for image in src.coco["images"])
    annotations = src.coco["annotations"]
    kept = [a for a in annotations if not (via == "yolo" and a["iscrowd"])]  # YOLO has no crowd regions
    assert sum(len(r.boxes) for r in again.records) == len(kept)
    original = _by_name(src)
    for record in again.records:
        expected = original[record.file_name]
        if via == "yolo":  # YOLO has no crowd regions
            keep = ~expected.iscrowd
            expected = type(expected)(**{**expected.__dict__, "boxes": expected.boxes[keep],
                                         "labels": expected.labels[keep], "iscrowd": expected.iscrowd[keep]})
        _same_boxes(record, expected)
        if via == "voc":  # crowd regions travel as "difficult"
            assert record.iscrowd.sum() == expected.iscrowd.sum()


def test_synthetic_round_trip_through_both(tmp_path, synthetic):
    yolo = open_dataset(convert(synthetic, "yolo", tmp_path / "y", images="link"))
    voc = open_dataset(convert(yolo, "voc", tmp_path / "v", images="link"))
    final = open_dataset(convert(voc, "coco", tmp_path / "c", images="link"))
    assert final.class_names == synthetic.class_names
    assert [r.file_name for r in final.records] == [image["file_name"] for image in synthetic.coco["images"]]
    assert sum(len(r.boxes) for r in final.records) == len(synthetic.coco["annotations"])
    for a, b in zip(synthetic.records, final.records):
        _same_boxes(a, b)


def test_format_detection(tmp_path, synthetic):
    convert(synthetic, "yolo", tmp_path / "y", images="link")
    convert(synthetic, "voc", tmp_path / "v", images="link")
    assert open_dataset(tmp_path / "y").format == "yolo"  # folder with data.yaml
    assert open_dataset(tmp_path / "y" / "images" / "train", names=synthetic.class_names).format == "yolo"
    assert open_dataset(tmp_path / "v").format == "voc"
    with pytest.raises(ValueError, match="cannot tell the dataset format"):
        open_dataset(tmp_path)


def test_images_without_annotations_are_negatives(tmp_path, synthetic):
    data = json.loads(json.dumps(synthetic.coco))
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != 1]
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(data))
    index = open_dataset(path, image_root=synthetic.root)
    assert len(index.records) == 12 and len(index.records[0].boxes) == 0


def test_coco_to_coco_keeps_every_field(tmp_path, coco128_train):
    source = coco128_train.coco
    written = json.loads(convert(coco128_train, "coco", tmp_path / "copy", images="link").read_text())
    assert written["info"] == source["info"] and written["licenses"] == source["licenses"]
    assert written["categories"] == sorted(source["categories"], key=lambda c: c["id"])
    images = {image["id"]: image for image in source["images"]}
    assert all(image == images[image["id"]] for image in written["images"])  # coco_url, license, ...
    annotations = {a["id"]: a for a in source["annotations"]}
    assert len(written["annotations"]) == len(annotations)
    for a in written["annotations"]:
        original = annotations[a["id"]]
        assert a["segmentation"] == original["segmentation"] and a["area"] == original["area"]
        assert a["bbox"] == pytest.approx(original["bbox"], abs=1.0)  # sub-pixel overhangs clipped on reading


def test_convert_refuses_to_overwrite_its_source(tmp_path, coco128_train):
    from click.testing import CliRunner

    from detkit.cli import main

    folder = tmp_path / "ds"
    convert(coco128_train, "coco", folder, images="link")
    before = (folder / "annotations.json").read_bytes()
    result = CliRunner().invoke(main, ["data", "convert", str(folder), "--to", "coco", "--out", str(folder)])
    assert result.exit_code == 2 and "would overwrite the source's own annotations" in result.output
    assert "--force" in result.output and (folder / "annotations.json").read_bytes() == before
    yolo = convert(coco128_train, "yolo", tmp_path / "y", split="train2017", images="link")
    labels = sorted((tmp_path / "y" / "labels" / "train2017").glob("*.txt"))
    result = CliRunner().invoke(main, ["data", "convert", str(yolo), "--split", "train2017", "--to", "yolo",
                                       "--out", str(tmp_path / "y")])
    assert result.exit_code == 2 and "would overwrite the source's own annotations" in result.output
    assert sorted((tmp_path / "y" / "labels" / "train2017").glob("*.txt")) == labels
    # another split in the same YOLO folder is not the source's annotations: it may be written there
    other = CliRunner().invoke(main, ["data", "convert", str(folder), "--to", "yolo", "--out", str(tmp_path / "y"),
                                      "--images", "link"])
    assert other.exit_code == 0, other.output
    assert sorted((tmp_path / "y" / "labels" / "train2017").glob("*.txt")) == labels
    forced = CliRunner().invoke(main, ["data", "convert", str(folder), "--to", "coco", "--out", str(folder),
                                       "--force"])
    assert forced.exit_code == 0, forced.output
    assert json.loads((folder / "annotations.json").read_text()) == json.loads(before)  # nothing lost
