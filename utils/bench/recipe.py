"""Recipe check: ``train.py`` against ssd.pytorch's training loop, step for step.

``python -m utils.bench.recipe [--lr 1e-4] [--batch_size 2] [--steps 4] [--lr_steps 2]``

Writes a VOC-layout fixture (one VOC2007 and one VOC2012 image, generated;
one difficult object each, boxes touching the image border), saves one set
of SSD300 weights ``W`` (ssd.pytorch's ``weights_init``: Xavier extras and
heads, zero biases, PyTorch's default for the base), then trains from ``W``
twice:

* ours: ``train.py --dataset VOC --augment none --lr LR --batch_size B
  --max_iter K --save_every K --basenet none --eval_every 0 --num_workers 0
  --resume W --start_iter 0`` (a subprocess: the command line itself);
* ssd.pytorch's loop (:func:`utils.bench.reference.train_loop`): its VOC
  target transform and BaseTransform, its ``adjust_learning_rate``, its SGD
  and its ``MultiBoxLoss`` (global-max mining) on ``loss_l + loss_c``, with
  the images of each batch in train.py's order (ssd.pytorch's loader is
  unseeded, so that is one of its runs; ``--shuffle``: its own shuffling
  loader, seeded, where only the float summation order differs); the
  network is ``build_ssd`` (its equality with ssd.pytorch's is checked by
  the state-dict keys and tests/test_ssd.py).

and prints the per-iteration lr and losses of both, the largest relative
weight difference (``max |ours - theirs| / max |theirs|`` over the
tensors), the largest difference relative to the update (``max |ours -
theirs| / max |theirs - W|``) and the relative L2 difference of all weights. Exit status 1 when the weights differ by more than
``--tol`` (1e-5). The defaults are the outside acceptance check's; SSD300
takes about a minute per run on two CPU cores.
"""
import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time

import cv2
import numpy as np
import torch

from data.config import MEANS, voc
from data.loader import IterationBatchSampler
from data.voc0712 import VOC_CLASSES
from ssd import build_ssd
from utils.bench import reference as ref
from utils.checkpoint import atomic_save, load_model_state
from utils.training.schedule import init_weights

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

#: SSD300's geometry (300x300 input, the six sources, 8732 priors, 21
#: classes, L2Norm on conv4_3) at 1/8 of the channels: the recipe check of
#: tests/test_recipe.py in seconds instead of minutes on a CPU. The recipe
#: (data path, loss, optimiser, schedule) does not depend on the widths.
SMALL = dict(voc, base=[8, 8, 'M', 16, 16, 'M', 32, 32, 32, 'C', 64, 64, 64, 'M', 64, 64, 64],
             fc=64, extras=[16, 'S', 32, 8, 'S', 16, 8, 16, 8, 16])

#: (year, image id, (height, width), objects (name, xmin, ymin, xmax, ymax, difficult)),
#: VOC's 1-based pixel numbers; each image has a difficult object and a box
#: on the image border.
FIXTURE = (
    ('2007', '000005', (375, 500), (('chair', 263, 211, 324, 339, 0),
                                    ('chair', 5, 244, 67, 374, 1),
                                    ('person', 1, 50, 120, 375, 0),
                                    ('car', 300, 20, 480, 180, 0))),
    ('2012', '2008_000008', (442, 334), (('horse', 53, 87, 334, 420, 0),
                                         ('person', 158, 44, 289, 167, 0),
                                         ('dog', 2, 300, 60, 400, 1))),
)


