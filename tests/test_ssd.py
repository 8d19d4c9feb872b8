import os

import pytest
import torch
import torch.nn as nn

from data.config import shapes, voc, voc512
from layers import MultiBoxLoss
from ssd import build_ssd
from utils.checkpoint import CheckpointError, atomic_save

# a copy of ../shared/interop/ssd_pytorch_ssd300_keys.txt (every key and shape)
KEYS_FILE = os.path.join(os.path.dirname(__file__), 'fixtures', 'ssd_pytorch_ssd300_keys.txt')


def _shared_keys():
    rows = [l.rstrip('\n').split('\t') for l in open(KEYS_FILE) if not l.startswith('#')]
    return {k: tuple(int(x) for x in s.strip('()').split(',') if x.strip()) for k, s, _ in rows}


@pytest.fixture(scope='module')
def net300():
    torch.manual_seed(0)
    return build_ssd('train', 300, 21)


def test_state_dict_keys_and_shapes_equal_ssd_pytorch(net300):
    got = {k: tuple(v.shape) for k, v in net300.state_dict().items()}
    assert got == _shared_keys()


def test_paper_layers(net300):
    v = net300.vgg
    assert v[21].out_channels == 512 and isinstance(v[22], nn.ReLU)    # conv4_3
    assert v[30].kernel_size == 3 and v[30].stride == 1                # pool5
    assert v[31].dilation == (6, 6) and v[31].out_channels == 1024     # fc6
    assert v[33].kernel_size == (1, 1) and v[33].out_channels == 1024  # fc7
    assert net300.conv4_3_end == 23
    assert float(net300.L2Norm.weight[0].detach()) == 20


def test_base_token_n_drops_batchnorm_of_the_next_conv_only():
    from ssd import vgg
    layers = vgg(['N', 8, 'M', 16, 'M', 32, 'C', 32, 'M', 32], 3, batch_norm=True, fc=16)
    kinds = [type(m).__name__ for m in layers[:8]]
    assert kinds == ['Conv2d', 'ReLU', 'MaxPool2d', 'Conv2d', 'BatchNorm2d', 'ReLU',
                     'MaxPool2d', 'Conv2d']
    assert sum(isinstance(m, nn.BatchNorm2d) for m in layers) == 4     # all convs but the first
    # without batch_norm 'N' changes nothing
    assert [type(m) for m in vgg(['N', 8, 'M', 16], 3, fc=16)] == \
        [type(m) for m in vgg([8, 'M', 16], 3, fc=16)]


def test_conv4_3_ends_at_the_last_stride_2_pool():
    # the shapes preset has one pool fewer: conv4_3 is its stride-4 source
    net = build_ssd('train', cfg=shapes, num_classes=6)
    pool = net.vgg[net.conv4_3_end]
    assert isinstance(pool, nn.MaxPool2d) and pool.stride == 2
    assert not any(isinstance(m, nn.MaxPool2d) and m.stride == 2
                   for m in net.vgg[net.conv4_3_end + 1:])
    convs = [m for m in net.vgg[:net.conv4_3_end] if isinstance(m, nn.Conv2d)]
    assert net.L2Norm.weight.numel() == convs[-1].out_channels == 32
    assert _source_sizes(net, shapes['min_dim'])[0] == shapes['min_dim'] // 4


def test_ssd512_has_conv12_2_4x4():
    net = build_ssd('train', 512, 21)
    assert net.extras[-3].stride == (2, 2)            # conv11_2
    assert net.extras[-1].kernel_size == (4, 4) and net.priors.shape[0] == 24564


def _source_sizes(net, size):
    sizes = []
    hooks = [m.register_forward_hook(lambda m, i, o: sizes.append(i[0].shape[-1]))
             for m in net.loc]
    with torch.no_grad():
        net(torch.zeros(1, 3, size, size))
    for h in hooks:
        h.remove()
    return sizes


@pytest.mark.parametrize('cfg', [voc, shapes])
def test_feature_maps_match_config(cfg):
    net = build_ssd('train', cfg['min_dim'], cfg['num_classes'], cfg=cfg)
    assert _source_sizes(net, cfg['min_dim']) == cfg['feature_maps']


def test_train_and_test_outputs(net300):
    x = torch.randn(2, 3, 300, 300)
    loc, conf, priors = net300(x)
    assert loc.shape == (2, 8732, 4) and conf.shape == (2, 8732, 21)
    assert priors.shape == (8732, 4)
    net = build_ssd('test', 300, 21)
    net.load_state_dict(net300.state_dict())
    with torch.no_grad():
        det = net.eval()(x)
    assert det.shape == (2, 21, 200, 5)
    assert det[..., 1:].min() > -1 and (det[..., 0] <= 1).all()


def test_ssd512_trains_on_batch_without_objects():
    torch.manual_seed(0)
    net = build_ssd('train', 512, 21)
    crit = MultiBoxLoss(21, 0.5, True, 0, True, 3, 0.5, False, False)
    ll, lc = crit(net(torch.randn(1, 3, 512, 512)), [torch.zeros(0, 5)])
    (ll + lc).backward()
    assert torch.isfinite(ll) and torch.isfinite(lc)
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


