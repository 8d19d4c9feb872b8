"""Reading and writing weights and checkpoints.

Every load uses ``torch.load(..., weights_only=True)``: a downloaded ``.pth``
cannot run code. Every save is atomic: a temporary file in the same folder,
then ``os.replace``, so that an interrupted save never leaves a truncated file.
"""
import os
import tempfile

import torch


class CheckpointError(RuntimeError):
    """A weight or checkpoint file that cannot be used; the message is one line
    naming the file and the problem."""


def load_file(path, map_location='cpu'):
    """``torch.load`` with ``weights_only=True`` and one-line errors."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f'{path}: no such file')
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, pickle with code, not a torch file
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f'{path}: not a readable PyTorch weight file '
                              f'(truncated or unknown format: {msg})') from None


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


def atomic_save(obj, path):
    """``torch.save`` to a temporary file beside ``path``, then rename."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.tmp-', suffix='.pth', dir=folder)
    try:
        with os.fdopen(fd, 'wb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)        # mkstemp makes 0600; use the umask
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
