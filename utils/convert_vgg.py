"""Convert torchvision's ImageNet VGG16 to ssd.pytorch's ``vgg16_reducedfc.pth``.

For users whose S3 link to ``vgg16_reducedfc.pth`` is gone::

    # once, on a machine with internet (527.8 MB):
    wget https://download.pytorch.org/models/vgg16-397923af.pth -P weights/
    python -m utils.convert_vgg --out weights/vgg16_reducedfc.pth \\
        --torchvision_weights weights/vgg16-397923af.pth

This module never downloads. The output is the state dict of ``net.vgg``
(keys ``'0.weight'`` ... ``'33.bias'``, no ``vgg.`` prefix), as ssd.pytorch's
file, so ``net.vgg.load_state_dict(torch.load(out, weights_only=True))`` and ``train.py
--basenet`` take it.

The conversion is the paper's (Sec. 3, "subsample parameters from fc6 and
fc7", the DeepLab-LargeFOV recipe):

- conv1_1 ... conv5_3: ``features.N`` -> ``N`` (the indices coincide).
- fc6: ``classifier.0.weight`` [4096, 25088] is reshaped to the conv it is,
  [4096, 512, 7, 7] (torchvision flattens C, H, W), then every 4th output
  filter and every 3rd spatial tap (rows and columns 0, 3, 6) are kept:
  [1024, 512, 3, 3]. Taps 3 apart on pool5's stride-32 grid become taps 6
  apart on the stride-16 grid once pool5 is 3x3 stride 1, hence dilation 6
  (``vgg[31]``: ``Conv2d(512, 1024, 3, padding=6, dilation=6)``).
- fc7: ``classifier.3.weight`` [4096, 4096] keeps every 4th row and column:
  [1024, 1024, 1, 1] (``vgg[33]``). Biases keep every 4th entry.
- ``classifier.6`` (the 1000-way classifier) is dropped.

Input normalisation: torchvision's VGG expects RGB in [0, 1] normalised by
its mean and std; this codebase feeds RGB in [0, 255] minus ``MEANS`` (the
Caffe convention of ssd.pytorch). Unless ``--no_fold_std``, conv1_1's weights
are divided by ``255 * std[c]`` per input channel so that the converted net
sees the scale it was trained with (torchvision's means equal ``MEANS`` to
within one grey level, so the bias is left as it is).
"""
import argparse
import os
import sys

import torch

from utils.checkpoint import CheckpointError, atomic_save, load_model_state

TORCHVISION_URL = 'https://download.pytorch.org/models/vgg16-397923af.pth'
TORCHVISION_FILE = 'vgg16-397923af.pth'
TORCHVISION_STD = (0.229, 0.224, 0.225)  # RGB, for inputs in [0, 1]
# torchvision features.N conv indices == ssd.pytorch vgg.N indices
CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
FC6, FC7 = 31, 33
FC6_TAPS = (0, 3, 6)      # every 3rd tap of the 7x7 fc6 kernel
FC_STRIDE = 4             # every 4th filter: 4096 -> 1024


def _expect(sd, key, shape, path):
    if key not in sd:
        raise CheckpointError(f'{path}: not a torchvision VGG16 state dict (no {key!r})')
    if tuple(sd[key].shape) != tuple(shape):
        raise CheckpointError(f'{path}: {key} has shape {tuple(sd[key].shape)}, '
                              f'expected {tuple(shape)} (VGG16 without BatchNorm)')
    return sd[key]


