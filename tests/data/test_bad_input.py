"""Bad data: each case is an error naming what and where, or a counted, reported skip
(the policy table is in docs/data.md)."""

import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from detkit.data import DetectionDataset, make_loader, open_dataset


def write_image(path, size=(64, 48)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), 127, np.uint8)).save(path, quality=95)


def coco_dataset(tmp_path, annotations, images=None, categories=None):
    """A COCO json with two 64x48 images, 1.jpg and 2.jpg, in tmp_path/images."""
    for name in ("1.jpg", "2.jpg"):
        write_image(tmp_path / "images" / name)
    data = {
        "images": images or [{"id": 1, "file_name": "1.jpg", "width": 64, "height": 48},
                             {"id": 2, "file_name": "2.jpg", "width": 64, "height": 48}],
        "annotations": annotations,
        "categories": categories or [{"id": 1, "name": "a"}, {"id": 7, "name": "b"}],
    }
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(data))
    return path


def ann(i, bbox, image_id=1, category_id=1, **extra):
    return {"id": i, "image_id": image_id, "category_id": category_id, "bbox": bbox, "iscrowd": 0, **extra}


def test_malformed_json_names_line_and_column(tmp_path):
    path = tmp_path / "annotations.json"
    path.write_text('{"images": [\n  {"id": 1,, "file_name": "x.jpg"}\n]}')
    with pytest.raises(ValueError, match=r"annotations.json:2:12: malformed json: Expecting property name"):
        open_dataset(path)


def test_unknown_category_names_the_annotation(tmp_path):
    path = coco_dataset(tmp_path, [ann(1, [1, 1, 5, 5]), ann(17, [1, 1, 5, 5], category_id=3)])
    with pytest.raises(ValueError, match=r"annotation 17: unknown category_id 3 \(known ids: 1..7\)"):
        open_dataset(path)


def test_bad_bbox_and_unknown_image(tmp_path):
    with pytest.raises(ValueError, match=r"annotation 4: bbox must be \[x, y, width, height\]"):
        open_dataset(coco_dataset(tmp_path, [ann(4, [1, 2, 3])]))
    with pytest.raises(ValueError, match=r"annotation 5: unknown image_id 9"):
        open_dataset(coco_dataset(tmp_path, [ann(5, [1, 2, 3, 4], image_id=9)]))


def test_degenerate_boxes_are_skipped_and_counted(tmp_path):
    anns = [
        ann(1, [1, 1, 10, 10]),
        ann(2, [5, 5, 0, 10]),  # zero width
        ann(3, [5, 5, 4, -2]),  # negative height
        ann(4, [60, 40, 20, 20]),  # reaches outside: clipped to (60, 40, 64, 48)
        ann(5, [100, 100, 5, 5]),  # entirely outside
        ann(6, [63.5, 1, 1.2, 5]),  # overhang under a pixel: clipped quietly
    ]
    index = open_dataset(coco_dataset(tmp_path, anns))
    record = index.records[0]
    assert record.annotation_ids.tolist() == [1, 4, 6]
    assert record.boxes[1].tolist() == [60, 40, 64, 48]
    assert dict(index.issues.counts) == {"empty box": 2, "box clipped to image": 1, "box outside image": 1}
    assert "annotation 2 of image 1" in index.issues.summary()


def test_nan_coordinate_is_skipped_and_counted(tmp_path):
    path = coco_dataset(tmp_path, [ann(1, [1, float("nan"), 10, 10]), ann(2, [1, 1, 10, 10])])
    assert "NaN" in path.read_text()  # json.dumps writes NaN, json.load reads it back
    index = open_dataset(path)
    assert index.records[0].annotation_ids.tolist() == [2]
    assert index.issues.counts["non-finite box"] == 1


def test_missing_image_is_skipped_and_counted(tmp_path):
    path = coco_dataset(tmp_path, [ann(1, [1, 1, 10, 10], image_id=2)])
    (tmp_path / "images" / "1.jpg").unlink()
    index = open_dataset(path, image_root=tmp_path / "images")
    assert [r.image_id for r in index.records] == [2]
    assert index.issues.counts["missing image"] == 1


