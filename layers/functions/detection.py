"""Test-time detection: decode the offsets, then per-class NMS, batched."""
import torch
import torch.nn as nn
from torchvision.ops import batched_nms, nms

from ..box_utils import decode


class Detect(nn.Module):
    """Turn the SSD head's output into detections.

    ``Detect(num_classes, bkg_label, top_k, conf_thresh, nms_thresh)`` as in
    ssd.pytorch, but a plain module with no autograd. For every image and every
    class but the background: keep scores > ``conf_thresh``, take the ``top_k``
    best, then NMS at IoU ``nms_thresh`` (torchvision's ``batched_nms``, all
    images and classes at once). ``keep_top_k`` optionally keeps only that many
    detections per image across classes (Caffe keeps 200); off by default, as in
    ssd.pytorch.

    Call ``detect(loc [B, P, 4], conf [B, P, C] (softmax scores), priors [P, 4])``.
    Returns ``[B, C, top_k, 5]`` float32: rows ``(score, x1, y1, x2, y2)``
    normalised to [0, 1], sorted by decreasing score within each class, zero
    rows after the last detection; class 0 (background) is all zeros.
    """

    def __init__(self, num_classes, bkg_label=0, top_k=200, conf_thresh=0.01,
                 nms_thresh=0.45, variance=(0.1, 0.2), keep_top_k=None):
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

    @torch.no_grad()
    def forward(self, loc_data, conf_data, prior_data):
        B, P, C = conf_data.shape
        conf_data = conf_data.float()
        mask = conf_data > self.conf_thresh                            # [B, P, C]
        if 0 <= self.background_label < C:
            mask[..., self.background_label] = False
        img, prior, cls = mask.nonzero(as_tuple=True)
        scores = conf_data[img, prior, cls]
        group = img * C + cls
        order, counts = _top_k_per_group(scores, group, B * C, self.top_k)
        img, prior, group, scores = img[order], prior[order], group[order], scores[order]
        boxes = decode(loc_data[img, prior].float(), prior_data[prior].float(),
                       self.variance)
        kept = _nms_per_group(boxes, scores, group, counts, self.nms_thresh)
        if self.keep_top_k is not None:
            kept = self._cap_per_image(kept, scores, img, B)
        return self._scatter(kept, group, scores, boxes, B, C)

    def _cap_per_image(self, kept, scores, img, B):
        """Keep the keep_top_k best-scoring of each image's detections."""
        kept = kept[scores[kept].argsort(descending=True, stable=True)]
        img = img[kept]
        order = torch.sort(img, stable=True).indices
        counts = torch.bincount(img, minlength=B)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.empty_like(order)
        rank[order] = torch.arange(order.numel(), device=img.device) - starts[img[order]]
        return kept[rank < self.keep_top_k]

    def _scatter(self, kept, group, scores, boxes, B, C):
        """Write the kept detections (sorted by score) into ``[B, C, top_k, 5]``."""
        out = torch.zeros(B * C, self.top_k, 5, device=scores.device)
        g = group[kept]
        order = torch.sort(g, stable=True).indices         # by group, score order kept
        kept, g = kept[order], g[order]
        counts = torch.bincount(g, minlength=B * C)
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.arange(g.numel(), device=g.device) - starts[g]
        ok = slot < self.top_k
        out[g[ok], slot[ok]] = torch.cat([scores[kept[ok], None], boxes[kept[ok]]], 1)
        return out.view(B, C, self.top_k, 5)


def _top_k_per_group(scores, group, num_groups, k):
    """Indices of the ``k`` best scores of every group, ordered by group, then
    by decreasing score (ties: lower index first); and the kept count per
    group ``[num_groups]``."""
    order = scores.argsort(descending=True, stable=True)
    order = order[group[order].argsort(stable=True)]
    counts = torch.bincount(group, minlength=num_groups)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(order.numel(), device=order.device) - starts[group[order]]
    keep = rank < k
    return order[keep], counts.clamp(max=k)


def _nms_per_group(boxes, scores, group, counts, iou_thresh):
    """NMS within each group. ``boxes``/``scores``/``group`` are ordered by
    group, then by decreasing score; ``counts [G]`` is the size of each group.
    Returns indices of the kept boxes, by group then decreasing score. On the
    CPU, torchvision's ``nms`` runs on each group's slice (cheaper than
    ``batched_nms``, which compares boxes across groups or searches for each
    group's members); elsewhere ``batched_nms`` does it in one call."""
    if boxes.device.type != 'cpu':
        kept = batched_nms(boxes, scores, group, iou_thresh)
        return kept.sort().values
    out, start = [], 0
    for n in counts[counts > 0].tolist():
        out.append(nms(boxes[start:start + n], scores[start:start + n], iou_thresh) + start)
        start += n
    return torch.cat(out) if out else group.new_zeros(0)
