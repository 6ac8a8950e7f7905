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


def overfit(model, handful, optimizer, steps: int, before_eval=None) -> tuple[list[float], float, int]:
    """Train ``model`` on the handful (all 4 images a step, gradients clipped at 10) until its
    AP50 reaches 0.9, evaluating every 20 steps from step 60. ``before_eval(model)`` runs
    before each evaluation. Returns (losses, last AP50, steps taken)."""
    index, images, targets = handful
    params = [p for p in model.parameters() if p.requires_grad]
    history, score, step = [], 0.0, 0
    for step in range(1, steps + 1):
        model.train()
        loss = sum(model(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        optimizer.step()
        history.append(loss.item())
        if step % 20 == 0 and step >= 60:
            if before_eval is not None:
                before_eval(model)
            score = ap50(model, index, images, targets)
            if score >= 0.9:
                break
    return history, score, step
