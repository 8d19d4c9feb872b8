"""detection_collate and make_loader (one per rank under DDP, workers)."""
import numpy as np
import torch

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


def test_make_loader_ranks_split_each_epoch():
    ds = ShapesDetection('val', num_images=6, transform=BaseTransform(32, MEANS))
    seen = []
    for rank in (0, 1):
        loader = make_loader(ds, 1, seed=0, start_iter=0, max_iter=3, rank=rank,
                             world_size=2)
        assert len(loader) == 3 and loader.pin_memory is False
        for imgs, targets in loader:
            assert imgs.shape == (1, 3, 32, 32) and len(targets) == 1
        seen += [i for it in range(3) for i, _ in loader.batch_sampler.batch(it)]
    assert sorted(seen) == list(range(6))


def test_make_loader_workers_equal_main_process():
    ds = ShapesDetection('val', num_images=4, transform=BaseTransform(32, MEANS))
    a = list(make_loader(ds, 2, seed=3, max_iter=3, num_workers=0))
    b = list(make_loader(ds, 2, seed=3, max_iter=3, num_workers=1))
    assert len(a) == len(b) == 3
    for (xa, ta), (xb, tb) in zip(a, b):
        torch.testing.assert_close(xa, xb)
        for u, v in zip(ta, tb):
            torch.testing.assert_close(u, v)


def test_shuffle_false_is_dataset_order():
    from data.loader import IterationBatchSampler
    s = IterationBatchSampler(5, 2, seed=3, start_iter=0, max_iter=6, shuffle=False)
    assert [[i for i, _ in s.batch(it)] for it in range(6)] == \
        [[0, 1], [2, 3], [0, 1], [2, 3], [0, 1], [2, 3]]
    shuffled = IterationBatchSampler(5, 2, seed=3, start_iter=0, max_iter=6)
    assert [[i for i, _ in shuffled.batch(it)] for it in range(2)] != [[0, 1], [2, 3]]
