"""detection_collate and make_loader (DistributedSampler included)."""
import numpy as np
import torch
from torch.utils.data.distributed import DistributedSampler

from data import (detection_collate, make_loader, ShapesDetection,
                  BaseTransform, MEANS)


def test_collate_with_empty_targets():
    batch = [(torch.zeros(3, 8, 8), np.zeros((0, 5), np.float32)),
             (torch.ones(3, 8, 8), np.array([[0, 0, 1, 1, 2]], np.float32))]
    imgs, targets = detection_collate(batch)
    assert imgs.shape == (2, 3, 8, 8)
    assert [t.shape for t in targets] == [(0, 5), (1, 5)]
    assert targets[1].dtype == torch.float32
    assert targets[1].tolist() == [[0, 0, 1, 1, 2]]


def test_make_loader_with_distributed_sampler():
    ds = ShapesDetection('val', num_images=6, transform=BaseTransform(32, MEANS))
    seen = []
    for rank in (0, 1):
        sampler = DistributedSampler(ds, num_replicas=2, rank=rank,
                                     shuffle=True, seed=0)
        sampler.set_epoch(0)
        loader = make_loader(ds, 2, sampler=sampler, num_workers=0)
        assert loader.pin_memory == torch.cuda.is_available()
        for imgs, targets in loader:
            assert imgs.shape == (2, 3, 32, 32) and len(targets) == 2
        seen += list(iter(sampler))
    assert sorted(seen) == list(range(6))


def test_make_loader_workers_settings():
    ds = ShapesDetection('val', num_images=4, transform=BaseTransform(32, MEANS))
    loader = make_loader(ds, 2, num_workers=1, shuffle=False)
    assert loader.persistent_workers and loader.drop_last is False
    imgs, targets = next(iter(loader))
    assert imgs.shape == (2, 3, 32, 32)
    torch.testing.assert_close(imgs[0], ds[0][0])
