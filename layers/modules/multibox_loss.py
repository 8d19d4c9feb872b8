"""The SSD multibox loss: matching, hard-negative mining and normalisation."""
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from ..box_utils import encode, match_indices, pad_targets


#: Hard-negative rankings (``MultiBoxLoss(mining=...)``, ``train.py --mining``).
MINING = ('row', 'global_max')


class MultiBoxLoss(nn.Module):
    """SSD weighted loss: Smooth-L1 localisation plus softmax confidence.

    1. Match priors to ground truth (:func:`layers.box_utils.match`): positives
       are priors with IoU >= ``overlap_thresh`` plus each object's best prior.
    2. Localisation: Smooth-L1 between predicted and encoded offsets, summed
       over positives.
    3. Confidence: cross-entropy summed over positives and hard negatives, the
       ``neg_pos`` x num_pos negatives of each image with the largest
       background loss (ranked by a double argsort over one no-grad
       ``log_softmax``, no loop over images). The ranking is per row, so it
       stays exact however far apart the logits are: ssd.pytorch's
       ``log_sum_exp`` subtracts one max over the whole batch, and once the
       logits spread by more than about 88 (float32 ``exp`` underflow) whole
       rows get ``-inf`` and are never mined, whatever their real loss
       (``utils.bench.reference.hard_negatives``; doc/reproduction.md).
    4. ``L(x, c, l, g) = (L_conf + alpha * L_loc) / N`` with ``alpha = 1``.

    **Should loss_l and loss_c be divided by N?** Yes. N is the number of
    matched (positive) priors in the batch; the paper defines the loss as the
    sum over matches divided by N, and the learning rate 1e-3 of the paper is
    tuned for that scale. Without the division the gradient grows with the
    number of objects in the batch (hundreds of positives at batch 32), so the
    effective learning rate is a hundred times too large and varies from batch
    to batch: training diverges, or must use a smaller lr tuned per dataset
    and batch size (measured in doc/loss_normalization.md, with what
    ssd.pytorch's mining adds to it). N is clamped to at least 1, so that a batch with no
    objects gives a finite (zero) loss, never NaN; under DDP, N is summed over
    all processes, so that every GPU optimises the same objective as one GPU
    on the global batch. See ``doc/loss_normalization.md``.

    Args (ssd.pytorch's constructor): num_classes, overlap_thresh (0.5),
        prior_for_matching (unused, True), bkg_label (0), neg_mining (True),
        neg_pos (3), neg_overlap (unused, 0.5), encode_target (unused, False),
        use_gpu (accepted; the device follows the inputs).
    Keyword-only: ``variance`` (0.1, 0.2); ``divide_by_n`` (True; False sums,
        for the ablation in doc/loss_normalization.md); ``mining`` ('row',
        the default: the per-row ``log_softmax`` above; 'global_max':
        ssd.pytorch's ranking as it is, ``log_sum_exp`` with one max over
        the batch and its double sort, underflow included, so that training
        reproduces ssd.pytorch's loop bit for bit: ``train.py --mining``,
        doc/reproduction.md).

    Call ``loss((loc [B, P, 4], conf [B, P, C], priors [P, 4]), targets)``
    where targets is a list of ``[n_i, 5]`` tensors ``(x1, y1, x2, y2, label)``
    normalised to [0, 1], label without background. Returns float32 scalars
    ``(loss_l, loss_c)``. Gradient accumulation (``train.py --accum_steps``)
    counts N over all micro-batches first (:meth:`count_positives`, summed,
    then :meth:`normalizer`) and passes it as ``num_pos=``, so that K
    micro-batches give the gradient of the whole batch; :meth:`sums` gives
    the undivided sums and this batch's N.
    """

    def __init__(self, num_classes, overlap_thresh=0.5, prior_for_matching=True,
                 bkg_label=0, neg_mining=True, neg_pos=3, neg_overlap=0.5,
                 encode_target=False, use_gpu=True, *, variance=(0.1, 0.2),
                 divide_by_n=True, mining='row'):
        super().__init__()
        if mining not in MINING:
            raise ValueError(f'mining must be one of {", ".join(MINING)}, got {mining!r}')
        self.mining = mining
        self.num_classes = num_classes
        self.threshold = overlap_thresh
        self.background_label = bkg_label
        self.use_prior_for_matching = prior_for_matching
        self.do_neg_mining = neg_mining
        self.negpos_ratio = neg_pos
        self.neg_overlap = neg_overlap
        self.encode_target = encode_target
        self.use_gpu = use_gpu
        self.variance = tuple(variance)
        self.divide_by_n = divide_by_n

    def forward(self, predictions, targets, num_pos=None):
        """``(loss_l, loss_c)`` of the batch. ``num_pos`` (keyword, for
        gradient accumulation): the normaliser N already counted, summed
        over the micro-batches of one step and reduced over processes
        (:meth:`count_positives`, :meth:`normalizer`); the sums are then
        divided by it instead of by this batch's own N."""
        loss_l, loss_c, n = self.sums(predictions, targets)
        if not self.divide_by_n:
            return loss_l, loss_c
        n = self.normalizer(n) if num_pos is None else num_pos
        return loss_l / n, loss_c / n

    def normalizer(self, n):
        """N as the loss divides by it: the positives ``n`` (a tensor) summed
        over all processes under DDP, divided by their number (DDP averages
        gradients over ranks), at least 1."""
        n = n.float()
        if dist.is_available() and dist.is_initialized():
            n = n.clone()
            dist.all_reduce(n)
            n = n / dist.get_world_size()   # DDP averages gradients over ranks
        return n.clamp(min=1)

    @torch.no_grad()
    def count_positives(self, targets, priors):
        """The number of matched priors (a 0-dim int tensor) of a batch,
        without the network: matching needs only ``targets`` and
        ``priors`` [P, 4]. Gradient accumulation sums it over the
        micro-batches of one step before dividing."""
        priors = priors.to(torch.float32)
        truths, labels, valid = pad_targets(targets, priors.device)
        _, conf_t = match_indices(self.threshold, truths, priors, labels, valid)
        return (conf_t > 0).sum()

    def sums(self, predictions, targets):
        """The undivided ``(loss_l, loss_c, N)``: Smooth-L1 and cross-entropy
        summed over the batch's positives (and mined negatives), and N, the
        number of positives in this batch (int tensor, this process only)."""
        loc_data, conf_data, priors = predictions
        loc_data, conf_data = loc_data.float(), conf_data.float()
        B, P, _ = loc_data.shape
        if P != priors.shape[0]:     # ssd.pytorch sliced silently: a wrong image size
            raise ValueError(f'the network predicted {P} boxes per image but has '
                             f'{priors.shape[0]} priors: feed it images of the size '
                             'it was built for')
        priors = priors.to(loc_data.device, torch.float32)
        with torch.no_grad():
            truths, labels, valid = pad_targets(targets, loc_data.device)
            truth_idx, conf_t = match_indices(self.threshold, truths, priors,
                                              labels, valid)
            pos = conf_t > 0                                             # [B, P]
            num_pos = pos.sum(1, keepdim=True)
            selected = pos | self._hard_negatives(conf_data, pos, num_pos)
            img, prior = pos.nonzero(as_tuple=True)       # encode positives only
            loc_t = encode(truths[img, truth_idx[img, prior]], priors[prior],
                           self.variance)

        loss_l = F.smooth_l1_loss(loc_data[img, prior], loc_t, reduction='sum')
        loss_c = F.cross_entropy(conf_data[selected], conf_t[selected],
                                 reduction='sum')
        return loss_l, loss_c, num_pos.sum()

    def _hard_negatives(self, conf_data, pos, num_pos):
        """``[B, P]`` bool: the ``neg_pos * num_pos`` negatives of each image
        with the largest background cross-entropy (none if not mining).

        Ranked as by ssd.pytorch's double argsort, from one sort: the sorted
        order scattered back. On the CPU ``topk`` of the largest count replaces
        the full sort (several times faster; the same set unless losses tie at
        the cut); on accelerators the sort avoids a host sync."""
        if not self.do_neg_mining:
            return torch.zeros_like(pos)
        bkg = self.background_label
        num_neg = (self.negpos_ratio * num_pos).clamp(max=pos.shape[1] - 1)
        if self.mining == 'global_max':          # ssd.pytorch's, line for line
            x = conf_data.reshape(-1, conf_data.shape[-1])
            x_max = x.max()
            lse = torch.log(torch.sum(torch.exp(x - x_max), 1, keepdim=True)) + x_max
            loss_c = (lse - x[:, bkg:bkg + 1]).view(pos.shape)
            loss_c[pos] = 0
            _, loss_idx = loss_c.sort(1, descending=True)
            _, idx_rank = loss_idx.sort(1)
            return (idx_rank < num_neg.expand_as(idx_rank)) & ~pos
        mining = -F.log_softmax(conf_data, dim=-1)[..., bkg]
        mining = mining.masked_fill(pos, 0.0)
        if mining.device.type == 'cpu':
            k = int(num_neg.max())
            loss_idx = mining.topk(k, dim=1).indices
        else:
            loss_idx = mining.sort(1, descending=True).indices
        rank = torch.arange(loss_idx.shape[1], device=pos.device).expand_as(loss_idx)
        neg = torch.zeros_like(pos).scatter_(1, loss_idx, rank < num_neg)
        return neg & ~pos
