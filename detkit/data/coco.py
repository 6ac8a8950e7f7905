"""COCO instances json: read into a ``DatasetIndex`` (through pycocotools), write one back.

Reading checks the file's structure and names the place of every error: a malformed
json by line and column, an annotation by its id. Boxes are COCO's ``[x, y, w, h]``
(absolute pixels) and become xyxy; crowd annotations are kept with ``iscrowd``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from detkit.data.records import (Category, DataIssues, DatasetIndex, ImageRecord, clean_boxes, real_size,
                                  resolve_under)


def read_json(path: Path) -> object:
    """json.load with errors that give the file, line and column."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}:{error.lineno}:{error.colno}: malformed json: {error.msg}") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not a UTF-8 json file ({error.reason} at byte {error.start})") from None


def find_image_root(json_path: Path, data: dict) -> Path:
    """Where the images named by ``file_name`` live, by the usual COCO layouts.

    Tried in order: <json dir>/../images/<split>, <json dir>/../<split>, <json dir>/images,
    <json dir>/../images, <json dir> (split: the json's name without "instances_"); the
    first folder holding the first image wins.
    """
    here = json_path.resolve().parent
    split = json_path.stem.removeprefix("instances_")
    candidates = [here.parent / "images" / split, here.parent / split, here / "images", here.parent / "images", here]
    first = next((img.get("file_name") for img in data.get("images", []) if img.get("file_name")), None)
    if first is None:
        return candidates[-1]
    absolute = [img["file_name"] for img in data["images"] if Path(img.get("file_name") or "").is_absolute()]
    if absolute:
        common = os.path.commonpath([str(Path(name).parent) for name in absolute])
        raise ValueError(f"{json_path}: images with an absolute file_name: {len(absolute)} (e.g. {absolute[0]!r}); "
                         "COCO file names are relative to an image root, and detkit reads no path that leads out "
                         f"of it: write them relative to their folder and pass that folder as image_root "
                         f"(here, {common})")
    for folder in candidates:
        if (folder / first).is_file():
            return folder
    tried = ", ".join(str(c) for c in candidates)
    raise ValueError(f"{json_path}: cannot find the images (looked for {first!r} in {tried}); pass image_root")


def _number_list(value, n: int) -> bool:
    return isinstance(value, list) and len(value) == n and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    )


def load_coco(json_path: str | Path, image_root: str | Path | None = None, *, images: bool = True) -> DatasetIndex:
    """Read a COCO instances json.

    Args:
        json_path: the annotations file.
        image_root: the folder ``file_name`` is relative to; found by ``find_image_root``
            when None.
        images: False to read the annotations alone (for evaluation): images are neither
            looked for nor checked, and every image is kept.

    Raises:
        ValueError: malformed json (line, column), missing keys, an annotation whose
            image or category does not exist or whose bbox is not 4 numbers (by
            annotation id), an image path escaping the image root.
    """
    json_path = Path(json_path)
    data = read_json(json_path)
    where = str(json_path)
    if not isinstance(data, dict) or "images" not in data or "categories" not in data:
        raise ValueError(f"{where}: not a COCO instances file (needs 'images' and 'categories' keys)")
    data.setdefault("annotations", [])
    _check_structure(data, where)
    if image_root is not None:
        root = Path(image_root)
    else:
        root = find_image_root(json_path, data) if images else json_path.parent
    categories = [Category(int(c["id"]), str(c["name"])) for c in sorted(data["categories"], key=lambda c: c["id"])]
    label_of = {c.id: label for label, c in enumerate(categories)}
    issues = DataIssues(where)
    # the images by id; each image's annotations in file order (as pycocotools' imgToAnns)
    images_by_id = sorted(data["images"], key=lambda img: img["id"])
    anns = data["annotations"]
    ann_image = np.array([a["image_id"] for a in anns], dtype=np.int64)
    order = np.argsort(ann_image, kind="stable")
    ids = np.array([img["id"] for img in images_by_id], dtype=np.int64)
    first = np.searchsorted(ann_image[order], ids, side="left")
    last = np.searchsorted(ann_image[order], ids, side="right")
    present, sizes = [], []
    for info in images_by_id:
        image_id = info["id"]
        path = resolve_under(root, info["file_name"], f"{where}: image {image_id}")
        width, height = int(info.get("width") or 0), int(info.get("height") or 0)
        if images:
            if not path.is_file():
                issues.add("missing image", f"image {image_id} {path}")
                present.append(None)
                continue
            width, height = real_size(path, width, height, f"image {image_id} {path}", issues)
        present.append(path)
        sizes.append((width, height))
    kept = np.array([p is not None for p in present], dtype=bool)
    # the annotations of the images kept, image by image, checked all at once
    rows = order[np.repeat(kept, last - first)]
    counts = (last - first)[kept]
    boxes = np.array([anns[i]["bbox"] for i in rows], dtype=np.float64).reshape(-1, 4)
    boxes[:, 2:] += boxes[:, :2]  # xywh -> xyxy
    size = np.repeat(np.array(sizes, dtype=np.int64).reshape(-1, 2), counts, axis=0)
    keep = clean_boxes(boxes, size[:, 0], size[:, 1],
                       lambda i: f"annotation {anns[rows[i]]['id']} of image {anns[rows[i]]['image_id']}", issues)
    rows, boxes = rows[keep], boxes[keep]
    labels = np.array([label_of[anns[i]["category_id"]] for i in rows], dtype=np.int64)
    crowd = np.array([bool(anns[i].get("iscrowd", 0)) for i in rows], dtype=bool)
    areas = np.array([anns[i].get("area", 0.0) for i in rows], dtype=np.float64)
    ann_ids = np.array([anns[i]["id"] for i in rows], dtype=np.int64)
    missing = areas <= 0  # sources without "area": the box's
    areas[missing] = _box_areas(boxes[missing])
    per_image = np.bincount(np.repeat(np.arange(len(counts)), counts)[keep], minlength=len(counts))
    bounds = np.r_[0, np.cumsum(per_image)]
    records = []
    for j, (info, path) in enumerate((i, p) for i, p in zip(images_by_id, present) if p is not None):
        s = slice(bounds[j], bounds[j + 1])
        records.append(ImageRecord(image_id=int(info["id"]), path=path, file_name=info["file_name"],
                                   width=sizes[j][0], height=sizes[j][1], boxes=boxes[s], labels=labels[s],
                                   iscrowd=crowd[s], areas=areas[s], annotation_ids=ann_ids[s]))
    issues.log()
    return DatasetIndex(records, categories, root, where, "coco", issues, coco=data)


