"""Exported detectors give detkit predict's detections, in onnxruntime."""

import numpy as np
import pytest
import torch

from detkit.export.onnx import DenseGraph, OnnxDetector, SSDGraph, YOLOGraph, export_onnx
from detkit.models import build_model
from detkit.ops import Suppressor
from tests.export.test_graph_suppressors import CONFIGS, suppressor_of
from tests.models.test_dense_detectors import TINY_RETINANET

pytest.importorskip("onnxruntime")


def tiny_retinanet(density: bool):
    torch.manual_seed(0)
    model = build_model({**TINY_RETINANET, "head": {"depth": 2, "density": density}, "top_k": 40})
    with torch.no_grad():  # random weights score every anchor 0.01: lift them so that detections exist
        model.head.classification.out.bias.fill_(-1.0)
    return model.eval()


def images(seed: int, n: int = 2, size=(120, 150)):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, *size), generator=gen, dtype=torch.uint8)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_retinanet_exported_gives_eager_detections(tmp_path, config):
    model = tiny_retinanet(density=config["type"] == "adaptive_nms")
    model.set_postprocess(suppressor_of(config))
    path = export_onnx(DenseGraph(model, (120, 150)), tmp_path / "model.onnx", batch=2)
    assert_exported_equals_eager(model, path, (120, 150), batch=2, seeds=3)


def assert_exported_equals_eager(model, path, size, batch=1, seeds=2):
    """On ``seeds`` batches of random images: the same number of detections and labels, boxes
    within 1e-3 px, scores within 1e-4 (onnxruntime's convolutions and resize round differently
    from torch's, by about 1e-6)."""
    exported = OnnxDetector(path)
    for seed in range(seeds):
        pictures = images(seed, n=batch, size=size)
        with torch.no_grad():
            eager = model(list(pictures))
        for want, got in zip(eager, exported(pictures.numpy())):
            assert len(got["labels"]) == len(want["labels"]) > 0
            assert got["labels"].tolist() == want["labels"].tolist()
            np.testing.assert_allclose(got["boxes"], want["boxes"].numpy(), rtol=0, atol=1e-3)
            np.testing.assert_allclose(got["scores"], want["scores"].numpy(), rtol=0, atol=1e-4)


@pytest.mark.parametrize("config", [CONFIGS[0], CONFIGS[4], CONFIGS[5]], ids=["nms", "soft-gaussian", "soft-linear"])
def test_ssd_exported_gives_eager_detections(tmp_path, config):
    from tests.models.test_ssd import TINY_SSD

    torch.manual_seed(0)
    model = build_model({**TINY_SSD, "top_k": 30, "score_threshold": 0.1}).eval()
    model.set_postprocess(suppressor_of(config))
    assert_exported_equals_eager(model, export_onnx(SSDGraph(model, (90, 110)), tmp_path / "ssd.onnx"), (90, 110))


@pytest.mark.parametrize("config", [CONFIGS[0], CONFIGS[2], CONFIGS[4]], ids=["nms", "diou", "soft-gaussian"])
def test_yolo_exported_gives_eager_detections(tmp_path, config):
    from tests.models.test_yolo import TINY_YOLO

    torch.manual_seed(0)
    model = build_model({**TINY_YOLO, "top_k": 30}).eval()
    with torch.no_grad():  # random weights score objectness and classes 0.01, all alike: lift and spread them
        for conv in model.head.outputs:  # (near-ties would let float rounding reorder the top-k: docs/export.md)
            conv.bias.fill_(0.0)
            conv.weight.mul_(4.0)
    model.set_postprocess(suppressor_of(config))
    assert_exported_equals_eager(model, export_onnx(YOLOGraph(model, (100, 120)), tmp_path / "yolo.onnx"), (100, 120))


def test_wrong_input_and_unexportable_suppressor(tmp_path):
    model = tiny_retinanet(density=False)
    exported = OnnxDetector(export_onnx(DenseGraph(model, (96, 96)), tmp_path / "m.onnx"))
    with pytest.raises(ValueError, match=r"uint8 \[N, 3, 96, 96\]"):
        exported(np.zeros((1, 3, 64, 64), np.uint8))
    model.set_postprocess(Suppressor("none", {}))
    with pytest.raises(ValueError, match="'none' cannot be exported"):
        export_onnx(DenseGraph(model, (96, 96)), tmp_path / "n.onnx")
    assert not (tmp_path / "n.onnx").exists() and not (tmp_path / "n.onnx.tmp").exists()


# ------------------------------------------------------------------ detkit export


def write_run(tmp_path, model_config, model):
    import yaml

    config, weights = tmp_path / "model.yaml", tmp_path / "weights.pth"
    config.write_text(yaml.safe_dump({"model": model_config}))
    torch.save(model.state_dict(), weights)
    return config, weights


def test_detkit_export_writes_a_file_that_gives_eager_detections(tmp_path):
    from click.testing import CliRunner

    from detkit.cli import main

    model = tiny_retinanet(density=False)
    config, weights = write_run(tmp_path, {**TINY_RETINANET, "top_k": 40}, model)
    out = tmp_path / "exported" / "retinanet.onnx"
    result = CliRunner().invoke(main, ["export", str(config), "--weights", str(weights), "--out", str(out),
                                       "--postprocess", "{type: soft_nms, method: linear}", "--size", "100", "140"])
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output
    model.set_postprocess(Suppressor("soft_nms", {"method": "linear"}))
    batch = images(5, n=1, size=(100, 140))
    with torch.no_grad():
        want = model(list(batch))[0]
    got = OnnxDetector(out)(batch)[0]
    assert got["labels"].tolist() == want["labels"].tolist() and len(got["labels"]) > 0
    np.testing.assert_allclose(got["boxes"], want["boxes"].numpy(), rtol=0, atol=1e-3)


def test_detkit_export_bad_input(tmp_path, monkeypatch):
    import importlib.util

    from click.testing import CliRunner

    from detkit.cli import main

    model = tiny_retinanet(density=False)
    config, weights = write_run(tmp_path, {**TINY_RETINANET, "top_k": 40}, model)

    def export(*args):
        return CliRunner().invoke(main, ["export", str(config), "--weights", str(weights), "--out",
                                         str(tmp_path / "m.onnx"), *args])

    result = export("--postprocess", "{type: sofft_nms}")
    assert result.exit_code == 2 and "sofft_nms" in result.output
    other = build_model({**TINY_RETINANET, "num_classes": 3})  # a checkpoint of another config
    torch.save(other.state_dict(), weights)
    result = export()
    assert result.exit_code == 2 and "head.classification" in result.output
    torch.save(model.state_dict(), weights)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real(name, *a))
    result = export()
    assert result.exit_code == 1 and 'pip install -e ".[export]"' in result.output
    assert not (tmp_path / "m.onnx").exists()


def test_models_not_yet_exportable_are_refused_by_name(tmp_path):
    from click.testing import CliRunner

    from detkit.cli import main
    from tests.engine.conftest import tiny_config

    model_config = {**tiny_config(tmp_path)["model"], "num_classes": 3}
    config, weights = write_run(tmp_path, model_config, build_model(model_config))
    result = CliRunner().invoke(main, ["export", str(config), "--weights", str(weights), "--out",
                                       str(tmp_path / "m.onnx")])
    assert result.exit_code == 2 and "faster_rcnn models cannot be exported yet" in result.output
    assert "RetinaNet, EfficientDet, SSD and YOLO can" in result.output
