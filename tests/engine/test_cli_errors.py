"""Bad configs and bad CLI input: one clear line, no traceback."""

import json

import pytest
import torch
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


def test_eval_predict_and_postprocess_from_a_checkpoint(write_config, tmp_path, shapes):
    config = write_config(epochs=1, out=str(tmp_path / "run"))
    assert invoke("train", config).exit_code == 0
    weights = tmp_path / "run" / "last.pth"
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


def test_help_reads_like_a_manual():
    result = invoke("--help")
    for command in ("train", "eval", "predict", "quickstart", "data"):
        assert command in result.output
    assert "--resume" in invoke("train", "--help").output
