"""The PASCAL VOC detection metric, vectorised.

Equal to the official devkit's Python port (py-faster-rcnn's
``lib/datasets/voc_eval.py``, Bharath Hariharan) on every class:

* boxes are in the devkit's 1-based, inclusive pixel coordinates, and the IoU
  uses the ``+1`` pixel convention: ``w = x2 - x1 + 1``;
* detections of a class are ranked by ``np.argsort(-score)`` over the
  detection-file order, exactly as the port does (ties keep its order);
* each detection takes the ground truth of its image and class with the
  highest IoU (the first one on ties); with IoU > ``ovthresh`` (0.5) it is a
  true positive if that object is not yet taken, a false positive if it is,
  and ignored (neither) if that object is *difficult*; below the threshold it
  is a false positive;
* recall is over the non-difficult objects; AP is the VOC2007 11-point
  interpolated AP (``use_07_metric=True``) or the VOC2010+ area under the
  interpolated precision/recall curve.

Where the port is undefined we return a number instead of NaN or a crash:
precision is ``tp / max(tp + fp, eps)`` (as in the later Detectron and
ssd.pytorch copies; the port gives NaN when the best-scoring detections hit
difficult objects, and is otherwise identical), and a class without
detections has AP 0. A class without any non-difficult object in the set
(the port's ``npos == 0``, where its recall is NaN) has no AP: ``None``,
printed ``n/a`` and left out of the mean, as pycocotools and mmdetection
leave out classes without ground truth.

The sequential loop of the port is replaced by array operations: every
detection's best ground truth (``jmax``) does not depend on the loop's state,
so only "is this the first valid hit on that object" remains, which is the
first occurrence of the key ``(image, jmax)`` in ranked order.
"""
import numpy as np

# The 11 recall thresholds of VOC2007, built exactly as the port builds them.
_THRESH_07 = np.arange(0., 1.1, 0.1)


