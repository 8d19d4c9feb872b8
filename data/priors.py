"""Priors that fit a dataset: how well the priors cover its boxes, and a
fitted prior set that ``train.py --priors`` takes.

    python -m data.priors ROOT --format voc|coco|yolo [--backbone B] [--size N]
                          [--out priors.json] [--year Y] [--split S]
    python train.py --dataset custom --dataset_root ROOT --priors priors.json

**Coverage.** Each ground-truth box (difficult and crowd boxes left out, as
training leaves them out), in the network's coordinates (the image resized
to S x S, the box divided by the image's width and height), is compared with
every prior by the matcher's IoU (``layers.box_utils.jaccard`` on
``layers.PriorBox``'s priors, the ones training matches). A box is covered
when its best prior reaches the matching threshold (IoU >= 0.5,
``MultiBoxLoss``'s ``overlap_thresh``): some prior is then a positive for it
besides the forced best match. The report gives the covered share and the
mean best IoU overall, per size (COCO's small < 32^2 <= medium < 96^2 <=
large, in the image's pixels) and per class.

**Fitting** keeps SSD's structure: the same sources (feature maps, steps),
one min and max size and one aspect-ratio list per source, each list as
long as the preset's (so the heads keep their shapes and every tool builds
the network from the record). Three families of ladders are tried and the
one with the highest coverage on the boxes is kept:

* the preset's own priors (so the fit never does worse on the data it saw);
* SSD's rule ``s_k = s_min + (s_max - s_min) (k - 1) / (m - 1)`` (paper
  section 2.2) with ``s_min`` and ``s_max`` taken from the box scales
  (``sqrt(w h)``) at several low and high percentiles, linear and geometric;
* for each ladder, the aspect ratios of each source by k-means on
  ``|log(w / h)|`` of the boxes whose scale is nearest that source (1-D
  k-means; SSD's ratio ``a`` gives both ``a`` and ``1 / a``), or the
  preset's ratios where a source has too few boxes.

The JSON file (``--out``, default ``priors.json``) holds ``min_dim`` (the
input size the sizes are for, in pixels), ``min_sizes``, ``max_sizes`` and
``aspect_ratios``, the backbone, and the coverage before and after
(information only). :func:`load_priors` reads it for ``train.py --priors``:
the sizes are scaled to the training input size when it differs, and the
network's record keeps the priors, so eval.py, test.py, ``demo.live`` and
``utils.export`` need nothing more.
"""
import argparse
import json
import math
import sys

import numpy as np
import torch

__all__ = ['coverage', 'dataset_boxes', 'fit_priors', 'load_priors', 'main',
           'priors_of', 'prior_keys']

#: The matcher's threshold (``MultiBoxLoss(overlap_thresh=0.5)``).
MATCH_IOU = 0.5
#: COCO's size buckets, areas in the image's pixels.
SIZE_BUCKETS = (('small', 0, 32 ** 2), ('medium', 32 ** 2, 96 ** 2),
                ('large', 96 ** 2, float('inf')))
#: The keys a prior file sets in the model config.
PRIOR_KEYS = ('min_sizes', 'max_sizes', 'aspect_ratios')
#: Keys a prior file may carry besides them (information).
INFO_KEYS = ('min_dim', 'backbone', 'coverage_before', 'coverage_after', 'source',
             'format', 'boxes')


def prior_keys(cfg):
    """The prior part of a model config: ``{min_sizes, max_sizes,
    aspect_ratios}`` as lists."""
    return {k: json.loads(json.dumps(cfg[k])) for k in PRIOR_KEYS}


def priors_of(cfg):
    """The priors ``[P, 4]`` (cx, cy, w, h) that training matches for the
    model config ``cfg`` (``layers.PriorBox``)."""
    from layers.functions.prior_box import PriorBox
    return PriorBox(cfg).forward()


# ------------------------------------------------------------ the boxes

class Boxes:
    """The boxes of a dataset in the network's coordinates: ``xyxy [N, 4]``
    in [0, 1], ``area [N]`` in the image's pixels, ``classes`` (a name per
    box)."""

    def __init__(self, xyxy, area, classes):
        self.xyxy = torch.as_tensor(np.asarray(xyxy, np.float32).reshape(-1, 4))
        self.area = np.asarray(area, np.float64).reshape(-1)
        self.classes = list(classes)

    def __len__(self):
        return len(self.classes)

    @property
    def wh(self):
        return (self.xyxy[:, 2:] - self.xyxy[:, :2]).double().numpy()


