"""The pieces of the SSD training loop (``train.py`` reads them top to bottom).

- :func:`schedule_defaults`: the paper's schedule for each dataset.
- :func:`lr_at`: multistep learning rate with an optional linear warm-up.
- :class:`IterationBatchSampler` and :class:`SeededSamples`: the batches of
  iteration ``it`` and their augmentation randomness are a pure function of
  ``(seed, it, rank)``, so the loader can be restarted at any iteration and a
  resumed run sees exactly the data an uninterrupted one sees, whatever the
  number of DataLoader workers.
- :func:`forward_backward`: AMP (bf16, or fp16 with a GradScaler) on CUDA.
- :func:`full_state` / :func:`restore_full_state`: the full checkpoint
  (model, optimizer, schedule, scaler, iteration, RNG states, args).
- :class:`NonFinitePolicy`: what happens when a loss is NaN or Inf.
- :class:`StopSignal`: SIGINT/SIGTERM ask the loop to save and stop.
"""
import math
import random
import signal

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import Dataset, DistributedSampler, Sampler

# ---------------------------------------------------------------- schedule

#: The paper's / Caffe's optimiser settings (SSD300 and SSD512, VOC and COCO):
#: SGD, batch 32, lr 1e-3, momentum 0.9, weight decay 5e-4, gamma 0.1. The
#: iteration counts and lr steps come from the config dict (``max_iter``,
#: ``lr_steps``): VOC 120k (80k, 100k), COCO 400k (280k, 360k).
PAPER = dict(batch_size=32, lr=1e-3, momentum=0.9, weight_decay=5e-4,
             gamma=0.1, warmup=0, save_every=5000, eval_every=10000,
             optimizer='sgd')

#: Keys of a config dict that override :data:`PAPER` (the shapes preset has
#: its own short schedule).
SCHEDULE_KEYS = ('batch_size', 'lr', 'momentum', 'weight_decay', 'gamma',
                 'warmup', 'save_every', 'eval_every', 'max_iter', 'lr_steps',
                 'optimizer')


def schedule_defaults(cfg):
    """The default schedule for a config dict: :data:`PAPER`, the config's
    ``max_iter`` and ``lr_steps``, and any of :data:`SCHEDULE_KEYS` the config
    sets (the shapes preset sets them all)."""
    out = dict(PAPER)
    out.update({k: cfg[k] for k in SCHEDULE_KEYS if k in cfg})
    out['lr_steps'] = tuple(s for s in out['lr_steps'] if s < out['max_iter'])
    return out


def lr_at(it, base_lr, lr_steps, gamma=0.1, warmup=0):
    """Learning rate of iteration ``it`` (0-based): ``base_lr`` times
    ``gamma`` per step in ``lr_steps`` already reached, ramped linearly from
    ``base_lr / warmup`` to ``base_lr`` over the first ``warmup`` iterations.
    A pure function of ``it``, so a resumed run needs no scheduler state."""
    lr = base_lr * gamma ** sum(it >= s for s in lr_steps)
    if warmup and it < warmup:
        lr *= (it + 1) / warmup
    return lr


def set_lr(optimizer, lr):
    for g in optimizer.param_groups:
        g['lr'] = lr


def make_optimizer(net, lr, momentum, weight_decay, kind='sgd'):
    """SGD with momentum and weight decay on all parameters (the paper and
    ssd.pytorch), or AdamW (``betas=(momentum, 0.999)``) for short
    from-scratch schedules such as the shapes preset."""
    if kind == 'adamw':
        return torch.optim.AdamW(net.parameters(), lr=lr, betas=(momentum, 0.999),
                                 weight_decay=weight_decay)
    if kind != 'sgd':
        raise ValueError(f'--optimizer must be sgd or adamw, got {kind!r}')
    return torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum,
                           weight_decay=weight_decay)


