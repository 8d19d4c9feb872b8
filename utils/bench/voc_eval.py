"""VOC metric benchmark: ``python -m utils.bench.voc_eval [--images 4952]``.

A VOC2007-test-sized problem (4952 images, 20 classes, VOC-like object
counts with difficult objects, more than 100k detections written to devkit
files with ``%.3f`` scores, so there are many ties) is evaluated twice, side
by side in one process, from the same files and the same in-memory ground
truth:

* ``port``: a straightforward Python 3 port of py-faster-rcnn's
  ``lib/datasets/voc_eval.py`` (:func:`port_voc_eval` below, one detection at
  a time, as the devkit's Python code does);
* ``ours``: :func:`utils.evaluation.detections.read_devkit` +
  :func:`utils.evaluation.voc.evaluate_voc` (vectorised).

It checks that every class AP agrees to 1e-6 for both metrics (VOC07
11-point and VOC2010+ area) and prints the time ratio. The tests import
:func:`port_voc_eval` as the reference.
"""
import argparse
import os
import tempfile
import time

import numpy as np

from utils.evaluation.detections import Detections, GroundTruth, read_devkit, write_devkit
from utils.evaluation.voc import evaluate_voc

CLASSES = ('aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat',
           'chair', 'cow', 'diningtable', 'dog', 'horse', 'motorbike', 'person',
           'pottedplant', 'sheep', 'sofa', 'train', 'tvmonitor')


# ---------------------------------------------------------------- the port
def port_voc_ap(rec, prec, use_07_metric=False):
    """The port's ``voc_ap``, loop for loop."""
    if use_07_metric:
        ap = 0.
        for t in np.arange(0., 1.1, 0.1):
            if np.sum(rec >= t) == 0:
                p = 0
            else:
                p = np.max(prec[rec >= t])
            ap = ap + p / 11.
        return ap
    mrec = np.concatenate(([0.], rec, [1.]))
    mpre = np.concatenate(([0.], prec, [0.]))
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = np.maximum(mpre[i - 1], mpre[i])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1])


def port_voc_eval(detfile, recs, imagenames, classname, ovthresh=0.5, use_07_metric=False):
    """The port's ``voc_eval`` for one class; ``recs[image]`` is the list of
    objects ``{'name', 'difficult', 'bbox'}`` that its ``parse_rec`` returns.
    As the port, it needs at least one detection; unlike it, precision uses
    the ``eps`` guard of its later copies (identical whenever the port is
    finite)."""
    class_recs, npos = {}, 0
    for name in imagenames:
        R = [o for o in recs[name] if o['name'] == classname]
        difficult = np.array([o['difficult'] for o in R]).astype(bool)
        class_recs[name] = {'bbox': np.array([o['bbox'] for o in R]),
                            'difficult': difficult, 'det': [False] * len(R)}
        npos += sum(~difficult)
    with open(detfile) as f:
        lines = [x.strip().split(' ') for x in f.readlines()]
    image_ids = [x[0] for x in lines]
    confidence = np.array([float(x[1]) for x in lines])
    BB = np.array([[float(z) for z in x[2:]] for x in lines])
    sorted_ind = np.argsort(-confidence)
    BB = BB[sorted_ind, :]
    image_ids = [image_ids[x] for x in sorted_ind]
    nd = len(image_ids)
    tp, fp = np.zeros(nd), np.zeros(nd)
    for d in range(nd):
        R = class_recs[image_ids[d]]
        bb = BB[d, :].astype(float)
        ovmax = -np.inf
        BBGT = R['bbox'].astype(float)
        if BBGT.size > 0:
            ixmin = np.maximum(BBGT[:, 0], bb[0])
            iymin = np.maximum(BBGT[:, 1], bb[1])
            ixmax = np.minimum(BBGT[:, 2], bb[2])
            iymax = np.minimum(BBGT[:, 3], bb[3])
            iw = np.maximum(ixmax - ixmin + 1., 0.)
            ih = np.maximum(iymax - iymin + 1., 0.)
            inters = iw * ih
            uni = ((bb[2] - bb[0] + 1.) * (bb[3] - bb[1] + 1.) +
                   (BBGT[:, 2] - BBGT[:, 0] + 1.) * (BBGT[:, 3] - BBGT[:, 1] + 1.) - inters)
            overlaps = inters / uni
            ovmax = np.max(overlaps)
            jmax = np.argmax(overlaps)
        if ovmax > ovthresh:
            if not R['difficult'][jmax]:
                if not R['det'][jmax]:
                    tp[d] = 1.
                    R['det'][jmax] = 1
                else:
                    fp[d] = 1.
        else:
            fp[d] = 1.
    fp, tp = np.cumsum(fp), np.cumsum(tp)
    rec = tp / float(npos)
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return rec, prec, port_voc_ap(rec, prec, use_07_metric)