def dataset_boxes(root, fmt, year=None, split=None, classes=None):
    """The :class:`Boxes` of a dataset on disk (``fmt`` voc, coco or yolo),
    read by ``data.check`` (the loaders' readers; VOC and COCO images are
    not decoded, YOLO images are, for their size). Difficult and crowd
    boxes and boxes of zero area are left out. ValueError (one line naming
    ``root``) when no box is left; the checker's problems are counted in
    ``boxes.problems``."""
    from .check import check_dataset
    report = check_dataset(root, fmt, year, split, decode=(fmt == 'yolo'), classes=classes)
    rows = [b for b in report.boxes if not b[1] and b[4] > b[2] and b[5] > b[3]]
    if not rows:
        first = f" (first problem: {report.problems[0]['file']}: " \
                f"{report.problems[0]['message']})" if report.problems else ''
        raise ValueError(f'{root}: no {fmt} boxes to fit priors to{first}')
    b = np.asarray([r[2:] for r in rows], np.float64)      # x1 y1 x2 y2 iw ih
    xyxy = b[:, :4] / np.concatenate([b[:, 4:6], b[:, 4:6]], 1)
    out = Boxes(np.clip(xyxy, 0, 1), (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]),
                [r[0] for r in rows])
    out.problems = report.problems
    return out


# ------------------------------------------------------------ coverage

def best_ious(xyxy, priors, chunk=2048):
    """The best prior IoU of each box ``xyxy [N, 4]`` against ``priors [P,
    4]`` (cx, cy, w, h): the matcher's ``jaccard`` on point-form priors."""
    from layers.box_utils import jaccard, point_form
    p = point_form(priors.float())
    return torch.cat([jaccard(xyxy[i:i + chunk].float(), p).max(1).values
                      for i in range(0, len(xyxy), chunk)]) if len(xyxy) else torch.zeros(0)


def _summary(iou):
    n = int(iou.numel())
    return {'boxes': n,
            'covered': round(float((iou >= MATCH_IOU).double().mean()), 4) if n else None,
            'mean_iou': round(float(iou.double().mean()), 4) if n else None}


def coverage(boxes, cfg):
    """The coverage report of :class:`Boxes` ``boxes`` under the priors of
    ``cfg``: ``{'all': S, 'by_size': {small|medium|large: S}, 'by_class':
    {name: S}}``, each ``S`` ``{boxes, covered (share with best IoU >= 0.5),
    mean_iou}``."""
    iou = best_ious(boxes.xyxy, priors_of(cfg))
    out = {'all': _summary(iou), 'by_size': {}, 'by_class': {}}
    for name, lo, hi in SIZE_BUCKETS:
        out['by_size'][name] = _summary(iou[torch.as_tensor((boxes.area >= lo) &
                                                            (boxes.area < hi))])
    names = np.asarray(boxes.classes)
    for c in sorted(set(boxes.classes)):
        out['by_class'][c] = _summary(iou[torch.as_tensor(names == c)])
    return out


def _score(boxes, cfg):
    iou = best_ious(boxes.xyxy, priors_of(cfg)).double()
    return float((iou >= MATCH_IOU).double().mean()), float(iou.mean())


# ------------------------------------------------------------ fitting

def _kmeans_1d(v, k, iters=50):
    """Sorted centres of a 1-D k-means of ``v`` (deterministic: started at
    the quantiles)."""
    c = np.quantile(v, (np.arange(k) + 0.5) / k)
    for _ in range(iters):
        a = np.abs(v[:, None] - c[None]).argmin(1)
        new = np.array([v[a == j].mean() if (a == j).any() else c[j] for j in range(k)])
        if np.allclose(new, c):
            break
        c = new
    return np.sort(c)


def _ladder(lo, hi, m, geometric):
    """m + 1 scales from ``lo`` to ``hi`` (the last one is the last
    source's max size), SSD's linear rule or evenly in log scale."""
    t = np.arange(m + 1) / max(m - 1, 1)
    return lo * (hi / lo) ** t if geometric else lo + (hi - lo) * t


def _ratios(boxes, scales, cfg, min_boxes=8):
    """Per source, as many aspect ratios as ``cfg`` has, fitted to the
    boxes whose scale is nearest that source's (module docstring)."""
    wh = np.maximum(boxes.wh, 1e-6)
    s = np.sqrt(wh[:, 0] * wh[:, 1])
    r = np.abs(np.log(wh[:, 0] / wh[:, 1]))
    mid = np.sqrt(scales[:-1] * scales[1:])                 # each source's typical scale
    nearest = np.abs(np.log(s)[:, None] - np.log(mid)[None]).argmin(1)
    out = []
    for k, default in enumerate(cfg['aspect_ratios']):
        v = r[nearest == k]
        if not default or len(v) < min_boxes:
            out.append(list(default))
            continue
        c = _kmeans_1d(v, len(default))
        out.append([round(float(max(math.exp(x), 1.05)), 3) for x in c])
    return out


