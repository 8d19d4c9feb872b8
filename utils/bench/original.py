"""The recipe check against ssd.pytorch's **original** files (not our rebuild).

    git clone https://github.com/amdegroot/ssd.pytorch ~/src/ssd.pytorch   # once, anywhere
    python -m utils.bench.original --ssd_pytorch ~/src/ssd.pytorch
    python -m utils.bench.original --ssd_pytorch ~/src/ssd.pytorch --flags "" --order dataset
    python -m utils.bench.original --ssd_pytorch ~/src/ssd.pytorch --literals

Nothing of ssd.pytorch is part of this project. Its ``ssd.py``, ``data/``,
``layers/`` and ``utils/`` are copied into a temporary folder with the one
patch current PyTorch needs (in ``layers/modules/multibox_loss.py``,
``loss_c`` is viewed ``[num, P]`` before ``loss_c[pos] = 0``; the original
order is an IndexError today), and ``$HOME/data/coco/coco_labels.txt``, which
its ``data/coco.py`` reads at import, is the checkout's own copy.

The check (doc/reproduction.md, "The recipe check"): the VOC fixture of
:mod:`utils.bench.recipe` (one VOC2007 and one VOC2012 image), SSD300
weights ``W`` (``--weights``: ``init``, ssd.pytorch's ``weights_init``;
``default``, PyTorch's default initialisation; ``wide``, ``init`` with the
conf heads' weights x300, whose logits make ssd.pytorch's ``log_sum_exp``
underflow), then

* ssd.pytorch's loop on its own files: ``VOCDetection`` with
  ``BaseTransform(300, MEANS)``, ``build_ssd('train', 300, 21)`` loading
  ``W``, ``MultiBoxLoss(21, 0.5, True, 0, True, 3, 0.5, False, False)``,
  ``optim.SGD(lr, momentum 0.9, weight_decay 5e-4)`` on ``loss_l + loss_c``,
  the batch of each iteration in ``--order``: ``dataset`` ([VOC2007,
  VOC2012] every time), ``ours`` (train.py's seeded order) or a list such
  as ``01,10,01,01``;
* ``train.py --dataset VOC --augment none --lr LR --batch_size 2 --max_iter 4
  --save_every 4 --basenet none --eval_every 0 --num_workers 0 --resume W
  --start_iter 0`` plus ``--flags`` (default ``--channels_last False
  --shuffle False``: the order-free form that is bit-identical);

and prints the losses of both and the largest relative weight difference
(exit status 1 above ``--tol``, 1e-5). ``--literals`` prints instead the
values ``tests/test_original_parity.py`` holds: ssd.pytorch's MultiBoxLoss
on its small cases.
"""
import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile

import torch

from utils.bench.recipe import ROOT, compare, global_relative, make_weights, our_order, \
    write_voc_fixture
from utils.checkpoint import atomic_save, load_model_state

#: The one change ssd.pytorch's files need on current PyTorch.
PATCH = ('layers/modules/multibox_loss.py',
         '        loss_c[pos] = 0  # filter out pos boxes for now\n'
         '        loss_c = loss_c.view(num, -1)\n',
         '        loss_c = loss_c.view(num, -1)\n'
         '        loss_c[pos] = 0  # filter out pos boxes for now\n')

LOOP = r'''
import sys, warnings
warnings.filterwarnings('ignore')
sys.path.insert(0, '.')
import torch
import torch.optim as optim
from data import VOCDetection, BaseTransform, detection_collate, MEANS
from layers.modules import MultiBoxLoss
from ssd import build_ssd
root, w, out, orders, lr = sys.argv[1:6]
orders = [[int(c) for c in o] for o in orders.split(',')]
torch.set_num_threads(int(sys.argv[6]))
net = build_ssd('train', 300, 21)
net.load_state_dict(torch.load(w, weights_only=True))
ds = VOCDetection(root, [('2007', 'trainval'), ('2012', 'trainval')],
                  transform=BaseTransform(300, MEANS))
opt = optim.SGD(net.parameters(), lr=float(lr), momentum=0.9, weight_decay=5e-4)
crit = MultiBoxLoss(21, 0.5, True, 0, True, 3, 0.5, False, False)
net.train()
for it, order in enumerate(orders):
    images, targets = detection_collate([ds[i] for i in order])
    out_ = net(images)
    opt.zero_grad()
    loss_l, loss_c = crit(out_, targets)
    (loss_l + loss_c).backward()
    opt.step()
    print(f'{loss_l.item():.6f} {loss_c.item():.6f}', flush=True)
torch.save(net.state_dict(), out)
'''

