"""Convert torchvision's COCO SSD300 (``ssd300_vgg16``) into this codebase's format.

    # once, on a machine with internet (136 MB, 25.1 COCO AP in torchvision's table):
    wget https://download.pytorch.org/models/ssd300_vgg16_coco-b556d3b4.pth -P weights/
    python -m utils.convert_torchvision --in weights/ssd300_vgg16_coco-b556d3b4.pth \\
        --out weights/ssd300_COCO_torchvision.pth

This module never downloads. The network is the same as ours (VGG16
reduced-fc, L2Norm on conv4_3, the four extra blocks, 3x3 multibox heads with
4, 6, 6, 6, 4, 4 boxes per location, box coder weights 10, 10, 5, 5 = our
variances 0.1, 0.2), and torchvision's anchor scales 0.07 ... 1.05 are the
``coco`` config's 21 ... 315 pixels, in the same order. Layer by layer
(:data:`KEY_MAP`; ``A <- B`` means our key prefix A takes torchvision's B):

    vgg.0 ... vgg.21 (conv1_1 ... conv4_3)  <- backbone.features.{same index}
    L2Norm.weight                           <- backbone.scale_weight
    vgg.24, 26, 28 (conv5_x)                <- backbone.extra.0.{1, 3, 5}
    vgg.31 (fc6), vgg.33 (fc7)              <- backbone.extra.0.7.{1, 3}
    extras.{2j, 2j+1} (conv{8+j}_{1,2})     <- backbone.extra.{j+1}.{0, 2}
    loc.k / conf.k                          <- head.{regression,classification}_head.module_list.k

The output file is one of our checkpoints (``{'model', 'classes',
'channel_order', 'args'}``), so eval.py, test.py, demo.live and train.py read
it as it is:

- **Classes**: torchvision predicts 91 (background plus COCO's category ids
  1 ... 90, ten of them unused, named ``'N/A'``). The conf heads keep the
  rows of background and of the 80 real categories, in category-id order
  (``data.COCO_CLASSES``, the order of our COCO loader's labels): 81 classes.
- **Input**: torchvision's model takes RGB in [0, 1] and normalises it by its
  own mean (0.48235, 0.45882, 0.40784) and std (1/255), that is the RGB
  pixels minus (123, 117, 104) to within 0.001 grey levels: our input, the
  BGR image minus ``MEANS`` = (104, 117, 123) swapped to RGB. conv1_1's
  weights are divided by ``255 * std`` (:func:`fold_input`, as in
  :mod:`utils.convert_vgg`; a factor of 1 here), so the converted weights
  equal torchvision's and take our input.

What differs from torchvision's own inference (``python -m
utils.bench.torchvision_coco`` measures it; weights/README.md has the
numbers): our priors clip their centres to [0, 1] (on the 10x10 map of
conv8_2 the last row and column of centres lie at 1.0133); softmax over 81
classes instead of 91; Detect keeps the 200 best candidates per class before
NMS and up to 200 per class after it (torchvision: 400 per class before, 200
per image after), does not clip boxes to the image and does not clamp the
decoded log-sizes at log(1000/16).

SSDlite320 (``ssdlite320_mobilenet_v3_large``, torchvision's
``ssdlite320_mobilenet_v3_large_coco-a79551df.pth``; 21.3 COCO AP): the file
is recognised from its keys, and its network is ours module for module
(:mod:`layers.backbones.mobilenet`), so the conversion is a renaming
(:func:`ssdlite_to_ssd`): ``backbone.features.*`` and ``backbone.extra.*``
stay, ``head.regression_head.module_list.k`` becomes ``loc.k`` and
``head.classification_head.module_list.k`` ``conf.k``. Its input is
torchvision's, (rgb / 255 - 0.5) / 0.5: the record says mean = std = 127.5
(BGR pixels, ``data.config.preprocess_of``), RGB order. The priors are the
``ssdlite320`` config's (torchvision's DefaultBoxGenerator, equal to ours),
and the record holds the complete config. Classes: all 91 of torchvision's
heads are kept by default (background and the COCO category ids 1 ... 90,
'N/A' where unused), so that the raw outputs and the detections equal
torchvision's (a softmax over fewer classes would change every score);
``--coco80`` keeps the 80 real ones (81 with background, the labels of our
COCO loader, as for ssd300_vgg16) for ``eval.py --dataset COCO``.
"""
import argparse
import os
import sys

import torch

from data.config import MEANS
from utils.checkpoint import CheckpointError, atomic_save, extract_state_dict, load_file

