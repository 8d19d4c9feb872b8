"""The optimisation schedule: the learning rate of each iteration, the
optimiser and the initial weights."""
import math

import torch
import torch.nn as nn

# ---------------------------------------------------------------- schedule
# The default schedules (the paper's numbers, the shapes preset's) live in
# data/config.py next to each config's lr_steps: ``data.config.PAPER`` and
# ``data.config.schedule_defaults``. This module turns a resolved schedule
# into learning rates.


def lr_at(it, base_lr, lr_steps, gamma=0.1, warmup=0, schedule='step', max_iter=None):
    """Learning rate of iteration ``it`` (0-based), ramped linearly from
    ``base_lr / warmup`` to its value over the first ``warmup`` iterations.
    ``schedule='step'`` (the paper): ``base_lr`` times ``gamma`` per step in
    ``lr_steps`` already reached. ``schedule='cosine'``: after the warm-up,
    ``base_lr * (1 + cos(pi * t)) / 2`` with ``t = (it - warmup) / (max_iter -
    warmup)``, from ``base_lr`` down to 0 at ``max_iter`` (``lr_steps`` and
    ``gamma`` unused). A pure function of ``it``, so a resumed run needs no
    scheduler state."""
    if schedule == 'cosine':
        if not max_iter:
            raise ValueError('the cosine lr schedule needs max_iter')
        t = min(max(it - warmup, 0) / max(max_iter - warmup, 1), 1.0)
        lr = base_lr * 0.5 * (1.0 + math.cos(math.pi * t))
    elif schedule == 'step':
        lr = base_lr * gamma ** sum(it >= s for s in lr_steps)
    else:
        raise ValueError(f'--lr_schedule must be step or cosine, got {schedule!r}')
    if warmup and it < warmup:
        lr *= (it + 1) / warmup
    return lr


def set_lr(optimizer, lr):
    """Set ``lr`` on every group, times the group's ``lr_mult`` (1 unless
    :func:`caffe_param_groups` made the groups)."""
    for g in optimizer.param_groups:
        g['lr'] = lr * g.get('lr_mult', 1.0)


def caffe_param_groups(params, weight_decay):
    """Caffe SSD's parameter settings (``param { lr_mult: 1 decay_mult: 1 }
    param { lr_mult: 2 decay_mult: 0 }`` on every convolution): from
    ``(name, parameter)`` pairs, the biases at twice the lr and without
    weight decay, everything else as usual."""
    weights, biases = [], []
    for name, p in params:
        (biases if name.endswith('.bias') else weights).append(p)
    return [dict(params=weights, lr_mult=1.0, weight_decay=weight_decay),
            dict(params=biases, lr_mult=2.0, weight_decay=0.0)]


def make_optimizer(net, lr, momentum, weight_decay, kind='sgd', caffe_bias=False):
    """SGD with momentum and weight decay on all parameters (the paper and
    ssd.pytorch), or AdamW (``betas=(momentum, 0.999)``) for short
    from-scratch schedules such as the shapes preset. Parameters with
    ``requires_grad`` False (``--freeze``) are left out. ``caffe_bias``: the
    groups of :func:`caffe_param_groups` (biases at 2x the lr, no decay; change
    the lr with :func:`set_lr`)."""
    params = [p for p in net.parameters() if p.requires_grad]
    if caffe_bias:
        params = caffe_param_groups(((n, p) for n, p in net.named_parameters()
                                     if p.requires_grad), weight_decay)
        for g in params:
            g['lr'] = lr * g['lr_mult']
    if kind == 'adamw':
        return torch.optim.AdamW(params, lr=lr, betas=(momentum, 0.999),
                                 weight_decay=weight_decay)
    if kind != 'sgd':
        raise ValueError(f'--optimizer must be sgd or adamw, got {kind!r}')
    return torch.optim.SGD(params, lr=lr, momentum=momentum,
                           weight_decay=weight_decay)


def init_weights(net, from_scratch=False, head_std=None):
    """Xavier-uniform weights and zero biases for the extras and the heads
    (ssd.pytorch's ``weights_init``), and for the base too when training from
    scratch. BatchNorm layers keep weight 1, bias 0. ``head_std`` gives
    the loc/conf heads small normal weights instead (the shapes preset: its
    first losses are then those of a uniform guess, not of large random
    logits on the L2Norm-scaled conv4_3 features). Another backbone
    (:mod:`layers.backbones`) keeps the initialisation it was built with
    (torchvision's, NVIDIA's); only ``head_std`` applies."""
    if not hasattr(net, 'vgg'):
        if head_std:
            for m in list(net.loc.modules()) + list(net.conf.modules()):
                if isinstance(m, nn.Conv2d):
                    nn.init.normal_(m.weight, std=head_std)
        return
    parts = [net.extras, net.loc, net.conf] + ([net.vgg] if from_scratch else [])
    for part in parts:
        for m in part.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
    if head_std:
        for m in list(net.loc) + list(net.conf):
            nn.init.normal_(m.weight, std=head_std)
