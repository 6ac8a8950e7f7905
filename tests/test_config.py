"""Run configs: base inheritance, overrides, defaults, and errors that name the key."""

import pytest
import yaml

from detkit.config import load_config, parse_override, save_config


def write(path, data):
    path.write_text(yaml.safe_dump(data))
    return path


MODEL = {"type": "faster_rcnn", "num_classes": 3}


def test_base_overrides_and_defaults(tmp_path):
    write(tmp_path / "base.yaml", {"model": MODEL, "train": {"epochs": 3, "optimizer": {"type": "sgd", "lr": 0.1}}})
    child = write(tmp_path / "child.yaml", {"base": "base.yaml", "train": {"optimizer": {"lr": 0.05}}})
    config = load_config(child, ["train.epochs=5", "data.batch_size=8", "model.neck=null"])
    assert config["name"] == "child"
    assert config["train"]["epochs"] == 5 and config["data"]["batch_size"] == 8
    assert config["train"]["optimizer"] == {"type": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4}
    assert config["model"]["neck"] is None and config["model"]["num_classes"] == 3
    assert config["data"]["workers"] == 2  # a default
    save_config(config, tmp_path / "resolved.yaml")
    assert load_config(tmp_path / "resolved.yaml") == config


def test_a_part_of_another_type_replaces_the_base_part(tmp_path):
    resnet = {"type": "resnet", "depth": 18, "norm": "bn"}
    write(tmp_path / "base.yaml", {"model": {**MODEL, "backbone": resnet}})
    child = write(tmp_path / "child.yaml", {"base": "base.yaml",
                                            "model": {"backbone": {"type": "efficientnet", "variant": "b0"}}})
    assert load_config(child)["model"]["backbone"] == {"type": "efficientnet", "variant": "b0"}
    same_type = load_config(tmp_path / "base.yaml", ["model.backbone={type: resnet, depth: 34}"])
    assert same_type["model"]["backbone"] == {**resnet, "depth": 34}  # same type: merged key by key
    untyped = load_config(tmp_path / "base.yaml", ["model.backbone.depth=50"])
    assert untyped["model"]["backbone"] == {**resnet, "depth": 50}


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["train.epoch=3"], r"train.epoch: unknown option; did you mean 'epochs'\?"),
        (["trian.epochs=3"], r"config.trian: unknown section; did you mean 'train'\?"),
        (["train.epochs=many"], r"train.epochs must be a number, got 'many'"),
        (["train.epochs=2.5"], r"train.epochs must be a whole number, got 2.5"),
        (["train.amp=yes please"], r"train.amp must be true or false"),
        (["data.batch_size"], r"--set 'data.batch_size': expected key.subkey=value"),
        (["data=[1, 2"], r"the value is not valid YAML"),
    ],
)
def test_errors_name_the_key(tmp_path, overrides, message):
    path = write(tmp_path / "c.yaml", {"model": MODEL})
    with pytest.raises(ValueError, match=message):
        load_config(path, overrides)


