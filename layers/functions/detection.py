"""Test-time detection: decode the offsets, then per-class NMS, batched."""
import operator
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn as nn
from torchvision.ops import batched_nms

from ..box_utils import decode



class Detect(nn.Module):
    """Turn the SSD head's output into detections.

    ``Detect(num_classes, bkg_label, top_k, conf_thresh, nms_thresh)`` as in
    ssd.pytorch, but a plain module with no autograd. For every image and every
    class but the background: keep scores > ``conf_thresh``, take the ``top_k``
    best (ties: the lower prior index first), then NMS at IoU ``nms_thresh``
    (torchvision's ``nms``). ``keep_top_k`` optionally keeps only that many
    detections per image across classes (Caffe keeps 200); off by default, as in
    ssd.pytorch. Keyword-only, off by default, for torchvision's postprocess
    (its SSD and SSDlite): ``clip_boxes`` clamps the decoded boxes to the
    image, [0, 1], before NMS; ``max_log_wh`` caps the decoded log-sizes
    (``loc[..., 2:] * variance[1]``; torchvision: ``log(1000 / 16)``).

    Call ``detect(loc [B, P, 4], conf [B, P, C] (softmax scores), priors [P, 4])``.
    Returns ``[B, C, top_k, 5]`` float32: rows ``(score, x1, y1, x2, y2)``
    normalised to [0, 1], sorted by decreasing score within each class, zero
    rows after the last detection; class 0 (background) is all zeros.

    How it is fast: one threshold mask and one ``nonzero`` over ``[B, P, C]``
    give the candidates of all images and classes; on dense score maps those
    that cannot be among their (image, class)'s top_k are dropped first (a
    histogram of the candidates' scores, linear; on very dense maps one
    ``topk`` along the priors, before the candidates are gathered at all);
    one stable sort of int64 keys
    orders every group by decreasing score (ties: lower prior first); only
    the top_k of each are decoded; NMS runs per group (torchvision's CPU
    ``nms`` compares every kept box with every later one, so one call over
    all groups would cost far more), shared among threads when there is much
    of it, or, off the CPU, as one ``batched_nms``; the kept rows are written
    into the output in one indexed write. On the CPU with more than one torch
    thread, a batch with more than ``SPLIT_BATCH`` candidates is done as two
    halves at once, one on a second thread (each image's detections do not
    depend on the others).
    """

    def __init__(self, num_classes, bkg_label=0, top_k=200, conf_thresh=0.01,
                 nms_thresh=0.45, variance=(0.1, 0.2), keep_top_k=None, *,
                 clip_boxes=False, max_log_wh=None):
        super().__init__()
        if nms_thresh <= 0:
            raise ValueError('nms_threshold must be non negative.')
        self.num_classes = num_classes
        self.background_label = bkg_label
        self.top_k = top_k
        self.conf_thresh = conf_thresh
        self.nms_thresh = nms_thresh
        self.variance = tuple(variance)
        self.keep_top_k = keep_top_k
        self.clip_boxes = clip_boxes
        self.max_log_wh = max_log_wh

    @torch.no_grad()
    def forward(self, loc_data, conf_data, prior_data):
        conf_data = conf_data.float().contiguous()
        mask = self._above_threshold(conf_data)
        B = conf_data.shape[0]
        threads = torch.get_num_threads()
        if (conf_data.device.type == 'cpu' and threads > 1 and B > 1
                and _count(mask) >= SPLIT_BATCH):
            # two halves of the batch at once, each on its own thread (same
            # detections: every image is done on its own)
            h = (B + 1) // 2
            later = _pool().submit(_in_modes_of_caller(self._detect), loc_data[h:],
                                   conf_data[h:], mask[h:], prior_data, 1)
            first = self._detect(loc_data[:h], conf_data[:h], mask[:h], prior_data, 1)
            return torch.cat([first, later.result()])
        return self._detect(loc_data, conf_data, mask, prior_data, threads)

    def _above_threshold(self, conf):
        """Bool ``[B, P, C]``: the scores of ``conf`` above conf_thresh, the
        background's cleared (NaN is never above)."""
        mask = _compare(operator.gt, conf, self.conf_thresh)
        if 0 <= self.background_label < conf.shape[2]:
            mask[..., self.background_label] = False
        return mask

    def _detect(self, loc_data, conf_data, mask, prior_data, threads):
        B, P, C = conf_data.shape
        k = self.top_k
        img, prior, group, s, counts = self._candidates(conf_data, mask)
        order = _sort_within_groups(group, s)
        starts = counts.cumsum(0) - counts
        group = group.index_select(0, order)
        top = torch.arange(order.numel(), device=order.device) - starts.index_select(0, group) < k
        top = _flat_nonzero(top)
        order, group = order.index_select(0, top), group.index_select(0, top)
        img, prior, s = (t.index_select(0, order) for t in (img, prior, s))
        loc = loc_data.reshape(B * P, 4).index_select(0, img * P + prior).float()
        if self.max_log_wh is not None:
            loc[:, 2:] = loc[:, 2:].clamp(max=self.max_log_wh / self.variance[1])
        boxes = decode(loc, prior_data.index_select(0, prior).float(), self.variance)
        if self.clip_boxes:
            boxes.clamp_(0, 1)
        kept = _nms_per_group(boxes, s, group, counts.clamp(max=k), self.nms_thresh, threads)
        if self.keep_top_k is not None:
            kept = self._cap_per_image(kept, s, img, B)
        return self._scatter(kept, group, s, boxes, B, C)

    def _candidates(self, conf, mask):
        """The candidates of ``conf [B, P, C]``, those of ``mask``
        (:meth:`_above_threshold`): ``img``, ``prior``, ``group`` (image * C +
        class; long), ``scores``, in the order (image, prior, class), and the
        count per group ``[B * C]``. Dense maps are not sorted whole: when the
        candidates outnumber what the groups can keep (top_k each)
        ``TOPK_FLOOR`` times, each group's top_k-th score is found first
        (:func:`_kth_largest`) and only the candidates at or above it are
        gathered (of the ties with it, those of the lowest priors, as the full
        sort would choose); when they outnumber the keepable ``HISTOGRAM``
        times, :func:`_may_be_top_k` drops the gathered ones that cannot be
        among the top_k."""
        B, P, C = conf.shape
        G = B * C
        keepable = B * (C - (0 <= self.background_label < C)) * self.top_k
        if self.top_k < P and _count(mask) > TOPK_FLOOR * keepable:
            kth = _kth_largest(conf, self.top_k)
            mask &= _compare(operator.ge, conf, kth)
            if _count(mask) > keepable:               # ties with the top_k-th score:
                above = mask & (conf > kth)           # keep those of the lowest priors
                room = self.top_k - above.sum(1, keepdim=True)
                tie = mask & ~above
                mask = above | (tie & (tie.cumsum(1) <= room))
        flat = _flat_nonzero(mask)
        scores = conf.view(-1)[flat]
        cls = flat % C
        img_prior = flat // C
        img = img_prior // P
        group = img * C + cls
        counts = torch.bincount(group, minlength=G)
        if self.top_k < P and flat.numel() > HISTOGRAM * int(counts.clamp(max=self.top_k).sum()):
            keep = _may_be_top_k(scores, group, G, self.top_k).nonzero().squeeze(1)
            img_prior, img, group, scores = (img_prior[keep], img[keep],
                                             group[keep], scores[keep])
            counts = torch.bincount(group, minlength=G)
        return img, img_prior - img * P, group, scores, counts

    def _cap_per_image(self, kept, scores, img, B):
        """Keep the keep_top_k best-scoring of each image's detections."""
        kept = kept[scores[kept].argsort(descending=True, stable=True)]
        img = img[kept]
        order = torch.sort(img, stable=True).indices
        counts = torch.bincount(img, minlength=B)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.empty_like(order)
        rank[order] = torch.arange(order.numel(), device=img.device) - starts[img[order]]
        return kept[(rank < self.keep_top_k)].sort().values

    def _scatter(self, kept, group, scores, boxes, B, C):
        """Write the kept detections into ``[B, C, top_k, 5]``. ``kept`` is
        ordered by group, then by decreasing score."""
        out = torch.zeros(B * C * self.top_k, 5, device=scores.device)
        g = group.index_select(0, kept)
        counts = torch.bincount(g, minlength=B * C)
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.arange(g.numel(), device=g.device) - starts.index_select(0, g)
        rows = torch.cat([scores.index_select(0, kept)[:, None], boxes.index_select(0, kept)], 1)
        out.index_copy_(0, g * self.top_k + slot, rows)
        return out.view(B, C, self.top_k, 5)


