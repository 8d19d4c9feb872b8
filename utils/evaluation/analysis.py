"""Error analysis of a detector on a set (``eval.py --analysis DIR``, and
``<save_folder>/analysis/`` at the end of training).

Everything is counted at one score threshold (``thresh``, default 0.5) and
IoU 0.5, with the VOC metric's own matching (:func:`utils.evaluation.voc.match_class`:
each detection, best score first, takes the object of its class it overlaps
most, IoU > 0.5; a second detection of a taken object is false; one on a
difficult or crowd object counts as neither), so that the numbers here are
points of the PR curves that give the AP:

* **per class** (``per_class.csv``, and ``analysis.json``): TP, FP, FN,
  precision, recall and F1 at ``thresh``, and the threshold that maximises
  F1 with its precision, recall and F1 (the best point of the class's PR
  curve);
* **the confusion matrix** (``confusion_matrix.json`` and ``.png``), rows
  the true class, columns the predicted class, each with a last
  ``background`` entry. A true positive adds to ``[c, c]``. A false detection
  of class ``p`` that overlaps (IoU > 0.5) a missed object of another class
  ``t`` adds to ``[t, p]`` (the object is then no longer missed; missed
  objects are taken by the best-scoring such detection first); any other
  false detection adds to ``[background, p]`` (background, a duplicate or a
  poor box), and every object still missed to ``[t, background]``. Fed the
  ground truth as detections the matrix is diagonal. The diagonal is each
  class's TP, a row sums to its objects, a column to its detections;
* **AP by object size** (``by_size`` in ``analysis.json``): COCO's buckets
  (small < 32² <= medium < 96² <= large, box area in pixels), for the VOC07
  and VOC2010+ metrics (objects of other sizes, and the detections that
  match them or that are themselves of another size, count as neither, as
  COCOeval treats them), and pycocotools' APs / APm / APl;
* **the gallery** (``gallery.png``): the ``gallery`` images with the most
  errors (missed plus false boxes at ``thresh``; ties in set order), ground truth drawn in
  green (missed objects in yellow), true detections in blue and false ones
  in red, each captioned with its id and counts.
"""
import io
import json
import os

import numpy as np

from data.priors import SIZE_BUCKETS   # COCO's size buckets, one definition
from utils.evaluation.voc import match_class, pr_curve, voc_ap

GREEN, YELLOW, BLUE, RED = (60, 180, 75), (0, 215, 255), (200, 130, 0), (40, 40, 230)


def _areas(boxes):
    """Box areas in pixels, as ``coco_from_gt`` computes them (0-based width)."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])


def _iou(a, b):
    """The devkit's IoU (+1 pixel convention) of boxes ``a [n, 4]`` and ``b [m, 4]``."""
    iw = np.maximum(np.minimum(a[:, None, 2], b[None, :, 2])
                    - np.maximum(a[:, None, 0], b[None, :, 0]) + 1., 0.)
    ih = np.maximum(np.minimum(a[:, None, 3], b[None, :, 3])
                    - np.maximum(a[:, None, 1], b[None, :, 1]) + 1., 0.)
    inter = iw * ih
    area = lambda x: (x[:, 2] - x[:, 0] + 1.) * (x[:, 3] - x[:, 1] + 1.)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def match_detections(dets, gt, ovthresh=0.5):
    """Per detection: ``tp`` / ``fp`` flags (float64 [D], the VOC matching of
    its class) and ``took`` (int64 [D]: the object a true positive found, -1
    for the others). Ignored detections (on difficult objects) have both
    flags 0. The matching is greedy in score order, so the detections above
    any threshold match exactly as if the others did not exist."""
    tp, fp = np.zeros(len(dets)), np.zeros(len(dets))
    took = np.full(len(dets), -1, np.int64)
    for c in range(len(gt.class_names)):
        d, g = np.flatnonzero(dets.labels == c), np.flatnonzero(gt.labels == c)
        t, f, order, obj = match_class(dets.img[d], dets.scores[d], dets.boxes[d], gt.img[g],
                                       gt.boxes[g], gt.difficult[g], len(gt.image_ids),
                                       ovthresh, objects=True)
        tp[d[order]], fp[d[order]] = t, f
        if g.size:                  # obj indexes this class's objects g
            took[d[order]] = np.where(obj >= 0, g[np.maximum(obj, 0)], -1)
    return tp, fp, took