SOURCE_FILE = 'ssd300_vgg16_coco-b556d3b4.pth'
SOURCE_URL = 'https://download.pytorch.org/models/' + SOURCE_FILE
# torchvision's ssd300_vgg16 transform (RGB, for inputs in [0, 1])
TV_MEAN = (0.48235, 0.45882, 0.40784)
TV_STD = (1.0 / 255.0, 1.0 / 255.0, 1.0 / 255.0)
MBOX = (4, 6, 6, 6, 4, 4)

# (our key prefix, torchvision's key prefix), every conv of SSD300 in forward order
KEY_MAP = tuple(
    [(f'vgg.{i}', f'backbone.features.{i}') for i in (0, 2, 5, 7, 10, 12, 14, 17, 19, 21)]
    + [(f'vgg.{i}', f'backbone.extra.0.{j}') for i, j in ((24, 1), (26, 3), (28, 5))]
    + [('vgg.31', 'backbone.extra.0.7.1'), ('vgg.33', 'backbone.extra.0.7.3')]
    + [(f'extras.{2 * j + h}', f'backbone.extra.{j + 1}.{2 * h}')
       for j in range(4) for h in (0, 1)]
    + [(f'loc.{k}', f'head.regression_head.module_list.{k}') for k in range(6)]
    + [(f'conf.{k}', f'head.classification_head.module_list.{k}') for k in range(6)])
SCALE_KEY = ('L2Norm.weight', 'backbone.scale_weight')


def coco_categories():
    """torchvision's 91 COCO names (index = category id; 0 '__background__',
    unused ids 'N/A'), from its weights' metadata (no download)."""
    from torchvision.models.detection import SSD300_VGG16_Weights
    return list(SSD300_VGG16_Weights.COCO_V1.meta['categories'])


def kept_classes(categories):
    """``(indices, names)``: the class rows to keep (background first, then
    every category not named 'N/A') and the kept names without background."""
    idx = [0] + [i for i, n in enumerate(categories) if i > 0 and n != 'N/A']
    return idx, tuple(categories[i] for i in idx[1:])


def to_torchvision(sd):
    """Our SSD300 state dict -> torchvision ``ssd300_vgg16``'s keys (same
    classes, same tensors). ``sd`` may be channels-last; the bench uses this
    to give torchvision's model our weights."""
    out = {SCALE_KEY[1]: sd[SCALE_KEY[0]]}
    for ours, theirs in KEY_MAP:
        for p in ('weight', 'bias'):
            out[f'{theirs}.{p}'] = sd[f'{ours}.{p}']
    return out


def _get(tv_sd, key, path):
    if not torch.is_tensor(tv_sd.get(key)):
        raise CheckpointError(f'{path}: not a torchvision ssd300_vgg16 state dict (no {key!r})')
    return tv_sd[key].float()


def fold_input(weight, mean=TV_MEAN, std=TV_STD, ours=MEANS):
    """conv1_1's weight for inputs ``(rgb / 255 - mean) / std`` -> for inputs
    ``rgb - ours[::-1]`` (``ours`` is BGR, as ``MEANS``): divided by
    ``255 * std`` per input channel (for ``ssd300_vgg16``, std = 1/255: a
    factor of 1). The bias is left as it is, as in :mod:`utils.convert_vgg`:
    ``255 * mean`` must equal ``ours`` to within one grey level (it does to
    0.001: torchvision's means are 123/255, 117/255, 104/255 rounded to five
    digits). Float64 arithmetic; returns float32."""
    gap = (torch.tensor(ours[::-1], dtype=torch.float64)
           - 255.0 * torch.tensor(mean, dtype=torch.float64)).abs().max().item()
    if gap >= 1.0:
        raise ValueError(f'input means differ by {gap:.2f} grey levels from {ours}')
    scale = 255.0 * torch.tensor(std, dtype=torch.float64)
    return (weight.double() / scale.view(1, 3, 1, 1)).float()