def init_weights(net, from_scratch=False, head_std=None):
    """Xavier-uniform weights and zero biases for the extras and the heads
    (ssd.pytorch's ``weights_init``), and for the base too when training from
    scratch. BatchNorm layers keep weight 1, bias 0. ``head_std`` gives
    the loc/conf heads small normal weights instead (the shapes preset: its
    first losses are then those of a uniform guess, not of large random
    logits on the L2Norm-scaled conv4_3 features)."""
    parts = [net.extras, net.loc, net.conf] + ([net.vgg] if from_scratch else [])
    for part in parts:
        for m in part.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
    if head_std:
        for m in list(net.loc) + list(net.conf):
            nn.init.normal_(m.weight, std=head_std)


# -------------------------------------------------------------------- data

def _seed_all(seed):
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
        _seed_all(int(seed))
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


def make_loader(dataset, batch_size, collate_fn, seed, start_iter, max_iter,
                rank=0, world_size=1, num_workers=0, pin_memory=False):
    """A DataLoader that yields exactly ``max_iter - start_iter`` batches
    ``(images [B, 3, H, W], targets list of [n_i, 5])`` (no epoch boundary
    and no StopIteration inside the schedule)."""
    sampler = IterationBatchSampler(len(dataset), batch_size, seed, start_iter,
                                    max_iter, rank, world_size)
    return torch.utils.data.DataLoader(
        SeededSamples(dataset), batch_sampler=sampler, num_workers=num_workers,
        collate_fn=collate_fn, pin_memory=pin_memory,
        persistent_workers=False)


# -------------------------------------------------------------------- step

AMP_DTYPES = {'off': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}


def forward_backward(model, criterion, images, targets, amp_dtype=None, scaler=None):
    """One forward and backward pass.

    ``images [B, 3, H, W]`` on the device; ``targets`` a list of ``[n_i, 5]``
    tensors on the device. The network runs under autocast when ``amp_dtype``
    is set (CUDA); the loss is computed in float32. Returns the detached
    float32 ``(loss_l, loss_c)`` tensors (no host synchronisation).
    """
    device_type = images.device.type
    with torch.autocast(device_type, dtype=amp_dtype or torch.float32,
                        enabled=amp_dtype is not None):
        out = model(images)
    loss_l, loss_c = criterion(out, targets)
    loss = loss_l + loss_c
    if scaler is not None and scaler.is_enabled():
        scaler.scale(loss).backward()
    else:
        loss.backward()
    return loss_l.detach(), loss_c.detach()


def optimizer_step(optimizer, scaler=None):
    """Step (through the GradScaler for fp16) and clear the gradients."""
    if scaler is not None and scaler.is_enabled():
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


class NonFiniteLoss(RuntimeError):
    """Training stopped on a NaN/Inf loss (the message says where)."""


class NonFinitePolicy:
    """What to do when ``loss_l`` or ``loss_c`` is NaN or Inf.

    ``'stop'`` (default): raise :class:`NonFiniteLoss` naming the iteration,
    the bad values and the last finite losses; nothing of the bad iteration
    is applied. ``'skip'``: drop that iteration's update, count it, and stop
    anyway after ``max_consecutive`` non-finite iterations in a row.
    """

    def __init__(self, policy='stop', max_consecutive=20):
        if policy not in ('stop', 'skip'):
            raise ValueError(f'--nan_policy must be stop or skip, got {policy!r}')
        self.policy, self.max_consecutive = policy, max_consecutive
        self.skipped = 0
        self.consecutive = 0
        self.last_finite = None   # (iteration, loss_l, loss_c)

    def check(self, it, loss_l, loss_c, bad):
        """Return True when the update of iteration ``it`` must be applied,
        False when it is skipped; raise :class:`NonFiniteLoss` to stop.
        ``bad`` is True when a loss is not finite on any process."""
        if not bad:
            self.consecutive = 0
            self.last_finite = (it, loss_l, loss_c)
            return True
        where = (f'iteration {it}: non-finite loss (loss_l={loss_l}, loss_c={loss_c}); '
                 + ('no finite loss before it' if self.last_finite is None else
                    'last finite losses at iteration %d: loss_l=%.4f, loss_c=%.4f'
                    % self.last_finite))
        self.consecutive += 1
        if self.policy == 'stop' or self.consecutive > self.max_consecutive:
            extra = (f'; {self.consecutive} in a row' if self.policy == 'skip' else '')
            raise NonFiniteLoss(where + extra + '. Try a lower --lr, --warmup, or '
                                '--nan_policy skip; resume from checkpoint.pth.')
        self.skipped += 1
        return False