LITERALS = r'''
import sys, warnings
warnings.filterwarnings('ignore')
sys.path[:0] = [sys.argv[1], sys.argv[2]]          # ours first: the test's cases
import torch
import test_original_parity as T
for k in [k for k in sys.modules if k.split('.')[0] in ('ssd', 'data', 'layers', 'utils')]:
    del sys.modules[k]                             # then ssd.pytorch's own modules
sys.path[:2] = ['.']
import layers.modules.multibox_loss as mbl
from layers.modules import MultiBoxLoss
seen = {}
real = torch.nn.functional.cross_entropy
class F:
    def __getattr__(self, k):
        return getattr(torch.nn.functional, k)
    @staticmethod
    def cross_entropy(x, t, *a, **kw):
        seen['rows'] = x.detach().clone()
        return real(x, t, *a, **kw)
mbl.F = F()
for name in T.ORIGINAL:
    pred, targets = T.case(name)
    l, c = MultiBoxLoss(3, 0.5, True, 0, True, 3, 0.5, False, False)(pred, targets)
    flat = pred[1].reshape(-1, 3)
    rows = sorted(divmod([i for i in range(flat.shape[0]) if torch.equal(flat[i], r)][0], 8)
                  for r in seen['rows'])
    print(f'{name!r}: ({l.item()!r}, {c.item()!r}, {rows}),')
'''


def prepare(src, work):
    """Copy ssd.pytorch's files from the checkout ``src`` into
    ``work/ssd_pytorch`` with :data:`PATCH`; returns (folder, env)."""
    src = os.path.expanduser(src)
    if not os.path.isfile(os.path.join(src, 'layers', 'modules', 'multibox_loss.py')):
        raise SystemExit(f'error: {src}: not a checkout of amdegroot/ssd.pytorch '
                         '(no layers/modules/multibox_loss.py)')
    dst = os.path.join(work, 'ssd_pytorch')
    os.makedirs(dst)
    for name in ('data', 'layers', 'utils'):
        shutil.copytree(os.path.join(src, name), os.path.join(dst, name))
    shutil.copy(os.path.join(src, 'ssd.py'), os.path.join(dst, 'ssd.py'))
    path, old, new = PATCH
    text = open(os.path.join(dst, path)).read()
    if old in text:
        text = text.replace(old, new)
    elif new not in text:
        raise SystemExit(f'error: {src}: {path} is not the version this check knows '
                         '(its hard-negative lines differ)')
    with open(os.path.join(dst, path), 'w') as f:
        f.write(text)
    home = os.path.join(work, 'home')
    os.makedirs(os.path.join(home, 'data', 'coco'), exist_ok=True)
    shutil.copy(os.path.join(src, 'data', 'coco_labels.txt'),
                os.path.join(home, 'data', 'coco', 'coco_labels.txt'))
    return dst, dict(os.environ, HOME=home, PYTHONWARNINGS='ignore')


def weights(kind, path):
    """Save the starting weights ``W`` of ``--weights kind``; returns them."""
    if kind == 'default':
        from ssd import build_ssd
        torch.manual_seed(0)
        state = {k: v.detach().clone() for k, v in build_ssd('train', 300, 21).state_dict().items()}
        atomic_save(state, path)
        return state
    state = make_weights(path)
    if kind == 'wide':
        state = {k: v * 300 if k.startswith('conf.') and k.endswith('weight') else v
                 for k, v in state.items()}
        atomic_save(state, path)
    return state


