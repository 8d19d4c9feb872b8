"""The blog's question, measured: ``python -m utils.bench.loss_norm``.

Three SGD runs of the shapes preset's network on the same seed, the same
batches (``data.loader.make_loader``: a pure function of seed and
iteration), the same augmentation and the same schedule; only the loss
differs (doc/loss_normalization.md, "The student's situation"):

``divided``    ``MultiBoxLoss`` divided by N, at the paper's lr (1e-3);
``sum``        not divided, at the paper's lr divided by the mean N of the
               first batches (what a user lowering the lr until the
               undivided loss trains ends up with);
``sum_global`` as ``sum`` with ssd.pytorch's hard-negative mining
               (``log_sum_exp`` with one max over the whole batch,
               :func:`utils.bench.reference.hard_negatives`) swapped in.

Every iteration it records N (positives in the batch), the effective step
size (the lr times N / mean N for the undivided runs: the size of the step
an average prior gets), the largest logit spread in the batch (the global
max minus the smallest row max: the underflow needs more than about 88),
and the fraction of the mined negatives that ssd.pytorch's mining chooses
differently from the correct per-row ranking, on that run's own logits. At
the end: VOC07 mAP on the validation images. A step whose loss is not
finite is skipped (as ``train.py --nan_policy skip``) and counted
(``nonfinite``); the statistics cover the finite steps. ``--no_bn`` builds
the preset without BatchNorm (the paper's VGG16 has none). Results: see
doc/loss_normalization.md, "The student's situation".

Output: one JSON line per run and ``OUT/loss_norm[_nobn].json``. Example::

    python -m utils.bench.loss_norm --max_iter 300 --threads 1 --out runs/loss_norm
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch

from data import SSDAugmentation, get_dataset
from data.config import MEANS, shapes
from data.loader import make_loader, seed_all
from layers import MultiBoxLoss
from layers.box_utils import match_indices, pad_targets
from ssd import build_ssd
from utils.bench.reference import hard_negatives
from utils.training.schedule import init_weights, lr_at

RUNS = ('divided', 'sum', 'sum_global')


class GlobalMaxMining(MultiBoxLoss):
    """Our MultiBoxLoss with ssd.pytorch's mining (global-max
    ``log_sum_exp``) instead of the per-row ``log_softmax`` ranking."""

    def _hard_negatives(self, conf_data, pos, num_pos):
        if not self.do_neg_mining:
            return torch.zeros_like(pos)
        return hard_negatives(conf_data.detach(), pos.long(), self.negpos_ratio) & ~pos


def mining_stats(criterion, conf, targets, priors):
    """(fraction of our mined negatives that ssd.pytorch's mining does not
    pick, rows whose global-max log_sum_exp is -inf, logit spread) for one
    batch's ``conf [B, P, C]``."""
    with torch.no_grad():
        conf = conf.detach().float()
        truths, labels, valid = pad_targets(targets, conf.device)
        _, conf_t = match_indices(criterion.threshold, truths, priors, labels, valid)
        pos = conf_t > 0
        ours = MultiBoxLoss._hard_negatives(criterion, conf, pos, pos.sum(1, keepdim=True))
        theirs = hard_negatives(conf, pos.long(), criterion.negpos_ratio) & ~pos
        differ = float((ours & ~theirs).sum()) / max(int(ours.sum()), 1)
        flat = conf.reshape(-1, conf.shape[-1])
        row_max = flat.max(1).values
        gmax = row_max.max()
        dead = int(((flat - gmax).exp().sum(1) == 0).sum())
        return differ, dead, float(gmax - row_max.min())


def mean_positives(ds, cfg, batch, seed, n_batches, priors):
    """Mean N (positives per batch) over the first ``n_batches`` batches."""
    loader = make_loader(ds, batch, seed, 0, n_batches)
    ns = []
    for _, targets in loader:
        truths, labels, valid = pad_targets(targets)
        _, conf_t = match_indices(0.5, truths, priors, labels, valid)
        ns.append(int((conf_t > 0).sum()))
    return float(np.mean(ns))


def build(cfg, seed):
    seed_all(seed)
    net = build_ssd('train', cfg['min_dim'], cfg['num_classes'], cfg=cfg)
    init_weights(net, from_scratch=True, head_std=cfg.get('head_std'))
    return net


