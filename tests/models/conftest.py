"""A handful of synthetic images that every detector must learn to detect (the overfit tests)."""

import pytest
import torch

from detkit.data import DetectionDataset, open_dataset
from detkit.data.synthetic import generate
from detkit.evaluation import detections_to_results, evaluate


@pytest.fixture(scope="session")
def handful(tmp_path_factory):
    """(index, images, targets): 4 synthetic 128-px images, 11 objects of 5 classes."""
    folder = tmp_path_factory.mktemp("handful")
    generate(folder, 4, seed=11, size=128)
    index = open_dataset(folder)
    dataset = DetectionDataset(index)
    images, targets = zip(*(dataset[i] for i in range(len(dataset))))
    return index, list(images), list(targets)


def ap50(model, index, images, targets) -> float:
    """COCO AP at IoU 0.5 of the model's eval-mode detections on the images."""
    model.eval()
    with torch.no_grad():
        detections = model(images)
    results = detections_to_results([(t["image_id"], d) for t, d in zip(targets, detections)], index.category_ids)
    return evaluate(index, results).stats["AP50"]
