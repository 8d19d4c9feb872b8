"""mAP against training time for the shapes demo preset (``make demo``).

``python -m utils.bench.shapes_demo [--eval_every 100] [--threads 2] [--out runs/bench_shapes]``

Trains as ``train.py --dataset shapes`` does, with the preset's schedule (or the flags
given after ``--``), evaluating the VOC07 mAP on the validation split every
``--eval_every`` iterations. The training clock (``train_time_s`` of
``metrics.csv``) excludes evaluation and saving. Prints the curve and the
first time the mAP reaches ``--target``, and writes ``curve.json`` and
``map_vs_time.png`` into ``--out``. The load average is printed before and
after: on a shared machine, times are only comparable between runs made side
by side under the same load.

Example: ``python -m utils.bench.shapes_demo -- --max_iter 600 --lr 2e-3``.

``--ablation`` runs the schedule twice, with and without ``--no_divide_by_n``
(doc/loss_normalization.md), into ``OUT/divide_by_n`` and ``OUT/no_divide``,
and draws both loss curves side by side into ``OUT/loss_normalization.png``.
"""
import argparse
import json
import os
import sys
import time


def run(out, eval_every, threads, extra):
    """Train as ``python train.py --dataset shapes ...`` would: the same flag
    resolution (``utils.engine.run_config``) and the same run
    (``utils.engine.trainer.run``). Returns (exit code, wall seconds)."""
    from utils.engine import trainer
    from utils.engine.cli import run_script
    from utils.engine.run_config import parse_run_config
    argv = ['--dataset', 'shapes', '--save_folder', out, '--eval_every', str(eval_every),
            '--quiet', '--save_every', '1000000']
    if threads:
        argv += ['--threads', str(threads)]
    t0 = time.perf_counter()
    rc = run_script('shapes_demo', lambda: trainer.run(parse_run_config(argv + list(extra))))
    return rc, time.perf_counter() - t0


def curve(out):
    from utils.training.logger import read_metrics
    m = read_metrics(os.path.join(out, 'metrics.csv'))
    return [dict(iteration=int(i), train_time_s=t, voc07_map=v)
            for i, t, v in zip(m['eval_iteration'], m['eval_time_s'], m['voc07_map'])]


def plot(points, png, target):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    ax.plot([p['train_time_s'] for p in points], [p['voc07_map'] for p in points], 'o-')
    ax.axhline(target, color='gray', ls='--', lw=1)
    ax.set_xlabel('training time (s)')
    ax.set_ylabel('VOC07 mAP (shapes val)')
    ax.set_title('shapes preset: mAP against training time')
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    extra = []
    if '--' in argv:
        extra = argv[argv.index('--') + 1:]
        argv = argv[:argv.index('--')]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--out', default='runs/bench_shapes')
    p.add_argument('--eval_every', type=int, default=100)
    p.add_argument('--threads', type=int, default=None)
    p.add_argument('--target', type=float, default=0.90)
    p.add_argument('--ablation', action='store_true',
                   help='with and without dividing the loss by N')
    args = p.parse_args(argv)
    if args.ablation:
        return ablation(args, extra)
    load0 = os.getloadavg()
    rc, wall = run(args.out, args.eval_every, args.threads, extra)
    load1 = os.getloadavg()
    points = curve(args.out)
    print(f'load average before {load0[0]:.2f}, after {load1[0]:.2f} (1 min); '
          f'{os.cpu_count()} CPUs; exit {rc}; wall {wall:.0f} s')
    print(f"{'iteration':>9} {'train s':>8} {'VOC07 mAP':>9}")
    for q in points:
        print(f"{q['iteration']:>9d} {q['train_time_s']:>8.1f} {q['voc07_map']:>9.4f}")
    hit = next((q for q in points if q['voc07_map'] >= args.target), None)
    print(f'mAP >= {args.target}: ' + (f"after {hit['train_time_s']:.0f} s of training "
                                       f"(iteration {hit['iteration']})" if hit else 'not reached'))
    with open(os.path.join(args.out, 'curve.json'), 'w') as f:
        json.dump(dict(points=points, load_before=load0, load_after=load1, wall_s=wall,
                       extra_flags=extra), f, indent=1)
    if points:
        plot(points, os.path.join(args.out, 'map_vs_time.png'), args.target)
    return rc


def ablation(args, extra):
    """The same schedule with and without dividing by N, run side by side
    (one process each); prints the mAP curves, draws the loss curves side by
    side into ``OUT/loss_normalization.png`` and writes ``OUT/ablation.json``."""
    import subprocess
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from utils.training.logger import plot_loss_curves
    runs = [('divide_by_n', 'loss / N (the paper)', []),
            ('no_divide', 'loss not divided by N (--no_divide_by_n)', ['--no_divide_by_n'])]
    procs = []
    for name, _, flags in runs:
        cmd = [sys.executable, '-m', 'utils.bench.shapes_demo', '--out',
               os.path.join(args.out, name), '--eval_every', str(args.eval_every)]
        cmd += ['--threads', str(args.threads or 1), '--'] + list(extra) + flags
        procs.append(subprocess.Popen(cmd))
    codes = [p.wait() for p in procs]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), dpi=110, sharex=True)
    summary = {}
    for (name, title, _), ax, rc in zip(runs, axes, codes):
        out = os.path.join(args.out, name)
        points = curve(out)
        summary[name] = dict(exit=rc, points=points,
                             final_map=points[-1]['voc07_map'] if points else None)
        plot_loss_curves(os.path.join(out, 'metrics.csv'), None, title, ax=ax)
        ax.set_yscale('log')
        print(f"{name}: exit {rc}, VOC07 mAP "
              + ', '.join(f"{q['iteration']}:{q['voc07_map']:.4f}" for q in points))
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, 'loss_normalization.png'))
    plt.close(fig)
    with open(os.path.join(args.out, 'ablation.json'), 'w') as f:
        json.dump(dict(summary, extra_flags=extra), f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
