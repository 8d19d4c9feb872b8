"""The helpers the four scripts share (``train.py``, ``eval.py``, ``test.py``,
``python -m demo.live``): one boolean flag parser, one ``--cuda`` flag and
device rule, one ``--dataset`` flag, and one exit wrapper.

Each script is ``main(argv=None) -> int``: it parses its flags and returns
``run_script(name, body, ...)``, which turns the project's error types into
``<script>: error: <one line>`` on stderr and exit code 1 (Ctrl-C: 130).
``sys.exit`` is called only under ``if __name__ == '__main__'``.
"""
import argparse
import re
import sys

import cv2

from data.config import DATASETS, dataset_name
from utils.checkpoint import CheckpointError
from utils.training.distributed import PeerStopped, choose_device
from utils.training.step import NonFiniteLoss

__all__ = ['str2bool', 'dataset_flag', 'add_cuda_flag', 'add_dataset_flag',
           'select_device', 'one_line', 'run_script', 'USER_ERRORS']

_TRUE = ('yes', 'true', 't', 'y', '1')
_FALSE = ('no', 'false', 'f', 'n', '0')

#: Errors that mean bad input (a file, a flag, a dataset), each carrying a
#: one-line message: the exit wrapper prints them without a traceback.
#: ValueError covers DatasetError, EvalInputError and test.py's InputError.
USER_ERRORS = (CheckpointError, NonFiniteLoss, PeerStopped, ValueError, OSError, cv2.error)


def str2bool(v):
    """ssd.pytorch's boolean flag values: yes/true/t/y/1 and no/false/f/n/0
    (any case). Anything else is an argparse error, never a silent False."""
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f'expected True or False, got {v!r}')


def dataset_flag(v):
    """argparse type of ``--dataset``: the one spelling of a dataset name
    (``data.config.dataset_name``; 'voc' is 'VOC')."""
    try:
        return dataset_name(v)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def size_flag(v):
    """argparse type of ``--size``: 300, or a multiple of 32 from 256 to
    1024 (``data.config.check_size``)."""
    from data.config import check_size
    try:
        return check_size(int(v))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def backbone_flag(v):
    """argparse type of ``--backbone``: one of ``data.config.BACKBONES``."""
    from data.config import backbone_name
    try:
        return backbone_name(v)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_dataset_flag(parser, default=None, help='dataset'):
    parser.add_argument('--dataset', default=default, type=dataset_flag, metavar='{%s}'
                        % ','.join(DATASETS), help=help)


def add_cuda_flag(parser):
    """``--cuda`` (alone: True), ``--cuda True|False``; default: CUDA when
    present. The same flag and rule in every script (:func:`select_device`)."""
    parser.add_argument('--cuda', default=None, nargs='?', const=True, type=str2bool,
                        help='use CUDA (default: when available; True without CUDA '
                             'is an error, False forces the CPU)')


def select_device(cuda=None):
    """The one device rule: ``cuda`` None -> CUDA when present, else the CPU;
    False -> the CPU; True without CUDA -> ValueError('--cuda True but no CUDA
    device is available ...'). Returns a ``torch.device``."""
    device = choose_device(cuda)
    if device.type == 'cuda':
        import torch
        torch.backends.cudnn.benchmark = True
    return device


def one_line(e):
    """The first line of an exception's message (its type name when empty).
    An error that torch re-raised from a DataLoader worker ("Caught X in
    DataLoader worker process N. Original Traceback ...") gives the worker's
    own message, as without workers."""
    text = str(e).strip()
    lines = text.splitlines()
    if lines and lines[0].startswith('Caught ') and 'DataLoader worker' in lines[0]:
        own = re.compile(rf'^(?:[\w.]+\.)?{re.escape(type(e).__name__)}: (.+)$')
        for ln in reversed(lines):
            m = own.match(ln.strip())
            if m:
                return m.group(1).strip()
    return lines[0] if text else type(e).__name__


def run_script(script, body, *args, **kwargs):
    """Call ``body(*args, **kwargs)`` and return an exit code: its return
    value (None: 0); 1 after ``<script>: error: <one line>`` on stderr for
    :data:`USER_ERRORS`; 130 on Ctrl-C. Other exceptions are bugs and keep
    their traceback."""
    try:
        rc = body(*args, **kwargs)
    except KeyboardInterrupt:
        print(f'\n{script}: interrupted', file=sys.stderr)
        return 130
    except USER_ERRORS as e:
        print(f'{script}: error: {one_line(e)}', file=sys.stderr)
        return 1
    return 0 if rc is None else int(rc)