def convert_state_dict(tv_sd, fold_std=True, path='<state dict>'):
    """Map a torchvision ``vgg16`` state dict to ``net.vgg``'s state dict.

    Args:
        tv_sd: dict with ``features.{0..28}.weight/bias`` and
            ``classifier.{0,3}.weight/bias`` (``classifier.6`` is ignored).
        fold_std: divide conv1_1 by ``255 * std`` (see the module docstring).
    Returns:
        dict of float32 tensors: ``'N.weight'``/``'N.bias'`` for the 13 convs,
        ``'31.weight'`` [1024, 512, 3, 3], ``'31.bias'`` [1024],
        ``'33.weight'`` [1024, 1024, 1, 1], ``'33.bias'`` [1024].
    """
    out = {}
    in_ch = 3
    for i in CONV_INDICES:
        w = tv_sd.get(f'features.{i}.weight')
        if not torch.is_tensor(w) or w.dim() != 4 or w.shape[1] != in_ch:
            raise CheckpointError(f'{path}: not a torchvision VGG16 state dict '
                                  f'(features.{i}.weight missing or misshapen)')
        out[f'{i}.weight'] = w.float().clone()
        out[f'{i}.bias'] = _expect(tv_sd, f'features.{i}.bias', (w.shape[0],), path).float().clone()
        in_ch = w.shape[0]
    if fold_std:
        std = torch.tensor(TORCHVISION_STD, dtype=torch.float32) * 255.0
        out['0.weight'] = out['0.weight'] / std.view(1, 3, 1, 1)

    taps = torch.tensor(FC6_TAPS)
    w6 = _expect(tv_sd, 'classifier.0.weight', (4096, 512 * 7 * 7), path).float()
    w6 = w6.view(4096, 512, 7, 7)[::FC_STRIDE]                 # [1024, 512, 7, 7]
    out[f'{FC6}.weight'] = w6.index_select(2, taps).index_select(3, taps).contiguous()
    out[f'{FC6}.bias'] = _expect(tv_sd, 'classifier.0.bias', (4096,), path).float()[::FC_STRIDE].clone()

    w7 = _expect(tv_sd, 'classifier.3.weight', (4096, 4096), path).float()
    out[f'{FC7}.weight'] = w7[::FC_STRIDE, ::FC_STRIDE].reshape(1024, 1024, 1, 1).contiguous()
    out[f'{FC7}.bias'] = _expect(tv_sd, 'classifier.3.bias', (4096,), path).float()[::FC_STRIDE].clone()
    return out


def find_torchvision_weights(path=None):
    """The local torchvision VGG16 file: ``path`` if given, else
    ``weights/vgg16-397923af.pth`` or torch hub's cache. Never downloads."""
    if path is not None:
        return path
    hub = os.path.join(torch.hub.get_dir(), 'checkpoints', TORCHVISION_FILE)
    for p in (os.path.join('weights', TORCHVISION_FILE), hub):
        if os.path.isfile(p):
            return p
    raise CheckpointError(
        f'{TORCHVISION_FILE}: not found in weights/ or {os.path.dirname(hub)}; '
        f'download it from {TORCHVISION_URL} and pass --torchvision_weights PATH')


def convert_file(src, dst, fold_std=True):
    """Read torchvision's file ``src`` (weights_only), write ``dst`` atomically.
    Returns the converted state dict."""
    sd = convert_state_dict(load_model_state(src), fold_std=fold_std, path=src)
    atomic_save(sd, dst)
    return sd


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--out', default='weights/vgg16_reducedfc.pth',
                   help='output file (default: weights/vgg16_reducedfc.pth)')
    p.add_argument('--torchvision_weights', default=None,
                   help=f'local {TORCHVISION_FILE} (from {TORCHVISION_URL}); default: '
                        'weights/ or the torch hub cache')
    p.add_argument('--no_fold_std', action='store_true',
                   help="keep conv1_1 as torchvision's (expects inputs scaled by 1/(255*std))")
    args = p.parse_args(argv)
    try:
        src = find_torchvision_weights(args.torchvision_weights)
        sd = convert_file(src, args.out, fold_std=not args.no_fold_std)
    except CheckpointError as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    print(f'{src} -> {args.out}: {len(sd)} tensors, fc6 {tuple(sd["31.weight"].shape)}, '
          f'fc7 {tuple(sd["33.weight"].shape)}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
