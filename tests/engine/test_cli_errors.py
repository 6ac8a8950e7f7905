"""Bad configs and bad CLI input: one clear line, no traceback; eval and predict from a checkpoint."""

import json
from pathlib import Path

import cv2
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


def test_eval_errors_of_a_model_split_its_misses(trained, tmp_path):
    """With a model, --errors knows the raw candidates: every unmatched object is suppressed,
    not proposed, or taken by a detection that matched another, and they add up."""
    config, weights = trained
    result = invoke("eval", config, "--weights", weights, "--errors", "--json", tmp_path / "m.json")
    assert result.exit_code == 0, result.output
    assert "unmatched objects:" in result.output
    errors = json.loads((tmp_path / "m.json").read_text())["errors"]
    causes = errors["miss_causes"]
    assert causes["unmatched"] == causes["suppressed"] + causes["not_proposed"] + causes["taken"]
    objects = sum(row["objects"] for row in errors["crowding"])
    assert causes["unmatched"] == objects - sum(row["matched"] for row in errors["crowding"])


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


# ------------------------------------------------------------------ issue 14: what slipped through


def test_an_impossible_run_is_refused_before_anything_starts(write_config, tmp_path):
    for override in ("train.epochs=0", "train.epochs=-1", "train.max_iters=0", "train.time_limit_min=0"):
        result = invoke("train", write_config(), "--set", override, "--out", tmp_path / "run")
        assert result.exit_code == 2, (override, result.output)
        key = override.split("=")[0]
        assert f"{key} must be" in result.output and "Traceback" not in result.output
        assert not (tmp_path / "run").exists()  # no run folder, and no checkpoint path printed
    result = invoke("quickstart", "--minutes", 0, "--out", tmp_path / "q")
    assert result.exit_code == 2 and "--minutes must be greater than 0" in result.output