def per_class(dets, gt, tp, fp, thresh):
    """The P/R/F1 table (module docstring): ``{class: {...}}``."""
    out = {}
    for c, name in enumerate(gt.class_names):
        d = np.flatnonzero(dets.labels == c)
        npos = int(((gt.labels == c) & ~gt.difficult).sum())
        order = d[np.argsort(-dets.scores[d], kind='stable')]
        rec, prec = pr_curve(tp[order], fp[order], npos)
        keep = dets.scores[order] >= thresh
        n_tp, n_fp = int(tp[order][keep].sum()), int(fp[order][keep].sum())
        p = n_tp / max(n_tp + n_fp, 1)
        r = n_tp / npos if npos else 0.0
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        row = dict(objects=npos, detections=int(keep.sum()), tp=n_tp, fp=n_fp, fn=npos - n_tp,
                   precision=p, recall=r, f1=f1, best_f1=0.0, best_thresh=None,
                   best_precision=0.0, best_recall=0.0)
        if rec.size and npos:
            f = 2 * prec * rec / np.maximum(prec + rec, 1e-12)
            # only the last detection of a run of equal scores is a threshold
            last = np.r_[dets.scores[order][1:] != dets.scores[order][:-1], True]
            k = int(np.flatnonzero(last)[np.argmax(f[last])])
            row.update(best_f1=float(f[k]), best_thresh=float(dets.scores[order][k]),
                       best_precision=float(prec[k]), best_recall=float(rec[k]))
        out[name] = row
    return out


def confusion(dets, gt, tp, fp, took, thresh, ovthresh=0.5):
    """The confusion matrix (module docstring): int64 ``[C + 1, C + 1]``, and
    per image (missed, false) counts int64 ``[I, 2]``. Also returns the
    per-object missed flags and per-detection false flags at ``thresh``."""
    c = len(gt.class_names)
    m = np.zeros((c + 1, c + 1), np.int64)
    keep = dets.scores >= thresh
    hits = np.flatnonzero(keep & (tp > 0))
    np.add.at(m, (dets.labels[hits], dets.labels[hits]), 1)
    taken = np.zeros(gt.labels.size, bool)
    taken[took[hits]] = True
    missed = ~taken & ~gt.difficult
    false = keep & (fp > 0)
    for k in np.flatnonzero(false)[np.argsort(-dets.scores[false], kind='stable')]:
        cand = np.flatnonzero(missed & (gt.img == dets.img[k]) & (gt.labels != dets.labels[k]))
        if cand.size:
            ov = _iou(dets.boxes[k][None], gt.boxes[cand])[0]
            j = int(np.argmax(ov))
            if ov[j] > ovthresh:
                m[gt.labels[cand[j]], dets.labels[k]] += 1
                missed[cand[j]] = False
                continue
        m[c, dets.labels[k]] += 1
    for j in np.flatnonzero(missed):
        m[gt.labels[j], c] += 1
    obj_missed = ~taken & ~gt.difficult          # the gallery counts every miss
    per_image = np.stack([np.bincount(gt.img[obj_missed], minlength=len(gt.image_ids)),
                          np.bincount(dets.img[false], minlength=len(gt.image_ids))], 1)
    return m, per_image, obj_missed, false


def ap_by_size(dets, gt, ovthresh=0.5):
    """``{bucket: {'objects', 'voc07', 'voc12'}}``: the VOC mAPs with only
    the objects (and unmatched detections) of that size counted."""
    from utils.evaluation.detections import GroundTruth
    g_area, d_area = _areas(gt.boxes), _areas(dets.boxes)
    out = {}
    for name, lo, hi in SIZE_BUCKETS:
        inside = (g_area >= lo) & (g_area < hi)
        sub = GroundTruth(gt.image_ids, gt.class_names, gt.img, gt.labels, gt.boxes,
                          gt.difficult | ~inside, gt.sizes, gt.source)
        d_out = (d_area < lo) | (d_area >= hi)
        aps = {'voc07': [], 'voc12': []}
        for c in range(len(gt.class_names)):
            d, g = np.flatnonzero(dets.labels == c), np.flatnonzero(gt.labels == c)
            npos = int((~sub.difficult[g]).sum())
            if not npos:
                continue
            t, f, order = match_class(dets.img[d], dets.scores[d], dets.boxes[d], sub.img[g],
                                      sub.boxes[g], sub.difficult[g], len(gt.image_ids), ovthresh)
            f = np.where(d_out[d[order]], 0.0, f)        # another size's false box: ignored
            live = (t > 0) | (f > 0)
            rec, prec = pr_curve(t[live], f[live], npos)
            for m in aps:
                aps[m].append(voc_ap(rec, prec, m == 'voc07') if rec.size else 0.0)
        out[name] = dict(objects=int((inside & ~gt.difficult).sum()),
                         **{m: (float(np.mean(v)) if v else None) for m, v in aps.items()})
    return out


