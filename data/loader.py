"""Training batches: ``detection_collate`` and ``make_loader``.

The batches of iteration ``it`` and their augmentation randomness are a pure
function of ``(seed, it, rank)`` (:class:`IterationBatchSampler` and
:class:`SeededSamples`), so the loader can be restarted at any iteration and a
resumed run sees exactly the data an uninterrupted one sees, whatever the
number of DataLoader workers. The loader yields exactly ``max_iter -
start_iter`` batches: no epoch boundary and no StopIteration inside the
schedule.
"""
import random

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

# OpenCV's thread pool is not fork-safe: a forked DataLoader worker that
# touches it after the parent used it can deadlock. The loaders' parallelism
# is the workers, so OpenCV runs single-threaded here, set once in the parent
# before any worker is forked (the workers inherit it).
cv2.setNumThreads(1)

__all__ = ['detection_collate', 'make_loader', 'seed_all',
           'IterationBatchSampler', 'SeededSamples']


def detection_collate(batch):
    """Stack a list of (img [3, H, W], target [n_i, 5]) samples.

    Returns (images FloatTensor [B, 3, H, W], list of B FloatTensors
    [n_i, 5] with rows (x1, y1, x2, y2, label) normalised; n_i may be 0).
    """
    imgs = torch.stack([torch.as_tensor(s[0]) for s in batch], 0)
    targets = [torch.as_tensor(np.asarray(s[1], np.float32)).reshape(-1, 5)
               for s in batch]
    return imgs, targets



def seed_all(seed):
    """Seed python's, numpy's and torch's (CPU) global generators."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.random.default_generator.manual_seed(seed)


class SeededSamples(Dataset):
    """Wrap a dataset so that item ``(index, seed)`` is ``dataset[index]``
    computed right after seeding the global RNGs with ``seed``: the
    augmentation of every sample is fixed by its seed, in the main process or
    in any worker."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        index, seed = key
        seed_all(int(seed))
        return self.dataset[int(index)]


class IterationBatchSampler(Sampler):
    """Batches for iterations ``start_iter .. max_iter - 1``, cycling epochs.

    Epoch ``e`` is the permutation of :class:`DistributedSampler` (seed
    ``seed``, epoch ``e``, this rank's shard, ``drop_last``); iteration ``it``
    takes the ``it % batches_per_epoch``-th chunk of epoch
    ``it // batches_per_epoch``. Each element is ``(index, sample_seed)``
    with ``sample_seed`` drawn from ``SeedSequence([seed, it, rank])``.
    """

    def __init__(self, num_samples, batch_size, seed=0, start_iter=0,
                 max_iter=1, rank=0, world_size=1):
        self.sampler = DistributedSampler(range(num_samples), num_replicas=world_size,
                                          rank=rank, shuffle=True, seed=seed,
                                          drop_last=world_size > 1)
        self.per_epoch = len(self.sampler) // batch_size
        if self.per_epoch == 0:
            raise ValueError(f'the training set has {num_samples} images, fewer than '
                             f'one batch of {batch_size} per process')
        self.batch_size, self.seed, self.rank = batch_size, seed, rank
        self.start_iter, self.max_iter = start_iter, max_iter
        self._epoch, self._perm = None, None

    def __len__(self):
        return max(0, self.max_iter - self.start_iter)

    def batch(self, it):
        """The ``[(index, seed), ...]`` of iteration ``it`` on this rank."""
        epoch, j = divmod(it, self.per_epoch)
        if epoch != self._epoch:
            self.sampler.set_epoch(epoch)
            self._epoch, self._perm = epoch, list(self.sampler)
        idx = self._perm[j * self.batch_size:(j + 1) * self.batch_size]
        seeds = np.random.SeedSequence([self.seed, it, self.rank]).generate_state(len(idx))
        return [(i, int(s)) for i, s in zip(idx, seeds)]

    def __iter__(self):
        for it in range(self.start_iter, self.max_iter):
            yield self.batch(it)


def make_loader(dataset, batch_size, seed=0, start_iter=0, max_iter=1,
                rank=0, world_size=1, num_workers=0, pin_memory=False,
                collate_fn=detection_collate):
    """A DataLoader that yields exactly ``max_iter - start_iter`` batches
    ``(images [B, 3, H, W], targets list of [n_i, 5])`` (no epoch boundary
    and no StopIteration inside the schedule)."""
    sampler = IterationBatchSampler(len(dataset), batch_size, seed, start_iter,
                                    max_iter, rank, world_size)
    return DataLoader(
        SeededSamples(dataset), batch_sampler=sampler, num_workers=num_workers,
        collate_fn=collate_fn, pin_memory=pin_memory,
        persistent_workers=False)
