"""SSDlite on MobileNetV3-Large / V2 (layers.backbones.mobilenet): shapes,
priors, raw outputs and detections equal to torchvision's
ssdlite320_mobilenet_v3_large, the torchvision converter."""
import math

import pytest
import torch
from torchvision.models import mobilenet_v3_large
from torchvision.models.detection import ssdlite320_mobilenet_v3_large
from torchvision.models.detection.image_list import ImageList

from data.config import config_for
from layers import Detect
from layers.backbones import mobilenet
from ssd import build_ssd
from utils import convert_torchvision as ct
from utils.bench.ssdlite import randomise
from utils.checkpoint import CheckpointError


@pytest.fixture(scope='module')
def tv():
    torch.manual_seed(0)
    return randomise(ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None)).eval()


@pytest.fixture(scope='module')
def converted(tv, tmp_path_factory):
    """torchvision's state dict saved, converted with the default command,
    and built from the file."""
    from utils.weights import build_from_weights
    d = tmp_path_factory.mktemp('ssdlite')
    torch.save(tv.state_dict(), d / 'tv.pth')
    assert ct.main(['--in', str(d / 'tv.pth'), '--out', str(d / 'ours.pth')]) == 0
    return build_from_weights(str(d / 'ours.pth')), d


def test_sources_and_heads_shapes():
    for size, maps in ((320, [20, 10, 5, 3, 2, 1]), (256, [16, 8, 4, 2, 1, 1])):
        cfg = config_for(91, size, 'mobilenet_v3_large')
        assert cfg['feature_maps'] == maps
        net = build_ssd('train', size, 91, cfg=cfg).eval()
        x = torch.zeros(1, 3, size, size)
        with torch.no_grad():
            src = net.backbone(x)
            assert [tuple(s.shape[1:]) for s in src] == [
                (c, f, f) for c, f in zip([672, 480, 512, 256, 256, 128], maps)]
            assert [tuple(h(s).shape[1:]) for h, s in zip(net.loc, src)] == [(24, f, f) for f in maps]
            assert [tuple(h(s).shape[1:]) for h, s in zip(net.conf, src)] == [(546, f, f) for f in maps]
            loc, conf, priors = net(x)
        assert loc.shape == (1, priors.shape[0], 4) and conf.shape == (1, priors.shape[0], 91)
        assert priors.shape[0] == 6 * sum(f * f for f in maps)


def test_mobilenet_v2_and_options():
    cfg = config_for(21, 320, 'mobilenet_v2')
    assert mobilenet.channels_of(cfg) == [576, 1280, 512, 256, 256, 128]
    half = dict(config_for(6, 320, 'mobilenet_v3_large'), width_mult=0.5)
    assert mobilenet.channels_of(half) == [336, 240, 256, 128, 128, 64]
    full = dict(config_for(6, 320, 'mobilenet_v3_large'), reduced_tail=False)
    assert mobilenet.channels_of(full) == [672, 960, 512, 256, 256, 128]
    net = build_ssd('train', 320, 21, cfg=cfg).eval()
    with torch.no_grad():
        loc, conf, priors = net(torch.zeros(1, 3, 320, 320))
    assert loc.shape == (1, 3234, 4) and conf.shape == (1, 3234, 21)
    assert net.trunk() is net.backbone.features


def test_keys_are_torchvision_renamed():
    ours = build_ssd('train', 320, 91, cfg=config_for(91, 320, 'mobilenet_v3_large')).state_dict()
    theirs = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None).state_dict()
    renamed = {k.replace(ct.SSDLITE_HEADS[0], 'loc.').replace(ct.SSDLITE_HEADS[1], 'conf.'): v.shape
               for k, v in theirs.items()}
    assert {k: v.shape for k, v in ours.items()} == renamed


def test_priors_equal_torchvision_anchors(tv):
    net = build_ssd('train', 320, 91, cfg=config_for(91, 320, 'mobilenet_v3_large'))
    maps = [torch.zeros(1, 1, f, f) for f in (20, 10, 5, 3, 2, 1)]
    x = torch.zeros(1, 3, 320, 320)
    anchors = tv.anchor_generator(ImageList(x, [(320, 320)]), maps)[0] / 320   # x1y1x2y2
    cxcywh = torch.cat([(anchors[:, :2] + anchors[:, 2:]) / 2, anchors[:, 2:] - anchors[:, :2]], 1)
    assert torch.allclose(net.priors, cxcywh, atol=1e-6, rtol=0)
    grid = tv.anchor_generator._grid_default_boxes([m.shape[-2:] for m in maps], [320, 320])
    assert torch.equal(net.priors, grid)