def test_numbers_in_scientific_notation_train(write_config, tmp_path):
    result = invoke("train", write_config(), "--set", "train.optimizer.lr=1e-3", "--set", "train.epochs=1",
                    "--set", "train.max_iters=1", "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["train"]["optimizer"]["lr"] == 0.001
    result = invoke("train", write_config(), "--set", "train.optimizer.lr=fast")
    assert result.exit_code == 2 and "train.optimizer.lr must be a number, got 'fast'" in result.output


def blank(path):
    path.write_bytes(b"")
    return path


def test_a_zero_byte_image_is_skipped_by_train_predict_and_show(write_config, tmp_path, shapes, trained):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(shapes / "train", data)
    empty = blank(sorted((data / "images").glob("*.jpg"))[0])
    result = invoke("train", write_config(), "--set", f"data.train.path={data / 'annotations.json'}",
                    "--set", "train.epochs=1", "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert "1 unreadable images skipped" in result.output and empty.name in result.output
    assert (tmp_path / "run" / "last.pth").is_file()

    config, weights = trained
    result = invoke("predict", config, data / "images", "--weights", weights, "--out", tmp_path / "pred",
                    "--score-threshold", "0.0")
    assert result.exit_code == 0, result.output
    assert f"skipped {empty}: empty file (0 bytes)" in result.output and "1 images skipped (unreadable" in result.output
    predictions = json.loads((tmp_path / "pred" / "predictions.json").read_text())
    assert {Path(p["file_name"]).name for p in predictions} == {p.name for p in (data / "images").glob("*.jpg")} - {
        empty.name}
    assert not (tmp_path / "pred" / empty.name).exists() and len(list((tmp_path / "pred").glob("*.jpg"))) == 5

    result = invoke("data", "show", data, "--out", tmp_path / "show")
    assert result.exit_code == 0, result.output
    assert "empty file (0 bytes)" in result.output and "drew 5 images" in result.output and "skipped 1" in result.output


def test_predict_mirrors_the_inputs_relative_paths(trained, tmp_path, shapes):
    import shutil

    config, weights = trained
    source = sorted((shapes / "val" / "images").glob("*.jpg"))
    for target in ("in/a/x.jpg", "in/b/x.jpg", "in/x.jpg"):
        (tmp_path / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source[0], tmp_path / target)
    result = invoke("predict", config, tmp_path / "in", "--weights", weights, "--out", tmp_path / "pred")
    assert result.exit_code == 0, result.output
    assert sorted(str(p.relative_to(tmp_path / "pred")) for p in (tmp_path / "pred").rglob("*.jpg")) == [
        "a/x.jpg", "b/x.jpg", "x.jpg"]  # 3 images in, 3 pictures out
    # two folders given: their shared parent is the root of the mirror
    result = invoke("predict", config, tmp_path / "in" / "a", tmp_path / "in" / "b", "--weights", weights,
                    "--out", tmp_path / "two")
    assert sorted(str(p.relative_to(tmp_path / "two")) for p in (tmp_path / "two").rglob("*.jpg")) == [
        "a/x.jpg", "b/x.jpg"]
    # an --out inside the input folder: its drawings are not predicted on again
    again = invoke("predict", config, tmp_path / "in", "--weights", weights, "--out", tmp_path / "in" / "pred")
    assert again.exit_code == 0 and "on 3 images" in again.output


def test_unwritable_outputs_and_bad_postprocess_yaml_are_one_line_errors(trained, write_config, tmp_path, shapes):
    config, weights = trained
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    impossible = a_file / "sub"  # a folder under a regular file: refused even for root
    cases = [
        ("train", write_config(), "--out", impossible),
        ("predict", config, shapes / "val" / "images", "--weights", weights, "--out", impossible),
        ("eval", config, "--weights", weights, "--json", impossible / "m.json"),
        ("eval", config, "--weights", weights, "--plots", impossible),
        ("data", "show", shapes / "val", "--out", impossible),
        ("data", "convert", shapes / "val", "--to", "yolo", "--out", impossible),
        ("data", "stats", shapes / "val", "--json", impossible / "s.json"),
        ("compare", "--budget", "smoke", "--out", impossible),
        ("quickstart", "--out", impossible),
    ]
    for args in cases:
        result = invoke(*args)
        assert result.exit_code == 2, (args, result.output)
        assert f"{impossible}: cannot write there" in result.output and "Traceback" not in result.output, args
    for text, message in (("{type: soft_nms, sigma: [0.5}", "--postprocess:1:"),
                          ("soft_nms", "must be a YAML mapping")):
        result = invoke("eval", config, "--weights", weights, "--postprocess", text)
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output, result.output


def test_data_stats_of_a_folder_of_splits_shows_each(tmp_path):
    from tests.conftest import shared_path

    coco128 = shared_path("coco128")
    result = invoke("data", "stats", coco128)
    assert result.exit_code == 0, result.output
    assert "holds several datasets; each is shown (choose one with --split)" in result.output
    assert "instances_train2017.json (coco)" in result.output and "images: 128" in result.output
    assert "val2017 (yolo): not shown" in result.output and "needs class names" in result.output
    names = Path(__file__).resolve().parents[2] / "configs" / "coco80.names"
    result = invoke("data", "stats", coco128, "--names", names)
    assert result.output.count("images: 128") == 3  # COCO train, YOLO train, YOLO val
    result = invoke("data", "stats", coco128, "--split", "nosuch")
    assert result.exit_code == 2 and "split 'nosuch'" in result.output and "train2017" in result.output


def test_bad_checkpoints_get_their_own_message(write_config, tmp_path):
    empty, noise = tmp_path / "empty.pth", tmp_path / "noise.pth"
    empty.write_bytes(b"")
    noise.write_bytes(bytes(range(256)) * 8)
    for path, message in ((empty, "is empty (0 bytes)"), (noise, "is not a torch checkpoint")):
        result = invoke("eval", write_config(), "--weights", path)
        assert result.exit_code == 2 and message in result.output, result.output
        assert "pickled code" not in result.output and "weights_only" not in result.output
