"""Fine-tuning: start from a trained detector (``train.py --pretrained``)
and keep parts of it fixed (``--freeze``).

``--pretrained FILE`` (:func:`init_from_pretrained`): the network is first
initialised as at the start of training from scratch (Xavier weights, zero
biases; the preset's small head weights), then every tensor of FILE whose
name and shape fit is copied in (:func:`utils.weights.load_matching`). What
does not fit, normally the ``conf`` heads for another number of classes, so
keeps its fresh initialisation, and one line lists it. Unlike ``--resume``
it starts at iteration 0 with a fresh optimiser; it replaces ``--basenet``.

``--freeze vgg,extras`` (:func:`freeze`): the parameters of those modules
get ``requires_grad = False`` and are left out of the optimiser, so neither
the gradient nor the weight decay moves them. BatchNorm layers inside a
frozen module (only the shapes preset has any) also keep their running
statistics: their momentum is set to 0. In training mode they still
normalise with the batch's statistics, as any BatchNorm layer does.
"""
import argparse

import torch.nn as nn

#: Module names ``--freeze`` accepts (the SSD's top-level parts): VGG16's
#: lists; ``trunk``, the ImageNet part of any backbone (``net.vgg`` for
#: VGG16); ``backbone``, everything before the heads (VGG16: vgg, L2Norm and
#: extras). Another backbone's ``extras`` are ``net.backbone.extras``.
FREEZABLE = ('vgg', 'L2Norm', 'extras', 'loc', 'conf', 'backbone', 'trunk')


def parse_freeze(value):
    """``'vgg,extras'`` -> ``('vgg', 'extras')``, names as in
    :data:`FREEZABLE` (any case); '' or 'none' -> (). argparse type."""
    canon = {n.lower(): n for n in FREEZABLE}
    out = []
    for name in str(value or '').replace(' ', '').split(','):
        if not name or name.lower() == 'none':
            continue
        if name.lower() not in canon:
            raise argparse.ArgumentTypeError(
                f'--freeze: unknown module {name!r}: choose from {", ".join(FREEZABLE)}')
        if canon[name.lower()] not in out:
            out.append(canon[name.lower()])
    return tuple(out)


def freeze(net, names):
    """Keep the parameters of the modules ``names`` (see :data:`FREEZABLE`)
    of ``net`` fixed: ``requires_grad = False``, BatchNorm momentum 0 (the
    running statistics stay). Returns the number of frozen parameters
    (elements; each counted once when names overlap, as trunk and vgg)."""
    count = 0
    for name in names:
        module = _part(net, name)
        for p in module.parameters():
            count += p.numel() if p.requires_grad else 0
            p.requires_grad_(False)
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = 0.0
    return count


def _part(net, name):
    """The module ``--freeze NAME`` names in ``net`` (see :data:`FREEZABLE`)."""
    if name == 'trunk':
        return net.trunk()
    if name == 'backbone' and hasattr(net, 'vgg'):
        return nn.ModuleList([net.vgg, net.L2Norm, net.extras])
    if name == 'extras' and not hasattr(net, 'vgg') and hasattr(net.backbone, 'extras'):
        return net.backbone.extras
    if not hasattr(net, name):
        raise ValueError(f'--freeze {name}: a {net.backbone_name} SSD has no {name} '
                         '(its parts: backbone, trunk, extras, loc, conf)')
    return getattr(net, name)


def init_from_pretrained(net, weights):
    """``--pretrained``: initialise ``net`` as at the start of training
    (every convolution Xavier-uniform with zero bias, the config's
    ``head_std`` for the heads), then load every tensor of ``weights`` (a
    path or a :class:`utils.weights.WeightFile`) that fits. Returns
    ``(WeightFile, message)``: the one line that says what was loaded and
    what was re-initialised."""
    from utils.training.schedule import init_weights
    from utils.weights import load_matching
    init_weights(net, from_scratch=True, head_std=net.cfg.get('head_std'))
    wf, loaded, reinit, unused = load_matching(net, weights)
    msg = f'pretrained {wf.path}: loaded {len(loaded)} of {len(loaded) + len(reinit)} tensors'
    msg += (f'; re-initialised (not in the file or another shape): {", ".join(reinit)}'
            if reinit else '; nothing re-initialised')
    if unused:
        msg += f'; {len(unused)} tensors of the file unused ({", ".join(unused[:4])}' + \
               (', ...)' if len(unused) > 4 else ')')
    return wf, msg
