"""The optimisation schedule: the paper's defaults, the learning rate of each
iteration, the optimiser and the initial weights."""
import torch
import torch.nn as nn

# ---------------------------------------------------------------- schedule

#: The paper's / Caffe's optimiser settings (SSD300 and SSD512, VOC and COCO):
#: SGD, batch 32, lr 1e-3, momentum 0.9, weight decay 5e-4, gamma 0.1. The
#: iteration counts and lr steps come from the config dict (``max_iter``,
#: ``lr_steps``): VOC 120k (80k, 100k), COCO 400k (280k, 360k).
PAPER = dict(batch_size=32, lr=1e-3, momentum=0.9, weight_decay=5e-4,
             gamma=0.1, warmup=0, save_every=5000, eval_every=10000,
             optimizer='sgd')

#: Keys of a config dict that override :data:`PAPER` (the shapes preset has
#: its own short schedule).
SCHEDULE_KEYS = ('batch_size', 'lr', 'momentum', 'weight_decay', 'gamma',
                 'warmup', 'save_every', 'eval_every', 'max_iter', 'lr_steps',
                 'optimizer')


def schedule_defaults(cfg):
    """The default schedule for a config dict: :data:`PAPER`, the config's
    ``max_iter`` and ``lr_steps``, and any of :data:`SCHEDULE_KEYS` the config
    sets (the shapes preset sets them all)."""
    out = dict(PAPER)
    out.update({k: cfg[k] for k in SCHEDULE_KEYS if k in cfg})
    out['lr_steps'] = tuple(s for s in out['lr_steps'] if s < out['max_iter'])
    return out


def lr_at(it, base_lr, lr_steps, gamma=0.1, warmup=0):
    """Learning rate of iteration ``it`` (0-based): ``base_lr`` times
    ``gamma`` per step in ``lr_steps`` already reached, ramped linearly from
    ``base_lr / warmup`` to ``base_lr`` over the first ``warmup`` iterations.
    A pure function of ``it``, so a resumed run needs no scheduler state."""
    lr = base_lr * gamma ** sum(it >= s for s in lr_steps)
    if warmup and it < warmup:
        lr *= (it + 1) / warmup
    return lr


def set_lr(optimizer, lr):
    for g in optimizer.param_groups:
        g['lr'] = lr


def make_optimizer(net, lr, momentum, weight_decay, kind='sgd'):
    """SGD with momentum and weight decay on all parameters (the paper and
    ssd.pytorch), or AdamW (``betas=(momentum, 0.999)``) for short
    from-scratch schedules such as the shapes preset."""
    if kind == 'adamw':
        return torch.optim.AdamW(net.parameters(), lr=lr, betas=(momentum, 0.999),
                                 weight_decay=weight_decay)
    if kind != 'sgd':
        raise ValueError(f'--optimizer must be sgd or adamw, got {kind!r}')
    return torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum,
                           weight_decay=weight_decay)


def init_weights(net, from_scratch=False, head_std=None):
    """Xavier-uniform weights and zero biases for the extras and the heads
    (ssd.pytorch's ``weights_init``), and for the base too when training from
    scratch. BatchNorm layers keep weight 1, bias 0. ``head_std`` gives
    the loc/conf heads small normal weights instead (the shapes preset: its
    first losses are then those of a uniform guess, not of large random
    logits on the L2Norm-scaled conv4_3 features)."""
    parts = [net.extras, net.loc, net.conf] + ([net.vgg] if from_scratch else [])
    for part in parts:
        for m in part.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
    if head_std:
        for m in list(net.loc) + list(net.conf):
            nn.init.normal_(m.weight, std=head_std)
