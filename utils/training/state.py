"""The full training state in one checkpoint dict: model, optimiser,
schedule, scaler, iteration, RNG states and args (loadable with
``weights_only=True``)."""
import random

import numpy as np
import torch

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