def torchvision_to_ssd(tv_sd, categories=None, fold=True, path='<state dict>'):
    """Map torchvision's ``ssd300_vgg16`` state dict to ours.

    Args:
        tv_sd: its state dict (``backbone.*``, ``head.*``; anchors have no tensors).
        categories: its class names (index = class); default torchvision's
            COCO list, used when the heads have 91 classes. Classes named
            'N/A' are dropped; with another class count all are kept.
        fold: fold its input normalisation into conv1_1 (module docstring).
    Returns:
        ``(state_dict, names)``: our keys, float32; ``names`` the kept class
        names without background (``None`` when unknown).
    """
    sd = {SCALE_KEY[0]: _get(tv_sd, SCALE_KEY[1], path).clone()}
    for ours, theirs in KEY_MAP:
        for p in ('weight', 'bias'):
            sd[f'{ours}.{p}'] = _get(tv_sd, f'{theirs}.{p}', path).clone()
    if sd['vgg.0.weight'].shape[1:] != (3, 3, 3) or sd['vgg.31.weight'].shape != (1024, 512, 3, 3):
        raise CheckpointError(f'{path}: not an SSD300 VGG16 (conv1_1 {tuple(sd["vgg.0.weight"].shape)},'
                              f' fc6 {tuple(sd["vgg.31.weight"].shape)})')
    total = sd['conf.0.weight'].shape[0] // MBOX[0]
    if categories is None and total == 91:
        categories = coco_categories()
    if categories is not None and len(categories) != total:
        raise CheckpointError(f'{path}: {total} classes, but {len(categories)} names given')
    idx, names = (kept_classes(categories) if categories is not None
                  else (list(range(total)), None))
    for k, a in enumerate(MBOX):
        for p in ('weight', 'bias'):
            t = sd[f'conf.{k}.{p}']
            if t.shape[0] != a * total:
                raise CheckpointError(f'{path}: conf.{k}.{p} has {t.shape[0]} rows, '
                                      f'expected {a} x {total}')
            sd[f'conf.{k}.{p}'] = t.view(a, total, *t.shape[1:])[:, idx].reshape(
                a * len(idx), *t.shape[1:]).contiguous()
    if fold:
        sd['vgg.0.weight'] = fold_input(sd['vgg.0.weight'])
    return sd, names


SSDLITE_FILE = 'ssdlite320_mobilenet_v3_large_coco-a79551df.pth'
SSDLITE_URL = 'https://download.pytorch.org/models/' + SSDLITE_FILE
SSDLITE_HEADS = ('head.regression_head.module_list.', 'head.classification_head.module_list.')
#: the keys that name each model torchvision files can hold
MODEL_KEYS = {'ssd300_vgg16': SCALE_KEY[1],
              'ssdlite320_mobilenet_v3_large': 'backbone.features.1.0.1.0.weight'}


def model_of(tv_sd, path='<state dict>'):
    """Which torchvision detector ``tv_sd`` is: 'ssd300_vgg16' or
    'ssdlite320_mobilenet_v3_large'; a one-line CheckpointError naming what
    was expected otherwise."""
    for name, key in MODEL_KEYS.items():
        if torch.is_tensor(tv_sd.get(key)) and (name == 'ssd300_vgg16' or torch.is_tensor(
                tv_sd.get(SSDLITE_HEADS[1] + '0.1.weight'))):
            return name
    raise CheckpointError(f'{path}: not a torchvision ssd300_vgg16 or '
                          f'ssdlite320_mobilenet_v3_large state dict (expected the keys '
                          f'{MODEL_KEYS["ssd300_vgg16"]!r} or {MODEL_KEYS["ssdlite320_mobilenet_v3_large"]!r})')


def ssdlite_config(tv_sd, num_classes):
    """Our ``ssdlite320`` config for torchvision's SSDlite state dict: the
    tail read from its shapes (480 channels at the end: reduced_tail, as
    torchvision builds it without ImageNet weights; 960: the full one)."""
    from data.config import config_for
    last = tv_sd.get('backbone.features.1.3.0.weight')     # the 1x1 conv after C5
    cfg = config_for(num_classes, 320, 'mobilenet_v3_large')
    return dict(cfg, reduced_tail=last is None or last.shape[0] != 960)


def ssdlite_to_ssd(tv_sd, coco80=False, path='<state dict>'):
    """Map torchvision's ``ssdlite320_mobilenet_v3_large`` state dict to
    ours (a renaming: module docstring).

    Returns ``(state_dict, names, cfg)``: our keys (float32 tensors, BatchNorm
    counters as they are); the class names without background (torchvision's
    COCO list, 'N/A' included, when it has 91 classes; the 80 real ones with
    ``coco80``; None for another count); the complete config."""
    sd = {}
    for k, v in tv_sd.items():
        if not torch.is_tensor(v):
            continue
        for theirs, ours in zip(SSDLITE_HEADS, ('loc.', 'conf.')):
            if k.startswith(theirs):
                k = ours + k[len(theirs):]
        if not k.startswith(('backbone.features.', 'backbone.extra.', 'loc.', 'conf.')):
            raise CheckpointError(f'{path}: unexpected key {k!r} for ssdlite320_mobilenet_v3_large')
        sd[k] = v.float().clone() if v.is_floating_point() else v.clone()
    a = 6
    total = sd['conf.0.1.weight'].shape[0] // a
    names = None
    if total == 91:
        names = list(coco_categories()[1:])
        if coco80:
            idx, kept = kept_classes(coco_categories())
            for k in range(6):
                for p in ('weight', 'bias'):
                    t = sd[f'conf.{k}.1.{p}']
                    sd[f'conf.{k}.1.{p}'] = t.view(a, total, *t.shape[1:])[:, idx].reshape(
                        a * len(idx), *t.shape[1:]).contiguous()
            names, total = list(kept), len(idx)
    elif coco80:
        raise CheckpointError(f'{path}: --coco80 needs torchvision\'s 91 COCO classes, '
                              f'the file has {total}')
    return sd, names, ssdlite_config(tv_sd, total)