def voc_ap(rec, prec, use_07_metric=False):
    """AP from a precision/recall curve (float64 arrays ``[D]`` in rank order).

    ``use_07_metric``: the mean over t in {0, 0.1, ..., 1} of the best precision
    at recall >= t. Otherwise: the area under the monotone precision envelope.
    """
    rec = np.asarray(rec, dtype=np.float64)
    prec = np.asarray(prec, dtype=np.float64)
    if use_07_metric:
        # recall is non-decreasing, so prec[rec >= t] is a suffix of prec
        envelope = np.maximum.accumulate(prec[::-1])[::-1] if prec.size else prec
        first = np.searchsorted(rec, _THRESH_07, side='left')
        ap = 0.
        for i in first:
            p = envelope[i] if i < rec.size else 0
            ap = ap + p / 11.
        return float(ap)
    mrec = np.concatenate(([0.], rec, [1.]))
    mpre = np.concatenate(([0.], prec, [0.]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def _pad_by_image(gt_img, gt_boxes, gt_difficult, num_images):
    """Ground truth of one class grouped per image: boxes ``[I, M, 4]`` (NaN
    padded), difficult ``[I, M]`` and counts ``[I]``, keeping the input order
    within each image (the order of the annotation file)."""
    order = np.argsort(gt_img, kind='stable')
    img = gt_img[order]
    counts = np.bincount(img, minlength=num_images)
    m = int(counts.max()) if counts.size else 0
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    slot = np.arange(img.size) - starts[img]
    boxes = np.full((num_images, max(m, 1), 4), np.nan)
    diff = np.zeros((num_images, max(m, 1)), dtype=bool)
    boxes[img, slot] = gt_boxes[order]
    diff[img, slot] = gt_difficult[order]
    index = np.full((num_images, max(m, 1)), -1, dtype=np.int64)
    index[img, slot] = order            # the input position of each slot
    return boxes, diff, counts, index


def _best_overlap(bb, gt, counts, chunk=1 << 16):
    """For detections ``bb [D, 4]`` and their images' ground truth ``gt [D, M,
    4]``: (ovmax [D], jmax [D]) with the port's formula and float64 order of
    operations; ovmax is -inf where the image has no object of the class."""
    d, m = gt.shape[:2]
    ovmax = np.full(d, -np.inf)
    jmax = np.zeros(d, dtype=np.int64)
    step = max(1, chunk // max(m, 1))
    for s in range(0, d, step):
        b = bb[s:s + step, None, :]
        g = gt[s:s + step]
        iw = np.maximum(np.minimum(g[..., 2], b[..., 2]) - np.maximum(g[..., 0], b[..., 0]) + 1., 0.)
        ih = np.maximum(np.minimum(g[..., 3], b[..., 3]) - np.maximum(g[..., 1], b[..., 1]) + 1., 0.)
        inters = iw * ih
        uni = ((b[..., 2] - b[..., 0] + 1.) * (b[..., 3] - b[..., 1] + 1.) +
               (g[..., 2] - g[..., 0] + 1.) * (g[..., 3] - g[..., 1] + 1.) - inters)
        ov = inters / uni
        ov[np.arange(m)[None, :] >= counts[s:s + step, None]] = -np.inf
        with np.errstate(invalid='ignore'):
            ovmax[s:s + step] = np.max(ov, axis=1)   # NaN propagates, as in the port
        jmax[s:s + step] = np.argmax(ov, axis=1)
    return ovmax, jmax


def match_class(det_img, det_scores, det_boxes, gt_img, gt_boxes, gt_difficult,
                num_images, ovthresh=0.5, objects=False):
    """Mark the detections of ONE class as true/false positives.

    Args:
        det_img: int ``[D]`` image index of each detection (file order).
        det_scores: float ``[D]``.  det_boxes: float ``[D, 4]`` devkit coords.
        gt_img: int ``[G]``; gt_boxes: float ``[G, 4]`` devkit coords;
        gt_difficult: bool ``[G]``; all objects of this class.
        num_images: number of images in the set.

    Returns:
        (tp, fp, order): float64 ``[D]`` 0/1 flags in ranked order, and the
        ranking (indices into the inputs). With ``objects`` also ``took``:
        int64 ``[D]`` in ranked order, the object (index into the ``gt_*``
        inputs) each true positive found, -1 for the other detections.
    """
    det_img = np.asarray(det_img, dtype=np.int64)
    conf = np.asarray(det_scores, dtype=np.float64)
    order = np.argsort(-conf)
    nd = order.size
    tp, fp = np.zeros(nd), np.zeros(nd)
    took = np.full(nd, -1, dtype=np.int64)
    if nd == 0:
        return (tp, fp, order, took) if objects else (tp, fp, order)
    bb = np.asarray(det_boxes, dtype=np.float64)[order]
    img = det_img[order]
    boxes, diff, counts, index = _pad_by_image(np.asarray(gt_img, dtype=np.int64),
                                        np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4),
                                        np.asarray(gt_difficult, dtype=bool), num_images)
    ovmax, jmax = _best_overlap(bb, boxes[img], counts[img])
    with np.errstate(invalid='ignore'):
        hit = ovmax > ovthresh
    hit_difficult = hit & diff[img, jmax]
    cand = np.flatnonzero(hit & ~hit_difficult)
    key = img[cand] * boxes.shape[1] + jmax[cand]
    _, first = np.unique(key, return_index=True)
    tp[cand[first]] = 1.
    fp[:] = 1.
    fp[cand[first]] = 0.
    fp[hit_difficult] = 0.
    if objects:
        took[cand[first]] = index[img[cand[first]], jmax[cand[first]]]
        return tp, fp, order, took
    return tp, fp, order


def pr_curve(tp, fp, npos):
    """Cumulative (recall, precision) float64 ``[D]`` from ranked flags."""
    tp = np.cumsum(tp)
    fp = np.cumsum(fp)
    rec = tp / float(max(npos, 1)) if npos > 0 else np.zeros_like(tp)
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return rec, prec


def voc_eval_class(det_img, det_scores, det_boxes, gt_img, gt_boxes, gt_difficult,
                   num_images, ovthresh=0.5, use_07_metric=False):
    """(rec, prec, ap) for one class; see :func:`match_class` for the inputs."""
    tp, fp, _ = match_class(det_img, det_scores, det_boxes, gt_img, gt_boxes,
                            gt_difficult, num_images, ovthresh)
    npos = int(np.sum(~np.asarray(gt_difficult, dtype=bool)))
    rec, prec = pr_curve(tp, fp, npos)
    ap = voc_ap(rec, prec, use_07_metric) if (npos > 0 and rec.size) else 0.0
    return rec, prec, ap


def evaluate_voc(dets, gt, use_07_metric=True, ovthresh=0.5):
    """VOC AP for every class.

    Args:
        dets: :class:`utils.evaluation.detections.Detections` (devkit coordinates).
        gt: :class:`utils.evaluation.detections.GroundTruth` (devkit coordinates).
    Returns:
        dict(ap={class: float or None}, map=float, rec={class: [D]},
        prec={class: [D]}, npos={class: int}). ``ap`` is None for a class
        with ``npos == 0``; ``map`` is the mean over the other classes (0.0
        when no class has ground truth).
    """
    out = dict(ap={}, rec={}, prec={}, npos={})
    for c, name in enumerate(gt.class_names):
        d = dets.labels == c
        g = gt.labels == c
        rec, prec, ap = voc_eval_class(dets.img[d], dets.scores[d], dets.boxes[d],
                                       gt.img[g], gt.boxes[g], gt.difficult[g],
                                       len(gt.image_ids), ovthresh, use_07_metric)
        npos = int(np.sum(~gt.difficult[g]))
        out['ap'][name] = ap if npos > 0 else None
        out['rec'][name], out['prec'][name], out['npos'][name] = rec, prec, npos
    aps = [ap for ap in out['ap'].values() if ap is not None]
    out['map'] = float(np.mean(aps)) if aps else 0.0
    return out
