"""Detections on image files, drawn: ``detkit predict``.

``predict_checkpoint(config, images, weights, out)`` is ``detkit predict CONFIG IMAGES --weights
W --out OUT``; ``predict_images(model, images, out)`` the same for any model.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch

from detkit.data import build_transforms, read_image
from detkit.data.dataset import boxes_to_original
from detkit.data.yolo import IMAGE_SUFFIXES
from detkit.engine.run import prepare


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


def mirrored(sources, out: Path) -> list[tuple[Path, Path]]:
    """(image, where its drawing goes) for every image of ``sources`` (files or folders): the
    image's path relative to the folder the sources share, under ``out``, so ``a/x.jpg`` and
    ``b/x.jpg`` stay two pictures. Images already under ``out`` (drawings of an earlier run)
    are left out; an image given twice is drawn once."""
    out = Path(os.path.abspath(out))
    found: dict[Path, tuple[Path, Path]] = {}  # absolute path -> (the path as given, its source's folder)
    for source in sources:
        base = Path(os.path.abspath(source))
        base = base if base.is_dir() else base.parent
        for image in image_files(source):
            absolute = Path(os.path.abspath(image))
            if not absolute.is_relative_to(out):
                found.setdefault(absolute, (image, base))
    if not found:
        raise ValueError(f"no images to predict on in {', '.join(map(str, sources))} (outside --out {out})")
    root = Path(os.path.commonpath([str(base) for _, base in found.values()]))
    return [(image, out / absolute.relative_to(root)) for absolute, (image, _) in found.items()]


class UnsupportedImage(ValueError):
    """A model cannot take this image (e.g. an exported file of another fixed size): the image
    is skipped with this reason, the others are predicted."""


@dataclass
class Predictions:
    """What ``predict_images`` wrote: ``json`` (every detection), the drawn ``pictures``, and the
    images it could not read (path, reason)."""

    json: Path
    pictures: list[Path]
    skipped: list[tuple[Path, str]]


@torch.no_grad()
def predict_images(model, sources, out: Path, *, eval_transforms: Mapping | None = None, score_threshold: float = 0.3,
                   device: str = "cpu", category_ids: list[int] | None = None, progress: bool = True) -> Predictions:
    """Detect on every image of ``sources`` (files or folders), draw the detections above
    ``score_threshold`` into ``out`` (mirroring the images' relative paths, see ``mirrored``),
    and write every detection to ``out/predictions.json`` (COCO results, with each image's
    file name; image ids 1, 2, ... in file order). An image that cannot be read is skipped
    and listed in the result; the others are predicted and written all the same."""
    from tqdm import tqdm

    from detkit.visualize import draw_boxes, save_image

    jobs = mirrored(sources, out)
    transforms = build_transforms(eval_transforms or {}, train=False, where="data.eval_transforms")
    out.mkdir(parents=True, exist_ok=True)
    results, names, pictures, skipped = [], list(model.class_names), [], []
    ids = category_ids or list(range(1, len(names) + 1))
    bar = tqdm(jobs, desc="predicting", unit="image", disable=not progress)
    for image_id, (path, picture) in enumerate(bar, start=1):
        try:
            image = read_image(path)
        except OSError as error:
            skipped.append((path, str(error).removeprefix(f"{path}: ")))
            continue
        resized, _, _, _, affine = transforms(image, torch.zeros(0, 4).numpy(), [], [])
        tensor = torch.from_numpy(resized.copy()).permute(2, 0, 1).to(device)
        try:
            det = {k: v.cpu() for k, v in model([tensor])[0].items()}
        except UnsupportedImage as error:
            skipped.append((path, str(error)))
            continue
        boxes = boxes_to_original(det["boxes"].double(), torch.tensor(affine, dtype=torch.float64)).float()
        for box, score, label in zip(boxes.tolist(), det["scores"].tolist(), det["labels"].tolist()):
            results.append({"image_id": image_id, "file_name": str(path), "category_id": ids[label],
                            "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]], "score": score})
        shown = det["scores"] >= score_threshold
        drawn = draw_boxes(image, boxes[shown].numpy(), det["labels"][shown].tolist(), names,
                           det["scores"][shown].tolist())
        picture.parent.mkdir(parents=True, exist_ok=True)
        save_image(drawn, picture)
        pictures.append(picture)
    json_path = out / "predictions.json"
    json_path.write_text(json.dumps(results))
    return Predictions(json_path, pictures, skipped)


def predict_checkpoint(config: Mapping, sources, weights: str | Path, out: str | Path, *, score_threshold: float = 0.3,
                       device: str | None = None, progress: bool = True) -> Predictions:
    """``predict_images`` with the checkpoint ``weights`` of ``config``'s model (no dataset is
    read: the class names come from the config or the checkpoint)."""
    run = prepare(config, weights=weights, device=device, data=False)
    return predict_images(run.model, sources, Path(out), eval_transforms=config["data"]["eval_transforms"],
                          score_threshold=score_threshold, device=run.device, progress=progress)
