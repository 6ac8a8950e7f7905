"""Bad configs and bad CLI input: one clear line, no traceback; eval and predict from a checkpoint."""

import json
from pathlib import Path

import cv2
import pytest
import torch
import torchvision
import yaml
from click.testing import CliRunner

from detkit.cli import main


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_unknown_key_and_wrong_type(write_config):
    config = write_config()
    result = invoke("train", config, "--set", "train.optimzer.lr=0.1")
    assert result.exit_code == 2 and "train.optimzer: unknown option; did you mean 'optimizer'?" in result.output
    result = invoke("train", config, "--set", "data.batch_size=two")
    assert result.exit_code == 2 and "data.batch_size must be a number, got 'two'" in result.output
    assert "Traceback" not in result.output


def test_missing_dataset_path(write_config, tmp_path):
    result = invoke("train", write_config(), "--set", f"data.train.path={tmp_path / 'nowhere.json'}")
    assert result.exit_code == 2 and "data.train.path:" in result.output and "does not exist" in result.output


def test_empty_dataset(write_config, tmp_path):
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}]}))
    result = invoke("train", write_config(), "--set", f"data.train.path={empty}")
    assert result.exit_code == 2 and "data.train: the dataset" in result.output and "has no images" in result.output


def test_weights_of_another_architecture_name_the_keys(write_config, tmp_path):
    import torchvision

    other = tmp_path / "other.pth"
    torch.save(torchvision.models.resnet18().state_dict(), other)
    result = invoke("eval", write_config(), "--weights", other)
    assert result.exit_code == 2 and "the weights do not fit this model" in result.output
    assert "missing: backbone.conv1.weight" in result.output


def test_checkpoint_with_pickled_code_is_refused(write_config, tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    evil = tmp_path / "evil.pth"
    torch.save({"model": Evil()}, evil)
    result = invoke("eval", write_config(), "--weights", evil)
    assert result.exit_code == 2 and "refusing to load" in result.output and "pickled code" in result.output
    assert "this must never run" not in result.output


def test_eval_predict_and_postprocess_from_a_checkpoint(trained, tmp_path, shapes):
    config, weights = trained
    result = invoke("eval", config, "--weights", weights, "--postprocess", "{type: soft_nms, sigma: 0.5}",
                    "--json", tmp_path / "m.json")
    assert result.exit_code == 0, result.output
    assert "Average Precision" in result.output and json.loads((tmp_path / "m.json").read_text())["AP"] >= 0
    result = invoke("predict", config, shapes / "val" / "images", "--weights", weights, "--out", tmp_path / "pred",
                    "--score-threshold", "0.0")
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "pred").glob("*.jpg"))) == 4
    predictions = json.loads((tmp_path / "pred" / "predictions.json").read_text())
    assert all({"image_id", "file_name", "category_id", "bbox", "score"} <= p.keys() for p in predictions)


def largest_same_class_iou(predictions) -> float:
    """The highest IoU between two detections of one class on one image (torchvision's box_iou)."""
    groups = {}
    for p in predictions:
        x, y, w, h = p["bbox"]
        groups.setdefault((p["image_id"], p["category_id"]), []).append([x, y, x + w, y + h])
    largest = 0.0
    for boxes in groups.values():
        iou = torchvision.ops.box_iou(torch.tensor(boxes), torch.tensor(boxes)).fill_diagonal_(0)
        largest = max(largest, iou.max().item())
    return largest


def test_set_postprocess_changes_the_detections(trained, tmp_path, shapes):
    config, weights = trained
    stats, predictions = {}, {}
    for kind in ("nms", "soft_nms"):
        override = f"model.postprocess.type={kind}"
        result = invoke("eval", config, "--weights", weights, "--set", override, "--json", tmp_path / f"{kind}.json")
        assert result.exit_code == 0, result.output
        assert "Average Precision" in result.output
        stats[kind] = json.loads((tmp_path / f"{kind}.json").read_text())
        result = invoke("predict", config, shapes / "val" / "images", "--weights", weights, "--out", tmp_path / kind,
                        "--set", override, "--score-threshold", "0.0")
        assert result.exit_code == 0, result.output
        predictions[kind] = json.loads((tmp_path / kind / "predictions.json").read_text())
    assert stats["nms"] != stats["soft_nms"]
    # NMS (IoU threshold 0.5) leaves no two boxes of a class overlapping more; Soft-NMS only lowers
    # the scores of overlapping boxes, so some such pairs stay
    assert 0 < largest_same_class_iou(predictions["nms"]) <= 0.5
    assert largest_same_class_iou(predictions["soft_nms"]) > 0.5


def test_predict_on_images_of_mixed_sizes(trained, tmp_path, shapes):
    config, weights = trained
    folder = tmp_path / "mixed"
    folder.mkdir()
    sizes = {"wide.png": (96, 128), "tall.jpg": (150, 90)}  # (height, width)
    source = sorted((shapes / "val" / "images").glob("*.jpg"))[0]
    for name, (height, width) in sizes.items():
        cv2.imwrite(str(folder / name), cv2.resize(cv2.imread(str(source)), (width, height)))
    result = invoke("predict", config, folder, "--weights", weights, "--out", tmp_path / "pred",
                    "--score-threshold", "0.0")
    assert result.exit_code == 0, result.output
    for name, size in sizes.items():
        assert cv2.imread(str(tmp_path / "pred" / name)).shape[:2] == size  # the input's name, suffix kept
    predictions = json.loads((tmp_path / "pred" / "predictions.json").read_text())
    assert {Path(p["file_name"]).name for p in predictions} == set(sizes)
    reach = {name: [0.0, 0.0] for name in sizes}  # the furthest right and lowest box edge per image
    for p in predictions:
        name = Path(p["file_name"]).name
        height, width = sizes[name]
        x, y, w, h = p["bbox"]
        assert x >= 0 and y >= 0 and w > 0 and h > 0, p
        assert x + w <= width + 1e-3 and y + h <= height + 1e-3, (name, p["bbox"])
        reach[name] = [max(reach[name][0], x + w), max(reach[name][1], y + h)]
    # each image's boxes use its own size: they reach past the other image's width or height
    assert reach["wide.png"][0] > sizes["tall.jpg"][1] and reach["tall.jpg"][1] > sizes["wide.png"][0]


def test_help_reads_like_a_manual():
    result = invoke("--help")
    for command in ("train", "eval", "predict", "quickstart", "data"):
        assert command in result.output
    assert "--resume" in invoke("train", "--help").output
