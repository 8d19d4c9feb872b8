"""GPU benchmark in one table: ``python -m utils.bench.gpu``.

On one GPU, in about 5 minutes (``--budget`` seconds; rows that would start
later are printed as skipped), side by side in one process on the same card,
weights and augmented batch (:mod:`utils.bench.train_step`):

- SSD300 training images/s (forward, loss, backward, SGD step; batch
  ``--batch``, 32 by default as in ssd.pytorch) in fp32, AMP bf16, AMP fp16
  (with a GradScaler) and fp32 / bf16 under ``torch.compile``: ours as
  ``build_ssd`` makes it (the fastest memory format), ours in NCHW, and
  torchvision's ``ssd300_vgg16`` training step;
- inference frames/s at batch 1 and 8 (test phase with Detect; torchvision's
  ``model(images)`` with its post-processing), fp32 and AMP bf16.

``cudnn.benchmark`` is on, as in the tools. ``--device cpu --quick`` is a
smoke run of the same code on the CPU (batch 1, one step, fp32 training and
inference at batch 1, no compile) for the tests; its numbers mean nothing.
"""
import argparse
import copy
import os
import time

import torch

from utils.bench import timeit
from utils.bench.train_step import (augmented_batch, base_net, ours_step, tv_model,
                                    tv_step)

TRAIN_ROWS = (('fp32', None, False), ('AMP bf16', torch.bfloat16, False),
              ('AMP fp16', torch.float16, False), ('fp32 + torch.compile', None, True),
              ('AMP bf16 + torch.compile', torch.bfloat16, True))
INFER_ROWS = ((1, None), (8, None), (8, torch.bfloat16))


class Budget:
    """Seconds left of ``--budget``; ``ok()`` is False once it is spent."""

    def __init__(self, seconds):
        self.end = time.monotonic() + seconds

    def ok(self):
        return time.monotonic() < self.end


def _repeat(fn, steps, device):
    """``steps`` calls of ``fn``, then a device synchronisation."""
    def run():
        for _ in range(steps):
            fn()
        if device.type == 'cuda':
            torch.cuda.synchronize()
    return run


def train_row(nets, images, targets, amp, compile, steps, repeats, warmup, device):
    """images/s of ours (default format), ours in NCHW and torchvision for
    one training configuration; None for a contender that failed."""
    ours, nchw = nets
    fns = {'ours': ours_step(copy.deepcopy(ours), images, targets, amp, compile),
           'torchvision': tv_step(tv_model(nchw), images, targets, amp, compile)}
    if not compile:
        fns['ours NCHW'] = ours_step(copy.deepcopy(nchw), images, targets, amp)
    return _measure(fns, images.shape[0] * steps, steps, repeats, warmup, device)


def infer_row(nets, images, batch, amp, steps, repeats, warmup, device):
    """frames/s of the test phase (ours, ours NCHW) and torchvision's eval."""
    x = images[:batch]
    if x.shape[0] < batch:
        x = x.repeat((batch + x.shape[0] - 1) // x.shape[0], 1, 1, 1)[:batch]
    ours, nchw = (copy.deepcopy(n).eval() for n in nets)
    ours.phase = nchw.phase = 'test'
    tv = tv_model(nchw).eval()
    xs = list(x)

    def run(model, arg):
        def f():
            with torch.inference_mode(), torch.autocast(
                    device.type, dtype=amp or torch.float32, enabled=amp is not None):
                return model(arg)
        return f
    fns = {'ours': run(ours, x), 'ours NCHW': run(nchw, x), 'torchvision': run(tv, xs)}
    return _measure(fns, batch * steps, steps, repeats, warmup, device)


def _measure(fns, items, steps, repeats, warmup, device):
    """Items per second of each callable (None and a note when it fails)."""
    good, out = {}, {}
    for name, fn in fns.items():
        try:
            for _ in range(warmup):     # compiles here, outside the timed runs
                fn()
            good[name] = _repeat(fn, steps, device)
        except Exception as e:          # a contender that cannot run this row
            out[name] = (None, f'{type(e).__name__}: {str(e).splitlines()[0][:80]}'
                         if str(e) else type(e).__name__)
    med = timeit(good, repeats, warmup=0) if good else {}
    out.update({n: (items / m, None) for n, (m, _) in med.items()})
    return out


def markdown_table(rows, device_name):
    """The markdown table of ``rows`` ``[(what, unit, {name: (value, note)})]``."""
    cols = ('ours', 'ours NCHW', 'torchvision')
    lines = [f'SSD300 on {device_name}, torch {torch.__version__}',
             '| what | ours (build_ssd default) | ours NCHW | torchvision | ours / torchvision |',
             '|---|---|---|---|---|']
    notes = []
    for what, unit, res in rows:
        cells = []
        for c in cols:
            v, note = res.get(c, (None, None))
            if note:
                notes.append(f'{what}, {c}: {note}')
            cells.append(f'{v:.3g}' if v is not None else '-' if not note else
                         'skipped' if note.startswith('skipped') else 'failed')
        o, t = res.get('ours', (None,))[0], res.get('torchvision', (None,))[0]
        ratio = f'{o / t:.2f}x' if o and t else '-'
        lines.append(f'| {what} ({unit}) | ' + ' | '.join(cells) + f' | {ratio} |')
    return '\n'.join(lines + [f'- {n}' for n in notes])


def run(device='cuda', batch=32, steps=5, repeats=3, warmup=3, budget=280,
        train_rows=TRAIN_ROWS, infer_rows=INFER_ROWS):
    device = torch.device(device)
    if device.type == 'cuda':
        if not torch.cuda.is_available():
            raise SystemExit('utils.bench.gpu: no CUDA device (use --device cpu --quick '
                             'for the smoke run)')
        torch.backends.cudnn.benchmark = True
        name = torch.cuda.get_device_name(device)
    else:
        name = f'CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads)'
    clock = Budget(budget)
    images, targets = augmented_batch(batch)
    images, targets = images.to(device), [t.to(device) for t in targets]
    nets = (base_net().to(device), base_net(channels_last=False).to(device))
    rows = []
    for what, amp, compile in train_rows:
        res = train_row(nets, images, targets, amp, compile, steps, repeats, warmup,
                        device) if clock.ok() else {'ours': (None, 'skipped (time budget)')}
        rows.append((f'training, {what}, batch {batch}', 'images/s', res))
        print(rows[-1][0], {k: v[0] for k, v in res.items()}, flush=True)
    for b, amp in infer_rows:
        res = infer_row(nets, images, b, amp, steps, repeats, warmup, device) \
            if clock.ok() else {'ours': (None, 'skipped (time budget)')}
        what = f'inference, batch {b}' + (', AMP bf16' if amp else ', fp32')
        rows.append((what, 'frames/s', res))
        print(what, {k: v[0] for k, v in res.items()}, flush=True)
    text = markdown_table(rows, name)
    print(text)
    return rows, text


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--device', default='cuda')
    p.add_argument('--batch', type=int, default=32)
    p.add_argument('--steps', type=int, default=5, help='steps per timed repeat')
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--budget', type=float, default=280, help='seconds; later rows are skipped')
    p.add_argument('--quick', action='store_true',
                   help='smoke run: batch 1, one step, no warm-up, fp32 only, no compile')
    args = p.parse_args(argv)
    if args.quick:
        run(args.device, batch=1, steps=1, repeats=1, warmup=0, budget=args.budget,
            train_rows=TRAIN_ROWS[:1], infer_rows=INFER_ROWS[:1])
    else:
        run(args.device, args.batch, args.steps, args.repeats, budget=args.budget)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
