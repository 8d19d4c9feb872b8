"""The model record every weight file carries (utils.weights), and input
sizes other than 300 and 512 (data.config.config_for, ssd.complete_config)."""
import argparse

import pytest
import torch

from data.config import check_size, config_for, model_config, shapes, voc
from ssd import build_ssd, source_sizes
from utils.checkpoint import CheckpointError
from utils.engine.run_config import backbone_flag, build_parser, size_flag
from utils.weights import (attach_record, build_from_weights, check_record, model_record,
                           read_weights)


def _shapes_net(size=None, seed=0):
    torch.manual_seed(seed)
    return build_ssd('train', 0, 6, cfg=model_config('shapes', 6, size))


def test_record_round_trip_in_a_plain_state_dict(tmp_path):
    net = _shapes_net(256)
    rec = model_record(net, classes='abcde', dataset='shapes', channel_order='bgr')
    assert rec['cfg']['min_dim'] == 256 and rec['cfg']['backbone'] == 'vgg16'
    assert rec['classes'] == list('abcde') and rec['channel_order'] == 'BGR'
    path = tmp_path / 'w.pth'
    torch.save(attach_record(net.state_dict(), rec), path)
    # ssd.pytorch's habit still works: a plain state dict, the same keys
    plain = torch.load(path, weights_only=True)
    assert set(plain) == set(net.state_dict())
    other = _shapes_net(256, seed=1)
    other.load_state_dict(plain)
    # and every tool builds exactly the recorded network from the file alone
    net2, classes, order = build_from_weights(path)
    assert (net2.size, classes, order) == (256, tuple('abcde'), 'BGR')
    assert net2.cfg['feature_maps'] == net.cfg['feature_maps'] == [64, 32, 16, 8, 4]
    assert torch.equal(net2.priors, net.priors)
    x = torch.rand(1, 3, 256, 256)
    net.eval()
    net2.phase = 'train'
    with torch.no_grad():
        assert torch.allclose(net(x)[1], net2(x)[1], atol=1e-6)
    assert read_weights(path).record == rec


def test_record_errors_are_one_line(tmp_path):
    net = _shapes_net()
    rec = model_record(net, classes='abcde')
    with pytest.raises(CheckpointError, match=r'x\.pth: its model record lacks cfg key\(s\) mbox'):
        check_record(dict(rec, cfg={k: v for k, v in rec['cfg'].items() if k != 'mbox'}),
                     'x.pth')
    with pytest.raises(CheckpointError, match='4 class names for 6 classes'):
        check_record(dict(rec, classes=list('abcd')), 'x.pth')
    with pytest.raises(CheckpointError, match="unknown backbone 'alexnet'"):
        check_record(dict(rec, cfg=dict(rec['cfg'], backbone='alexnet')), 'x.pth')
    path = tmp_path / 'w.pth'
    torch.save(attach_record(net.state_dict(), rec), path)
    with pytest.raises(CheckpointError, match='records an SSD160.*--size 300 does not fit'):
        build_from_weights(path, size=300)


def test_the_papers_sizes_are_unchanged():
    assert config_for(21, 300) == dict(voc, num_classes=21)
    assert build_ssd('train', 300, 21).priors.shape == (8732, 4)
    assert build_ssd('train', 512, 21).priors.shape == (24564, 4)


@pytest.mark.parametrize('size, maps, first_min', [
    (288, [36, 18, 9, 5, 3, 1], 28.8),
    (384, [48, 24, 12, 6, 4, 2], 38.4),      # SSD300's layers, priors at 0.1 ... 1.05
    (640, [80, 40, 20, 10, 5, 3, 2], 44.8),  # SSD512's layers, priors at 0.07 ... 1.05
])
def test_any_size_measures_its_maps(size, maps, first_min):
    cfg = config_for(21, size)
    assert cfg['feature_maps'] == maps == source_sizes(cfg)
    assert cfg['steps'] == [size / f for f in maps]
    assert cfg['min_sizes'][0] == pytest.approx(first_min)
    assert cfg['max_sizes'][-1] == pytest.approx(1.05 * size)
    net = build_ssd('train', size, 21)
    with torch.no_grad():
        loc, conf, priors = net(torch.zeros(1, 3, size, size))
    assert loc.shape[1] == conf.shape[1] == priors.shape[0]


def test_sizes_out_of_range_are_flag_errors(capsys):
    for bad in ('200', '257', '1056', 'x'):
        with pytest.raises((argparse.ArgumentTypeError, ValueError)):
            size_flag(bad)
    with pytest.raises(SystemExit):
        build_parser().parse_args(['--size', '333'])
    assert 'multiple of 32 from 256 to 1024' in capsys.readouterr().err
    assert check_size(320) == 320
    with pytest.raises(ValueError, match='too small'):
        config_for(21, 256)          # SSD300's last layers need 288 at least


def test_unknown_backbone_lists_the_choices(capsys):
    assert backbone_flag('VGG16') == 'vgg16'
    with pytest.raises(SystemExit):
        build_parser().parse_args(['--backbone', 'alexnet'])
    err = capsys.readouterr().err
    assert "unknown backbone 'alexnet'" in err and 'mobilenet_v3_large' in err and 'resnet50' in err


def test_shapes_preset_at_another_size():
    cfg = model_config('shapes', 6, 384)
    assert cfg['min_dim'] == 384 and cfg['base'] == shapes['base']
    assert cfg['min_sizes'] == pytest.approx([v * 384 / 160 for v in shapes['min_sizes']])
    assert model_config('shapes', 6) == dict(shapes, num_classes=6)