def analyse(dets, gt, thresh=0.5, coco_stats=None):
    """The analysis dict (``analysis.json``) and the per-image error counts."""
    tp, fp, took = match_detections(dets, gt)
    m, per_image, missed, false = confusion(dets, gt, tp, fp, took, thresh)
    by_size = ap_by_size(dets, gt)
    if coco_stats:
        for name, key in (('small', 'APs'), ('medium', 'APm'), ('large', 'APl')):
            by_size[name]['coco'] = float(coco_stats[key])
    out = dict(thresh=float(thresh), iou=0.5, images=len(gt.image_ids),
               classes=list(gt.class_names),
               confusion=dict(labels=list(gt.class_names) + ['background'],
                              rows='true class', columns='predicted class',
                              matrix=m.tolist()),
               per_class=per_class(dets, gt, tp, fp, thresh), by_size=by_size)
    return out, dict(tp=tp, per_image=per_image, missed=missed, false=false)


# ---------------------------------------------------------------- outputs
def _png(fig):
    buf = io.BytesIO()
    fig.savefig(buf, format='png', dpi=100, bbox_inches='tight')
    return buf.getvalue()


def confusion_png(m, labels):
    """The confusion matrix as PNG bytes: counts, coloured by each row's share."""
    import matplotlib
    matplotlib.use('Agg', force=False)
    import matplotlib.pyplot as plt
    m = np.asarray(m)
    share = m / np.maximum(m.sum(1, keepdims=True), 1)
    n = len(labels)
    fig, ax = plt.subplots(figsize=(max(4, 0.5 * n + 2), max(3.5, 0.5 * n + 1.5)))
    ax.imshow(share, cmap='Blues', vmin=0, vmax=1)
    ax.set_xticks(range(n), labels, rotation=60, ha='right', fontsize=7)
    ax.set_yticks(range(n), labels, fontsize=7)
    ax.set_xlabel('predicted')
    ax.set_ylabel('true')
    if n <= 30:
        for i in range(n):
            for j in range(n):
                if m[i, j]:
                    ax.text(j, i, str(m[i, j]), ha='center', va='center', fontsize=6,
                            color='white' if share[i, j] > 0.5 else 'black')
    ax.set_title('confusion matrix (rows: true class; counts, shaded by row share)',
                 fontsize=8)
    data = _png(fig)
    plt.close(fig)
    return data