def test_file_errors(tmp_path):
    with pytest.raises(ValueError, match="missing.yaml: config file does not exist"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("model:\n  type: [faster_rcnn\n")
    with pytest.raises(ValueError, match=r"bad.yaml:3:1: malformed YAML"):
        load_config(tmp_path / "bad.yaml")
    write(tmp_path / "a.yaml", {"base": "b.yaml", "model": MODEL})
    write(tmp_path / "b.yaml", {"base": "c.yaml"})
    with pytest.raises(ValueError, match="a base config cannot have a base of its own"):
        load_config(tmp_path / "a.yaml")
    write(tmp_path / "nomodel.yaml", {"train": {}})
    with pytest.raises(ValueError, match="config.model: a model mapping is required"):
        load_config(tmp_path / "nomodel.yaml")


def test_parse_override():
    assert parse_override("a.b.c=[1, 2]") == {"a": {"b": {"c": [1, 2]}}}
    assert parse_override("x={type: soft_nms}") == {"x": {"type": "soft_nms"}}


def test_every_shipped_config_loads_and_builds():
    from pathlib import Path

    from detkit.models import build_model

    folder = Path(__file__).resolve().parent.parent / "configs"
    paths = sorted(folder.glob("*.yaml"))
    assert paths
    for path in paths:
        config = load_config(path)
        model = config["model"]
        model.setdefault("num_classes", 3)
        if "backbone" in model and model["backbone"].get("weights"):
            model["backbone"] = {**model["backbone"], "weights": None}  # no downloads in tests
        build_model(model)


def test_scientific_notation_is_a_number_in_files_and_overrides(tmp_path):
    # PyYAML (YAML 1.1) reads 1e-3 as the string '1e-3'; detkit's configs read it as YAML 1.2 does
    path = tmp_path / "c.yaml"
    path.write_text("model: {type: faster_rcnn, num_classes: 3, rpn: {score_threshold: 1e-3}}\n"
                    "train:\n  optimizer: {type: sgd, lr: 2e-2, weight_decay: 5E-4}\n  epochs: 1e1\n")
    assert yaml.safe_load("lr: 1e-3") == {"lr": "1e-3"}  # the behaviour this guards against
    config = load_config(path, ["train.schedule.warmup_factor=1e-3"])
    assert config["train"]["optimizer"] == {"type": "sgd", "lr": 0.02, "momentum": 0.9, "weight_decay": 0.0005}
    assert config["train"]["schedule"]["warmup_factor"] == 0.001
    assert config["train"]["epochs"] == 10 and isinstance(config["train"]["epochs"], int)
    assert config["model"]["rpn"]["score_threshold"] == 0.001
    assert load_config(path, ["train.optimizer.lr=1e-3"])["train"]["optimizer"]["lr"] == 0.001
    assert parse_override("a=1E+2") == {"a": 100.0} and parse_override("a=e5") == {"a": "e5"}


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["train.optimizer.lr=fast"], r"train.optimizer.lr must be a number, got 'fast'"),
        (["train.optimizer.lr=0"], r"train.optimizer.lr must be greater than 0, got 0"),
        (["train.optimizer.momentum=true"], r"train.optimizer.momentum must be a number, got True"),
        (["train.optimizer={type: adamw, betas: [0.9]}"], r"train.optimizer.betas must be a list of 2"),
        (["train.optimizer={type: adam}"], r"train.optimizer.type: unknown type 'adam'; did you mean 'adamw'\?"),
        (["train.schedule.milestones=[8, x]"], r"train.schedule.milestones\[1\] must be a number, got 'x'"),
        (["train.schedule.gamma=-1"], r"train.schedule.gamma must be greater than 0"),
        (["train.ema={decay: 1.5}"], r"train.ema.decay must be less than 1, got 1.5"),
        (["train.max_iters=ten"], r"train.max_iters must be a number, got 'ten'"),
        (["train.clip_grad_norm=big"], r"train.clip_grad_norm must be a number, got 'big'"),
    ],
)
def test_every_numeric_key_is_typed_at_load_time(tmp_path, overrides, message):
    path = write(tmp_path / "c.yaml", {"model": MODEL})
    with pytest.raises(ValueError, match=message):
        load_config(path, overrides)


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("train.epochs", 0, r"train.epochs must be at least 1, got 0 \(a run of no epochs trains nothing\)"),
        ("train.epochs", -1, r"train.epochs must be at least 1, got -1"),
        ("train.max_iters", 0, r"train.max_iters must be at least 1, got 0"),
        ("train.time_limit_min", 0, r"train.time_limit_min must be greater than 0, got 0"),
        ("train.time_limit_min", -5, r"train.time_limit_min must be greater than 0"),
        ("data.batch_size", 0, r"data.batch_size must be at least 1, got 0"),
        ("data.workers", -1, r"data.workers must be at least 0"),
        ("train.eval_every", 0, r"train.eval_every must be at least 1"),
        ("train.log_every", 0, r"train.log_every must be at least 1"),
        ("train.checkpoint_every", -2, r"train.checkpoint_every must be at least 0"),
        ("train.schedule.warmup_iters", -1, r"train.schedule.warmup_iters must be at least 0"),
    ],
)
def test_a_budget_that_cannot_train_is_refused(tmp_path, key, value, message):
    path = write(tmp_path / "c.yaml", {"model": MODEL})
    with pytest.raises(ValueError, match=message):
        load_config(path, [f"{key}={value}"])


def test_model_numbers_are_typed_when_built():
    from detkit.models import build_model

    with pytest.raises(ValueError, match=r"model.roi_heads.score_threshold must be a number, got 'high'"):
        build_model({**MODEL, "roi_heads": {"score_threshold": "high"}})
    with pytest.raises(ValueError, match=r"model.rpn.min_size must be a number, got '1e-3x'"):
        build_model({**MODEL, "rpn": {"min_size": "1e-3x"}})


def test_yaml_that_would_run_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "ran"
    attack = f'!!python/object/apply:os.system ["touch {marker}"]'
    (tmp_path / "evil.yaml").write_text(f"model: {attack}\n")
    with pytest.raises(ValueError, match=r"evil.yaml:1:8: malformed YAML: could not determine a constructor"):
        load_config(tmp_path / "evil.yaml")
    with pytest.raises(ValueError, match=r"--set .* the value is not valid YAML"):
        load_config(write(tmp_path / "c.yaml", {"model": MODEL}), [f"train.seed={attack}"])
    assert not marker.exists()