def run_one(kind, cfg, args, train_ds, val_ds, mean_n):
    from utils.evaluation.evaluate import evaluate_model
    net = build(cfg, args.seed)
    divide = kind == 'divided'
    loss_cls = GlobalMaxMining if kind == 'sum_global' else MultiBoxLoss
    crit = loss_cls(cfg['num_classes'], 0.5, True, 0, True, 3, 0.5, False, False,
                    variance=cfg['variance'], divide_by_n=divide)
    base_lr = args.lr if divide else args.lr / mean_n
    opt = torch.optim.SGD(net.parameters(), lr=base_lr, momentum=0.9,
                          weight_decay=args.weight_decay)
    loader = make_loader(train_ds, args.batch_size, args.seed, 0, args.max_iter)
    steps = tuple(int(s * args.max_iter) for s in (0.8, 0.95))
    rec = dict(n=[], eff_lr=[], differ=[], dead=[], spread=[], loss=[])
    net.train()
    t0 = time.perf_counter()
    for it, (images, targets) in enumerate(loader):
        lr = lr_at(it, base_lr, steps, 0.1, 0)
        for g in opt.param_groups:
            g['lr'] = lr
        loc, conf, priors = net(images)
        loss_l, loss_c = crit((loc, conf, priors), targets)
        loss = loss_l + loss_c
        if not torch.isfinite(loss):
            rec.setdefault('nonfinite', 0)
            rec['nonfinite'] += 1
            opt.zero_grad(set_to_none=True)
            continue
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        n = sum(int(x) for x in _num_pos(crit, targets, priors))
        d, dead, spread = mining_stats(crit, conf, targets, priors)
        rec['n'].append(n)
        rec['eff_lr'].append(lr if divide else lr * n)
        rec['differ'].append(d), rec['dead'].append(dead), rec['spread'].append(spread)
        rec['loss'].append(float(loss.detach()) / (1 if divide else max(n, 1)))
    train_s = time.perf_counter() - t0
    res = evaluate_model(net, val_ds, batch_size=16, metrics=('voc07',))
    eff = np.array(rec['eff_lr'])
    pre = eff[: steps[0]]                       # before the first lr step
    out = dict(run=kind, batch_norm=bool(cfg.get('batch_norm')), base_lr=base_lr,
               mean_n=mean_n, iterations=args.max_iter, lr_steps=steps,
               voc07_map=round(float(res['voc07']['map']), 4),
               eff_lr_mean=float(pre.mean()), eff_lr_cv=float(pre.std() / pre.mean()),
               eff_lr_min=float(pre.min()), eff_lr_max=float(pre.max()),
               n_min=int(min(rec['n'])), n_max=int(max(rec['n'])),
               mining_differ_mean=float(np.mean(rec['differ'])),
               mining_differ_max=float(np.max(rec['differ'])),
               steps_with_differ=int(np.sum(np.array(rec['differ']) > 0)),
               dead_rows_max=int(max(rec['dead'])), spread_max=float(max(rec['spread'])),
               loss_per_pos_first=float(np.mean(rec['loss'][:10])),
               loss_per_pos_last=float(np.mean(rec['loss'][-10:])),
               nonfinite=rec.get('nonfinite', 0), train_s=round(train_s, 1))
    return out


def _num_pos(crit, targets, priors):
    truths, labels, valid = pad_targets(targets)
    _, conf_t = match_indices(crit.threshold, truths, priors, labels, valid)
    return (conf_t > 0).sum(1).tolist()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--out', default='runs/loss_norm')
    p.add_argument('--max_iter', type=int, default=300)
    p.add_argument('--batch_size', type=int, default=16)
    p.add_argument('--lr', type=float, default=1e-3, help="the paper's lr")
    p.add_argument('--weight_decay', type=float, default=5e-4)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--train_images', type=int, default=2000)
    p.add_argument('--val_images', type=int, default=100)
    p.add_argument('--threads', type=int, default=None)
    p.add_argument('--no_bn', action='store_true', help='the preset without BatchNorm')
    p.add_argument('--runs', default=','.join(RUNS))
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = dict(shapes, batch_norm=not args.no_bn)
    size = cfg['min_dim']
    train_ds = get_dataset('shapes', None, 'train', num_images=args.train_images,
                           transform=SSDAugmentation(size, MEANS, **cfg['augment']))
    from data import BaseTransform
    val_ds = get_dataset('shapes', None, 'val', num_images=args.val_images,
                         transform=BaseTransform(size, MEANS))
    priors = build(cfg, args.seed).priors
    mean_n = mean_positives(train_ds, cfg, args.batch_size, args.seed, 50, priors)
    os.makedirs(args.out, exist_ok=True)
    results = []
    print(f'load {os.getloadavg()[0]:.1f}; mean N over 50 batches {mean_n:.1f}', flush=True)
    for kind in args.runs.split(','):
        r = run_one(kind, cfg, args, train_ds, val_ds, mean_n)
        r['load'] = round(os.getloadavg()[0], 1)
        results.append(r)
        print(json.dumps(r), flush=True)
    name = 'loss_norm_nobn.json' if args.no_bn else 'loss_norm.json'
    with open(os.path.join(args.out, name), 'w') as f:
        json.dump(results, f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
