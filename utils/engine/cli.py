"""The helpers the five scripts share (``train.py``, ``eval.py``, ``test.py``,
``python -m demo.live``, ``python -m utils.export``): one boolean flag parser,
one ``--cuda`` / ``--device`` flag and device rule, one ``--dataset`` flag, the
shared detection flags (``--conf``, ``--iou``, ``--max_det``), the weight-file
and input flags (``--weights``, ``--source``), and one exit wrapper.

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

__all__ = ['str2bool', 'dataset_flag', 'device_flag', 'add_cuda_flag', 'add_dataset_flag',
           'add_detect_flags', 'add_weights_flag', 'add_source_flag', 'cuda_request',
           'device_index', 'select_device', 'one_line', 'run_script', 'USER_ERRORS']

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


def score_flag(v):
    """argparse type: a score threshold, a number in [0, 1]."""
    try:
        x = float(v)
    except ValueError:
        x = None
    if x is None or not 0.0 <= x <= 1.0:
        raise argparse.ArgumentTypeError(f'a score in [0, 1], got {v!r}')
    return x


def count_flag(v):
    """argparse type: an integer >= 0."""
    try:
        n = int(v)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f'an integer >= 0, got {v!r}')
    return n


def add_dataset_flag(parser, default=None, help='dataset'):
    parser.add_argument('--dataset', default=default, type=dataset_flag, metavar='{%s}'
                        % ','.join(DATASETS), help=help)


def device_flag(v):
    """argparse type of ``--device``: 'cpu', 'cuda' or 'cuda:N' (any case)."""
    s = str(v).strip().lower()
    if s in ('cpu', 'cuda') or re.fullmatch(r'cuda:\d+', s):
        return s
    raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N, got {v!r}")


def add_cuda_flag(parser):
    """``--cuda`` (alone: True), ``--cuda True|False`` (ssd.pytorch's), and
    ``--device cpu|cuda|cuda:N`` beside it; default: CUDA when present. The
    same flags and rule in every script (:func:`select_device`)."""
    parser.add_argument('--cuda', default=None, nargs='?', const=True, type=str2bool,
                        help='use CUDA (default: when available; True without CUDA '
                             'is an error, False forces the CPU)')
    parser.add_argument('--device', default=None, type=device_flag, metavar='{cpu,cuda,cuda:N}',
                        help='the device, beside --cuda: cpu is --cuda False, cuda is --cuda '
                             'True, cuda:N picks GPU N (default: CUDA when available)')


def cuda_request(cuda=None, device=None):
    """``--cuda`` and ``--device`` as one request: ``(cuda, index)``, cuda
    None (automatic), True or False, index the N of 'cuda:N' or None.
    ``--cuda False --device cuda`` (or True with cpu) is a ValueError."""
    if device is None:
        return cuda, None
    want = device != 'cpu'
    if cuda is not None and bool(cuda) != want:
        raise ValueError(f'--cuda {cuda} and --device {device} disagree: give one of them')
    return want, (int(device.split(':')[1]) if ':' in device else None)


def device_index(device):
    """The N of a ``--device`` 'cuda:N' (None for 'cpu', 'cuda' or None)."""
    return int(device.split(':')[1]) if device and ':' in device else None


def select_device(cuda=None, device=None):
    """The one device rule: ``cuda`` None -> CUDA when present, else the CPU;
    False -> the CPU; True without CUDA -> ValueError('--cuda True but no CUDA
    device is available ...'); ``device`` ('cpu', 'cuda', 'cuda:N'; see
    :func:`cuda_request`) says the same, and picks the GPU. Returns a
    ``torch.device``."""
    cuda, index = cuda_request(cuda, device)
    device = choose_device(cuda, index=index)
    if device.type == 'cuda':
        import torch
        torch.backends.cudnn.benchmark = True
    return device


#: Detect's NMS IoU when --iou is not given (the paper's 0.45).
NMS_IOU = 0.45


def add_detect_flags(parser, conf, conf_default, conf_help, top_k='--top_k', top_k_default=200,
                     top_k_help='detections kept per class (Detect\'s top_k)', iou=True):
    """The detection flags every detecting script shares, beside its own
    ssd.pytorch names: ``--conf`` (the score threshold; ``conf`` is the
    script's own name for it, e.g. '--confidence_threshold', also the dest),
    ``--max_det`` (``top_k``'s alias, Detect's per-class top_k) and, with
    ``iou``, ``--iou`` / ``--nms_thresh`` (Detect's NMS IoU, dest
    ``nms_thresh``). The README's "Flags shared by every script" lists them."""
    a = parser.add_argument
    a(conf, '--conf', dest=conf.lstrip('-'), default=conf_default, type=float, metavar='SCORE',
      help=f'{conf_help} (default: {conf_default})')
    a(top_k, '--max_det', dest=top_k.lstrip('-'), default=top_k_default, type=int, metavar='N',
      help=f'{top_k_help} (default: {top_k_default})')
    if iou:
        a('--iou', '--nms_thresh', dest='nms_thresh', default=NMS_IOU, type=float, metavar='IOU',
          help=f'NMS IoU threshold: a box is suppressed above this overlap with a better '
               f'one of its class (default: {NMS_IOU})')


def add_weights_flag(parser, name='--trained_model', default=None, help='weight file',
                     required=False):
    """The weight file: ``name`` (ssd.pytorch's ``--trained_model``, or
    demo.live's ``--weights``) with the other spelling as its alias."""
    other = '--weights' if name == '--trained_model' else '--trained_model'
    parser.add_argument(name, other, dest=name.lstrip('-'), default=default, required=required,
                        help=help)


def add_source_flag(parser, name='--input', nargs=None, default=None, help='input'):
    """What to run on: ``name`` (test.py's ``--input``, demo.live's
    ``--source``) with the other spelling as its alias."""
    other = '--source' if name == '--input' else '--input'
    parser.add_argument(name, other, dest=name.lstrip('-'), nargs=nargs, default=default,
                        help=help)


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