def fit_priors(boxes, cfg, log=None):
    """A prior set for ``boxes`` (:class:`Boxes`) with ``cfg``'s structure
    (module docstring): returns ``(priors, (covered, mean_iou))``, ``priors``
    a dict of :data:`PRIOR_KEYS` in pixels of ``cfg['min_dim']``. The
    search is deterministic; at most 20000 boxes (an evenly spaced subset)
    are scored per candidate."""
    size, m = float(cfg['min_dim']), len(cfg['min_sizes'])
    sub = boxes
    if len(boxes) > 20000:
        keep = np.linspace(0, len(boxes) - 1, 20000).astype(int)
        sub = Boxes(boxes.xyxy[keep], boxes.area[keep], [boxes.classes[i] for i in keep])
    wh = np.maximum(sub.wh, 1e-6)
    s = np.sqrt(wh[:, 0] * wh[:, 1])
    best = (prior_keys(cfg), _score(sub, cfg))
    if log:
        log(f"  preset: covered {best[1][0]:.4f}, mean IoU {best[1][1]:.4f}")
    for plo in (0, 1, 2, 5, 10):
        for phi in (90, 95, 98, 100):
            lo, hi = float(np.percentile(s, plo)), float(np.percentile(s, phi))
            lo, hi = max(lo, 2.0 / size), max(hi, lo * 1.5)
            for geometric in (False, True):
                sc = _ladder(lo, min(hi, 1.2), m, geometric)
                cand = {'min_sizes': [round(float(v * size), 3) for v in sc[:-1]],
                        'max_sizes': [round(float(v * size), 3) for v in sc[1:]]}
                cand['aspect_ratios'] = _ratios(sub, sc, cfg)
                score = _score(sub, dict(cfg, **cand))
                if score > best[1]:
                    best = (cand, score)
    if log:
        log(f"  fitted: covered {best[1][0]:.4f}, mean IoU {best[1][1]:.4f}")
    return best


# ------------------------------------------------------------ the file

def load_priors(path, cfg):
    """``cfg`` (a complete model config) with the priors of the JSON prior
    file ``path`` (as :func:`main` writes it): the sizes scaled from the
    file's ``min_dim`` to ``cfg['min_dim']``, ``mbox`` from the ratios. A
    copy. ValueError, one line naming the file and the key, for a file that
    is not a prior file, an unknown key, a list whose length is not the
    network's number of sources, a size that is not positive, a max size
    below its min size, or a ratio below 1."""
    try:
        with open(path) as f:
            d = json.load(f)
    except OSError as e:
        raise ValueError(f'{path}: cannot read the prior file ({e.strerror})') from None
    except ValueError as e:
        raise ValueError(f'{path}: not a JSON prior file ({e})') from None
    if not isinstance(d, dict) or not all(k in d for k in PRIOR_KEYS):
        have = ', '.join(sorted(d)) if isinstance(d, dict) else type(d).__name__
        raise ValueError(f'{path}: a prior file needs {", ".join(PRIOR_KEYS)} (it has {have})')
    unknown = sorted(set(d) - set(PRIOR_KEYS) - set(INFO_KEYS))
    if unknown:
        raise ValueError(f'{path}: unknown key(s) {", ".join(unknown)} (a prior file has '
                         f'{", ".join(PRIOR_KEYS + INFO_KEYS)})')
    n = len(cfg['mbox'])
    for k in PRIOR_KEYS:
        if not isinstance(d[k], list) or len(d[k]) != n:
            got = len(d[k]) if isinstance(d[k], list) else type(d[k]).__name__
            raise ValueError(f'{path}: {k} must list one entry per source of the network '
                             f'({n}), got {got}')
    for k in ('min_sizes', 'max_sizes'):
        bad = [v for v in d[k] if not isinstance(v, (int, float)) or isinstance(v, bool)
               or not v > 0 or not math.isfinite(v)]
        if bad:
            raise ValueError(f'{path}: {k} must be positive numbers, got {bad[0]!r}')
    for j, (lo, hi) in enumerate(zip(d['min_sizes'], d['max_sizes'])):
        if hi < lo:
            raise ValueError(f'{path}: max_sizes[{j}] ({hi}) is below min_sizes[{j}] ({lo})')
    for j, ars in enumerate(d['aspect_ratios']):
        if not isinstance(ars, list) or any(
                not isinstance(a, (int, float)) or isinstance(a, bool) or not a >= 1
                or not math.isfinite(a) for a in ars):
            raise ValueError(f'{path}: aspect_ratios[{j}] must be a list of ratios >= 1 '
                             f'(a gives a and 1/a), got {ars!r}')
    if 'min_dim' in d and (not isinstance(d['min_dim'], (int, float)) or d['min_dim'] <= 0):
        raise ValueError(f'{path}: min_dim must be a positive input size, got {d["min_dim"]!r}')
    f = float(cfg['min_dim']) / float(d.get('min_dim', cfg['min_dim']))
    out = dict(cfg, min_sizes=[round(v * f, 4) for v in d['min_sizes']],
               max_sizes=[round(v * f, 4) for v in d['max_sizes']],
               aspect_ratios=[[float(a) for a in ars] for ars in d['aspect_ratios']],
               mbox=[2 + 2 * len(ars) for ars in d['aspect_ratios']])
    return out


