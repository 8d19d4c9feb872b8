"""layers.functions.winograd: F(4x4, 3x3) gives the direct convolution's
outputs, runs only where no gradient is needed, and SSD300's detections stay
the same."""
import warnings
import weakref
from unittest import mock

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from layers.functions import winograd
from ssd import build_ssd


def _reference(x, weight, bias):
    return F.conv2d(x.double(), weight.double(), None if bias is None else bias.double(),
                    padding=1)


def test_transform_matrices_compute_a_4_output_correlation():
    # 1-D F(4, 3): A^T [(G g) * (B^T d)] = the 4 outputs of correlating d with g
    torch.manual_seed(0)
    d, g = torch.randn(6, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    y = winograd._AT @ ((winograd._G @ g) * (winograd._BT @ d))
    direct = torch.stack([(d[i:i + 3] * g).sum() for i in range(4)])
    torch.testing.assert_close(y, direct, rtol=0, atol=1e-12)


@pytest.mark.parametrize('b,c,k,h,w', [(1, 8, 16, 4, 4), (2, 16, 24, 9, 13),
                                       (1, 32, 8, 1, 1), (3, 5, 7, 17, 6)])
@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('with_bias', [False, True])
@pytest.mark.parametrize('band_bytes', [1, winograd.BAND_BYTES])
def test_conv3x3_equals_the_direct_convolution(b, c, k, h, w, channels_last, with_bias,
                                               band_bytes):
    torch.manual_seed(0)
    x = torch.randn(b, c, h, w)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(k, c, 3, 3) * (2 / (9 * c)) ** .5
    bias = torch.randn(k) if with_bias else None
    y = winograd.conv3x3(x, winograd.transform_weight(weight), bias, band_bytes)
    ref = _reference(x, weight, bias)
    assert y.shape == ref.shape and y.dtype == torch.float32
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert (y.double() - ref).abs().max() <= 2e-5 * ref.abs().max()


def test_each_image_is_computed_the_same_alone_or_in_a_batch():
    torch.manual_seed(1)
    x = torch.randn(3, 16, 23, 19)
    u = winograd.transform_weight(torch.randn(32, 16, 3, 3))
    bias = torch.randn(32)
    batch = winograd.conv3x3(x, u, bias)
    for i in range(3):
        assert torch.equal(batch[i:i + 1], winograd.conv3x3(x[i:i + 1], u, bias))


def test_eligible_layers():
    x = torch.zeros(1, 256, 19, 19)
    assert winograd.eligible(nn.Conv2d(256, 256, 3, padding=1), x)
    assert not winograd.eligible(nn.Conv2d(256, 256, 3, padding=1), x[..., :10, :10])
    assert not winograd.eligible(nn.Conv2d(256, 128, 3, padding=1), x)      # narrow
    assert not winograd.eligible(nn.Conv2d(256, 256, 3, padding=1, stride=2), x)
    assert not winograd.eligible(nn.Conv2d(256, 256, 3), x)                 # no padding
    assert not winograd.eligible(nn.Conv2d(256, 256, 3, padding=6, dilation=6), x)
    assert not winograd.eligible(nn.Conv2d(256, 256, 3, padding=1, groups=2), x)
    assert not winograd.eligible(nn.Conv2d(256, 256, 1), x)


def _recorded(net, x):
    """The modules that ``net(x)`` ran by Winograd."""
    seen = []
    real = winograd.conv

    def record(m, x):
        seen.append(m)
        return real(m, x)
    with mock.patch.object(winograd, 'conv', record):
        out = net(x)
    return seen, out


@pytest.fixture(scope='module')
def ssd300():
    from utils.bench.core import trained_like_ssd
    return trained_like_ssd(seed=0)


def test_ssd300_uses_it_from_conv3_1_to_conv5_3_at_inference(ssd300):
    x = torch.randn(1, 3, 300, 300)
    with torch.inference_mode():
        seen, _ = _recorded(ssd300, x)
    vgg = list(ssd300.vgg)
    assert sorted(vgg.index(m) for m in seen) == [10, 12, 14, 17, 19, 21, 24, 26, 28]
    with torch.no_grad():
        assert len(_recorded(ssd300, x)[0]) == 9
    ssd300.winograd = False
    try:
        with torch.inference_mode():
            assert _recorded(ssd300, x)[0] == []
    finally:
        ssd300.winograd = True


def test_ssd300_same_detections_as_the_direct_convolutions(ssd300):
    from utils.export import same_detections
    torch.manual_seed(2)
    x = torch.randn(2, 3, 300, 300) * 60
    with torch.inference_mode():
        fast = ssd300(x)
        ssd300.winograd = False
        try:
            direct = ssd300(x)
            ssd300.phase = 'train'
            heads_direct = ssd300(x)[:2]
            ssd300.winograd = True
            heads_fast = ssd300(x)[:2]
        finally:
            ssd300.phase, ssd300.winograd = 'test', True
    for a, b in zip(heads_fast, heads_direct):
        assert (a - b).abs().max() <= 1e-5 * b.abs().max()
    ok, message = same_detections(fast, direct, tol=1e-4)
    assert ok, message
    assert (fast[..., 0] > 0).sum() > 100          # a map with detections to compare


def test_not_used_where_gradients_are_needed():
    torch.manual_seed(0)
    conv = nn.Conv2d(128, 256, 3, padding=1)
    x = torch.randn(1, 128, 16, 16)
    assert not winograd.applies(conv, x)                 # weights need gradients
    assert winograd.applies(conv, x.double()) is False   # float32 only
    with torch.no_grad():
        assert winograd.applies(conv, x)
    conv.requires_grad_(False)                           # frozen, input without grad
    assert winograd.applies(conv, x)
    assert not winograd.applies(conv, x.requires_grad_())
    flags = []                    # the ONNX exporter (dynamo=False) traces
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', FutureWarning)   # trace is deprecated
        torch.jit.trace(lambda t: flags.append(winograd.applies(conv, t)) or t * 2,
                        torch.randn(1, 128, 16, 16), check_trace=False)
    assert flags == [False]


def test_training_outputs_and_gradients_are_the_direct_ones():
    # conv4_x's width: training in grad mode never takes the Winograd path
    torch.manual_seed(0)
    net = build_ssd('train', 300, 21)
    x = torch.randn(1, 3, 300, 300)
    seen, (loc, conf, _) = _recorded(net, x)
    assert seen == []
    net.winograd = False
    loc2, conf2, _ = net(x)
    assert torch.equal(loc, loc2) and torch.equal(conf, conf2)
    # a frozen base with trainable heads: only the frozen convs use it
    net.winograd = True
    net.vgg.requires_grad_(False)
    seen, (loc, conf, _) = _recorded(net, x)
    assert len(seen) == 9 and all(any(m is v for v in net.vgg) for m in seen)
    (loc.sum() + conf.sum()).backward()
    assert net.loc[0].weight.grad is not None and net.vgg[10].weight.grad is None


def test_transformed_kernels_follow_the_weights():
    torch.manual_seed(0)
    conv = nn.Conv2d(128, 256, 3, padding=1)
    x = torch.randn(1, 128, 16, 16)
    with torch.no_grad():
        first = winograd.conv(conv, x)
        torch.testing.assert_close(first, conv(x), rtol=0, atol=1e-4)
        conv.weight.mul_(2)                                   # in place (an optimizer step)
        torch.testing.assert_close(winograd.conv(conv, x), conv(x), rtol=0, atol=1e-4)
        conv.load_state_dict(nn.Conv2d(128, 256, 3, padding=1).state_dict())
        torch.testing.assert_close(winograd.conv(conv, x), conv(x), rtol=0, atol=1e-4)
        conv.weight = nn.Parameter(torch.randn(256, 128, 3, 3) * .03)   # replaced
        torch.testing.assert_close(winograd.conv(conv, x), conv(x), rtol=0, atol=1e-4)


def test_the_cache_stays_outside_the_module():
    import copy
    import gc
    import pickle
    conv = nn.Conv2d(128, 256, 3, padding=1)
    size = len(pickle.dumps(conv))
    with torch.no_grad():
        winograd.conv(conv, torch.randn(1, 128, 16, 16))
    assert conv in winograd._CACHE
    assert len(pickle.dumps(conv)) == size and list(conv.state_dict()) == ['weight', 'bias']
    assert copy.deepcopy(conv) not in winograd._CACHE
    alive = weakref.ref(conv)
    del conv
    gc.collect()
    assert alive() is None                     # the cache does not keep the module