def _box_areas(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def _check_structure(data: dict, where: str) -> None:
    """Every image has an id, file_name and size; every annotation names an existing image and
    category and has a bbox of 4 numbers."""
    categories = set()
    for c in data["categories"]:
        if not isinstance(c, dict) or not isinstance(c.get("id"), int) or "name" not in c:
            raise ValueError(f"{where}: category {c!r} needs an integer 'id' and a 'name'")
        categories.add(c["id"])
    images = set()
    for img in data["images"]:
        if not isinstance(img, dict) or not isinstance(img.get("id"), int) or not isinstance(img.get("file_name"), str):
            raise ValueError(f"{where}: image {img!r} needs an integer 'id' and a 'file_name'")
        if img["id"] in images:
            raise ValueError(f"{where}: image id {img['id']} appears twice")
        images.add(img["id"])
    known = f"known ids: {min(categories)}..{max(categories)}" if categories else "there are no categories"
    for a in data["annotations"]:
        aid = a.get("id") if isinstance(a, dict) else None
        if not isinstance(aid, int):
            raise ValueError(f"{where}: annotation {a!r} has no integer 'id'")
        if a.get("image_id") not in images:
            raise ValueError(f"{where}: annotation {aid}: unknown image_id {a.get('image_id')!r}")
        if a.get("category_id") not in categories:
            raise ValueError(f"{where}: annotation {aid}: unknown category_id {a.get('category_id')!r} ({known})")
        if not _number_list(a.get("bbox"), 4):
            raise ValueError(f"{where}: annotation {aid}: bbox must be [x, y, width, height], got {a.get('bbox')!r}")


_WRITTEN = {"images": ("id", "file_name", "width", "height"),
            "annotations": ("id", "image_id", "category_id", "bbox", "area", "iscrowd"),
            "categories": ("id", "name")}


def to_coco_dict(index: DatasetIndex, *, file_names: list[str] | None = None, keep_fields: bool = False) -> dict:
    """A COCO instances dict of ``index``: boxes back to xywh, crowd regions and areas kept.

    Args:
        file_names: the ``file_name`` of each record (default: the record's own).
        keep_fields: for an index read from COCO, carry over what detkit does not read itself
            (``segmentation``, keypoints, ``info``, ``licenses``, an image's ``coco_url``, a
            category's ``supercategory`` ...), so a COCO-to-COCO conversion loses nothing but
            the annotations skipped when reading.
    """
    source = index.coco if keep_fields and index.coco else {}
    extra = {section: {item["id"]: {k: v for k, v in item.items() if k not in _WRITTEN[section]}
                       for item in source.get(section, []) if isinstance(item, dict)} for section in _WRITTEN}
    images, annotations = [], []
    next_id = 1 + max((int(a) for r in index.records for a in r.annotation_ids), default=0)
    for i, r in enumerate(index.records):
        images.append(
            {"id": r.image_id, "file_name": file_names[i] if file_names else r.file_name, "width": r.width,
             "height": r.height, **extra["images"].get(r.image_id, {})}
        )
        for box, label, crowd, area, ann_id in zip(r.boxes, r.labels, r.iscrowd, r.areas, r.annotation_ids):
            kept = extra["annotations"].get(int(ann_id), {})
            if ann_id <= 0:  # sources without annotation ids
                ann_id, next_id = next_id, next_id + 1
            x1, y1, x2, y2 = (float(v) for v in box)
            annotations.append(
                {"id": int(ann_id), "image_id": r.image_id, "category_id": index.categories[label].id,
                 "bbox": [x1, y1, x2 - x1, y2 - y1], "area": float(area), "iscrowd": int(crowd), **kept}
            )
    categories = [{"id": c.id, "name": c.name, **extra["categories"].get(c.id, {})} for c in index.categories]
    top = {k: v for k, v in source.items() if k not in _WRITTEN}  # info, licenses, ...
    return {**top, "images": images, "annotations": annotations, "categories": categories}


def write_coco(index: DatasetIndex, json_path: str | Path, *, file_names: list[str] | None = None,
               keep_fields: bool = True) -> Path:
    """Write ``index`` as a COCO instances json (see ``to_coco_dict``); written beside and
    renamed into place, so an interrupted write never leaves half a file where one was."""
    json_path = Path(json_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    partial = json_path.with_name(f".{json_path.name}.{os.getpid()}.partial")
    partial.write_text(json.dumps(to_coco_dict(index, file_names=file_names, keep_fields=keep_fields)))
    os.replace(partial, json_path)
    return json_path
