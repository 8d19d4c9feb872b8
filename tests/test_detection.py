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


def _grid_priors(n, side=0.04):
    """``n`` small priors on a grid, far apart (no two overlap)."""
    k = int(n ** 0.5) + 1
    i = torch.arange(n)
    cxcy = torch.stack([(i % k + 0.5) / k, (i // k + 0.5) / k], 1)
    return torch.cat([cxcy, torch.full((n, 2), side)], 1)


def test_top_k_ties_take_the_lower_prior_index():
    P, C = 40, 3
    priors = _grid_priors(P)
    conf = torch.zeros(1, P, C)
    conf[0, :, 0] = 0.5
    conf[0, :, 1] = 0.5                                  # 40 equal scores, top_k 10
    conf[0, 30:, 2] = torch.linspace(0.2, 0.4, 10)      # 10 distinct, rising
    out = Detect(C, 0, 10, 0.01, 0.45)(torch.zeros(1, P, 4), conf, priors)
    expected = torch.cat([priors[:10, :2] - 0.02, priors[:10, :2] + 0.02], 1)
    torch.testing.assert_close(out[0, 1, :, 1:], expected)       # priors 0..9, in order
    assert (out[0, 1, :, 0] == 0.5).all()
    assert torch.equal(out[0, 2, :, 0], torch.linspace(0.2, 0.4, 10).flip(0))


def test_threads_give_the_same_detections(monkeypatch):
    from layers.functions import detection
    loc, conf, priors = _inputs(B=3, P=300, C=6, seed=5)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = Detect(6, 0, 100, 0.01, 0.45)(loc, conf, priors)
        monkeypatch.setattr(detection, 'PARALLEL_WORK', 1)
        torch.set_num_threads(3)
        assert len(detection._split_work([100] * 15, 3)) == 3
        many = Detect(6, 0, 100, 0.01, 0.45)(loc, conf, priors)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, many)


def _dense_maps(B=2, P=600, C=5, seed=7):
    g = torch.Generator().manual_seed(seed)
    return {'random': torch.softmax(torch.randn(B, P, C, generator=g) * 2, -1),
            'quantised (many ties)': torch.softmax(torch.randn(B, P, C, generator=g).round(), -1),
            'all equal': torch.full((B, P, C), 1 / C)}


def test_dense_maps_equal_the_full_sort(monkeypatch):
    """Dense maps (many more candidates than the groups keep) first drop the
    candidates that cannot be among their (image, class)'s top_k: by a
    histogram of the gathered candidates, or, very dense, by each group's
    top_k-th score before gathering. With ties (quantised or all-equal
    scores; all-equal ones made the histogram divide by zero before) both
    give the detections of sorting every candidate: the lower prior first."""
    from layers.functions import detection
    B, P, C = 2, 600, 5
    priors = _grid_priors(P, side=0.09)                  # neighbours overlap: NMS matters
    loc = torch.randn(B, P, 4, generator=torch.Generator().manual_seed(8)) * 0.3
    inf = float('inf')
    paths = {'full sort': (inf, inf), 'histogram': (0, inf), 'top-k floor': (inf, 0),
             'default': (detection.HISTOGRAM, detection.TOPK_FLOOR)}
    for name, conf in _dense_maps(B, P, C).items():
        for k in (10, 60):
            assert int((conf[..., 1:] > 0.01).sum()) > detection.HISTOGRAM * B * (C - 1) * k
            det = Detect(C, 0, k, 0.01, 0.45)
            out = {}
            for path, (hist, floor) in paths.items():
                with monkeypatch.context() as m:
                    m.setattr(detection, 'HISTOGRAM', hist)
                    m.setattr(detection, 'TOPK_FLOOR', floor)
                    out[path] = det(loc, conf, priors)
            assert int((out['full sort'][..., 0] > 0).sum()) > 0
            for path in paths:
                assert torch.equal(out[path], out['full sort']), (name, k, path)
    conf = _dense_maps(B, P, C)['random']
    torch.testing.assert_close(Detect(C, 0, 10, 0.01, 0.45)(loc, conf, priors),
                               _reference(loc, conf, priors, C, 10, 0.01, 0.45))


def test_nan_scores_are_never_candidates():
    B, P, C = 2, 600, 5
    priors = _grid_priors(P, side=0.09)
    loc = torch.zeros(B, P, 4)
    conf = _dense_maps(B, P, C)['random']
    bad = conf.clone()
    bad[0, :100, 2] = float('nan')                       # dense map: the top-k path
    bad[1, 5, 1] = float('nan')
    clean = bad.nan_to_num(0.0)
    for k in (10, 200):
        det = Detect(C, 0, k, 0.01, 0.45)
        assert torch.equal(det(loc, bad, priors), det(loc, clean, priors))


def test_kth_largest_numpy_and_torch_agree_with_a_sort():
    # the CPU path (NumPy's partition) and the one used elsewhere (topk)
    from layers.functions.detection import _kth_largest
    g = torch.Generator().manual_seed(0)
    conf = torch.rand(3, 50, 4, generator=g)
    conf[0, :10, 1] = float('nan')                   # NaN counts as -inf
    conf[1, :, 2] = float('nan')                     # fewer than k real scores: -inf
    conf[2, 3, 3] = float('inf')
    conf[2, :, 0] = torch.round(conf[2, :, 0] * 4) / 4   # ties
    for k in (1, 7, 45, 50):
        real = conf.nan_to_num(nan=float('-inf'), posinf=float('inf'))
        expected = real.sort(1, descending=True).values[:, k - 1:k]
        assert expected[1, 0, 2] == float('-inf')
        for numpy in (True, False):
            got = _kth_largest(conf, k, numpy=numpy)
            assert got.shape == (3, 1, 4)
            assert torch.equal(got, expected), (k, numpy)


def test_halves_of_a_batch_on_two_threads_give_the_same_detections(monkeypatch):
    from layers.functions import detection
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        for B, top_k in ((2, 50), (5, 50), (3, 5)):         # top_k 5: the very dense path
            loc, conf, priors = _inputs(B=B, P=300, C=6, seed=B)
            det = Detect(6, 0, top_k, 0.01, 0.45, keep_top_k=30)
            monkeypatch.setattr(detection, 'SPLIT_BATCH', 10 ** 9)     # never
            whole = det(loc, conf, priors)
            monkeypatch.setattr(detection, 'SPLIT_BATCH', 1)           # always
            calls = []
            real = det._detect
            monkeypatch.setattr(det, '_detect', lambda *a: calls.append(a[1].shape[0]) or real(*a))
            halves = det(loc, conf, priors)
            assert sorted(calls) == sorted([B // 2, B - B // 2])
            assert torch.equal(whole, halves)
            with torch.inference_mode():              # as Predictor and evaluate run it
                assert torch.equal(whole, det(loc, conf, priors))
    finally:
        torch.set_num_threads(threads)