# -------------------------------------------------------------- checkpoint

def get_rng_state():
    """Python, numpy, torch (CPU) and CUDA generator states, as tensors and
    plain types only (loadable with ``weights_only=True``)."""
    np_state = np.random.get_state(legacy=False)
    state = {
        'python': random.getstate(),
        'numpy': {'bit_generator': np_state['bit_generator'],
                  'key': torch.from_numpy(np_state['state']['key'].astype(np.int64)),
                  'pos': int(np_state['state']['pos']),
                  'has_gauss': int(np_state['has_gauss']),
                  'gauss': float(np_state['gauss'])},
        'torch': torch.get_rng_state(),
        'cuda': torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def set_rng_state(state):
    """Inverse of :func:`get_rng_state`."""
    v, internal, gauss = state['python']
    random.setstate((v, tuple(internal), gauss))
    n = state['numpy']
    np.random.set_state({'bit_generator': n['bit_generator'],
                         'state': {'key': n['key'].numpy().astype(np.uint32),
                                   'pos': n['pos']},
                         'has_gauss': n['has_gauss'], 'gauss': n['gauss']})
    torch.set_rng_state(state['torch'])
    if state.get('cuda') and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'][:torch.cuda.device_count()])


def full_state(net, optimizer, scaler, iteration, schedule, args, best_map, skipped):
    """The full checkpoint: everything needed to continue exactly."""
    return {
        'model': net.state_dict(),
        'optimizer': optimizer.state_dict(),
        'scheduler': dict(schedule),
        'scaler': scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        'iteration': int(iteration),
        'rng': get_rng_state(),
        'args': {k: v for k, v in vars(args).items() if _plain(v)},
        'best_map': best_map,
        'skipped': int(skipped),
    }


def _plain(v):
    if isinstance(v, (list, tuple)):
        return all(_plain(x) for x in v)
    return v is None or isinstance(v, (bool, int, float, str))


def is_full_checkpoint(obj):
    return isinstance(obj, dict) and 'model' in obj and 'iteration' in obj


def restore_full_state(ckpt, net, optimizer, scaler, restore_rng=True):
    """Load a :func:`full_state` dict; return ``(iteration, best_map, skipped)``."""
    net.load_state_dict(ckpt['model'])
    optimizer.load_state_dict(ckpt['optimizer'])
    if scaler is not None and scaler.is_enabled() and ckpt.get('scaler'):
        scaler.load_state_dict(ckpt['scaler'])
    if restore_rng and ckpt.get('rng'):
        set_rng_state(ckpt['rng'])
    return int(ckpt['iteration']), ckpt.get('best_map'), int(ckpt.get('skipped', 0))


# ----------------------------------------------------------------- signals

class StopSignal:
    """SIGINT/SIGTERM set :attr:`requested`; the loop then saves
    ``checkpoint.pth`` and stops at the end of the iteration. A second SIGINT
    interrupts at once (KeyboardInterrupt)."""

    def __init__(self):
        self.requested = 0
        self._old = {}

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = signum

    def __enter__(self):
        for s in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[s] = signal.signal(s, self._handle)
            except ValueError:    # not the main thread
                pass
        return self

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)
        return False


def fmt_time(seconds):
    if not math.isfinite(seconds):
        return '?'
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f'{h}:{m:02d}:{s:02d}' if h else f'{m}:{s:02d}'
