"""One way from a config to a ready run: ``detkit.engine.prepare``, and every command through it."""

import pytest
import torch
import yaml
from click.testing import CliRunner

import detkit.engine.run as run_module
from detkit.cli import main
from detkit.config import load_config
from detkit.engine import prepare
from tests.engine.conftest import tiny_config

INJECTED = "injected: prepare cannot pick a device"


@pytest.fixture
def broken_prepare(monkeypatch):
    """prepare() fails at its first step; any command that reaches it reports this failure."""
    calls = []

    def fail(*args, **kwargs):
        calls.append(args)
        raise ValueError(INJECTED)

    monkeypatch.setattr(run_module, "pick_device", fail)
    return calls


@pytest.mark.parametrize("command", ["train", "eval", "predict", "quickstart", "compare"])
def test_every_command_goes_through_prepare(command, broken_prepare, trained, shapes, tmp_path):
    config, weights = trained
    args = {
        "train": ["train", config, "--out", tmp_path / "run"],
        "eval": ["eval", config, "--weights", weights],
        "predict": ["predict", config, shapes / "val" / "images", "--weights", weights, "--out", tmp_path / "pred"],
        "quickstart": ["quickstart", "--out", tmp_path / "qs", "--set", f"data.synthetic.out={shapes}"],
        "compare": ["compare", "--budget", "smoke", "--suite", "focal", "--out", tmp_path / "cmp",
                    "--runs", tmp_path / "runs", "--set", f"datasets.shapes.synthetic.out={tmp_path / 'data'}"],
    }[command]
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 2, result.output
    assert INJECTED in result.output and "Traceback" not in result.output
    assert broken_prepare, "the command failed before it reached prepare"


def test_a_fresh_run_has_its_data_and_a_model_from_the_seed(shapes, tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_config(shapes)))
    config = load_config(path)
    first, second = prepare(config), prepare(config)
    assert first.class_names == second.class_names and len(first.class_names) == first.config["model"]["num_classes"]
    assert first.config["model"]["class_names"] == first.class_names
    assert len(first.train_set) == 6 and len(first.val_set) == 4
    assert first.device == "cpu" and first.model.training
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values()):
        assert torch.equal(a, b)  # the initial weights come from train.seed alone
    other = prepare({**config, "train": {**config["train"], "seed": config["train"]["seed"] + 1}})
    assert any(not torch.equal(a, b) for a, b in zip(first.model.state_dict().values(),
                                                      other.model.state_dict().values()))


def test_weights_load_in_eval_mode_and_name_the_classes_without_data(trained):
    config, weights = trained
    cfg = load_config(config)
    cfg["model"].pop("num_classes", None)
    run = prepare(cfg, weights=weights, data=False)
    assert run.train_set is None and run.val_set is None and not run.model.training
    saved = torch.load(weights, weights_only=True)
    assert run.class_names == saved["config"]["model"]["class_names"]
    for key, value in run.model.state_dict().items():
        assert torch.equal(value, saved["model"][key])
    data_only = prepare(cfg, model=False)
    assert data_only.model is None and data_only.class_names == run.class_names


@pytest.mark.parametrize("key,option", [("eval_transforms", {"letterbox": 96}),
                                        ("train_transforms", {"resize": [96, 96]})])
def test_the_input_size_is_set_only_by_the_model_transform(shapes, tmp_path, key, option):
    config = tiny_config(shapes)
    config["data"][key] = {**config["data"].get(key, {}), **option}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ValueError, match=rf"data.{key}.{next(iter(option))}: a run's input size is set once, "
                                         r"in model.transform"):
        prepare(load_config(path), model=False)
