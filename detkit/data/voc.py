"""Pascal VOC xml datasets: read into a ``DatasetIndex``, write one back.

Layout: ``Annotations/<id>.xml``, ``JPEGImages/<file>``, ``ImageSets/Main/<split>.txt``
(the ids of a split). VOC boxes are 1-based inclusive pixel indices; detkit reads
``(xmin - 1, ymin - 1, xmax, ymax)`` as continuous xyxy, as Detectron2 does, and writes
the inverse. ``difficult`` objects become crowd regions (``iscrowd``): ignored by the
evaluation, never training targets. Categories come from ``categories.txt`` ("id name"
lines, written by detkit) when present, else VOC's 20 classes in their usual order when
the names are all VOC's, else the names sorted.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from detkit.data.records import (Category, DataIssues, DatasetIndex, ImageRecord, clean_boxes, place_image,
                                  real_size, resolve_under)

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip


def _text(node: ET.Element, tag: str, where: str) -> str:
    found = node.find(tag)
    if found is None or found.text is None:
        raise ValueError(f"{where}: missing <{tag}>")
    return found.text.strip()


def _number(node: ET.Element, tag: str, where: str) -> float:
    text = _text(node, tag, where)
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{where}: <{tag}> is not a number: {text!r}") from None


def _parse(xml_path: Path):
    """(file name, width, height, [(name, xyxy, difficult)]) of one annotation file."""
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as error:
        line, column = error.position
        raise ValueError(f"{xml_path}:{line}:{column + 1}: malformed xml") from None
    name = root.findtext("filename") or xml_path.stem + ".jpg"
    size = root.find("size")
    width = int(_number(size, "width", f"{xml_path} <size>")) if size is not None else 0
    height = int(_number(size, "height", f"{xml_path} <size>")) if size is not None else 0
    objects = []
    for k, obj in enumerate(root.iter("object"), start=1):
        where = f"{xml_path} object {k}"
        box = obj.find("bndbox")
        if box is None:
            raise ValueError(f"{where}: missing <bndbox>")
        xyxy = [_number(box, t, where) for t in ("xmin", "ymin", "xmax", "ymax")]
        xyxy[0] -= 1.0  # 1-based inclusive -> continuous
        xyxy[1] -= 1.0
        objects.append((_text(obj, "name", where), xyxy, (obj.findtext("difficult") or "0").strip() == "1"))
    return name, width, height, objects


def load_voc(root: str | Path, split: str | None = None) -> DatasetIndex:
    """Read a VOC dataset.

    Args:
        root: the folder holding Annotations/ and JPEGImages/ (e.g. VOCdevkit/VOC2012).
        split: a list in ImageSets/Main/ ("train", "val", "trainval", "test"); None: every
            annotation file.

    Raises:
        ValueError: malformed xml (line, column), a missing tag or non-numeric coordinate
            (file, object), an unknown class when categories.txt lists them, a split list
            that does not exist, an image path escaping JPEGImages/.
    """
    root = Path(root)
    ann_dir, image_dir = root / "Annotations", root / "JPEGImages"
    if not ann_dir.is_dir():
        raise ValueError(f"{root}: not a VOC dataset (no Annotations/ folder)")
    if split is None:
        ids = sorted(p.stem for p in ann_dir.glob("*.xml"))
    else:
        listing = root / "ImageSets" / "Main" / f"{split}.txt"
        if not listing.is_file():
            raise ValueError(f"{root}: no split {split!r} ({listing} does not exist)")
        ids = [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]
    parsed = [(i, _parse(ann_dir / f"{i}.xml")) for i in ids]
    categories = _categories(root, {name for _, (_, _, _, objs) in parsed for name, _, _ in objs})
    label_of = {c.name: label for label, c in enumerate(categories)}
    issues = DataIssues(str(root))
    records = []
    next_ann = 1
    for image_id, (stem, (file_name, width, height, objects)) in enumerate(parsed, start=1):
        path = resolve_under(image_dir, file_name, f"{ann_dir / stem}.xml")
        if not path.is_file():
            issues.add("missing image", f"{stem} {path}")
            continue
        for name, _, _ in objects:
            if name not in label_of:
                raise ValueError(f"{ann_dir / stem}.xml: unknown class {name!r} (categories.txt lists {len(label_of)})")
        width, height = real_size(path, width, height, f"{stem}.xml {path}", issues)
        boxes = np.array([o[1] for o in objects], dtype=np.float64).reshape(-1, 4)
        ann_ids = np.arange(next_ann, next_ann + len(objects), dtype=np.int64)
        next_ann += len(objects)
        keep = clean_boxes(boxes, width, height, [f"{stem}.xml object {k + 1}" for k in range(len(objects))], issues)
        kept = [o for o, k in zip(objects, keep) if k]
        boxes = boxes[keep]
        records.append(
            ImageRecord(image_id, path, file_name, width, height, boxes,
                        np.array([label_of[o[0]] for o in kept], dtype=np.int64),
                        np.array([o[2] for o in kept], dtype=bool),
                        (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), ann_ids[keep])
        )
    issues.log()
    return DatasetIndex(records, categories, image_dir, str(root), "voc", issues)


def _categories(root: Path, names: set[str]) -> list[Category]:
    listing = root / "categories.txt"
    if listing.is_file():
        categories = []
        for line_no, line in enumerate(listing.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                cid, _, name = line.strip().partition(" ")
                if not cid.isdigit() or not name:
                    raise ValueError(f"{listing}:{line_no}: expected 'id name', got {line!r}")
                categories.append(Category(int(cid), name))
        return categories
    ordered = list(VOC_CLASSES) if names <= set(VOC_CLASSES) else sorted(names)
    return [Category(i + 1, n) for i, n in enumerate(ordered)]


def write_voc(index: DatasetIndex, out: str | Path, split: str = "train", *, images: str = "copy") -> Path:
    """Write ``index`` as a VOC dataset under ``out`` (crowd regions as ``difficult``); returns ``out``.

    Also writes ``categories.txt`` so the category ids survive a round trip, and appends
    the split's ids to ``ImageSets/Main/<split>.txt``.
    """
    out = Path(out)
    ann_dir, image_dir, sets = out / "Annotations", out / "JPEGImages", out / "ImageSets" / "Main"
    for d in (ann_dir, image_dir, sets):
        d.mkdir(parents=True, exist_ok=True)
    stems = []
    for r in index.records:
        stem = Path(r.file_name).with_suffix("").as_posix().replace("/", "__")
        stems.append(stem)
        place_image(r.path, image_dir / (stem + Path(r.file_name).suffix), images)
        ann_dir.joinpath(f"{stem}.xml").write_text(_xml(r, stem + Path(r.file_name).suffix, index.class_names))
    (out / "categories.txt").write_text("".join(f"{c.id} {c.name}\n" for c in index.categories))
    with open(sets / f"{split}.txt", "a") as f:
        f.write("".join(s + "\n" for s in stems))
    return out


def _xml(record: ImageRecord, file_name: str, names: list[str]) -> str:
    annotation = ET.Element("annotation")
    ET.SubElement(annotation, "filename").text = file_name
    size = ET.SubElement(annotation, "size")
    for tag, value in (("width", record.width), ("height", record.height), ("depth", 3)):
        ET.SubElement(size, tag).text = str(value)
    for (x1, y1, x2, y2), label, crowd in zip(record.boxes, record.labels, record.iscrowd):
        obj = ET.SubElement(annotation, "object")
        ET.SubElement(obj, "name").text = names[label]
        ET.SubElement(obj, "difficult").text = str(int(crowd))
        box = ET.SubElement(obj, "bndbox")
        for tag, value in (("xmin", x1 + 1), ("ymin", y1 + 1), ("xmax", x2), ("ymax", y2)):
            ET.SubElement(box, tag).text = _num(value)
    ET.indent(annotation)
    return ET.tostring(annotation, encoding="unicode") + "\n"


def _num(v: float) -> str:
    """Integers as VOC writes them; other values to 1e-6 px."""
    return str(int(v)) if float(v).is_integer() else f"{v:.6f}".rstrip("0")
