"""Batching: variable sizes, aspect-ratio grouping, crowd regions left out of training targets."""

import torch

from detkit.data import AspectRatioBatchSampler, DetectionDataset, make_loader, open_dataset
from tests.conftest import shared_path


def test_aspect_ratio_batches_never_mix_portrait_and_landscape():
    ratios = [1.5, 0.7, 1.2, 0.5, 2.0, 0.9, 1.0, 0.8, 1.3]
    sampler = AspectRatioBatchSampler(range(len(ratios)), ratios, batch_size=2)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(len(ratios)))
    for batch in batches:
        assert len({ratios[i] >= 1 for i in batch}) == 1
    assert len(sampler) == len(batches) == 5  # 5 landscape -> 3 batches, 4 portrait -> 2


def test_loader_batches_images_of_different_sizes_without_crowd_targets():
    index = open_dataset(shared_path("coco128", "annotations", "instances_train2017.json"))
    dataset = DetectionDataset(index)
    loader = make_loader(dataset, batch_size=4, shuffle=True, workers=2, group_aspect_ratio=True,
                         generator=torch.Generator().manual_seed(0))
    crowd_in_source = sum(int(r.iscrowd.sum()) for r in index.records)
    seen, crowd_targets = 0, 0
    for batch in loader:
        assert not batch.skipped
        landscape = {img.shape[2] >= img.shape[1] for img in batch.images}
        assert len(landscape) == 1
        for image, target in zip(batch.images, batch.targets):
            assert image.dtype == torch.uint8 and image.shape[0] == 3
            assert target["size"] == tuple(image.shape[1:])
            crowd_targets += int(target["iscrowd"].sum())
        seen += len(batch)
    assert seen == 128 and crowd_in_source == 10 and crowd_targets == 0
    shown = DetectionDataset(index, keep_crowd=True)
    assert sum(int(shown[i][1]["iscrowd"].sum()) for i in range(len(shown))) == 10
