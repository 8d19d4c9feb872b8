"""Precision/recall curves as PNG files (matplotlib, Agg backend)."""
import os
import re

import numpy as np


def _safe(name):
    return re.sub(r'[^A-Za-z0-9_.-]+', '_', str(name)) or 'class'


def save_pr_curves(folder, results):
    """Write ``<folder>/<class>_pr.png`` for every class, and
    ``<folder>/pr_curves.png`` with all classes on one plot.

    ``results``: the dict of :func:`utils.evaluation.evaluate_detections`;
    its 'voc07' and/or 'voc12' entries carry ``rec`` / ``prec`` (float64 [D]
    in rank order, the same curve for both) and ``ap``. Returns the paths."""
    import matplotlib
    matplotlib.use('Agg', force=False)
    import matplotlib.pyplot as plt

    voc = [(k, results[k]) for k in ('voc07', 'voc12') if k in results]
    if not voc:
        return []
    os.makedirs(folder, exist_ok=True)
    curves = voc[0][1]
    paths = []
    fig_all, ax_all = plt.subplots(figsize=(7, 6))
    for name in curves['ap']:
        rec, prec = curves['rec'][name], curves['prec'][name]
        label = ', '.join(f'{"AP07" if k == "voc07" else "AP12"} '
                          + ('n/a' if r['ap'][name] is None else f'{r["ap"][name]:.3f}')
                          for k, r in voc)
        fig, ax = plt.subplots(figsize=(4.5, 4))
        ax.plot(np.r_[0, rec] if len(rec) else [0], np.r_[1, prec] if len(prec) else [1],
                drawstyle='steps-post')
        _style(ax, f'{name}: {label}')
        path = os.path.join(folder, f'{_safe(name)}_pr.png')
        fig.savefig(path, dpi=80, bbox_inches='tight')
        plt.close(fig)
        paths.append(path)
        if len(rec):
            ax_all.plot(rec, prec, label=f'{name} ({label})', linewidth=1)
    _style(ax_all, 'precision / recall, all classes')
    if len(curves['ap']) <= 25:
        ax_all.legend(fontsize=6, loc='lower left')
    path = os.path.join(folder, 'pr_curves.png')
    fig_all.savefig(path, dpi=90, bbox_inches='tight')
    plt.close(fig_all)
    return paths + [path]


def _style(ax, title):
    ax.set_xlim(0, 1.0)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel('recall')
    ax.set_ylabel('precision')
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
