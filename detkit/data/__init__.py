"""detkit.data: datasets in COCO json, YOLO txt and VOC xml, one sample schema, augmentation.

    index = open_dataset("data/coco128/annotations/instances_train2017.json")
    dataset = DetectionDataset(index, train_transforms(hflip=0.5))
    loader = make_loader(dataset, batch_size=4, shuffle=True, workers=2)

Imported on first use (PEP 562), so that ``detkit.data.coco`` and ``detkit.data.records``,
which need numpy alone, load without torch or the augmentation stack: evaluating a results
file (``detkit eval --gt --predictions``) imports neither.
"""

from __future__ import annotations

import importlib
import sys
import types

_WHERE = {  # name -> the module that defines it
    "AspectRatioBatchSampler": "detkit.data.collate",
    "Batch": "detkit.data.collate",
    "Category": "detkit.data.records",
    "DataIssues": "detkit.data.records",
    "DatasetIndex": "detkit.data.records",
    "DetectionDataset": "detkit.data.dataset",
    "ImageRecord": "detkit.data.records",
    "SeveralDatasets": "detkit.data.dataset",
    "Transforms": "detkit.data.transforms",
    "boxes_to_original": "detkit.data.dataset",
    "build_transforms": "detkit.data.transforms",
    "collate": "detkit.data.collate",
    "convert": "detkit.data.convert",
    "datasets_in": "detkit.data.dataset",
    "detect_format": "detkit.data.dataset",
    "eval_transforms": "detkit.data.transforms",
    "make_loader": "detkit.data.collate",
    "open_dataset": "detkit.data.dataset",
    "read_image": "detkit.data.dataset",
    "read_names": "detkit.data.dataset",
    "train_transforms": "detkit.data.transforms",
}


class _Package(types.ModuleType):
    """Keeps a function named like its module (``collate``, ``convert``) as the package's
    attribute when that submodule is imported, as the eager imports did."""

    def __setattr__(self, name: str, value) -> None:
        if isinstance(value, types.ModuleType) and value.__name__ == f"{__name__}.{name}" and name in _WHERE:
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'detkit.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


__all__ = [
    "AspectRatioBatchSampler",
    "Batch",
    "Category",
    "DataIssues",
    "DatasetIndex",
    "DetectionDataset",
    "ImageRecord",
    "SeveralDatasets",
    "Transforms",
    "boxes_to_original",
    "build_transforms",
    "collate",
    "convert",
    "datasets_in",
    "detect_format",
    "eval_transforms",
    "make_loader",
    "open_dataset",
    "read_names",
    "read_image",
    "train_transforms",
]
