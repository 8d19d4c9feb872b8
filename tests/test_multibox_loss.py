import torch
import torch.nn.functional as F

from layers import MultiBoxLoss, PriorBox
from layers.box_utils import match

V = (0.1, 0.2)
PRIORS = PriorBox({'min_dim': 100, 'feature_maps': [10, 5], 'steps': [10, 20],
                   'min_sizes': [20, 45], 'max_sizes': [45, 80],
                   'aspect_ratios': [[2], [2]], 'clip': True,
                   'variance': [0.1, 0.2]}).forward()          # 500 priors


def _criterion(**kw):
    return MultiBoxLoss(5, 0.5, True, 0, True, 3, 0.5, False, False, **kw)


def _targets():
    g = torch.Generator().manual_seed(1)
    out = []
    for n in (2, 0, 4):
        xy = torch.rand(n, 2, generator=g) * 0.6
        wh = torch.rand(n, 2, generator=g) * 0.3 + 0.08
        lab = torch.randint(0, 4, (n, 1), generator=g).float()
        out.append(torch.cat([xy, xy + wh, lab], 1))
    return out


def _predictions(seed=0, B=3):
    g = torch.Generator().manual_seed(seed)
    loc = torch.randn(B, PRIORS.shape[0], 4, generator=g).requires_grad_()
    conf = torch.randn(B, PRIORS.shape[0], 5, generator=g).requires_grad_()
    return loc, conf


def _reference(loc, conf, targets):
    """Per image: match, mine 3 negatives per positive, sum, divide by N."""
    total_l = total_c = 0
    n_pos = 0
    for i, t in enumerate(targets):
        if t.shape[0]:
            loc_t, conf_t = match(0.5, t[:, :4], PRIORS, V, t[:, 4].long())
        else:
            loc_t, conf_t = torch.zeros(PRIORS.shape[0], 4), torch.zeros(PRIORS.shape[0], dtype=torch.long)
        pos = conf_t > 0
        k = int(pos.sum())
        n_pos += k
        total_l = total_l + F.smooth_l1_loss(loc[i][pos], loc_t[pos], reduction='sum')
        bkg_loss = -F.log_softmax(conf[i].detach(), -1)[:, 0]
        bkg_loss[pos] = -1
        neg_idx = bkg_loss.argsort(descending=True)[:3 * k]
        sel = pos.clone()
        sel[neg_idx] = True
        total_c = total_c + F.cross_entropy(conf[i][sel], conf_t[sel], reduction='sum')
    n = max(n_pos, 1)
    return total_l / n, total_c / n, n_pos


def test_loss_and_gradients_equal_per_image_reference():
    targets = _targets()
    loc, conf = _predictions()
    ll, lc = _criterion()((loc, conf, PRIORS), targets)
    g_ours = torch.autograd.grad(ll + lc, (loc, conf))
    rl, rc, n_pos = _reference(loc, conf, targets)
    g_ref = torch.autograd.grad(rl + rc, (loc, conf))
    assert n_pos > 6
    torch.testing.assert_close(ll, rl)
    torch.testing.assert_close(lc, rc)
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a, b)


def test_divide_by_n_flag_scales_by_num_positives():
    targets = _targets()
    loc, conf = _predictions()
    ll, lc = _criterion()((loc, conf, PRIORS), targets)
    sl, sc = _criterion(divide_by_n=False)((loc, conf, PRIORS), targets)
    _, _, n_pos = _reference(loc, conf, targets)
    torch.testing.assert_close(sl, ll * n_pos)
    torch.testing.assert_close(sc, lc * n_pos)


def test_no_objects_gives_finite_zero_loss_and_gradient():
    loc, conf = _predictions()
    ll, lc = _criterion()((loc, conf, PRIORS), [torch.zeros(0, 5)] * 3)
    (ll + lc).backward()
    assert ll.item() == 0 and lc.item() == 0
    assert torch.isfinite(loc.grad).all() and torch.isfinite(conf.grad).all()
    assert loc.grad.abs().sum() == 0


def test_image_without_objects_contributes_no_negatives():
    loc, conf = _predictions()
    targets = _targets()
    _, lc = _criterion()((loc, conf, PRIORS), targets)
    lc.backward()
    assert conf.grad[1].abs().sum() == 0          # image 1 has no objects
    assert conf.grad[0].abs().sum() > 0


def test_hard_negative_count_is_three_per_positive():
    crit = _criterion()
    loc, conf = _predictions()
    t = _targets()[0:1]
    from layers.box_utils import pad_targets
    truths, labels, valid = pad_targets(t)
    _, conf_t = match(0.5, truths, PRIORS, V, labels, valid=valid)
    pos = conf_t > 0
    neg = crit._hard_negatives(conf[:1].detach(), pos, pos.sum(1, keepdim=True))
    assert int(neg.sum()) == 3 * int(pos.sum())
    assert not (neg & pos).any()


def test_half_precision_inputs_give_float32_loss():
    loc, conf = _predictions()
    ll, lc = _criterion()((loc.bfloat16(), conf.bfloat16(), PRIORS), _targets())
    assert ll.dtype == torch.float32 and torch.isfinite(ll + lc)


def test_mining_ranks_correctly_when_logits_spread_by_more_than_100():
    """One negative prior with a foreground logit of 150 (a confident false
    positive): ours still mines, in every image, the 3 * num_pos negatives
    with the largest background loss (computed here in float64).
    ssd.pytorch's global-max log_sum_exp gives -inf to every other row of
    the batch, so it mines other negatives."""
    from layers.box_utils import pad_targets
    from utils.bench import reference as ref
    targets = _targets()
    g = torch.Generator().manual_seed(3)
    conf = torch.randn(3, PRIORS.shape[0], 5, generator=g) * 3
    truths, labels, valid = pad_targets(targets)
    _, conf_t = match(0.5, truths, PRIORS, V, labels, valid=valid)
    pos = conf_t > 0
    hot = int((~pos[2]).nonzero()[0])
    conf[2, hot, 1] = 150.0
    assert conf.max() - conf.amax(-1).min() > 100
    num_pos = pos.sum(1, keepdim=True)
    ours = _criterion()._hard_negatives(conf, pos, num_pos)

    bkg = -F.log_softmax(conf.double(), -1)[..., 0]
    bkg[pos] = -1
    expected = torch.zeros_like(pos)
    for i in range(3):
        k = 3 * int(num_pos[i])
        expected[i, bkg[i].argsort(descending=True)[:k]] = True
    assert torch.equal(ours, expected)
    assert ours[2, hot]
    assert int(ours.sum()) == 3 * int(pos.sum())

    lse = ref.log_sum_exp(conf.reshape(-1, 5))
    assert int(torch.isneginf(lse).sum()) == conf.shape[0] * conf.shape[1] - 1
    theirs = ref.hard_negatives(conf, conf_t) & ~pos
    assert theirs[2, hot]
    assert not torch.equal(theirs, expected)


def test_wrong_image_size_is_an_error_not_a_truncation():
    """ssd.pytorch sliced the priors to the predictions; a network fed
    images of another size then trained on misplaced priors in silence."""
    import pytest
    from layers import MultiBoxLoss
    priors = torch.rand(10, 4) * 0.5 + 0.25
    loss = MultiBoxLoss(3, 0.5, True, 0, True, 3, 0.5, False, False)
    targets = [torch.tensor([[0.1, 0.1, 0.6, 0.6, 1.0]])]
    with pytest.raises(ValueError, match='predicted 8 boxes per image but has 10 priors'):
        loss((torch.zeros(1, 8, 4), torch.zeros(1, 8, 3), priors), targets)
