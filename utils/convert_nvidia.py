"""Convert NVIDIA DeepLearningExamples' SSD300 v1.1 (ResNet-50) into this codebase's format.

    # once, on a machine with internet (NVIDIA NGC / torch.hub 'nvidia_ssd'):
    python -m utils.convert_nvidia --in nvidia_ssdpyt_amp_200703.pt \\
        --out weights/ssd300_resnet50_COCO_nvidia.pth

This module never downloads. NVIDIA's ``SSD300`` (``PyTorch/Detection/SSD/
ssd/model.py``) is our ``resnet50`` backbone module for module
(:mod:`layers.backbones.resnet`), so the conversion is a renaming:

    backbone.features.N.*   <- feature_extractor.feature_extractor.N.*
    backbone.extra.j.*      <- additional_blocks.j.*
    loc.k.* / conf.k.*      <- loc.k.* / conf.k.*

Accepted: NVIDIA's training checkpoints (``{'model': state dict, 'epoch',
'optimizer', ..., 'label_map'}``), a bare state dict, with or without the
``module.`` / ``module.1.`` prefixes that its distributed and AMP runs add.
The class count comes from the conf heads (81 for NVIDIA's COCO: background
plus the 80 categories in category-id order, ``data.COCO_CLASSES``, which is
the order of NVIDIA's ``label_map`` and of our COCO loader).

The heads keep NVIDIA's channel layout (``head_layout`` 'nvidia': channel
``coord * A + anchor``, priors anchor-major within each map, as its
``DefaultBoxes``), so nothing is permuted and the raw outputs equal NVIDIA's
module's (``tests/test_resnet.py``). The record holds the complete
``resnet300`` config: COCO's SSD300 default boxes (scales 21 ... 315, NVIDIA's
``dboxes300_coco``), variances 0.1 / 0.2 (its ``scale_xy`` / ``scale_wh``) and
its input, ImageNet's mean and std on RGB in [0, 1]. eval.py, test.py,
demo.live and utils.export read all of it from the file.
"""
import argparse
import os
import sys

from utils.checkpoint import CheckpointError, atomic_save, extract_state_dict, load_file

#: NVIDIA's key prefixes -> ours
PREFIXES = (('feature_extractor.feature_extractor.', 'backbone.features.'),
            ('additional_blocks.', 'backbone.extra.'),
            ('loc.', 'loc.'), ('conf.', 'conf.'))
#: keys every NVIDIA SSD300-ResNet50 state dict has
SIGNATURE = ('feature_extractor.feature_extractor.6.0.conv1.weight',
             'additional_blocks.0.0.weight', 'loc.0.weight', 'conf.0.weight')


def _unwrap(key):
    """``key`` without the ``1.`` left of NVIDIA's ``module.1.`` (its AMP
    runs wrapped the model in a Sequential; ``module.`` is already gone)."""
    return key[2:] if key.startswith('1.') else key


def nvidia_to_ssd(sd, path='<state dict>'):
    """``(our state dict, num_classes)`` of NVIDIA's SSD300 state dict ``sd``;
    a one-line CheckpointError naming what was expected otherwise."""
    sd = {_unwrap(k): v for k, v in sd.items()}
    missing = [k for k in SIGNATURE if k not in sd]
    if missing:
        raise CheckpointError(f'{path}: not NVIDIA\'s SSD300 v1.1 (ResNet-50) state dict '
                              f'(no {missing[0]})')
    out = {}
    for k, v in sd.items():
        for theirs, ours in PREFIXES:
            if k.startswith(theirs):
                out[ours + k[len(theirs):]] = v.float() if v.is_floating_point() else v
                break
        else:
            raise CheckpointError(f'{path}: unexpected key {k!r} for NVIDIA\'s SSD300 '
                                  f'(expected {", ".join(p for p, _ in PREFIXES)}*)')
    conf0, loc0 = out['conf.0.weight'].shape[0], out['loc.0.weight'].shape[0]
    if loc0 % 4 or conf0 % (loc0 // 4):
        raise CheckpointError(f'{path}: conf.0 has {conf0} channels, not a multiple of '
                              f'the {loc0 // 4} boxes of loc.0')
    return out, conf0 // (loc0 // 4)


def convert_nvidia_file(src, dst):
    """Read NVIDIA's file ``src`` (weights_only), write our checkpoint
    ``dst`` atomically (model, record, classes, args). Returns it."""
    from data import COCO_CLASSES
    from data.config import config_for
    from ssd import build_ssd
    from utils.weights import model_record
    if not os.path.isfile(src):
        raise CheckpointError(f'{src}: no such file (this tool never downloads; NVIDIA\'s '
                              'checkpoint comes from NGC or torch.hub \'nvidia_ssd\')')
    sd, n = nvidia_to_ssd(extract_state_dict(load_file(src), src), src)
    net = build_ssd('test', 300, n, cfg=config_for(n, 300, 'resnet50'))
    try:
        net.load_state_dict(sd)
    except RuntimeError as e:
        raise CheckpointError(f'{src}: does not fit SSD300-ResNet50 '
                              f'({str(e).strip().splitlines()[-1].strip()[:200]})') from None
    names = list(COCO_CLASSES) if n == 81 else None
    dataset = 'COCO' if names else None
    ckpt = {'model': sd, 'record': model_record(net, names, dataset, 'RGB'),
            'channel_order': 'RGB',
            'args': {'dataset': dataset or 'custom', 'size': 300, 'backbone': 'resnet50'},
            'converted_from': f'NVIDIA SSD300 v1.1 ResNet-50 ({os.path.basename(src)})'}
    if names:
        ckpt['classes'] = names
    os.makedirs(os.path.dirname(dst) or '.', exist_ok=True)
    atomic_save(ckpt, dst)
    return ckpt


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--in', dest='src', required=True,
                   help="NVIDIA's SSD300 v1.1 checkpoint (e.g. nvidia_ssdpyt_amp_200703.pt)")
    p.add_argument('--out', default='weights/ssd300_resnet50_COCO_nvidia.pth',
                   help='output checkpoint (default: weights/ssd300_resnet50_COCO_nvidia.pth)')
    args = p.parse_args(argv)
    try:
        ckpt = convert_nvidia_file(args.src, args.out)
    except (CheckpointError, ValueError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    n = ckpt['record']['cfg']['num_classes']
    print(f'{args.src} -> {args.out}: SSD300-ResNet50, {n} classes (background + {n - 1}); '
          'input: ImageNet mean/std on RGB')
    return 0


if __name__ == '__main__':
    sys.exit(main())
