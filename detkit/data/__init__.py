"""detkit.data: datasets in COCO json, YOLO txt and VOC xml, one sample schema, augmentation.

    index = open_dataset("data/coco128/annotations/instances_train2017.json")
    dataset = DetectionDataset(index, train_transforms(hflip=0.5))
    loader = make_loader(dataset, batch_size=4, shuffle=True, workers=2)
"""

from detkit.data.collate import AspectRatioBatchSampler, Batch, collate, make_loader
from detkit.data.convert import convert
from detkit.data.dataset import (
    DetectionDataset,
    SeveralDatasets,
    boxes_to_original,
    datasets_in,
    detect_format,
    open_dataset,
    read_image,
    read_names,
)
from detkit.data.records import Category, DataIssues, DatasetIndex, ImageRecord
from detkit.data.transforms import Transforms, build_transforms, eval_transforms, train_transforms

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