def orders_of(spec, steps):
    if spec == 'dataset':
        return ','.join(['01'] * steps)
    if spec == 'ours':
        o = our_order(2, 2, steps)
        return ','.join(''.join(str(i) for i in o(it)) for it in range(steps))
    return spec


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--ssd_pytorch', required=True, help='a checkout of amdegroot/ssd.pytorch')
    p.add_argument('--flags', default='--channels_last False --shuffle False',
                   help='train.py flags added to the check\'s command (default: %(default)s)')
    p.add_argument('--order', default='dataset',
                   help='the original loop\'s batches: dataset, ours or e.g. 01,10,01,01')
    p.add_argument('--weights', default='init', choices=['init', 'default', 'wide'])
    p.add_argument('--lr', type=float, default=1e-4)
    p.add_argument('--steps', type=int, default=4)
    p.add_argument('--tol', type=float, default=1e-5)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--literals', action='store_true',
                   help="print tests/test_original_parity.py's expected values instead")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        orig, env = prepare(args.ssd_pytorch, work)
        if args.literals:
            script = os.path.join(work, 'literals.py')
            with open(script, 'w') as f:
                f.write(LITERALS)
            return subprocess.run([sys.executable, script, ROOT, os.path.join(ROOT, 'tests')],
                                  cwd=orig, env=env).returncode
        root = write_voc_fixture(os.path.join(work, 'VOCdevkit'))
        w = os.path.join(work, 'W.pth')
        start = weights(args.weights, w)
        script = os.path.join(work, 'loop.py')
        with open(script, 'w') as f:
            f.write(LOOP)
        orders = orders_of(args.order, args.steps)
        theirs_path = os.path.join(work, 'theirs.pth')
        res = subprocess.run([sys.executable, script, root, w, theirs_path, orders,
                              str(args.lr), str(args.threads)], cwd=orig, env=env,
                             capture_output=True, text=True)
        if res.returncode:
            raise SystemExit(f'error: ssd.pytorch\'s loop failed: {res.stderr.strip()[-400:]}')
        out = os.path.join(work, 'ours')
        cmd = [sys.executable, os.path.join(ROOT, 'train.py'), '--dataset', 'VOC',
               '--dataset_root', root, '--augment', 'none', '--lr', str(args.lr),
               '--batch_size', '2', '--max_iter', str(args.steps), '--save_every',
               str(args.steps), '--basenet', 'none', '--eval_every', '0', '--num_workers', '0',
               '--resume', w, '--start_iter', '0', '--save_folder', out, '--quiet',
               '--log_every', '1', '--threads', str(args.threads)] + shlex.split(args.flags)
        print('ssd.pytorch order', orders, '| train.py', ' '.join(cmd[2:]), flush=True)
        subprocess.run(cmd, check=True, cwd=ROOT)
        ours = load_model_state(os.path.join(out, 'checkpoint.pth'))
        theirs = load_model_state(theirs_path)
        import csv
        with open(os.path.join(out, 'metrics.csv'), newline='') as f:
            rows = [r for r in csv.DictReader(f) if r.get('loss')]
    for it, (line, r) in enumerate(zip(res.stdout.split('\n'), rows)):
        ll, lc = line.split()
        print(f'iteration {it}: loss_l {ll} / {r["loss_l"]}, loss_c {lc} / {r["loss_c"]} '
              '(ssd.pytorch / train.py)')
    rel_w, rel_u = compare(ours, theirs, start)
    print(f'max relative weight difference: {rel_w:.3g} (tolerance {args.tol:g}); relative '
          f'to the update: {rel_u:.3g}; all weights (L2): {global_relative(ours, theirs):.3g}')
    return 0 if rel_w <= args.tol else 1


if __name__ == '__main__':
    sys.exit(main())
