"""Convert torchvision's ImageNet classifiers into ``--basenet`` files of the light backbones.

    # once, on a machine with internet (torchvision's ImageNet weights):
    wget https://download.pytorch.org/models/mobilenet_v3_large-8738ca79.pth -P weights/
    python -m utils.convert_imagenet --in weights/mobilenet_v3_large-8738ca79.pth
    # -> weights/mobilenet_v3_large_basenet.pth (data.config.DEFAULT_BASENETS)

The sibling of :mod:`utils.convert_vgg`; this module never downloads. It
takes ``mobilenet_v3_large-*.pth``, ``mobilenet_v2-*.pth`` and
``resnet50-*.pth`` (torchvision's ``models.X(weights=...)`` state dicts),
recognises which one from its keys, and writes the state dict of
``net.trunk()`` of that backbone: exactly the keys the trunk has, so that
``train.py --basenet`` (``net.trunk().load_state_dict``) takes it; the
classifier layers are dropped.

- MobileNets: the trunk is torchvision's ``features`` cut at C4's expansion
  (:mod:`layers.backbones.mobilenet`); the map of keys is found by building
  both from the same modules (:func:`layers.backbones.mobilenet.imagenet_key_map`):
  ``features.0 ... 12`` and C4's expansion go to ``0.*``, the rest to ``1.*``.
- MobileNetV3's ImageNet weights have the full tail (960 channels after
  C5), while torchvision's SSDlite from scratch halves it (``reduced_tail``,
  the ``ssdlite320`` preset's default, as torchvision builds it without
  ImageNet weights). The file records which (``'reduced_tail': False``
  in its metadata, :data:`RECORD_KEY`): train with a config whose
  ``reduced_tail`` is False.
- ResNet-50: the module :mod:`layers.backbones.resnet` may give the map
  (``imagenet_key_map(cfg)``); otherwise its trunk's tensors are matched in
  order with torchvision's (same shapes required, checked).

Input: torchvision's SSDlite feeds its (ImageNet-initialised) backbone
(rgb / 255 - 0.5) / 0.5, not ImageNet's mean and std, and so do we (the
preset's mean = std = 127.5); nothing is folded.
"""
import argparse
import importlib
import os
import sys

import torch

from utils.checkpoint import CheckpointError, atomic_save, extract_state_dict, load_file

#: the key that tells each torchvision ImageNet classifier, and its shape
SIGNATURES = {
    'mobilenet_v3_large': ('features.4.block.2.fc1.weight', 'features.16.0.weight'),
    'mobilenet_v2': ('features.1.conv.0.0.weight', 'features.18.0.weight'),
    'resnet50': ('layer4.2.conv3.weight', 'fc.weight'),
}
RECORD_KEY = 'ssd_basenet'


def classifier_of(sd, path='<state dict>'):
    """'mobilenet_v3_large', 'mobilenet_v2' or 'resnet50'; a one-line
    CheckpointError naming what was expected otherwise."""
    for name, keys in SIGNATURES.items():
        if all(torch.is_tensor(sd.get(k)) for k in keys):
            return name
    raise CheckpointError(f'{path}: not a torchvision ImageNet mobilenet_v3_large, mobilenet_v2 '
                          f'or resnet50 state dict (no {" / ".join(k[0] for k in SIGNATURES.values())})')


def trunk_config(name, sd):
    """The config whose trunk the classifier ``sd`` fills (V3: reduced_tail
    read from the last conv, 960 channels: False)."""
    from data.config import config_for
    cfg = config_for(21, 320, name)
    if name == 'mobilenet_v3_large':
        cfg = dict(cfg, reduced_tail=sd['features.16.0.weight'].shape[0] != 960)
    return cfg


def key_map(name, cfg):
    """``{trunk key: torchvision key}`` of backbone ``name`` (module docstring)."""
    from layers.backbones import MODULES
    module = importlib.import_module(f'layers.backbones.{MODULES[name]}')
    if hasattr(module, 'imagenet_key_map'):
        return module.imagenet_key_map(cfg)
    import torchvision
    theirs = getattr(torchvision.models, name)(weights=None).state_dict()
    trunk = module.build(cfg, 2)[0].trunk.state_dict()
    pairs = dict(zip(trunk, theirs))
    if len(pairs) != len(trunk) or any(trunk[a].shape != theirs[b].shape for a, b in pairs.items()):
        raise CheckpointError(f'{name}: the trunk of layers/backbones/{MODULES[name]}.py does not '
                              f'match torchvision\'s {name} in order and shapes')
    return pairs


def convert_state(sd, path='<state dict>'):
    """``(trunk state dict, name, cfg)`` of torchvision's ImageNet ``sd``."""
    name = classifier_of(sd, path)
    cfg = trunk_config(name, sd)
    out = {}
    for ours, theirs in key_map(name, cfg).items():
        if theirs not in sd:
            raise CheckpointError(f'{path}: {name} without {theirs!r}')
        v = sd[theirs]
        out[ours] = v.float().clone() if v.is_floating_point() else v.clone()
    return out, name, cfg


def convert_file(src, dst=None):
    """Read ``src`` (weights_only), write the trunk state dict to ``dst``
    (default ``weights/<data.config.DEFAULT_BASENETS[name]>``) atomically,
    with ``{'backbone', 'reduced_tail', 'width_mult'}`` in its metadata.
    Returns ``(dst, state dict, name)``."""
    from collections import OrderedDict

    from data.config import DEFAULT_BASENETS
    if not os.path.isfile(src):
        raise CheckpointError(f'{src}: no such file (this tool never downloads; get torchvision\'s '
                              'ImageNet weights from https://download.pytorch.org/models/)')
    out, name, cfg = convert_state(extract_state_dict(load_file(src), src), src)
    dst = dst or os.path.join('weights', DEFAULT_BASENETS[name])
    out = OrderedDict(out)
    out._metadata = OrderedDict({'': {RECORD_KEY: {
        'backbone': name, 'source': os.path.basename(src),
        'reduced_tail': bool(cfg.get('reduced_tail', False)),
        'width_mult': float(cfg.get('width_mult', 1.0))}}})
    os.makedirs(os.path.dirname(dst) or '.', exist_ok=True)
    atomic_save(out, dst)
    return dst, out, name


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--in', dest='src', required=True,
                   help="torchvision's ImageNet file (mobilenet_v3_large-*.pth, "
                        'mobilenet_v2-*.pth or resnet50-*.pth)')
    p.add_argument('--out', default=None,
                   help='output --basenet file (default: weights/<backbone>_basenet.pth)')
    args = p.parse_args(argv)
    try:
        dst, sd, name = convert_file(args.src, args.out)
    except (CheckpointError, ValueError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    tail = sd._metadata[''][RECORD_KEY]['reduced_tail']
    print(f'{args.src} -> {dst}: {name} trunk, {len(sd)} tensors'
          + ('' if name != 'mobilenet_v3_large' else
             f' (reduced_tail={tail}: train with a config whose reduced_tail is {tail})'))
    return 0


if __name__ == '__main__':
    sys.exit(main())
