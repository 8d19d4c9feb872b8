"""Box operations. Boxes are ``(x1, y1, x2, y2)`` ("point form") or
``(cx, cy, w, h)`` ("centre-size form"), normalised to [0, 1] unless noted.
Every function broadcasts over leading batch dimensions."""
import torch
from torch.nn.utils.rnn import pad_sequence
from torchvision.ops import batched_nms, box_iou
from torchvision.ops import nms as tv_nms


def point_form(boxes):
    """``[..., 4]`` (cx, cy, w, h) -> (x1, y1, x2, y2)."""
    return torch.cat((boxes[..., :2] - boxes[..., 2:] / 2,
                      boxes[..., :2] + boxes[..., 2:] / 2), -1)


def center_size(boxes):
    """``[..., 4]`` (x1, y1, x2, y2) -> (cx, cy, w, h)."""
    return torch.cat(((boxes[..., 2:] + boxes[..., :2]) / 2,
                      boxes[..., 2:] - boxes[..., :2]), -1)


def jaccard(box_a, box_b):
    """IoU of two sets of point-form boxes: ``[A, 4] x [B, 4] -> [A, B]``."""
    return box_iou(box_a, box_b)


def encode(matched, priors, variances):
    """Encode point-form ground truth ``matched [..., P, 4]`` against priors
    ``[P, 4]`` (cx, cy, w, h) into offsets ``[..., P, 4]`` (the regression
    targets): ``((g_c - p_c) / (v0 * p_wh), log(g_wh / p_wh) / v1)``. Widths are
    floored at 1e-6 so that a degenerate box cannot give ``-inf``."""
    g_cxcy = (matched[..., :2] + matched[..., 2:]) / 2 - priors[..., :2]
    g_cxcy = g_cxcy / (variances[0] * priors[..., 2:])
    g_wh = (matched[..., 2:] - matched[..., :2]).clamp(min=1e-6) / priors[..., 2:]
    return torch.cat([g_cxcy, torch.log(g_wh) / variances[1]], -1)


def decode(loc, priors, variances):
    """Invert :func:`encode`: offsets ``[..., P, 4]`` -> point-form boxes."""
    cxcy = priors[..., :2] + loc[..., :2] * variances[0] * priors[..., 2:]
    wh = priors[..., 2:] * torch.exp(loc[..., 2:] * variances[1])
    return torch.cat([cxcy - wh / 2, cxcy + wh / 2], -1)


def pad_targets(targets, device=None):
    """Stack a list of ``[n_i, 5]`` targets into ``truths [B, G, 4]``,
    ``labels [B, G]`` (long) and ``valid [B, G]`` (bool), G = max n_i (>= 1).
    Padding boxes are the unit box so that their encodings stay finite."""
    device = device if device is not None else (
        targets[0].device if len(targets) else 'cpu')
    rows = [torch.as_tensor(t, dtype=torch.float32).reshape(-1, 5).to(device)
            for t in targets]
    lengths = torch.tensor([r.shape[0] for r in rows], device=device)
    rows.append(torch.zeros(1, 5, device=device))       # G >= 1
    padded = pad_sequence(rows, batch_first=True)[:-1]   # [B, G, 5]
    valid = torch.arange(padded.shape[1], device=device) < lengths[:, None]
    unit = torch.tensor([0., 0., 1., 1., 0.], device=device)
    padded = torch.where(valid[..., None], padded, unit)
    return padded[..., :4], padded[..., 4].long(), valid


