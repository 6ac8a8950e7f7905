"""YOLO txt datasets (the Ultralytics layout): read into a ``DatasetIndex``, write one back.

Layout: images in ``.../images/<split>/``, one label file per image in the parallel
``.../labels/<split>/`` with the same stem, one object per line: ``class cx cy w h``,
normalised to [0, 1] by the image size (or ``class x1 y1 x2 y2 ... `` polygon points,
whose extent is the box). Class names come from a data YAML:

    path: /data/coco128        # optional root of the relative paths below
    train: images/train2017
    val: images/val2017
    names: {0: person, 1: bicycle, ...}   # or a list
    category_ids: [1, 2, ...]  # detkit's addition: the COCO ids, kept through conversions

An image without a label file (or with an empty one) is a valid negative.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from detkit.data.records import Category, DataIssues, DatasetIndex, ImageRecord, clean_boxes, place_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def label_path(image: Path) -> Path:
    """The label file of an image: the last ``images`` folder of its path becomes ``labels``."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    raise ValueError(f"{image}: a YOLO image must lie under an 'images' folder (its labels under 'labels')")


def read_data_yaml(path: Path, split: str) -> tuple[Path, list[str], list[int] | None]:
    """The image folder of ``split``, the class names and detkit's category ids from a data YAML."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        raise ValueError(f"{path}{at}: malformed YAML: {getattr(error, 'problem', error)}") from None
    if not isinstance(data, dict) or "names" not in data:
        raise ValueError(f"{path}: a YOLO data YAML needs 'names' (the class names)")
    if split not in data:
        splits = [k for k in ("train", "val", "test") if k in data]
        raise ValueError(f"{path}: no split {split!r} (it has: {', '.join(splits) or 'none'})")
    names = data["names"]
    if isinstance(names, dict):
        if sorted(names) != list(range(len(names))):
            raise ValueError(f"{path}: 'names' must number the classes 0..{len(names) - 1}")
        names = [names[i] for i in range(len(names))]
    base = Path(data.get("path") or path.parent)
    if not base.is_absolute():
        base = path.parent / base
    ids = data.get("category_ids")
    if ids is not None and len(ids) != len(names):
        raise ValueError(f"{path}: 'category_ids' has {len(ids)} entries for {len(names)} names")
    return base / str(data[split]), [str(n) for n in names], ids


def load_yolo(
    source: str | Path, split: str = "train", names: list[str] | None = None
) -> DatasetIndex:
    """Read a YOLO dataset.

    Args:
        source: a data YAML (then ``split`` picks its folder), or an images folder.
        split: the YAML's split key ("train", "val", "test").
        names: class names, required when ``source`` is a folder (the YAML has them).

    Raises:
        ValueError: a label line with the wrong number of columns, a non-numeric value or a
            class index out of range (by file and line), a malformed YAML, no class names.
    """
    source = Path(source)
    category_ids = None
    if source.suffix in (".yaml", ".yml"):
        folder, names, category_ids = read_data_yaml(source, split)
    else:
        folder = source
        if names is None:
            raise ValueError(f"{source}: a YOLO images folder needs class names (pass names, or use a data YAML)")
    if not folder.is_dir():
        raise ValueError(f"{source}: image folder {folder} does not exist")
    categories = [Category(category_ids[i] if category_ids else i + 1, n) for i, n in enumerate(names)]
    issues = DataIssues(str(source))
    images = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    records = []
    next_ann = 1
    for image_id, path in enumerate(images, start=1):
        try:
            with Image.open(path) as im:
                width, height = im.size
        except (OSError, SyntaxError) as error:
            issues.add("unreadable image", f"{path} ({error})")
            continue
        boxes, labels = _read_labels(label_path(path), len(names), width, height)
        ann_ids = np.arange(next_ann, next_ann + len(boxes), dtype=np.int64)
        next_ann += len(boxes)
        keep = clean_boxes(boxes, width, height, [f"{label_path(path).name} object {i + 1}" for i in range(len(boxes))],
                           issues)
        boxes = boxes[keep]
        records.append(
            ImageRecord(image_id, path, str(path.relative_to(folder)), width, height, boxes, labels[keep],
                        np.zeros(len(boxes), dtype=bool), (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]),
                        ann_ids[keep])
        )
    issues.log()
    return DatasetIndex(records, categories, folder, str(source), "yolo", issues)


def _read_labels(path: Path, n_classes: int, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (float64[N, 4], absolute xyxy) and labels (int64[N]) of one label file."""
    boxes, labels = [], []
    if not path.is_file():
        return np.zeros((0, 4)), np.zeros(0, dtype=np.int64)
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}:{line_no}"
        if len(fields) != 5 and (len(fields) < 7 or len(fields) % 2 == 0):
            raise ValueError(f"{where}: expected 5 columns (class cx cy w h) or a class and polygon points, "
                             f"got {len(fields)}")
        try:
            cls = float(fields[0])  # "23.0" is class 23, as Ultralytics reads it
        except ValueError:
            raise ValueError(f"{where}: the class (first column) must be a whole number, got {fields[0]!r}") from None
        if not cls.is_integer():
            raise ValueError(f"{where}: the class (first column) must be a whole number, got {fields[0]!r}")
        cls = int(cls)
        try:
            values = [float(v) for v in fields[1:]]
        except ValueError:
            bad = next(v for v in fields[1:] if not _is_number(v))
            raise ValueError(f"{where}: coordinates must be numbers, got {bad!r} in {line.strip()!r}") from None
        if not 0 <= cls < n_classes:
            raise ValueError(f"{where}: class {cls} is out of range: there are {n_classes} classes (0..{n_classes - 1})")
        if len(values) == 4:
            cx, cy, w, h = values
            box = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
        else:
            xs, ys = values[0::2], values[1::2]
            box = [min(xs), min(ys), max(xs), max(ys)]
        boxes.append(box)
        labels.append(cls)
    boxes = np.array(boxes, dtype=np.float64).reshape(-1, 4) * np.array([width, height, width, height], dtype=np.float64)
    return boxes, np.array(labels, dtype=np.int64)


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def write_yolo(index: DatasetIndex, out: str | Path, split: str = "train", *, images: str = "copy") -> Path:
    """Write ``index`` as a YOLO dataset under ``out``; returns the data YAML.

    Writes ``out/images/<split>/`` (the images: ``images="copy"``, ``"link"`` for symbolic
    links, ``"none"`` to skip), ``out/labels/<split>/*.txt`` and ``out/data.yaml`` (class
    names and the source's category ids, updated if it exists). Crowd regions have no
    YOLO form and are left out.
    """
    out = Path(out)
    image_dir, label_dir = out / "images" / split, out / "labels" / split
    label_dir.mkdir(parents=True, exist_ok=True)
    for r in index.records:
        target = image_dir / r.file_name
        place_image(r.path, target, images)
        keep = ~r.iscrowd
        b = r.boxes[keep]
        size = np.array([r.width, r.height], dtype=np.float64)
        centre, extent = (b[:, :2] + b[:, 2:]) / 2 / size, (b[:, 2:] - b[:, :2]) / size
        lines = [f"{label} {cx:.8f} {cy:.8f} {w:.8f} {h:.8f}"
                 for label, (cx, cy), (w, h) in zip(r.labels[keep], centre, extent)]
        label_file = label_dir / Path(r.file_name).with_suffix(".txt")
        label_file.parent.mkdir(parents=True, exist_ok=True)
        label_file.write_text("".join(line + "\n" for line in lines))
    data_yaml = out / "data.yaml"
    data = yaml.safe_load(data_yaml.read_text()) if data_yaml.is_file() else {}
    data.update({"path": ".", split: f"images/{split}", "names": dict(enumerate(index.class_names)),
                 "category_ids": index.category_ids})
    data_yaml.write_text(yaml.safe_dump(data, sort_keys=False))
    return data_yaml