def convert_ssdlite(tv_sd, dst, src, coco80=False):
    """Our checkpoint of torchvision's SSDlite state dict, with its record
    (complete cfg, class names, input mean/std, RGB), written to ``dst``."""
    from ssd import build_ssd
    from utils.weights import model_record
    sd, names, cfg = ssdlite_to_ssd(tv_sd, coco80, path=src)
    n = cfg['num_classes']
    net = build_ssd('test', 320, n, cfg=cfg)
    try:
        net.load_state_dict(sd)
    except RuntimeError as e:
        raise CheckpointError(f'{src}: does not fit SSDlite320-MobileNetV3 '
                              f'({str(e).strip().splitlines()[-1].strip()[:200]})') from None
    dataset = 'COCO' if n == 81 and names is not None else None
    ckpt = {'model': sd, 'record': model_record(net, names, dataset, 'RGB'),
            'channel_order': 'RGB',
            'args': {'dataset': dataset or 'custom', 'size': 320,
                     'backbone': 'mobilenet_v3_large'},
            'converted_from': f'torchvision ssdlite320_mobilenet_v3_large ({os.path.basename(src)})'}
    if names is not None:
        ckpt['classes'] = list(names)
    atomic_save(ckpt, dst)
    return ckpt


def convert_torchvision_file(src, dst, coco80=False):
    """Read torchvision's file ``src`` (weights_only; ssd300_vgg16 or
    ssdlite320_mobilenet_v3_large), write our checkpoint ``dst`` atomically.
    Returns the checkpoint dict."""
    if not os.path.isfile(src):
        raise CheckpointError(f'{src}: no such file; download it from {SOURCE_URL} '
                              f'or {SSDLITE_URL} (this tool never downloads)')
    tv_sd = extract_state_dict(load_file(src), src)
    if model_of(tv_sd, src) == 'ssdlite320_mobilenet_v3_large':
        return convert_ssdlite(tv_sd, dst, src, coco80)
    sd, names = torchvision_to_ssd(tv_sd, path=src)
    ckpt = {'model': sd, 'channel_order': 'RGB',
            'args': {'dataset': 'COCO' if names is not None and len(names) == 80 else 'custom',
                     'size': 300},
            'converted_from': f'torchvision ssd300_vgg16 ({os.path.basename(src)})'}
    if names is not None:
        ckpt['classes'] = list(names)
    atomic_save(ckpt, dst)
    return ckpt


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--in', dest='src', default=f'weights/{SOURCE_FILE}',
                   help=f"torchvision's file (from {SOURCE_URL}; default: weights/{SOURCE_FILE})")
    p.add_argument('--out', default='weights/ssd300_COCO_torchvision.pth',
                   help='output checkpoint (default: weights/ssd300_COCO_torchvision.pth)')
    p.add_argument('--coco80', action='store_true',
                   help="SSDlite: keep the 80 real COCO classes (81 with background, our COCO "
                        "loader's labels) instead of torchvision's 91 with 'N/A' placeholders "
                        '(ssd300_vgg16 files always get 81)')
    args = p.parse_args(argv)
    try:
        ckpt = convert_torchvision_file(args.src, args.out, args.coco80)
    except (CheckpointError, ValueError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    if 'loc.0.1.weight' in ckpt['model']:
        n = ckpt['record']['cfg']['num_classes']
        print(f'{args.src} -> {args.out}: SSDlite320-MobileNetV3, {n} classes (background + '
              f'{n - 1}); input: (RGB / 255 - 0.5) / 0.5 (mean = std = 127.5)')
        return 0
    n = ckpt['model']['conf.0.bias'].numel() // MBOX[0]
    print(f'{args.src} -> {args.out}: SSD300, {n} classes (background + {n - 1}); '
          f'input: BGR image - MEANS, swapped to RGB')
    return 0


if __name__ == '__main__':
    sys.exit(main())