def test_path_escaping_the_root_is_refused(tmp_path):
    images = [{"id": 1, "file_name": "../../etc/passwd", "width": 64, "height": 48}]
    path = coco_dataset(tmp_path, [], images=images)
    with pytest.raises(ValueError, match=r"image path '../../etc/passwd' escapes the dataset root"):
        open_dataset(path, image_root=tmp_path / "images")


def test_corrupt_and_truncated_images_are_reported_by_the_loader(tmp_path):
    path = coco_dataset(tmp_path, [ann(1, [1, 1, 10, 10], image_id=2)])
    (tmp_path / "images" / "1.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg at all")
    index = open_dataset(path)
    write_image(tmp_path / "images" / "3.jpg", (256, 256))
    data = (tmp_path / "images" / "3.jpg").read_bytes()
    (tmp_path / "images" / "2.jpg").write_bytes(data[: len(data) // 2])  # truncated
    dataset = DetectionDataset(index)
    assert dataset[0] is None and dataset[1] is None
    batch = next(iter(make_loader(dataset, batch_size=2, shuffle=False)))
    assert len(batch) == 0 and batch.skipped == [0, 1]


def yolo_dataset(tmp_path, lines, names=("a", "b")):
    write_image(tmp_path / "images" / "train" / "x.jpg")
    (tmp_path / "labels" / "train").mkdir(parents=True)
    (tmp_path / "labels" / "train" / "x.txt").write_text("\n".join(lines))
    (tmp_path / "data.yaml").write_text(yaml.safe_dump({"train": "images/train", "names": list(names)}))
    return tmp_path / "data.yaml"


def test_yolo_wrong_column_count_names_file_and_line(tmp_path):
    path = yolo_dataset(tmp_path, ["0 0.5 0.5 0.2 0.2", "1 0.5 0.5 0.2"])
    with pytest.raises(ValueError, match=r"x.txt:2: expected 5 columns \(class cx cy w h\).*got 4"):
        open_dataset(path)


def test_yolo_class_out_of_range(tmp_path):
    path = yolo_dataset(tmp_path, ["0 0.5 0.5 0.2 0.2", "", "2 0.5 0.5 0.2 0.2"])
    with pytest.raises(ValueError, match=r"x.txt:3: class 2 is out of range: there are 2 classes \(0..1\)"):
        open_dataset(path)


def test_yolo_polygons_and_negatives(tmp_path):
    path = yolo_dataset(tmp_path, ["1 0.1 0.2 0.5 0.2 0.3 0.6"])
    record = open_dataset(path).records[0]
    assert record.labels.tolist() == [1]
    assert np.allclose(record.boxes, [[0.1 * 64, 0.2 * 48, 0.5 * 64, 0.6 * 48]])


def test_voc_errors(tmp_path):
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "Annotations" / "a.xml").write_text("<annotation><object><name>dog</name></object")
    with pytest.raises(ValueError, match=r"a.xml:1:\d+: malformed xml"):
        open_dataset(tmp_path)
    (tmp_path / "Annotations" / "a.xml").write_text(
        "<annotation><filename>a.jpg</filename><object><name>dog</name>"
        "<bndbox><xmin>1</xmin><ymin>x</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object></annotation>")
    with pytest.raises(ValueError, match=r"a.xml object 1: <ymin> is not a number: 'x'"):
        open_dataset(tmp_path)


def test_a_bad_sample_does_not_stop_training_iteration(tmp_path):
    path = coco_dataset(tmp_path, [ann(1, [1, 1, 10, 10]), ann(2, [3, 3, 10, 10], image_id=2)])
    (tmp_path / "images" / "2.jpg").write_bytes(b"garbage")
    loader = make_loader(DetectionDataset(open_dataset(path)), batch_size=1, shuffle=False, workers=1)
    batches = list(loader)
    assert [len(b) for b in batches] == [1, 0] and batches[1].skipped == [1]
    assert torch.equal(batches[0].targets[0]["boxes"], torch.tensor([[1.0, 1, 11, 11]]))


def test_an_empty_image_file_is_skipped_like_a_corrupt_one(tmp_path):
    from detkit.data import read_image

    path = coco_dataset(tmp_path, [ann(1, [1, 1, 10, 10]), ann(2, [3, 3, 10, 10], image_id=2)])
    (tmp_path / "images" / "1.jpg").write_bytes(b"")  # cv2.imdecode raises cv2.error on an empty buffer
    with pytest.raises(OSError, match=r"1.jpg: empty file \(0 bytes\)"):
        read_image(tmp_path / "images" / "1.jpg")
    index = open_dataset(path)
    assert len(index.records) == 2  # the header is unreadable: the annotated size stays, decoding skips it
    batch = next(iter(make_loader(DetectionDataset(index), batch_size=2, shuffle=False)))
    assert len(batch) == 1 and batch.skipped == [0]


def test_a_wrong_annotated_size_is_reported_and_the_real_one_used(tmp_path):
    # the images are 64x48; the json says 32x24, so the box at x 40..60 would be dropped as "outside"
    images = [{"id": 1, "file_name": "1.jpg", "width": 32, "height": 24},
              {"id": 2, "file_name": "2.jpg", "width": 64, "height": 48}]
    index = open_dataset(coco_dataset(tmp_path, [ann(1, [40, 30, 20, 10]), ann(2, [1, 1, 5, 5], image_id=2)],
                                      images=images))
    first = index.records[0]
    assert (first.width, first.height) == (64, 48) and first.boxes.tolist() == [[40, 30, 60, 40]]
    assert dict(index.issues.counts) == {"size differs from annotation": 1}
    assert "image 1" in index.issues.summary() and "annotated 32x24, file 64x48" in index.issues.summary()


def test_an_absolute_file_name_says_what_to_do(tmp_path):
    write_image(tmp_path / "photos" / "a.jpg")
    images = [{"id": 1, "file_name": str(tmp_path / "photos" / "a.jpg"), "width": 64, "height": 48}]
    path = coco_dataset(tmp_path, [], images=images)
    with pytest.raises(ValueError) as error:
        open_dataset(path)
    message = str(error.value)
    assert "absolute file_name" in message
    assert f"pass that folder as image_root (here, {tmp_path / 'photos'})" in message
    # never a root that does not exist
    assert "images/annotations" not in message and "escapes the dataset root" not in message
    with pytest.raises(ValueError, match=r"image 1: image path '.*a.jpg' is absolute: image paths are relative"):
        open_dataset(path, image_root=tmp_path / "photos")


def test_a_folder_of_several_splits_names_them(tmp_path):
    from tests.conftest import shared_path

    coco128 = shared_path("coco128")
    with pytest.raises(ValueError) as error:
        open_dataset(coco128)
    message = str(error.value)
    assert "choose one with --split" in message and "cannot tell the dataset format" not in message
    assert "train2017 (COCO json annotations/instances_train2017.json; YOLO labels images/train2017)" in message
    assert "val2017 (YOLO labels images/val2017)" in message
    with pytest.raises(ValueError, match=r"split 'nosuch': .*coco128 has no such split \(splits: train2017"):
        open_dataset(coco128, split="nosuch")
    with pytest.raises(ValueError, match=r"split 'val': .*instances_train2017.json is a COCO json, which is one split"):
        open_dataset(coco128 / "annotations" / "instances_train2017.json", split="val")
    assert open_dataset(coco128, split="train2017").format == "coco"


def test_a_split_a_coco_folder_does_not_have_is_an_error(tmp_path):
    path = coco_dataset(tmp_path, [ann(1, [1, 1, 10, 10])])
    with pytest.raises(ValueError, match=r"split 'val': .* has no such split \(splits: one split: annotations.json\)"):
        open_dataset(path.parent, split="val")


def test_yolo_class_written_as_a_float(tmp_path):
    # Ultralytics reads the class column as a float and takes int(): "23.0" is class 23
    path = yolo_dataset(tmp_path, ["1.0 0.5 0.5 0.2 0.2"])
    assert open_dataset(path).records[0].labels.tolist() == [1]
    (tmp_path / "labels" / "train" / "x.txt").write_text("1.5 0.5 0.5 0.2 0.2\n")
    with pytest.raises(ValueError, match=r"x.txt:1: the class \(first column\) must be a whole number, got '1.5'"):
        open_dataset(path)
    (tmp_path / "labels" / "train" / "x.txt").write_text("1 0.5 half 0.2 0.2\n")
    with pytest.raises(ValueError, match=r"x.txt:1: coordinates must be numbers, got 'half'"):
        open_dataset(path)