def match(threshold, truths, priors, variances, labels, loc_t=None,
          conf_t=None, idx=None, valid=None):
    """Match priors to ground truth, for a whole batch at once.

    Args:
        threshold: IoU at or above which a prior is positive (0.5).
        truths: ``[B, G, 4]`` point-form ground truth (or ``[G, 4]`` for one
            image, ssd.pytorch's call).
        priors: ``[P, 4]`` priors (cx, cy, w, h).
        variances: ``(0.1, 0.2)``.
        labels: ``[B, G]`` class indices without background.
        loc_t, conf_t, idx: ssd.pytorch's output arguments; when given, the
            results are written into ``loc_t[idx]`` and ``conf_t[idx]``.
        valid: ``[B, G]`` bool, False for padding (default: all valid).

    Returns:
        ``loc [B, P, 4]`` encoded targets, ``conf [B, P]`` long labels with 0
        for background. Semantics are ssd.pytorch's: each ground truth first
        takes its best prior (a prior claimed by several takes the highest
        ground-truth index, as its loop did), then every prior takes its best
        ground truth when IoU >= threshold. Ties take the lowest index.
    """
    single = truths.dim() == 2
    if single:
        truths, labels = truths[None], labels[None]
        valid = None if valid is None else valid[None]
    best_truth_idx, conf = match_indices(threshold, truths, priors, labels, valid)
    B, P = conf.shape
    matches = truths.gather(1, best_truth_idx[..., None].expand(B, P, 4))
    loc = encode(matches, priors, variances)
    if single:
        loc, conf = loc[0], conf[0]
    if loc_t is not None:
        loc_t[idx] = loc
        conf_t[idx] = conf
    return loc, conf


def match_indices(threshold, truths, priors, labels, valid=None):
    """The matching of :func:`match` without the encoding: ``truths [B, G, 4]``,
    ``priors [P, 4]`` (cx, cy, w, h), ``labels [B, G]``, ``valid [B, G]`` ->
    ``best_truth_idx [B, P]`` (long, the ground truth of each prior) and
    ``conf [B, P]`` (long, label + 1, 0 for background). The loss encodes only
    the positives, which saves a pass over ``[B, P, 4]``."""
    B, G, _ = truths.shape
    P = priors.shape[0]
    overlaps = _pairwise_iou(truths.reshape(-1, 4), point_form(priors))  # [B*G, P]
    if valid is None:
        valid = torch.ones(B, G, dtype=torch.bool, device=truths.device)
    else:
        overlaps[~valid.reshape(-1)] = -1.0      # only the padding rows
    overlaps = overlaps.view(B, G, P)
    best_prior_idx = overlaps.argmax(2)                                   # [B, G]
    best_truth_overlap, best_truth_idx = overlaps.max(1)                 # [B, P]
    gt_index = torch.arange(G, device=truths.device).expand(B, G)
    forced = torch.full((B, P), -1, dtype=torch.long, device=truths.device)
    forced.scatter_reduce_(1, best_prior_idx, gt_index.masked_fill(~valid, -1),
                           reduce='amax', include_self=True)
    is_forced = forced >= 0
    best_truth_idx = torch.where(is_forced, forced, best_truth_idx)
    best_truth_overlap = best_truth_overlap.masked_fill(is_forced, 2.0)
    conf = labels.gather(1, best_truth_idx) + 1
    conf = conf.masked_fill(best_truth_overlap < threshold, 0)
    return best_truth_idx, conf


def _pairwise_iou(box_a, box_b):
    """IoU ``[A, B]`` of point-form ``box_a [A, 4]`` and ``box_b [B, 4]``, the
    same arithmetic as ``torchvision.ops.box_iou`` (bit-identical results) but
    on contiguous coordinate rows with in-place ops: about 8x faster on the
    CPU for ``[B * G, 8732]``, where it dominates the matching."""
    a = box_a.t().contiguous()[..., None]                                # [4, A, 1]
    b = box_b.t().contiguous()                                           # [4, B]
    iw = torch.minimum(a[2], b[2]).sub_(torch.maximum(a[0], b[0])).clamp_(min=0)
    ih = torch.minimum(a[3], b[3]).sub_(torch.maximum(a[1], b[1])).clamp_(min=0)
    inter = iw.mul_(ih)
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    return inter.div_((area_a + area_b).sub_(inter))


def nms(boxes, scores, overlap=0.5, top_k=200):
    """ssd.pytorch's ``nms(boxes, scores, overlap, top_k) -> (keep, count)``,
    on torchvision: the ``top_k`` highest scores, then greedy NMS that drops
    boxes with IoU > overlap. ``keep`` is sorted by decreasing score."""
    order = scores.argsort(descending=True)[:top_k]
    keep = order[tv_nms(boxes[order], scores[order], overlap)]
    return keep, keep.numel()


__all__ = ['point_form', 'center_size', 'jaccard', 'encode', 'decode',
           'match', 'match_indices', 'pad_targets', 'nms', 'batched_nms', 'box_iou']
