"""Our batched match, MultiBoxLoss (values and gradients) and Detect equal
the original ssd.pytorch algorithms (utils/bench/reference.py) on random
cases without ties; the loss stays finite with no objects."""
import torch
import torch.nn.functional as F

from layers import Detect, MultiBoxLoss
from layers.box_utils import match, pad_targets
from utils.bench import reference as ref

VAR = (0.1, 0.2)


def _priors(n, seed):
    g = torch.Generator().manual_seed(seed)
    c = torch.rand(n, 2, generator=g)
    wh = 0.05 + 0.5 * torch.rand(n, 2, generator=g)
    return torch.cat([c, wh], 1)


def _targets(batch, seed, max_objs=4, num_classes=5):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(batch):
        n = int(torch.randint(1, max_objs + 1, (1,), generator=g))
        wh = 0.1 + 0.6 * torch.rand(n, 2, generator=g)
        xy = torch.rand(n, 2, generator=g) * (1 - wh)
        lab = torch.randint(0, num_classes - 1, (n, 1), generator=g).float()
        out.append(torch.cat([xy, xy + wh, lab], 1))
    return out


def test_match_equals_per_image_reference():
    priors = _priors(300, 0)
    targets = _targets(6, 1)
    truths, labels, valid = pad_targets(targets)
    loc, conf = match(0.5, truths, priors, VAR, labels, valid=valid)
    loc_r = torch.zeros(6, 300, 4)
    conf_r = torch.zeros(6, 300, dtype=torch.long)
    for i, t in enumerate(targets):
        ref.match(0.5, t[:, :4], priors, VAR, t[:, 4], loc_r, conf_r, i)
    assert torch.equal(conf, conf_r)
    assert conf.gt(0).sum() > 6                      # positives beyond forced
    pos = conf > 0
    torch.testing.assert_close(loc[pos], loc_r[pos], rtol=1e-5, atol=1e-5)


def _loss_and_grads(loss_fn, loc, conf, priors, targets):
    loc = loc.clone().requires_grad_()
    conf = conf.clone().requires_grad_()
    loss_l, loss_c = loss_fn((loc, conf, priors), targets)
    (loss_l + 2 * loss_c).backward()
    return loss_l.detach(), loss_c.detach(), loc.grad, conf.grad


def test_loss_and_gradients_equal_reference():
    g = torch.Generator().manual_seed(2)
    priors = _priors(400, 3)
    loc = torch.randn(5, 400, 4, generator=g)
    conf = torch.randn(5, 400, 5, generator=g)
    targets = _targets(5, 4)
    ours = _loss_and_grads(MultiBoxLoss(5, 0.5, True, 0, True, 3, 0.5, False, False),
                           loc, conf, priors, targets)
    theirs = _loss_and_grads(ref.MultiBoxLoss(5), loc, conf, priors, targets)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert ours[3].ne(0).any(dim=-1).sum() > 5      # some negatives mined


def test_loss_with_no_objects_is_finite():
    priors = _priors(200, 5)
    loc = torch.randn(2, 200, 4, requires_grad=True)
    conf = torch.randn(2, 200, 5, requires_grad=True)
    targets = [torch.zeros(0, 5), torch.zeros(0, 5)]
    loss_l, loss_c = MultiBoxLoss(5, 0.5, True, 0, True, 3, 0.5, False, False)(
        (loc, conf, priors), targets)
    (loss_l + loss_c).backward()
    assert loss_l.item() == 0.0 and loss_c.item() == 0.0
    assert torch.isfinite(loc.grad).all() and torch.isfinite(conf.grad).all()


def test_detect_equals_reference_class_by_class():
    g = torch.Generator().manual_seed(6)
    priors = _priors(500, 7)
    loc = 0.3 * torch.randn(2, 500, 4, generator=g)
    logits = torch.randn(2, 500, 6, generator=g)
    logits[..., 0] += 2.0
    scores = F.softmax(logits, -1)
    ours = Detect(6, 0, 50, 0.05, 0.45)(loc, scores, priors)
    theirs = ref.Detect(6, 0, 50, 0.05, 0.45)(loc, scores, priors)
    assert ours.shape == theirs.shape == (2, 6, 50, 5)
    assert torch.equal(ours[..., 0] > 0, theirs[..., 0] > 0)
    assert (ours[:, 1:, :, 0] > 0).sum(-1).min() > 3
    assert ((scores[..., 1:] > 0.05).sum(1) > 50).any()   # top_k truncates
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


def test_reference_nms_keeps_greedy_order():
    boxes = torch.tensor([[0., 0., 1., 1.], [0., 0., 0.9, 1.], [2., 2., 3., 3.]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    keep, count = ref.nms(boxes, scores, 0.5, 200)
    assert count == 2 and keep[:count].tolist() == [0, 2]
