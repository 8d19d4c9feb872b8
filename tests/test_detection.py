import torch
from torchvision.ops import nms as tv_nms

from layers import Detect
from layers.box_utils import decode

V = (0.1, 0.2)


def _inputs(B=2, P=300, C=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    cxcy = torch.rand(P, 2, generator=g)
    wh = torch.rand(P, 2, generator=g) * 0.3 + 0.05
    priors = torch.cat([cxcy, wh], 1)
    loc = torch.randn(B, P, 4, generator=g) * 0.3
    conf = torch.softmax(torch.randn(B, P, C, generator=g) * 2, -1)
    return loc, conf, priors


def _reference(loc, conf, priors, C, top_k, thresh, nms_thresh):
    B = loc.shape[0]
    out = torch.zeros(B, C, top_k, 5)
    for i in range(B):
        boxes = decode(loc[i], priors, V)
        for c in range(1, C):
            s = conf[i, :, c]
            m = s > thresh
            sc, bx = s[m], boxes[m]
            order = sc.argsort(descending=True)[:top_k]
            sc, bx = sc[order], bx[order]
            keep = tv_nms(bx, sc, nms_thresh)[:top_k]
            out[i, c, :keep.numel()] = torch.cat([sc[keep, None], bx[keep]], 1)
    return out


def test_detect_equals_per_class_reference():
    loc, conf, priors = _inputs()
    for top_k, thresh in ((200, 0.01), (15, 0.2)):
        out = Detect(4, 0, top_k, thresh, 0.45)(loc, conf, priors)
        ref = _reference(loc, conf, priors, 4, top_k, thresh, 0.45)
        assert out.shape == (2, 4, top_k, 5)
        torch.testing.assert_close(out, ref)
        assert (out[:, 0] == 0).all()


def test_detect_rows_sorted_and_above_threshold():
    loc, conf, priors = _inputs(seed=3)
    out = Detect(4, 0, 50, 0.3, 0.45)(loc, conf, priors)
    s = out[..., 0]
    assert (s[s > 0] > 0.3).all()
    assert (s[..., :-1] >= s[..., 1:]).all()


def test_detect_no_candidates():
    loc, _, priors = _inputs()
    conf = torch.full((2, priors.shape[0], 4), 0.25)
    out = Detect(4, 0, 10, 0.25, 0.45)(loc, conf, priors)   # strictly greater needed
    assert out.shape == (2, 4, 10, 5) and (out == 0).all()


def test_keep_top_k_caps_across_classes():
    loc, conf, priors = _inputs()
    full = Detect(4, 0, 200, 0.01, 0.45)(loc, conf, priors)
    capped = Detect(4, 0, 200, 0.01, 0.45, keep_top_k=7)(loc, conf, priors)
    for i in range(2):
        assert int((capped[i, :, :, 0] > 0).sum()) == 7
        kept = capped[i, :, :, 0][capped[i, :, :, 0] > 0].sort(descending=True).values
        best = full[i, :, :, 0].flatten().sort(descending=True).values[:7]
        torch.testing.assert_close(kept, best)