def _in_modes_of_caller(fn):
    """``fn`` to run on another thread under the calling thread's inference
    mode, without gradients (both are per-thread settings): tensors made in
    inference mode can be updated in place only inside it."""
    inference = torch.is_inference_mode_enabled()

    def run(*args):
        with torch.inference_mode(inference), torch.no_grad():
            return fn(*args)
    return run


def _kth_largest(conf, k, numpy=None):
    """``[B, P, C]`` -> ``[B, 1, C]``: the ``k``-th largest score along the
    priors of each (image, class), NaN counted as -inf and scores at or below
    conf_thresh counted too (so the bound is below conf_thresh where fewer
    than ``k`` candidates pass, and keeps them all). On the CPU NumPy's
    ``partition`` of the negated scores in contiguous rows, which puts NaN
    last (2.5 ms with the copy on a batch's very dense map, against 7-9 ms
    for ``topk``, which runs elsewhere, or with ``numpy=False``)."""
    B, P, C = conf.shape
    rows = torch.empty(B, C, P, dtype=conf.dtype, device=conf.device)
    torch.neg(conf.detach().transpose(1, 2), out=rows)
    if numpy if numpy is not None else conf.device.type == 'cpu':
        kth = -torch.from_numpy(np.partition(rows.numpy(), k - 1, axis=2)[..., k - 1])
    else:
        rows.nan_to_num_(nan=float('inf'), posinf=float('inf'), neginf=float('-inf'))
        kth = -rows.topk(k, dim=2, largest=False, sorted=False).values.amax(2)
    return kth.nan_to_num_(nan=float('-inf'), posinf=float('inf'),
                           neginf=float('-inf')).unsqueeze(1)


