"""Batching: ``detection_collate`` and ``make_loader``, a DataLoader with
settings that keep a GPU fed and that work with DistributedSampler."""
import os

import cv2
import numpy as np
import torch
import torch.utils.data as data

# OpenCV's thread pool is not fork-safe: a forked DataLoader worker that
# touches it after the parent used it can deadlock. The loaders' parallelism
# is the workers, so OpenCV runs single-threaded here, set once in the parent
# before any worker is forked (the workers inherit it).
cv2.setNumThreads(1)

__all__ = ['detection_collate', 'make_loader', 'worker_init']


def detection_collate(batch):
    """Stack a list of (img [3, H, W], target [n_i, 5]) samples.

    Returns (images FloatTensor [B, 3, H, W], list of B FloatTensors
    [n_i, 5] with rows (x1, y1, x2, y2, label) normalised; n_i may be 0).
    """
    imgs = torch.stack([torch.as_tensor(s[0]) for s in batch], 0)
    targets = [torch.as_tensor(np.asarray(s[1], np.float32)).reshape(-1, 5)
               for s in batch]
    return imgs, targets


def worker_init(worker_id):
    """DataLoader worker set-up. OpenCV is already single-threaded (set at
    import, see above; calling into its pool in a forked child can hang), and
    PyTorch already seeds numpy, random and torch differently in each worker."""


def make_loader(dataset, batch_size, shuffle=True, num_workers=None,
                sampler=None, drop_last=None, pin_memory=None,
                generator=None, persistent_workers=None, prefetch_factor=None):
    """A DataLoader for detection training or evaluation.

    Args:
        dataset: any dataset of this package.
        batch_size: images per batch (per process under DDP).
        shuffle: ignored when ``sampler`` is given (set shuffle on the
            DistributedSampler itself, and call ``sampler.set_epoch``).
        num_workers: default min(8, CPUs available to this process).
        sampler: e.g. ``torch.utils.data.distributed.DistributedSampler``.
        drop_last: default ``shuffle`` (training batches are full).
        pin_memory: default True when CUDA is available.
        persistent_workers: default True when num_workers > 0.
    Returns: torch.utils.data.DataLoader yielding detection_collate batches.
    """
    if num_workers is None:
        try:
            cpus = len(os.sched_getaffinity(0))
        except AttributeError:
            cpus = os.cpu_count() or 1
        num_workers = min(8, cpus)
    kw = {}
    if num_workers > 0:
        kw['persistent_workers'] = True if persistent_workers is None \
            else persistent_workers
        kw['prefetch_factor'] = prefetch_factor or 4
        kw['worker_init_fn'] = worker_init
    return data.DataLoader(
        dataset, batch_size=batch_size,
        shuffle=shuffle if sampler is None else False, sampler=sampler,
        num_workers=num_workers, collate_fn=detection_collate,
        pin_memory=torch.cuda.is_available() if pin_memory is None
        else pin_memory,
        drop_last=shuffle if drop_last is None else drop_last,
        generator=generator, **kw)
