"""Distributed data parallel (DDP) set-up from the torchrun environment.

``torchrun --nproc_per_node=N train.py ...`` (one machine) or
``torchrun --nnodes=M --nproc_per_node=N --rdzv_backend=c10d
--rdzv_endpoint=HOST:PORT train.py ...`` (several machines) sets ``RANK``,
``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``;
:func:`init_distributed` reads them. A plain ``python train.py`` is a world of
one process and initialises nothing.

Backend: NCCL when the processes use CUDA (one GPU per process, chosen by
``LOCAL_RANK``), gloo on the CPU. Only rank 0 logs and writes files
(:func:`is_main`).
"""
import datetime
import functools
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    """Where this process stands: ``rank`` in ``[0, world_size)``,
    ``local_rank`` on its machine, and its ``device``."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device('cpu')

    @property
    def distributed(self):
        return self.world_size > 1

    @property
    def is_main(self):
        return self.rank == 0


def env_world_size():
    """``WORLD_SIZE`` from the environment (1 when not launched by torchrun)."""
    return int(os.environ.get('WORLD_SIZE', '1'))


def choose_device(cuda=None, local_rank=0, index=None):
    """CUDA (GPU ``local_rank``, or ``index`` from ``--device cuda:N``) when
    available and not refused, else CPU.

    ``cuda``: None picks automatically; False forces the CPU; True asks for
    CUDA and raises a one-line error when there is none."""
    if cuda is None:
        cuda = torch.cuda.is_available()
    elif cuda and not torch.cuda.is_available():
        raise ValueError('--cuda True but no CUDA device is available '
                           '(run with --cuda False, or leave --cuda out)')
    if cuda and index is not None and index >= torch.cuda.device_count():
        raise ValueError(f'--device cuda:{index} but there are {torch.cuda.device_count()} '
                         'CUDA devices')
    if cuda:
        torch.cuda.set_device(local_rank % torch.cuda.device_count() if index is None else index)
        return torch.device('cuda', torch.cuda.current_device())
    return torch.device('cpu')


#: Seconds a process waits for the others in a collective (``train.py
#: --dist_timeout``); PyTorch's own default is 30 minutes.
DIST_TIMEOUT = 600
_timeout = DIST_TIMEOUT


def init_distributed(cuda=None, index=None, timeout=DIST_TIMEOUT):
    """Initialise the process group when launched by torchrun (``WORLD_SIZE``
    > 1); return a :class:`DistInfo`. NCCL on CUDA, gloo on CPU. ``index``
    (``--device cuda:N``) is for one process: under torchrun each process
    takes GPU LOCAL_RANK. ``timeout`` (seconds): how long a collective waits
    for a stuck or dead peer before :class:`PeerStopped` (one line)."""
    global _timeout
    _timeout = int(timeout)
    world_size = env_world_size()
    local_rank = int(os.environ.get('LOCAL_RANK', '0'))
    if index is not None and world_size > 1:
        raise ValueError(f'--device cuda:{index} is for one process; under torchrun each '
                         'process uses GPU LOCAL_RANK (--device cuda)')
    device = choose_device(cuda, local_rank, index)
    if world_size <= 1:
        return DistInfo(0, 1, 0, device)
    backend = 'nccl' if device.type == 'cuda' else 'gloo'
    if not dist.is_initialized():
        kw = {'device_id': device} if device.type == 'cuda' else {}
        # torchrun's store outlives a restart of the worker group: without a
        # prefix per restart, a restarted rank can read the address a dead
        # rank of the previous group published and fail to connect to it
        store, rank, world_size = next(dist.rendezvous('env://'))
        restart = os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')
        store = dist.PrefixStore(f'ssd/restart{restart}', store)
        dist.init_process_group(backend=backend, store=store, rank=rank,
                                world_size=world_size,
                                timeout=datetime.timedelta(seconds=_timeout), **kw)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, device)


def _collective(fn):
    """A collective that turns the backend's timeout (a peer stuck or dead
    for ``--dist_timeout`` seconds) into a one-line :class:`PeerStopped`."""
    @functools.wraps(fn)
    def run(*a, **kw):
        try:
            return fn(*a, **kw)
        except RuntimeError as e:       # DistBackendError, gloo's and NCCL's timeouts
            if isinstance(e, PeerStopped) or 'timed out' not in str(e).lower() and \
                    'timeout' not in str(e).lower():
                raise
            raise PeerStopped(f'process {dist.get_rank()}: no answer from the other '
                              f'processes within --dist_timeout {_timeout} s in '
                              f'{fn.__name__} (a peer is stuck or died); stopping') from None
    return run


def cleanup(barrier_first=False):
    """Destroy the process group, if any; with ``barrier_first`` (a run that
    finished) after every process has arrived, so that none tears the group
    down while another still needs it."""
    if dist.is_available() and dist.is_initialized():
        try:
            if barrier_first:
                barrier()
        finally:
            dist.destroy_process_group()


@_collective
def barrier():
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


@_collective
def all_reduce(t, op=dist.ReduceOp.SUM):
    """``dist.all_reduce`` with the :func:`_collective` timeout message."""
    dist.all_reduce(t, op=op)
    return t


def rank_seed(seed, rank):
    """Seed of the global RNGs in process ``rank`` (distinct per rank)."""
    return int(seed) + 1000003 * int(rank)


def per_rank_batch(batch_size, world_size):
    """``--batch_size`` is the global batch (the paper's 32 on any number of
    GPUs); each process takes ``batch_size / world_size`` images."""
    if batch_size % world_size:
        raise ValueError(f'--batch_size {batch_size} is the global batch and must be '
                         f'divisible by the number of processes ({world_size})')
    return batch_size // world_size


class PeerStopped(RuntimeError):
    """Another process of the group stopped on an error (its own message is
    printed by that process); this one stops too, at the same iteration."""


@_collective
def first_failed(failed, device):
    """Every process says whether it ``failed``; returns the lowest failing
    rank, or None when none failed (always None in a world of one)."""
    if not (dist.is_available() and dist.is_initialized()):
        return 0 if failed else None
    world = dist.get_world_size()
    t = torch.tensor([float(dist.get_rank() if failed else world)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    r = int(t.item())
    return None if r >= world else r


@_collective
def check_same(value, what, device):
    """Raise ValueError when the integer ``value`` differs between the
    processes (e.g. the iteration each one resumed at)."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    t = torch.tensor([float(value), -float(value)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    lo, hi = int(t[0].item()), -int(t[1].item())
    if lo != hi:
        raise ValueError(f'the processes disagree on {what} ({lo} .. {hi}; this one '
                         f'{value}): --save_folder must be one folder that every machine sees')
