"""MultiBoxLoss against ssd.pytorch's original files where they could part:
the mining underflow, near-ties at the mining cut, and the image order.

The expected values are literals computed with ssd.pytorch's own
``layers/`` (amdegroot/ssd.pytorch at 5b0b77f, with the one patch current
PyTorch needs: ``loss_c`` viewed ``[num, P]`` before ``loss_c[pos] = 0``),
on PyTorch 2.14.1, CPU, by ``python -m utils.bench.original --literals
--ssd_pytorch DIR``: its ``MultiBoxLoss(3, 0.5, True, 0, True, 3, 0.5, False,
False)`` on the predictions below, the 8 priors and the two targets, with
``F.cross_entropy`` wrapped to record which rows (image, prior) the
confidence loss takes. Each case: (loss_l, loss_c, rows).

- 'plain': LOC and CONF as below;
- 'underflow': prior 5 of image 0 predicts background at 150: ssd.pytorch's
  ``log_sum_exp`` subtracts that one max from every row of the batch, every
  other row underflows to ``-inf`` and is never mined (image 1 gets two
  arbitrary negatives instead of its three hardest);
- 'ties': priors 1 and 2 of image 1 hold the same logits permuted, at the
  mining cut;
- 'order': the two images swapped (the batch's summation order).
"""
import pytest
import torch

from layers.modules import MultiBoxLoss
from utils.bench import reference as ref

PRIORS = [[x, y, 0.3, 0.3] for y in (0.25, 0.75) for x in (0.125, 0.375, 0.625, 0.875)]
TARGETS = [[[0.05, 0.1, 0.35, 0.4, 0.0]], [[0.5, 0.55, 0.8, 0.95, 1.0]]]
LOC = [[[-0.563, -0.576, -0.125, -0.217], [0.424, 0.346, -0.158, -1.058],
        [0.161, -0.632, 0.175, 0.154], [0.06, 0.619, 0.558, -0.124],
        [-0.676, -0.848, 0.283, 0.397], [0.299, -0.778, -0.171, 0.927],
        [0.375, -0.293, -0.087, 0.092], [0.695, 0.793, 0.473, -0.422]],
       [[-0.307, 0.016, -0.246, 0.124], [0.22, 0.056, 0.32, 0.221],
        [-0.051, 0.396, -0.145, 0.026], [0.261, 1.151, -0.734, -0.793],
        [-0.337, 0.436, 0.528, 0.089], [-0.115, -0.196, 0.272, -0.198],
        [-0.223, 0.372, 0.76, 1.705], [-0.766, -0.617, 0.91, -0.276]]]
CONF = [[[-1.138, 1.84, 2.222], [2.58, -2.956, 5.134], [-0.946, 0.671, -3.259],
         [-1.099, -0.96, -0.999], [-2.134, 2.23, -0.281], [1.612, -0.187, 1.374],
         [-1.677, 0.002, 1.684], [-0.8, 2.079, 0.716]],
        [[-0.492, 4.605, -3.763], [-0.099, -2.09, -1.913], [0.067, 1.42, 3.292],
         [-2.72, 0.689, 1.04], [-5.227, -3.393, -0.456], [0.56, 0.494, 0.154],
         [0.676, 0.909, 0.914], [-1.731, 1.563, -1.854]]]

#: ssd.pytorch's own MultiBoxLoss (module docstring)
ORIGINAL = {
    'plain': (1.8550522327423096, 13.675836563110352,
              [(0, 0), (0, 4), (0, 6), (0, 7), (1, 0), (1, 3), (1, 4), (1, 6)]),
    'underflow': (1.8550522327423096, 4.970425128936768,
                  [(0, 0), (0, 1), (0, 5), (1, 0), (1, 1), (1, 6)]),
    'ties': (1.8550522327423096, 13.93324089050293,
             [(0, 0), (0, 4), (0, 6), (0, 7), (1, 0), (1, 1), (1, 4), (1, 6)]),
    'order': (1.8550523519515991, 13.675835609436035,
              [(0, 0), (0, 3), (0, 4), (0, 6), (1, 0), (1, 4), (1, 6), (1, 7)]),
}