# ---------------------------------------------------------------- the problem
def synthetic_voc(num_images=4952, dets_per_image=24, seed=0):
    """VOC-like ground truth (1-5 objects per image, ~1 in 8 difficult,
    integer 1-based boxes in a 500x375 image) and detections around them:
    jittered true boxes, duplicates, and background boxes, with ``%.3f``-
    rounded scores. Returns (GroundTruth, Detections)."""
    rng = np.random.default_rng(seed)
    ids = [f'{i:06d}' for i in range(num_images)]
    n_obj = rng.integers(1, 6, num_images)
    G = int(n_obj.sum())
    gi = np.repeat(np.arange(num_images), n_obj)
    lab = np.where(rng.random(G) < 0.3, 14, rng.integers(0, 20, G))   # many persons
    wh = rng.integers(8, 300, (G, 2))
    x1 = rng.integers(1, 500 - wh[:, 0]); y1 = rng.integers(1, 375 - np.minimum(wh[:, 1], 370))
    gb = np.stack([x1, y1, np.minimum(x1 + wh[:, 0], 500), np.minimum(y1 + wh[:, 1], 375)], 1)
    gt = GroundTruth(ids, CLASSES, gi.astype(np.int64), lab.astype(np.int64),
                     gb.astype(np.float64), rng.random(G) < 0.12,
                     np.tile([500, 375], (num_images, 1)))
    D = num_images * dets_per_image
    src = rng.integers(0, G, D)
    jitter = rng.normal(0, 1, (D, 4)) * (gb[src, 2:] - gb[src, :2]).repeat(2, 1) * 0.12
    db = gb[src] + jitter
    bg = rng.random(D) < 0.35
    db[bg] = np.sort(rng.uniform(1, 500, (int(bg.sum()), 4)).reshape(-1, 2, 2), 1).reshape(-1, 4)
    dl = np.where(rng.random(D) < 0.1, rng.integers(0, 20, D), lab[src])
    sc = np.clip(rng.beta(2, 5, D) + 0.3 * (~bg), 0.01, 1.0)
    dets = Detections(ids, gi[src].astype(np.int64), dl.astype(np.int64), sc, db)
    return gt, dets.quantized()


def gt_records(gt):
    """The port's ``recs``: image id -> list of object dicts."""
    recs = {i: [] for i in gt.image_ids}
    for k in range(gt.img.size):
        recs[gt.image_ids[gt.img[k]]].append(
            {'name': gt.class_names[gt.labels[k]], 'difficult': int(gt.difficult[k]),
             'bbox': [int(v) for v in gt.boxes[k]]})
    return recs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--images', type=int, default=4952)
    ap.add_argument('--dets_per_image', type=int, default=24)
    args = ap.parse_args(argv)
    gt, dets = synthetic_voc(args.images, args.dets_per_image)
    recs = gt_records(gt)
    with tempfile.TemporaryDirectory() as tmp:
        write_devkit(dets, CLASSES, tmp, 'test', prefix='comp4_')
        print(f'{len(gt.image_ids)} images, {gt.img.size} objects '
              f'({int(gt.difficult.sum())} difficult), {len(dets)} detections')
        for use_07 in (True, False):
            t0 = time.perf_counter()
            port = {c: port_voc_eval(os.path.join(tmp, f'comp4_det_test_{c}.txt'), recs,
                                     gt.image_ids, c, 0.5, use_07)[2] for c in CLASSES}
            t_port = time.perf_counter() - t0
            t0 = time.perf_counter()
            ours = evaluate_voc(read_devkit(tmp, CLASSES, gt.image_ids, 'test'), gt, use_07)
            t_ours = time.perf_counter() - t0
            diff = max(abs(port[c] - ours['ap'][c]) for c in CLASSES)
            name = 'VOC07 11-point' if use_07 else 'VOC2010+ area'
            print(f'{name:15s}  mAP port {np.mean(list(port.values())):.6f} ours {ours["map"]:.6f}'
                  f'  max |AP diff| {diff:.1e}  port {t_port:.2f} s  ours {t_ours:.2f} s'
                  f'  ours is {t_port / t_ours:.1f}x faster')
            if diff > 1e-6:
                raise SystemExit('MISMATCH with the devkit port')


if __name__ == '__main__':
    main()