def test_load_weights_variants(tmp_path, net300):
    sd = net300.state_dict()
    net = build_ssd('test', 300, 21)
    # ssd.pytorch plain state dict, DDP/DataParallel prefix, full checkpoint
    torch.save(sd, tmp_path / 'plain.pth')
    atomic_save({'module.' + k: v for k, v in sd.items()}, tmp_path / 'ddp.pth')
    atomic_save({'model': sd, 'iteration': 3}, tmp_path / 'checkpoint.pth')
    for name in ('plain.pth', 'ddp.pth', 'checkpoint.pth'):
        net.load_weights(str(tmp_path / name))
        assert torch.equal(net.conf[0].weight, sd['conf.0.weight'])
    # ssd.pytorch's basenet into net.vgg
    torch.save(net300.vgg.state_dict(), tmp_path / 'vgg16_reducedfc.pth')
    net.vgg.load_state_dict(torch.load(tmp_path / 'vgg16_reducedfc.pth', weights_only=True))


def test_truncated_checkpoint_one_line_error(tmp_path, net300):
    p = tmp_path / 'w.pth'
    torch.save(net300.state_dict(), p)
    data = p.read_bytes()
    p.write_bytes(data[:len(data) // 3])
    with pytest.raises(CheckpointError) as e:
        build_ssd('test', 300, 21).load_weights(str(p))
    assert str(p) in str(e.value) and '\n' not in str(e.value)
    with pytest.raises(ValueError):
        build_ssd('test', 300, 21).load_weights(str(tmp_path / 'w.txt'))


def test_bad_phase_and_size():
    with pytest.raises(ValueError):
        build_ssd('eval')
    with pytest.raises(ValueError):
        build_ssd('train', 400)


def test_atomic_save_leaves_no_temporary_and_normal_permissions(tmp_path):
    atomic_save({'a': torch.zeros(2)}, tmp_path / 'c.pth')
    assert [p.name for p in tmp_path.iterdir()] == ['c.pth']
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / 'c.pth').stat().st_mode & 0o777 == 0o666 & ~umask


def test_default_memory_format_is_the_fast_one():
    from ssd import fast_memory_format, memory_format
    net = build_ssd('test', cfg=shapes, num_classes=6)
    assert memory_format(net) == fast_memory_format()
    if torch.backends.mkldnn.is_available():           # oneDNN: NHWC is faster
        assert fast_memory_format() == torch.channels_last
    assert memory_format(build_ssd('test', cfg=shapes, num_classes=6,
                                   channels_last=False)) == torch.contiguous_format
    assert memory_format(build_ssd('test', cfg=shapes, num_classes=6,
                                   channels_last=True)) == torch.channels_last


def test_nhwc_and_nchw_same_state_dict_and_outputs():
    torch.manual_seed(0)
    nchw = build_ssd('train', cfg=shapes, num_classes=6, channels_last=False)
    nhwc = build_ssd('train', cfg=shapes, num_classes=6, channels_last=True)
    nhwc.load_state_dict(nchw.state_dict())
    a, b = nchw.state_dict(), nhwc.state_dict()
    assert list(a) == list(b)
    assert all(a[k].shape == b[k].shape and torch.equal(a[k], b[k]) for k in a)
    assert b['vgg.0.weight'].is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(2, 3, shapes['min_dim'], shapes['min_dim'])
    with torch.no_grad():
        for u, v in zip(nchw(x)[:2], nhwc(x)[:2]):
            torch.testing.assert_close(u, v, rtol=1e-4, atol=1e-4)
        nchw.phase = nhwc.phase = 'test'
        d1, d2 = nchw(x), nhwc(x)
    assert torch.equal(d1[..., 0] > 0, d2[..., 0] > 0)
    # the same detections per image and class; two whose scores differ by
    # float rounding may swap places (and straddle any rounding used to
    # sort them), so each row of one must have a row of the other within 1e-4
    assert _unmatched(d1, d2, 1e-4) == [] and _unmatched(d2, d1, 1e-4) == []


def _unmatched(d1, d2, tol):
    """``(image, class, row)`` of every detection of ``d1 [B, C, K, 5]``
    (score > 0) with no detection of ``d2`` in the same image and class
    within ``tol`` in score and every coordinate."""
    out = []
    for i in range(d1.shape[0]):
        for c in range(d1.shape[1]):
            a, b = d1[i, c], d2[i, c]
            a, b = a[a[:, 0] > 0], b[b[:, 0] > 0]
            if not len(a):
                continue
            dist = (a[:, None] - b[None]).abs().amax(-1) if len(b) else \
                torch.full((len(a), 1), float('inf'))
            out += [(i, c, int(k)) for k in (dist.amin(1) > tol).nonzero().flatten()]
    return out
