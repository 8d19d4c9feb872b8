"""Test-time detection: decode the offsets, then per-class NMS, batched."""
import torch
import torch.nn as nn
from torchvision.ops import batched_nms

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
        loc_data, conf_data = loc_data.float(), conf_data.float()
        boxes = decode(loc_data, prior_data.float(), self.variance)     # [B, P, 4]
        classes = torch.tensor([c for c in range(C) if c != self.background_label],
                               device=conf_data.device)
        scores = conf_data.index_select(2, classes).transpose(1, 2)     # [B, C', P]
        k = min(self.top_k, P)
        top_scores, top_idx = scores.topk(k, dim=2)                      # [B, C', k]
        keep = top_scores > self.conf_thresh
        img, cls, rank = keep.nonzero(as_tuple=True)
        cand_scores = top_scores[img, cls, rank]
        cand_boxes = boxes[img, top_idx[img, cls, rank]]
        group = img * C + classes[cls]
        kept = batched_nms(cand_boxes, cand_scores, group, self.nms_thresh)
        if self.keep_top_k is not None:
            kept = self._cap_per_image(kept, img[kept], B)
        return self._scatter(kept, group, cand_scores, cand_boxes, B, C)

    def _cap_per_image(self, kept, img, B):
        """``kept`` is sorted by score; keep the first keep_top_k of each image."""
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