def write_voc_fixture(root, seed=0):
    """A VOCdevkit at ``root`` with the :data:`FIXTURE` images (random
    textures with the objects drawn as filled rectangles, JPEG) and their
    annotations; ``trainval.txt`` of each year lists its image."""
    rng = np.random.default_rng(seed)
    for year, img_id, (h, w), objects in FIXTURE:
        base = os.path.join(root, f'VOC{year}')
        for sub in ('Annotations', 'JPEGImages', os.path.join('ImageSets', 'Main')):
            os.makedirs(os.path.join(base, sub), exist_ok=True)
        img = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
        xml = [f'<annotation><folder>VOC{year}</folder><filename>{img_id}.jpg</filename>',
               f'<size><width>{w}</width><height>{h}</height><depth>3</depth></size>']
        for name, x1, y1, x2, y2, diff in objects:
            colour = [int(c) for c in rng.integers(0, 256, 3)]
            cv2.rectangle(img, (x1 - 1, y1 - 1), (x2 - 1, y2 - 1), colour, -1)
            xml.append(f'<object><name>{name}</name><pose>Unspecified</pose>'
                       f'<truncated>0</truncated><difficult>{diff}</difficult>'
                       f'<bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax>'
                       f'<ymax>{y2}</ymax></bndbox></object>')
        xml.append('</annotation>')
        cv2.imwrite(os.path.join(base, 'JPEGImages', f'{img_id}.jpg'), img)
        with open(os.path.join(base, 'Annotations', f'{img_id}.xml'), 'w') as f:
            f.write('\n'.join(xml) + '\n')
        with open(os.path.join(base, 'ImageSets', 'Main', 'trainval.txt'), 'w') as f:
            f.write(img_id + '\n')
    return root


def make_weights(path, cfg=voc, seed=0):
    """Save ssd.pytorch-initialised weights of ``cfg``'s network to ``path``
    (what ``--resume W`` then loads); returns the state dict."""
    torch.manual_seed(seed)
    net = build_ssd('train', cfg['min_dim'], cfg['num_classes'], cfg=cfg)
    init_weights(net, from_scratch=False)
    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    atomic_save(state, path)
    return state


def ours_argv(root, weights, save_folder, lr=1e-4, batch_size=2, steps=4, lr_steps=None):
    """The train.py flags of the check (the acceptance command's)."""
    argv = ['--dataset', 'VOC', '--dataset_root', root, '--augment', 'none',
            '--lr', str(lr), '--batch_size', str(batch_size), '--max_iter', str(steps),
            '--save_every', str(steps), '--basenet', 'none', '--eval_every', '0',
            '--num_workers', '0', '--resume', weights, '--start_iter', '0',
            '--save_folder', save_folder, '--quiet']
    if lr_steps:
        argv += ['--lr_steps', ','.join(str(s) for s in lr_steps)]
    return argv


def our_order(num_images, batch_size, steps, seed=0):
    """``order(it)``: the dataset indices of iteration ``it``'s batch in
    train.py (``data.loader.IterationBatchSampler``)."""
    s = IterationBatchSampler(num_images, batch_size, seed, 0, steps)
    return lambda it: [i for i, _ in s.batch(it)]


def run_reference(root, weights, cfg=voc, lr=1e-4, batch_size=2, steps=4, lr_steps=(),
                  momentum=0.9, weight_decay=5e-4, gamma=0.1, seed=0, same_order=True,
                  channels_last=None, order=None):
    """ssd.pytorch's loop from ``weights``: returns (state dict, history).
    ``same_order``: its batches hold the images in train.py's order (its own
    loader is unseeded, so that is one of its runs); else its shuffling
    loader seeded with ``seed``. ``order(it)`` (the dataset indices of each
    batch) overrides both. ``channels_last`` goes to ``build_ssd`` (None:
    the fastest format, as train.py's default; False: NCHW, ssd.pytorch's)."""
    net = build_ssd('train', cfg['min_dim'], cfg['num_classes'], cfg=cfg,
                    channels_last=channels_last)
    net.load_state_dict(load_model_state(weights))
    ds = ref.VOCDetection(root, [('2007', 'trainval'), ('2012', 'trainval')],
                          VOC_CLASSES, cfg['min_dim'], MEANS)
    if order is None and same_order:
        order = our_order(len(ds), batch_size, steps, seed)
    hist = ref.train_loop(net, ds, cfg['num_classes'], batch_size, lr, momentum,
                          weight_decay, gamma, tuple(lr_steps) or (80000, 100000, 120000),
                          0, steps, seed, order=order)
    return {k: v.detach().clone() for k, v in net.state_dict().items()}, hist