def _compare(op, conf, bound):
    """``op(conf, bound)`` (``operator.gt``, ``ge``; ``bound`` a number or a
    broadcastable tensor) as a bool tensor. On the CPU through NumPy, whose
    comparisons of a batch's [8, 8732, 21] scores are 3x faster than torch's
    (0.3 ms against 0.9-1.1, doc/benchmarks.md); NaN compares False."""
    if conf.device.type == 'cpu':
        b = bound.detach().numpy() if torch.is_tensor(bound) else bound
        return torch.from_numpy(op(conf.detach().numpy(), b))
    return op(conf, bound)


def _count(mask):
    """The number of True in a bool tensor, as an int."""
    if mask.device.type == 'cpu':
        return int(np.count_nonzero(mask.numpy()))
    return int(torch.count_nonzero(mask))


def _flat_nonzero(mask):
    """The flat indices (int64) of the True elements of a contiguous bool
    tensor, in order. On the CPU NumPy's ``flatnonzero`` (0.55 ms on a
    batch's 1.5 M scores, against 2.0 ms for ``torch.nonzero``)."""
    if mask.device.type == 'cpu':
        return torch.from_numpy(np.flatnonzero(mask.numpy())).long()
    return mask.view(-1).nonzero().squeeze(1)


def _may_be_top_k(scores, group, num_groups, k, bins=1024):
    """Bool mask over the candidates: False only for those certain not to be
    among the ``k`` best of their group. The scores are binned by a monotone
    map (``bins`` equal steps from the lowest to the highest score; all in
    bin 0 when they are all equal); per group, the highest bin at or above
    which lie ``k`` candidates is the floor. Bins below it hold only scores
    beaten by ``k`` others; ties share a bin. Linear in the candidates: a
    histogram, no sort."""
    lo, hi = scores.min(), scores.max()
    span = (hi - lo).clamp(min=torch.finfo(scores.dtype).tiny)   # (scores - lo) <= span
    b = ((scores - lo) / span * bins).clamp_(0, bins - 1).long()
    hist = torch.bincount(group * bins + b, minlength=num_groups * bins)
    at_least = hist.view(num_groups, bins).flip(1).cumsum(1).flip(1)
    floor = ((at_least >= k).sum(1) - 1).clamp_(min=0)
    return b >= floor[group]


