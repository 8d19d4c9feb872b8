"""Training batches: ``detection_collate`` and ``make_loader``.

The batches of iteration ``it`` and their augmentation randomness are a pure
function of ``(seed, it, rank)`` (:class:`IterationBatchSampler` and
:class:`SeededSamples`), so the loader can be restarted at any iteration and a
resumed run sees exactly the data an uninterrupted one sees, whatever the
number of DataLoader workers. The loader yields exactly ``max_iter -
start_iter`` batches: no epoch boundary and no StopIteration inside the
schedule.

A bad sample (a :class:`~data.base.DatasetError`: truncated image, broken
annotation) reaches the caller as that error, raised in the main process
with its own one-line message, with DataLoader workers or without (never
torch's "Caught DatasetError in DataLoader worker process 0. Original
Traceback"). With ``skip_bad`` the sample is replaced by the next good one
of the dataset (same seed, so the run stays a pure function of the seed) and
``on_skip(message)`` is called in the main process for each bad sample met.
"""
import random

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from data.base import DatasetError

# OpenCV's thread pool is not fork-safe: a forked DataLoader worker that
# touches it after the parent used it can deadlock. The loaders' parallelism
# is the workers, so OpenCV runs single-threaded here, set once in the parent
# before any worker is forked (the workers inherit it).
cv2.setNumThreads(1)

__all__ = ['detection_collate', 'make_loader', 'seed_all', 'BatchLoader',
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


class _Bad:
    """A sample that could not be read: ``messages`` (one per bad file
    tried) and the good ``sample`` that replaces it (None: none, the batch
    stops)."""

    def __init__(self, messages, sample=None):
        self.messages, self.sample = tuple(messages), sample


class SeededSamples(Dataset):
    """Wrap a dataset so that item ``(index, seed)`` is ``dataset[index]``
    computed right after seeding the global RNGs with ``seed``: the
    augmentation of every sample is fixed by its seed, in the main process or
    in any worker.

    A :class:`~data.base.DatasetError` is returned, not raised (a marker
    that :func:`make_loader`'s batches carry to the main process). With
    ``skip_bad`` the next indices are tried, up to ``max_tries``, and the
    first good sample is returned with the messages of the bad ones."""

    def __init__(self, dataset, skip_bad=False, max_tries=100):
        self.dataset, self.skip_bad = dataset, skip_bad
        self.max_tries = max(1, min(int(max_tries), len(dataset)))

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        index, seed = int(key[0]), int(key[1])
        bad = []
        for k in range(self.max_tries if self.skip_bad else 1):
            seed_all(seed)
            try:
                sample = self.dataset[(index + k) % len(self.dataset)]
            except DatasetError as e:
                bad.append(str(e).strip().splitlines()[0] if str(e).strip() else repr(e))
                continue
            return _Bad(bad, sample) if bad else sample
        if self.skip_bad:
            bad.append(f'{getattr(self.dataset, "source", "the dataset")}: '
                       f'{len(bad)} bad samples in a row, giving up')
        return _Bad(bad)


class _Batch:
    """What the loader's workers send: the collated ``data``, the messages of
    the bad samples replaced (``skipped``), or the ``error`` that stops it."""

    def __init__(self, data=None, skipped=(), error=None):
        self.data, self.skipped, self.error = data, tuple(skipped), error

    def pin_memory(self):                      # DataLoader(pin_memory=True)
        from torch.utils.data._utils.pin_memory import pin_memory
        if self.data is not None:
            self.data = pin_memory(self.data)
        return self


class _Collate:
    """Collate the good samples; carry the bad ones' messages."""

    def __init__(self, collate_fn):
        self.collate_fn = collate_fn

    def __call__(self, batch):
        samples, skipped = [], []
        for item in batch:
            if isinstance(item, _Bad):
                if item.sample is None:
                    return _Batch(error=item.messages[-1], skipped=skipped + list(item.messages[:-1]))
                skipped.extend(item.messages)
                item = item.sample
            samples.append(item)
        return _Batch(self.collate_fn(samples), skipped)


class BatchLoader:
    """The DataLoader of :func:`make_loader` (``loader`` attribute), iterated
    as ``(images, targets)``; bad samples are raised as DatasetError or
    passed to ``on_skip``. Other attributes are the DataLoader's."""

    def __init__(self, loader, on_skip=None):
        self.loader, self.on_skip = loader, on_skip

    def __len__(self):
        return len(self.loader)

    def __getattr__(self, name):
        return getattr(self.__dict__['loader'], name)

    def __iter__(self):
        for b in self.loader:
            for m in b.skipped:
                if self.on_skip is not None:
                    self.on_skip(m)
            if b.error is not None:
                raise DatasetError(b.error)
            yield b.data


class IterationBatchSampler(Sampler):
    """Batches for iterations ``start_iter .. max_iter - 1``, cycling epochs.

    Epoch ``e`` is the permutation of :class:`DistributedSampler` (seed
    ``seed``, epoch ``e``, this rank's shard, ``drop_last``); iteration ``it``
    takes the ``it % batches_per_epoch``-th chunk of epoch
    ``it // batches_per_epoch``. Each element is ``(index, sample_seed)``
    with ``sample_seed`` drawn from ``SeedSequence([seed, it, rank])``.
    ``shuffle=False`` (``train.py --shuffle False``): every epoch in dataset
    order (a fixed order that another trainer can reproduce).
    """

    def __init__(self, num_samples, batch_size, seed=0, start_iter=0,
                 max_iter=1, rank=0, world_size=1, shuffle=True):
        self.sampler = DistributedSampler(range(num_samples), num_replicas=world_size,
                                          rank=rank, shuffle=shuffle, seed=seed,
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
                collate_fn=detection_collate, skip_bad=False, on_skip=None, shuffle=True):
    """A loader (:class:`BatchLoader` over a DataLoader) that yields exactly
    ``max_iter - start_iter`` batches ``(images [B, 3, H, W], targets list
    of [n_i, 5])`` (no epoch boundary and no StopIteration inside the
    schedule). A bad sample raises its DatasetError in the caller's process;
    with ``skip_bad`` it is replaced by the next good one and
    ``on_skip(message)`` is called (in the caller's process). ``shuffle``:
    see :class:`IterationBatchSampler`."""
    sampler = IterationBatchSampler(len(dataset), batch_size, seed, start_iter,
                                    max_iter, rank, world_size, shuffle)
    return BatchLoader(DataLoader(
        SeededSamples(dataset, skip_bad), batch_sampler=sampler, num_workers=num_workers,
        collate_fn=_Collate(collate_fn), pin_memory=pin_memory,
        persistent_workers=False), on_skip)
