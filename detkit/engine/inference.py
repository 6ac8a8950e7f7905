"""A trained model from a config and weights, and predictions drawn on images."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import torch

from detkit.checkpoints import load_weights
from detkit.data import build_transforms, read_image
from detkit.data.dataset import boxes_to_original
from detkit.data.yolo import IMAGE_SUFFIXES
from detkit.models import build_model
from detkit.models.torchvision_compat import load_checked


def load_model(config: Mapping, weights: str | Path, device: str = "cpu"):
    """``build_model(config["model"])`` with the weights of a detkit checkpoint (or a bare
    state dict) loaded, in eval mode.

    The model config must name its classes (``num_classes``); a checkpoint written by
    ``detkit train`` carries the resolved config, whose model section is used when the given
    one lacks them. Weights of another architecture fail with the mismatching keys named.
    """
    saved = load_weights(weights, "--weights")
    state = saved.get("model", saved) if isinstance(saved, dict) else saved
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"--weights: {weights} holds no model state dict")
    model_config = dict(config["model"])
    trained = (saved.get("config") or {}).get("model", {}) if isinstance(saved, dict) else {}
    for key in ("num_classes", "class_names"):
        if model_config.get(key) is None and trained.get(key) is not None:
            model_config[key] = trained[key]
    if model_config.get("num_classes") is None:
        raise ValueError("model.num_classes is not set and the weights do not say it (use a checkpoint of "
                         "detkit train, or set model.num_classes)")
    model = build_model(model_config)
    load_checked(model, state, f"--weights {weights}")
    return model.to(device).eval()


def image_files(source: str | Path) -> list[Path]:
    """The images of a file or folder (recursively), sorted."""
    source = Path(source)
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise ValueError(f"{source}: no such image or folder")
    files = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{source}: no images found (looked for {', '.join(IMAGE_SUFFIXES)})")
    return files


@torch.no_grad()
def predict_images(model, sources, out: Path, *, eval_transforms: Mapping | None = None, score_threshold: float = 0.3,
                   device: str = "cpu", category_ids: list[int] | None = None, progress: bool = True) -> Path:
    """Detect on every image of ``sources`` (files or folders), draw the detections above
    ``score_threshold`` into ``out``, and write every detection to ``out/predictions.json``
    (COCO results, with each image's file name; image ids 1, 2, ... in file order)."""
    from tqdm import tqdm

    from detkit.visualize import draw_boxes, save_image

    files = [f for s in sources for f in image_files(s)]
    transforms = build_transforms(eval_transforms or {}, train=False, where="data.eval_transforms")
    out.mkdir(parents=True, exist_ok=True)
    results, names = [], list(model.class_names)
    ids = category_ids or list(range(1, len(names) + 1))
    for image_id, path in enumerate(tqdm(files, desc="predicting", unit="image", disable=not progress), start=1):
        try:
            image = read_image(path)
        except OSError as error:
            print(f"skipped {path}: {error}")
            continue
        resized, _, _, _, affine = transforms(image, torch.zeros(0, 4).numpy(), [], [])
        tensor = torch.from_numpy(resized.copy()).permute(2, 0, 1).to(device)
        det = {k: v.cpu() for k, v in model([tensor])[0].items()}
        boxes = boxes_to_original(det["boxes"].double(), torch.tensor(affine, dtype=torch.float64)).float()
        for box, score, label in zip(boxes.tolist(), det["scores"].tolist(), det["labels"].tolist()):
            results.append({"image_id": image_id, "file_name": str(path), "category_id": ids[label],
                            "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]], "score": score})
        shown = det["scores"] >= score_threshold
        drawn = draw_boxes(image, boxes[shown].numpy(), det["labels"][shown].tolist(), names,
                           det["scores"][shown].tolist())
        save_image(drawn, out / f"{path.stem}.jpg")
    json_path = out / "predictions.json"
    json_path.write_text(json.dumps(results))
    return json_path