def _print_coverage(title, rep, out):
    p = lambda *a: print(*a, file=out)
    a = rep['all']
    p(f"{title}: {a['boxes']} boxes, covered (best IoU >= {MATCH_IOU}) {a['covered']:.1%}, "
      f"mean best IoU {a['mean_iou']:.3f}")
    for group in ('by_size', 'by_class'):
        p(f"  {group.replace('_', ' ')}:")
        for k, v in rep[group].items():
            if v['boxes']:
                p(f"  {k:>12}: {v['boxes']:6d} boxes  covered {v['covered']:6.1%}  "
                  f"mean IoU {v['mean_iou']:.3f}")


def main(argv=None, out=None):
    out = out or sys.stdout
    from data.config import BACKBONES, DEFAULT_SIZES, config_for
    from utils.checkpoint import atomic_write_text
    from utils.engine.cli import backbone_flag, size_flag
    p = argparse.ArgumentParser(prog='python -m data.priors',
                                description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('root', help='VOCdevkit (or one VOC-style folder), COCO root, or YOLO root')
    p.add_argument('--format', required=True, choices=('voc', 'coco', 'yolo'))
    p.add_argument('--backbone', default='vgg16', type=backbone_flag,
                   metavar='{%s}' % ','.join(BACKBONES), help='the network whose priors to fit')
    p.add_argument('--size', default=None, type=size_flag,
                   help="input size (default: the backbone's, 300 or SSDlite's 320)")
    p.add_argument('--out', default='priors.json', help='the fitted prior file')
    p.add_argument('--year', help='VOC: 2007, 2012 or 2007,2012 (default: every VOC20XX folder)')
    p.add_argument('--split', help='VOC: trainval, ...; COCO: train2017, ...; YOLO: train '
                   '(default: every split: fit on the training split for a fair test)')
    p.add_argument('--classes', help='classes file (default: the one in ROOT)')
    p.add_argument('--no_fit', action='store_true', help='the coverage report only')
    p.add_argument('--json', help='write both coverage reports as JSON to this file')
    a = p.parse_args(argv)
    size = a.size or DEFAULT_SIZES[a.backbone]
    try:
        boxes = dataset_boxes(a.root, a.format, a.year, a.split, a.classes)
        cfg = config_for(81 if a.format == 'coco' else 21, size, a.backbone)
    except ValueError as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    if boxes.problems:
        print(f'{a.root}: {len(boxes.problems)} problem(s) left those files out '
              '(python -m data.check lists them)', file=out)
    before = coverage(boxes, cfg)
    _print_coverage(f'{cfg["name"]} priors ({a.backbone}, {size})', before, out)
    report = {'before': before}
    if not a.no_fit:
        fitted, _ = fit_priors(boxes, cfg)
        after = coverage(boxes, dict(cfg, **fitted))
        _print_coverage('fitted priors', after, out)
        print(f"  min_sizes {fitted['min_sizes']}\n  max_sizes {fitted['max_sizes']}\n"
              f"  aspect_ratios {fitted['aspect_ratios']}", file=out)
        doc = dict(fitted, min_dim=size, backbone=a.backbone, source=str(a.root),
                   format=a.format, boxes=len(boxes),
                   coverage_before=before['all'], coverage_after=after['all'])
        atomic_write_text(json.dumps(doc, indent=1) + '\n', a.out)
        print(f'wrote {a.out}: python train.py --priors {a.out} ...', file=out)
        report['after'] = after
    if a.json:
        atomic_write_text(json.dumps(report, indent=1) + '\n', a.json)
    return 0


if __name__ == '__main__':
    sys.exit(main())