def gallery_png(dets, gt, errs, pull_image, n=16, thresh=0.5, tile=320):
    """The gallery (module docstring) as PNG bytes (the first images of the
    set when none has an error), None for a set without images.
    ``pull_image(i)`` gives image ``i`` of the set (BGR uint8)."""
    import cv2
    counts = errs['per_image'].sum(1)
    worst = [int(i) for i in np.argsort(-counts, kind='stable')[:n]]
    if not worst:
        return None
    tiles = []
    for i in worst:
        img = np.ascontiguousarray(pull_image(i))
        s = tile / max(img.shape[:2])
        img = cv2.resize(img, (max(1, round(img.shape[1] * s)), max(1, round(img.shape[0] * s))))
        t = max(1, round(tile / 200))
        g = np.flatnonzero(gt.img == i)
        for j in g:
            b = np.round((gt.boxes[j] - 1) * s).astype(int)
            color = YELLOW if errs['missed'][j] else GREEN
            cv2.rectangle(img, tuple(b[:2]), tuple(b[2:]), color, t + 1 if errs['missed'][j] else t)
        d = np.flatnonzero((dets.img == i) & (dets.scores >= thresh))
        for k in d:
            b = np.round((dets.boxes[k] - 1) * s).astype(int)
            color = BLUE if errs['tp'][k] else RED
            cv2.rectangle(img, tuple(b[:2]), tuple(b[2:]), color, t)
            cv2.putText(img, f'{gt.class_names[dets.labels[k]]} {dets.scores[k]:.2f}',
                        (int(b[0]), max(10, int(b[1]) - 2)), cv2.FONT_HERSHEY_SIMPLEX, 0.35,
                        color, 1, cv2.LINE_AA)
        canvas = np.full((tile + 18, tile, 3), 255, np.uint8)
        canvas[18:18 + img.shape[0], :img.shape[1]] = img
        miss, fals = errs['per_image'][i]
        cv2.putText(canvas, f'{gt.image_ids[i]}: {miss} missed, {fals} false'[:48], (2, 13),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        tiles.append(canvas)
    cols = min(4, len(tiles))
    rows = -(-len(tiles) // cols)
    tiles += [np.full_like(tiles[0], 255)] * (rows * cols - len(tiles))
    grid = np.vstack([np.hstack(tiles[r * cols:(r + 1) * cols]) for r in range(rows)])
    ok, buf = cv2.imencode('.png', grid)
    return buf.tobytes() if ok else None


def analysis_table(result):
    """The printed P/R/F1 table and AP by size."""
    t = result['thresh']
    lines = [f'Per class at score >= {t:g}, IoU 0.5 '
             f'(F1-best threshold in the last columns):',
             f'{"class":>16} {"objects":>7} {"TP":>6} {"FP":>6} {"FN":>6} {"prec":>6} '
             f'{"recall":>6} {"F1":>6} | {"thresh":>6} {"F1":>6}']
    for name, r in result['per_class'].items():
        best = '-' if r['best_thresh'] is None else f'{r["best_thresh"]:.3f}'
        lines.append(f'{name[:16]:>16} {r["objects"]:7d} {r["tp"]:6d} {r["fp"]:6d} '
                     f'{r["fn"]:6d} {r["precision"]:6.3f} {r["recall"]:6.3f} {r["f1"]:6.3f} '
                     f'| {best:>6} {r["best_f1"]:6.3f}')
    lines.append('AP by object size (box area in pixels: small < 32^2 <= medium < 96^2 <= large):')
    for name, r in result['by_size'].items():
        vals = ', '.join(f'{k} {"n/a" if r.get(k) is None else format(r[k], ".4f")}'
                         for k in ('voc07', 'voc12', 'coco') if k in r)
        lines.append(f'{name:>8}: {r["objects"]:6d} objects, {vals}')
    return '\n'.join(lines)


def write_analysis(dets, gt, folder, thresh=0.5, gallery=16, pull_image=None,
                   coco_stats=None):
    """Analyse and write ``folder``: analysis.json, confusion_matrix.json and
    .png, per_class.csv and (with ``pull_image``) gallery.png, each written
    atomically. Returns ``(analysis dict, written paths)``."""
    from utils.checkpoint import atomic_write_bytes, atomic_write_text
    result, errs = analyse(dets, gt, thresh, coco_stats)
    os.makedirs(folder, exist_ok=True)
    paths = []

    def put(name, data):
        path = os.path.join(folder, name)
        (atomic_write_text if isinstance(data, str) else atomic_write_bytes)(data, path)
        paths.append(path)

    put('analysis.json', json.dumps(result, indent=2))
    put('confusion_matrix.json', json.dumps(result['confusion'], indent=2))
    put('confusion_matrix.png', confusion_png(result['confusion']['matrix'],
                                              result['confusion']['labels']))
    cols = ['objects', 'detections', 'tp', 'fp', 'fn', 'precision', 'recall', 'f1',
            'best_thresh', 'best_precision', 'best_recall', 'best_f1']
    rows = [','.join(['class'] + cols)]
    for name, r in result['per_class'].items():
        rows.append(','.join([name] + ['' if r[k] is None else
                                       (f'{r[k]:.6f}' if isinstance(r[k], float) else str(r[k]))
                                       for k in cols]))
    put('per_class.csv', '\n'.join(rows) + '\n')
    if pull_image is not None and gallery:
        png = gallery_png(dets, gt, errs, pull_image, gallery, thresh)
        if png is not None:
            put('gallery.png', png)
    return result, paths
