"""SSD300 on ResNet-50 (NVIDIA's SSD300 v1.1): the network, its priors, the
NVIDIA converter and the ImageNet base converter.

``NvidiaSSD300`` below is a rebuild of NVIDIA DeepLearningExamples'
``PyTorch/Detection/SSD/ssd/model.py`` (``ResNet`` + ``SSD300``, read at
its repository, written here from its description): its module names, so
its state dict has NVIDIA's keys, and its ``bbox_view`` (each head's map read
as ``[N, 4 | C, A * f * f]``). ``nvidia_default_boxes`` rebuilds its
``DefaultBoxes`` for ``dboxes300_coco`` the same way.
"""
import math

import pytest
import torch
import torch.nn as nn
from torchvision.models import mobilenet_v2, resnet50

from data.config import config_for
from ssd import build_ssd
from utils.convert_imagenet import main as imagenet_main
from utils.convert_nvidia import main as nvidia_main
from utils.weights import build_from_weights


class _Trunk(nn.Module):
    def __init__(self):
        super().__init__()
        r = resnet50(weights=None)
        self.feature_extractor = nn.Sequential(*list(r.children())[:7])
        first = self.feature_extractor[6][0]            # conv4_1 at stride 1
        for conv in (first.conv1, first.conv2, first.downsample[0]):
            conv.stride = (1, 1)

    def forward(self, x):
        return self.feature_extractor(x)