def compare(ours, theirs, start):
    """``(max relative weight difference, max difference relative to the
    update)`` over the float tensors of two state dicts: the largest over the
    tensors of ``max |ours - theirs| / max |theirs|`` and of ``max |ours -
    theirs| / max |theirs - start|``."""
    rel_w = rel_u = 0.0
    for k, b in theirs.items():
        if not b.is_floating_point():
            continue
        d = float((ours[k].float() - b.float()).abs().max())
        rel_w = max(rel_w, d / max(float(b.abs().max()), 1e-12))
        upd = float((b.float() - start[k].float()).abs().max())
        if upd > 0:
            rel_u = max(rel_u, d / upd)
    return rel_w, rel_u


def global_relative(ours, theirs):
    """``||ours - theirs|| / ||theirs||`` over all float tensors together."""
    num = den = 0.0
    for k, b in theirs.items():
        if b.is_floating_point():
            num += float(((ours[k].double() - b.double()) ** 2).sum())
            den += float((b.double() ** 2).sum())
    return (num / den) ** 0.5


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--lr', type=float, default=1e-4)
    p.add_argument('--batch_size', type=int, default=2)
    p.add_argument('--steps', type=int, default=4)
    p.add_argument('--lr_steps', default='', help='comma-separated, e.g. 2')
    p.add_argument('--tol', type=float, default=1e-5)
    p.add_argument('--threads', type=int, default=None)
    p.add_argument('--keep', default=None, help='keep the fixture and runs in this folder')
    p.add_argument('--shuffle', action='store_true',
                   help="ssd.pytorch's own shuffling loader (seeded) instead of train.py's "
                        'image order')
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    lr_steps = tuple(int(s) for s in args.lr_steps.split(',') if s.strip())
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or tmp
        root = write_voc_fixture(os.path.join(work, 'VOCdevkit'))
        w = os.path.join(work, 'W.pth')
        start = make_weights(w)
        out = os.path.join(work, 'ours')
        cmd = [sys.executable, os.path.join(ROOT, 'train.py')] + ours_argv(
            root, w, out, args.lr, args.batch_size, args.steps, lr_steps)
        cmd += ['--log_every', '1'] + (['--threads', str(args.threads)] if args.threads else [])
        print('load', ' '.join(f'{x:.1f}' for x in os.getloadavg()), flush=True)
        print(' '.join(cmd[1:]), flush=True)
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=ROOT)
        t1 = time.perf_counter()
        ours = load_model_state(os.path.join(out, 'checkpoint.pth'))
        with open(os.path.join(out, 'metrics.csv'), newline='') as f:
            rows = [r for r in csv.DictReader(f) if r.get('loss')]
        theirs, hist = run_reference(root, w, voc, args.lr, args.batch_size, args.steps,
                                     lr_steps, same_order=not args.shuffle)
        t2 = time.perf_counter()
    for i, ((lr, ll, lc), r) in enumerate(zip(hist, rows)):
        print(f'iteration {i}: lr {lr:g} / {float(r["lr"]):g}, loss_l {ll:.5f} / '
              f'{float(r["loss_l"]):.5f}, loss_c {lc:.5f} / {float(r["loss_c"]):.5f} '
              '(ssd.pytorch / train.py)')
    rel_w, rel_u = compare(ours, theirs, start)
    print(f'train.py {t1 - t0:.1f} s, ssd.pytorch loop {t2 - t1:.1f} s; load '
          + ' '.join(f'{x:.1f}' for x in os.getloadavg()))
    print(f'max relative weight difference: {rel_w:.3g} (tolerance {args.tol:g})')
    print(f'max difference relative to the update: {rel_u:.3g}')
    print(f'relative difference of all weights (L2): {global_relative(ours, theirs):.3g}')
    return 0 if rel_w <= args.tol else 1


if __name__ == '__main__':
    sys.exit(main())