def case(name):
    loc, conf = torch.tensor(LOC), torch.tensor(CONF)
    targets = [torch.tensor(t) for t in TARGETS]
    if name == 'underflow':
        conf[0, 5] = torch.tensor([150.0, 0.0, 0.0])
    elif name == 'ties':
        conf[1, 1] = torch.tensor([-3.0, 1.5, 0.5])
        conf[1, 2] = torch.tensor([-3.0, 0.5, 1.5])
    elif name == 'order':
        loc, conf, targets = loc.flip(0), conf.flip(0), targets[::-1]
    return (loc, conf, torch.tensor(PRIORS)), targets


def run(loss, name, monkeypatch):
    """``(loss_l, loss_c, rows)``: rows (image, prior) the confidence loss took."""
    import torch.nn.functional as F
    seen = {}
    real = F.cross_entropy

    def spy(x, t, *a, **kw):
        seen['rows'] = x.detach().clone()
        return real(x, t, *a, **kw)
    monkeypatch.setattr(F, 'cross_entropy', spy)
    pred, targets = case(name)
    l, c = loss(pred, targets)
    monkeypatch.setattr(F, 'cross_entropy', real)
    flat = pred[1].reshape(-1, 3)
    rows = []
    for r in seen['rows']:
        hit = [i for i in range(flat.shape[0]) if torch.equal(flat[i], r)]
        assert len(hit) == 1
        rows.append(divmod(hit[0], 8))
    return float(l), float(c), sorted(rows)


@pytest.mark.parametrize('name', list(ORIGINAL))
def test_global_max_mining_is_ssd_pytorchs(name, monkeypatch):
    """``mining='global_max'`` (``train.py --mining global_max``) and the
    rebuild in utils/bench/reference.py give ssd.pytorch's numbers, rows
    and tie-breaking included, in every case."""
    want = ORIGINAL[name]
    for loss in (MultiBoxLoss(3, mining='global_max'), ref.MultiBoxLoss(3)):
        l, c, rows = run(loss, name, monkeypatch)
        assert rows == want[2]
        assert l == pytest.approx(want[0], rel=1e-6) and c == pytest.approx(want[1], rel=1e-6)


@pytest.mark.parametrize('name', ['plain', 'ties', 'order'])
def test_default_mining_equals_the_original_without_underflow(name, monkeypatch):
    """The default per-row ranking takes ssd.pytorch's rows when no row
    underflows, the tied pair at the cut included (the same prior wins)."""
    l, c, rows = run(MultiBoxLoss(3), name, monkeypatch)
    assert rows == ORIGINAL[name][2]
    assert c == pytest.approx(ORIGINAL[name][1], rel=1e-6)


def test_default_mining_ranks_the_underflowed_rows(monkeypatch):
    """Where ssd.pytorch's rows underflow, the per-row ranking still mines
    each image's three hardest negatives, as ranked in float64 here: the
    rows of the 'plain' case (the changed prior is an easy negative), where
    ssd.pytorch took two arbitrary negatives of image 1 (priors 0 and 1), and
    its confidence loss is the real one."""
    (loc, conf, priors), targets = case('underflow')
    positives = [(0, 0), (1, 6)]                 # the same matches in every case
    bg = -torch.log_softmax(conf.double(), -1)[..., 0]
    want = list(positives)
    for i in range(2):
        neg = [p for p in bg[i].argsort(descending=True).tolist() if (i, p) not in positives]
        want += [(i, p) for p in neg[:3]]
    l, c, rows = run(MultiBoxLoss(3), 'underflow', monkeypatch)
    assert rows == sorted(want) == ORIGINAL['plain'][2]
    assert l == pytest.approx(ORIGINAL['underflow'][0], rel=1e-6)
    assert c > 2 * ORIGINAL['underflow'][1]


def test_order_changes_only_the_summation(monkeypatch):
    """The two orders of the batch take the same priors and agree to float
    rounding (ssd.pytorch's own two orders differ by 1 ulp in loss_l)."""
    a, b = ORIGINAL['plain'], ORIGINAL['order']
    assert sorted((1 - i, p) for i, p in b[2]) == a[2]
    assert abs(a[1] - b[1]) / a[1] < 1e-7 and abs(a[0] - b[0]) / a[0] < 1e-7
