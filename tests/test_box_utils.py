import math

import torch

from layers.box_utils import (center_size, decode, encode, jaccard, match, nms,
                              pad_targets, point_form)

V = (0.1, 0.2)


def _priors(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    cxcy = torch.rand(n, 2, generator=g) * 0.8 + 0.1
    wh = torch.rand(n, 2, generator=g) * 0.4 + 0.05
    return torch.cat([cxcy, wh], 1)


def _truths(n, seed):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 0.6
    wh = torch.rand(n, 2, generator=g) * 0.35 + 0.05
    return torch.cat([xy, xy + wh], 1)


def test_point_form_center_size_inverse():
    b = torch.tensor([[0.5, 0.5, 0.2, 0.4]])
    torch.testing.assert_close(point_form(b), torch.tensor([[0.4, 0.3, 0.6, 0.7]]))
    torch.testing.assert_close(center_size(point_form(b)), b)


def test_jaccard_literal():
    a = torch.tensor([[0., 0., 2., 2.]])
    b = torch.tensor([[1., 1., 3., 3.], [0., 0., 2., 2.], [5., 5., 6., 6.]])
    torch.testing.assert_close(jaccard(a, b), torch.tensor([[1 / 7, 1., 0.]]))


def test_encode_literal_and_round_trip():
    prior = torch.tensor([[0.5, 0.5, 0.2, 0.2]])
    gt = torch.tensor([[0.42, 0.44, 0.62, 0.64]])   # centre (0.52, 0.54), size 0.2
    enc = encode(gt, prior, V)
    torch.testing.assert_close(enc, torch.tensor([[1.0, 2.0, 0.0, 0.0]]), rtol=0, atol=1e-5)
    priors = _priors(50)
    gts = _truths(50, 1)
    torch.testing.assert_close(decode(encode(gts, priors, V), priors, V), gts,
                               rtol=0, atol=1e-5)
    loc = torch.randn(3, 50, 4) * 0.5                 # batched decode/encode
    torch.testing.assert_close(encode(decode(loc, priors, V), priors, V), loc,
                               rtol=0, atol=1e-4)


def _match_reference(threshold, truths, priors, labels):
    """Per-image, loop-based: each gt's best prior (later gt wins), then IoU."""
    overlaps = jaccard(truths, point_form(priors))
    best_prior = overlaps.argmax(1)
    best_truth_overlap, best_truth_idx = overlaps.max(0)
    for j in range(truths.shape[0]):
        best_truth_overlap[best_prior[j]] = 2
        best_truth_idx[best_prior[j]] = j
    conf = labels[best_truth_idx] + 1
    conf[best_truth_overlap < threshold] = 0
    return encode(truths[best_truth_idx], priors, V), conf


def test_batched_match_equals_per_image_reference():
    priors = _priors(400, 3)
    targets = [torch.cat([_truths(n, 10 + n), torch.randint(0, 20, (n, 1),
                          generator=torch.Generator().manual_seed(n)).float()], 1)
               for n in (3, 1, 6, 0, 2)]
    truths, labels, valid = pad_targets(targets)
    loc, conf = match(0.5, truths, priors, V, labels, valid=valid)
    for i, t in enumerate(targets):
        if t.shape[0] == 0:
            assert (conf[i] == 0).all()
            assert torch.isfinite(loc[i]).all()
            continue
        ref_loc, ref_conf = _match_reference(0.5, t[:, :4], priors, t[:, 4].long())
        assert torch.equal(conf[i], ref_conf)
        pos = ref_conf > 0
        torch.testing.assert_close(loc[i][pos], ref_loc[pos])


def test_match_forces_best_prior_and_later_gt_wins():
    priors = torch.tensor([[0.25, 0.25, 0.5, 0.5], [0.75, 0.75, 0.5, 0.5],
                           [0.5, 0.5, 1.0, 1.0]])
    # gt 0 overlaps prior 0 weakly (IoU 0.16 < 0.5) but must still get it
    truths = torch.tensor([[[0.0, 0.0, 0.2, 0.2], [0.0, 0.0, 0.21, 0.21]]])
    labels = torch.tensor([[4, 7]])
    _, conf = match(0.5, truths, priors, V, labels)
    # both gts pick prior 0 as best; the later one (label 7 -> 8) wins
    assert conf.tolist() == [[8, 0, 0]]
    _, conf = match(0.5, truths[:, :1], priors, V, labels[:, :1])
    assert conf.tolist() == [[5, 0, 0]]


def test_match_ssd_pytorch_call_form_writes_outputs():
    priors = _priors(30)
    t = _truths(2, 5)
    loc_t = torch.zeros(2, 30, 4)
    conf_t = torch.zeros(2, 30, dtype=torch.long)
    match(0.5, t, priors, V, torch.tensor([1, 2]), loc_t, conf_t, 1)
    assert conf_t[0].sum() == 0 and conf_t[1].max() >= 2


def test_pad_targets_empty_batch():
    truths, labels, valid = pad_targets([torch.zeros(0, 5), torch.zeros(0, 5)])
    assert truths.shape == (2, 1, 4) and not valid.any()


def test_nms_ssd_pytorch_signature():
    boxes = torch.tensor([[0., 0., 1., 1.], [0., 0., 1., 0.95], [2., 2., 3., 3.]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    keep, count = nms(boxes, scores, 0.5, 200)
    assert keep.tolist() == [0, 2] and count == 2
    keep, count = nms(boxes, scores, 0.5, 1)
    assert keep.tolist() == [0] and count == 1
    assert math.isclose(float(jaccard(boxes[:1], boxes[1:2])), 0.95, abs_tol=1e-6)