def test_raw_outputs_equal_torchvision(tv, converted):
    (net, classes, order), _ = converted
    assert order == 'RGB' and len(classes) == 90 and classes[0] == 'person' and classes[11] == 'N/A'
    assert net.cfg['mean'] == net.cfg['std'] == [127.5] * 3 and net.cfg['reduced_tail']
    img = torch.rand(2, 3, 320, 320, generator=torch.Generator().manual_seed(1))
    net.phase = 'train'
    with torch.no_grad():
        loc, conf, priors = net((img - 0.5) / 0.5)
        x = tv.transform(list(img))[0].tensors
        heads = tv.head(list(tv.backbone(x).values()))
    assert torch.allclose(loc, heads['bbox_regression'], atol=1e-5, rtol=1e-5)
    assert torch.allclose(conf, heads['cls_logits'], atol=1e-5, rtol=1e-5)


def _match(ours, theirs):
    """Every detection (label, score, box in pixels) of ours has one of
    torchvision's with the same label and box (ties in score may be
    ordered differently)."""
    assert len(ours[0]) == len(theirs['scores'])
    for lab, sc, box in zip(*ours):
        same = (theirs['labels'] == lab) & ((theirs['boxes'] - box).abs().amax(1) < 1e-2)
        assert same.any(), (lab, sc, box)
        assert (theirs['scores'][same] - sc).abs().min() < 1e-5


def test_detections_equal_torchvision(tv, converted):
    (net, _, _), _ = converted
    net.phase = 'test'
    net.detect = Detect(91, 0, **mobilenet.TORCHVISION_DETECT)
    img = torch.rand(2, 3, 320, 320, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = net((img - 0.5) / 0.5)
        ref = tv(list(img))
    labels = torch.arange(91)[:, None].expand(91, out.shape[2])
    for o, r in zip(out, ref):
        keep = o[..., 0] > 0
        _match((labels[keep], o[..., 0][keep], o[..., 1:][keep] * 320), r)


def test_detect_clip_and_log_wh_cap():
    priors = torch.tensor([[0.9, 0.5, 0.4, 0.4]])
    loc = torch.tensor([[[0.0, 0.0, 100.0, 0.0]]])     # exp(20): capped at 1000/16
    conf = torch.tensor([[[0.0, 1.0]]])
    plain = Detect(2, 0, 1, 0.5, 0.5)(loc, conf, priors)[0, 1, 0]
    assert plain[3] > 1e7              # 0.9 + 0.4 * exp(20) / 2
    capped = Detect(2, 0, 1, 0.5, 0.5, max_log_wh=math.log(1000 / 16))(loc, conf, priors)[0, 1, 0]
    assert torch.allclose(capped[1:], torch.tensor([0.9 - 12.5, 0.3, 0.9 + 12.5, 0.7]))
    both = Detect(2, 0, 1, 0.5, 0.5, clip_boxes=True, max_log_wh=math.log(1000 / 16))
    assert torch.allclose(both(loc, conf, priors)[0, 1, 0, 1:], torch.tensor([0.0, 0.3, 1.0, 0.7]))


def test_coco80_converter(tv, converted, tmp_path):
    _, d = converted
    assert ct.main(['--in', str(d / 'tv.pth'), '--out', str(tmp_path / 'c80.pth'), '--coco80']) == 0
    from data import COCO_CLASSES
    from utils.weights import build_from_weights
    net, classes, _ = build_from_weights(str(tmp_path / 'c80.pth'), dataset='COCO')
    assert tuple(classes) == tuple(COCO_CLASSES) and net.num_classes == 81
    idx, _ = ct.kept_classes(ct.coco_categories())
    img = torch.rand(1, 3, 320, 320)
    net.phase = 'train'
    with torch.no_grad():
        _, conf, _ = net((img - 0.5) / 0.5)
        ref = tv.head(list(tv.backbone((img - 0.5) / 0.5).values()))['cls_logits']
    assert torch.allclose(conf, ref[..., idx], atol=1e-5, rtol=1e-5)


def test_wrong_torchvision_model_is_one_line(tmp_path, capsys):
    torch.save(mobilenet_v3_large(weights=None).state_dict(), tmp_path / 'cls.pth')
    assert ct.main(['--in', str(tmp_path / 'cls.pth'), '--out', str(tmp_path / 'o.pth')]) == 1
    err = capsys.readouterr().err.strip()
    assert '\n' not in err and 'ssdlite320_mobilenet_v3_large' in err and 'ssd300_vgg16' in err
    with pytest.raises(CheckpointError, match='not a torchvision'):
        ct.model_of({'x': torch.zeros(1)})


def test_ssdlite_benchmark_checks_before_it_times(tmp_path, capsys):
    """python -m utils.bench.ssdlite: the same detections as torchvision's
    on the benchmark's own weights and input, then its timings (one round)."""
    from utils.bench import ssdlite
    tv_model, net = ssdlite.models(str(tmp_path))
    meds = ssdlite.bench_ssdlite_e2e(tv_model, net, repeats=1, batches=(1,))
    out = capsys.readouterr().out
    assert 'scores equal True [OK]' in out and 'ours is' in out
    assert set(meds) == {1} and len(meds[1]) == 2
