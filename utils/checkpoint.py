"""Reading and writing weights and checkpoints.

Every load uses ``torch.load(..., weights_only=True)``: a downloaded ``.pth``
cannot run code. Every save is atomic: a temporary file (``.tmp-*.pth``) in
the same folder, then ``os.replace``, so that an interrupted save never
leaves a truncated file; a full disk or an unwritable folder is one line
(:class:`SaveError`) and the previous file stays as it was. Temporary files
left by a killed save are removed by :func:`remove_stale_temp` (the trainer
calls it when a run starts in its save folder, under the folder's lock).
"""
import errno
import glob
import os
import re
import tempfile
import warnings

import torch

TEMP_PREFIX, TEMP_SUFFIX = '.tmp-', '.pth'


class CheckpointError(RuntimeError):
    """A weight or checkpoint file that cannot be used; the message is one line
    naming the file and the problem."""


class SaveError(CheckpointError):
    """A file could not be written (disk full, unwritable folder); the message
    names the folder and the cause."""


def _load_problem(e):
    """One sentence for why ``torch.load(weights_only=True)`` refused a file
    (never torch's advice to load it with ``weights_only=False``)."""
    text = str(e)
    m = re.search(r'unsupported GLOBAL (\S+)', text)
    if m:
        return (f'holds a pickled Python object ({m.group(1)}), not only tensors; '
                'it is refused because loading it could run code')
    if isinstance(e, EOFError) or 'Ran out of input' in text:
        return 'empty or truncated file'
    if 'zip archive' in text or 'central directory' in text or 'PytorchStreamReader' in text:
        return 'truncated or corrupted (not a complete PyTorch zip archive)'
    return 'not a PyTorch weight file (unknown format)'


def load_file(path, map_location='cpu'):
    """``torch.load`` with ``weights_only=True`` and one-line errors."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f'{path}: no such file')
    try:
        with warnings.catch_warnings():   # torch's note on a legacy pickle protocol
            warnings.filterwarnings('ignore', message='Detected pickle protocol')
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, pickle with code, not a torch file
        raise CheckpointError(f'{path}: {_load_problem(e)}') from None


def check_finite(state, path='<weights>'):
    """Raise a one-line :class:`CheckpointError` naming the first floating
    tensor of the state dict ``state`` that holds NaN or Inf."""
    for k, v in state.items():
        if torch.is_tensor(v) and v.is_floating_point() and v.numel() \
                and not bool(torch.isfinite(v).all()):
            n = int((~torch.isfinite(v)).sum())
            raise CheckpointError(f'{path}: tensor {k} holds {n} NaN/Inf value'
                                  f'{"s" if n > 1 else ""} (of {v.numel()})')
    return state


def extract_state_dict(obj, path='<checkpoint>'):
    """Return the model state dict from ssd.pytorch weights, our weights-only
    snapshots, or our full checkpoints (``{'model': ...}``), with any
    ``module.`` prefix (DataParallel, DDP) or ``_orig_mod.`` (torch.compile)
    removed."""
    if isinstance(obj, dict) and 'model' in obj and isinstance(obj['model'], dict):
        obj = obj['model']
    elif isinstance(obj, dict) and 'state_dict' in obj and isinstance(obj['state_dict'], dict):
        obj = obj['state_dict']
    if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()):
        raise CheckpointError(f'{path}: holds no model state dict')
    out = {}
    for k, v in obj.items():
        for prefix in ('module.', '_orig_mod.'):
            while k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def load_model_state(path, map_location='cpu'):
    """Load a file and return its model state dict (see :func:`extract_state_dict`)."""
    return extract_state_dict(load_file(path, map_location), path)


def load_into(model, path, strict=True):
    """Load ``path`` into ``model`` (unwrapping DDP), with a one-line error when
    the keys or shapes do not fit."""
    model = getattr(model, 'module', model)
    state = load_model_state(path)
    try:
        model.load_state_dict(state, strict=strict)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise CheckpointError(f'{path}: does not fit this model '
                              f'({" ".join(x.strip() for x in first[:2])[:300]})') from None
    return model


class _Writer:
    """A file wrapper that keeps the OSError of a failed write: torch.save
    reports it as 'unexpected pos ...', which names neither cause nor file."""

    def __init__(self, f):
        self.f, self.error = f, None

    def write(self, b):
        try:
            return self.f.write(b)
        except OSError as e:
            self.error = e
            raise

    def flush(self):
        return self.f.flush()


def _save_error(e, folder, name):
    """A :class:`SaveError` for the OSError ``e`` writing ``name`` in ``folder``."""
    cause = {errno.ENOSPC: 'no space left on device', errno.EDQUOT: 'disk quota exceeded',
             errno.EACCES: 'permission denied', errno.EPERM: 'permission denied',
             errno.EROFS: 'read-only file system'}.get(e.errno) \
        or (e.strerror or str(e)).lower()
    kept = ' (the previous one is kept)' if os.path.exists(os.path.join(folder, name)) else ''
    return SaveError(f'{folder}: {cause} while writing {name}{kept}')


def atomic_save(obj, path):
    """``torch.save`` to a temporary file beside ``path``, then rename.

    A full disk or an unwritable folder raises :class:`SaveError` (one line:
    the folder and the cause); ``path`` is then untouched and the temporary
    file removed."""
    _atomic_write(path, lambda w: torch.save(obj, w))


def atomic_write_text(text, path):
    """Write the str ``text`` (UTF-8) to ``path`` as :func:`atomic_save` does
    (a temporary file beside it, then rename; :class:`SaveError`)."""
    atomic_write_bytes(text.encode('utf-8'), path)


def atomic_write_bytes(data, path):
    """Write ``data`` (bytes, e.g. an encoded PNG) to ``path`` as
    :func:`atomic_save` does."""
    _atomic_write(path, lambda w: w.write(data))


def _atomic_write(path, dump):
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    name = os.path.basename(path)
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=folder)
        with os.fdopen(fd, 'wb') as f:
            w = _Writer(f)
            try:
                dump(w)
            except RuntimeError:
                if w.error is not None:
                    raise w.error from None
                raise
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)        # mkstemp makes 0600; use the umask
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise _save_error(e, folder, name) from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def remove_stale_temp(folder):
    """Remove the temporary files (``.tmp-*.pth``) a killed :func:`atomic_save`
    left in ``folder``; returns their names. Call it only while no other
    process saves there (the save folder's lock)."""
    gone = []
    for p in glob.glob(os.path.join(glob.escape(os.fspath(folder)),
                                    f'{TEMP_PREFIX}*{TEMP_SUFFIX}')):
        try:
            os.unlink(p)
            gone.append(os.path.basename(p))
        except FileNotFoundError:
            pass
    return gone