def _sort_within_groups(group, scores):
    """Permutation that orders candidates by ``group`` (ascending), then by
    decreasing score, ties by position: one stable sort of int64 keys, the
    group in the high 32 bits and the float32 score's order-preserving bit
    pattern, inverted, in the low 32 (exact for every float, no host sync)."""
    bits = scores.view(torch.int32).long()
    bits = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)     # monotone in the float
    key = (group << 32) + (0x7FFFFFFF - bits)
    return key.sort(stable=True).indices


def _nms_per_group(boxes, scores, group, counts, iou_thresh, threads=1):
    """NMS within each group. ``boxes``/``scores``/``group`` are ordered by
    group, then by decreasing score; ``counts [G]`` is the size of each group.
    Returns indices of the kept boxes, by group then decreasing score.

    On the CPU, torchvision's ``nms`` runs on each group's slice: its kernel
    compares each kept box with every later one, so one ``batched_nms`` over
    all groups would cost far more. The kernel releases the GIL, so with
    ``torch.get_num_threads() > 1`` and enough work the slices are shared
    among that many threads. Elsewhere ``batched_nms`` does it in one call."""
    if boxes.device.type != 'cpu':
        kept = batched_nms(boxes, scores, group, iou_thresh)
        return kept.sort().values
    sizes = counts[counts > 0].tolist()
    if not sizes:
        return group.new_zeros(0)
    runs = _split_work(sizes, threads)
    if len(runs) > 1:
        ends = [sum(sizes[:j]) for _, j in runs]
        starts = [0] + ends[:-1]
        futures = [_pool().submit(_nms_slices, boxes[a:b], scores[a:b], sizes[i:j], iou_thresh)
                   for (i, j), a, b in zip(runs[1:], starts[1:], ends[1:])]
        i, j = runs[0]
        keeps = _nms_slices(boxes[:ends[0]], scores[:ends[0]], sizes[i:j], iou_thresh)
        for f in futures:
            keeps += f.result()
    else:
        keeps = _nms_slices(boxes, scores, sizes, iou_thresh)
    offsets = np.cumsum(sizes) - sizes            # NumPy: no OpenMP region to wait on
    lengths = [k.shape[0] for k in keeps]
    return torch.cat(keeps) + torch.from_numpy(np.repeat(offsets, lengths))


def _nms_slices(boxes, scores, sizes, iou_thresh):
    """torchvision's ``nms`` on consecutive slices of ``sizes`` rows; the kept
    indices of each, local to its slice (a slice of one box keeps it)."""
    op = torch.ops.torchvision.nms
    return [op(b, s, iou_thresh) if n > 1 else _ONE
            for b, s, n in zip(boxes.split(sizes), scores.split(sizes), sizes)]


_ONE = torch.zeros(1, dtype=torch.long)
HISTOGRAM = 3   # candidates per keepable one above which the histogram bound runs
TOPK_FLOOR = 12  # ... above which the top_k-th score bound runs first (crossover: doc/benchmarks.md)
SPLIT_BATCH = 8000   # candidates above which two threads take half a batch each (doc/benchmarks.md)
PARALLEL_WORK = 2_000_000   # sum of squared slice sizes worth a second thread (doc/benchmarks.md)


def _split_work(sizes, threads):
    """Split the slices into at most ``threads`` consecutive runs ``(i, j)``
    of about equal NMS work (the square of a slice's size); one run when the
    work is small."""
    work = [n * n for n in sizes]
    total = sum(work)
    parts = min(threads, len(sizes), total // PARALLEL_WORK + 1)
    if parts <= 1:
        return [(0, len(sizes))]
    runs, i, acc = [], 0, 0
    for j, w in enumerate(work):
        acc += w
        if acc >= total * (len(runs) + 1) / parts and len(runs) < parts - 1:
            runs.append((i, j + 1))
            i = j + 1
    return runs + [(i, len(sizes))]


_POOL = (None, None)


def _pool():
    """A small thread pool for :func:`_nms_per_group`, made again in a
    forked child (whose copy has no threads)."""
    global _POOL
    pid, pool = _POOL
    if pool is None or pid != os.getpid():
        pool = ThreadPoolExecutor(max_workers=max(1, os.cpu_count() - 1),
                                  thread_name_prefix='detect-nms')
        _POOL = (os.getpid(), pool)
    return pool