class NvidiaSSD300(nn.Module):
    channels = [1024, 512, 512, 256, 256, 256]
    boxes = [4, 6, 6, 6, 4, 4]

    def __init__(self, label_num=81):
        super().__init__()
        self.label_num = label_num
        self.feature_extractor = _Trunk()
        blocks = []
        for i, (a, b, mid) in enumerate(zip(self.channels[:-1], self.channels[1:],
                                             [256, 256, 128, 128, 128])):
            kw = dict(padding=1, stride=2) if i < 3 else {}
            blocks.append(nn.Sequential(
                nn.Conv2d(a, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
                nn.Conv2d(mid, b, 3, bias=False, **kw), nn.BatchNorm2d(b), nn.ReLU(inplace=True)))
        self.additional_blocks = nn.ModuleList(blocks)
        self.loc = nn.ModuleList([nn.Conv2d(c, a * 4, 3, padding=1)
                                  for a, c in zip(self.boxes, self.channels)])
        self.conf = nn.ModuleList([nn.Conv2d(c, a * label_num, 3, padding=1)
                                   for a, c in zip(self.boxes, self.channels)])

    def forward(self, x):
        x = self.feature_extractor(x)
        feed = [x]
        for block in self.additional_blocks:
            x = block(x)
            feed.append(x)
        n = x.shape[0]
        locs = torch.cat([l(s).reshape(n, 4, -1) for s, l in zip(feed, self.loc)], 2)
        confs = torch.cat([c(s).reshape(n, self.label_num, -1) for s, c in zip(feed, self.conf)], 2)
        return locs, confs


def nvidia_default_boxes():
    """NVIDIA's ``dboxes300_coco()`` in xywh: per map, every box shape over
    every location (rows, then columns), clamped to [0, 1]."""
    feat, steps = [38, 19, 10, 5, 3, 1], [8, 16, 32, 64, 100, 300]
    scales, ratios = [21, 45, 99, 153, 207, 261, 315], [[2], [2, 3], [2, 3], [2, 3], [2], [2]]
    out = []
    for k, f in enumerate(feat):
        fk = 300 / steps[k]
        s1, s2 = scales[k] / 300, scales[k + 1] / 300
        shapes = [(s1, s1), (math.sqrt(s1 * s2),) * 2]
        for a in ratios[k]:
            shapes += [(s1 * math.sqrt(a), s1 / math.sqrt(a)), (s1 / math.sqrt(a), s1 * math.sqrt(a))]
        for w, h in shapes:
            out += [((j + 0.5) / fk, (i + 0.5) / fk, w, h) for i in range(f) for j in range(f)]
    return torch.tensor(out).clamp_(0, 1)


def _randomise(module, seed):
    """Random weights and BatchNorm statistics (so that every BN matters)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if t.is_floating_point():
                if name.endswith('running_var'):
                    t.copy_(torch.rand(t.shape, generator=g) + 0.5)
                else:
                    t.copy_(torch.randn(t.shape, generator=g) * 0.05)
    return module.eval()


@pytest.fixture(scope='module')
def nvidia(tmp_path_factory):
    d = tmp_path_factory.mktemp('nvidia')
    theirs = _randomise(NvidiaSSD300(), 0)
    src = d / 'nvidia_ssdpyt_fake.pt'
    # NVIDIA's training checkpoint, as its main.py saves it under DDP + AMP
    torch.save({'epoch': 3, 'iteration': 100, 'label_map': {i: i for i in range(1, 81)},
                'model': {f'module.1.{k}': v for k, v in theirs.state_dict().items()}}, src)
    dst = d / 'ours.pth'
    assert nvidia_main(['--in', str(src), '--out', str(dst)]) == 0
    return theirs, dst


def test_sources_and_priors_are_nvidias():
    net = build_ssd('train', 300, 81, backbone='resnet50')
    assert net.cfg['feature_maps'] == [38, 19, 10, 5, 3, 1]
    assert net.priors.shape == (8732, 4)
    torch.testing.assert_close(net.priors, nvidia_default_boxes(), rtol=0, atol=1e-6)


def test_shape_major_priors_follow_the_head_layout():
    """Each head channel ``coord * A + anchor`` at (i, j) is read as the
    prior that PriorBox puts at that index: a head that outputs its own
    prior's location-major (ssd.pytorch-order) geometry reproduces the
    shape-major priors exactly."""
    net = build_ssd('train', 300, 81, backbone='resnet50').eval()
    ssd_order = build_ssd('train', 300, 81, cfg=dict(config_for(81, 300, 'resnet50'),
                                                     head_layout='ssd')).priors
    assert not torch.equal(ssd_order, net.priors)      # the same boxes, permuted
    assert torch.equal(ssd_order[ssd_order[:, 0].argsort(stable=True)].sort(0).values,
                       net.priors[net.priors[:, 0].argsort(stable=True)].sort(0).values)
    start = 0
    for k, (f, a) in enumerate(zip(net.cfg['feature_maps'], net.cfg['mbox'])):
        block = ssd_order[start:start + f * f * a].view(f, f, a, 4)
        start += f * f * a
        fixed = block.permute(3, 2, 0, 1).reshape(1, 4 * a, f, f)   # channel coord * A + a
        net.loc[k] = _Constant(fixed)
    loc, _, priors = net(torch.zeros(1, 3, 300, 300))
    torch.testing.assert_close(loc[0], priors, rtol=0, atol=0)


class _Constant(nn.Module):
    def __init__(self, t):
        super().__init__()
        self.register_buffer('t', t)

    def forward(self, x):
        return self.t.expand(x.shape[0], -1, -1, -1)


def test_converted_outputs_equal_nvidias(nvidia):
    theirs, dst = nvidia
    loaded = build_from_weights(dst, phase='train')
    assert loaded.net.backbone_name == 'resnet50' and len(loaded.classes) == 80
    x = torch.randn(2, 3, 300, 300, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        tl, tc = theirs(x)
        loc, conf, priors = loaded.net(x)
    torch.testing.assert_close(loc, tl.transpose(1, 2), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(conf, tc.transpose(1, 2), rtol=1e-5, atol=1e-5)
    rec = torch.load(dst, weights_only=True)['record']
    assert rec['cfg']['mean'] == pytest.approx([103.53, 116.28, 123.675])
    assert rec['channel_order'] == 'RGB' and rec['cfg']['head_layout'] == 'nvidia'
    det = build_from_weights(dst).net(x[:1])                     # the test phase decodes
    assert det.shape[:2] == (1, 81)


@pytest.mark.parametrize('sd, words', [
    ({'vgg.0.weight': torch.zeros(1)}, "not NVIDIA's SSD300 v1.1 (ResNet-50) state dict"),
    (None, "unexpected key 'extra.head'"),
])
def test_wrong_file_is_one_line(tmp_path, capsys, sd, words):
    if sd is None:
        sd = dict(NvidiaSSD300(label_num=3).state_dict(), **{'extra.head': torch.zeros(1)})
    src = tmp_path / 'x.pt'
    torch.save(sd, src)
    assert nvidia_main(['--in', str(src), '--out', str(tmp_path / 'o.pth')]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith('error: ') and str(src) in err and words in err and '\n' not in err
    assert not (tmp_path / 'o.pth').exists()


@pytest.mark.parametrize('name, make', [('resnet50', resnet50), ('mobilenet_v2', mobilenet_v2)])
def test_imagenet_base_fills_the_trunk(tmp_path, name, make):
    """torchvision's ImageNet classifier (random here), converted, loads
    into the trunk with every tensor in its place."""
    clf = _randomise(make(weights=None), 2)
    src = tmp_path / f'{name}-fake.pth'
    torch.save(clf.state_dict(), src)
    dst = tmp_path / 'base.pth'
    assert imagenet_main(['--in', str(src), '--out', str(dst)]) == 0
    base = torch.load(dst, weights_only=True)
    net = build_ssd('train', backbone=name, num_classes=3)
    trunk = net.trunk()
    trunk.load_state_dict(base)                                  # strict: every key
    theirs = clf.state_dict()
    if name == 'resnet50':
        for ours, tv in [('6.0.conv1.weight', 'layer3.0.conv1.weight'), ('0.weight', 'conv1.weight'),
                         ('6.5.bn3.running_var', 'layer3.5.bn3.running_var')]:
            assert torch.equal(trunk.state_dict()[ours], theirs[tv])
        assert not any(k.startswith(('7.', 'fc')) for k in base)  # conv5 and fc dropped
    by_shape = {}
    for v in theirs.values():
        by_shape.setdefault(tuple(v.shape), []).append(v)
    for k, v in trunk.state_dict().items():          # each is one of torchvision's
        assert any(torch.equal(v, t) for t in by_shape.get(tuple(v.shape), [])), k
