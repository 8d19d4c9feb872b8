"""One vocabulary of flags (utils/engine/cli.py): --conf, --iou, --max_det,
--weights, --source and --device in every script, beside ssd.pytorch's own
names, reaching what those names reach (Detect's thresholds, the device)."""
import json
import os

import cv2
import numpy as np
import pytest
import torch

import demo.live as live
import utils.export as export
import utils.weights as W
from data.config import shapes
from ssd import build_ssd
from utils.engine import cli
from utils.engine.run_config import build_parser

from _scripts import load_script

EVAL, TEST = load_script('eval'), load_script('test')
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def export_args(argv, monkeypatch):
    seen = {}
    monkeypatch.setattr(export, '_run', lambda a: seen.setdefault('args', a) and 0)
    assert export.main(argv) == 0
    return seen['args']


#: script -> (parse, its own name of the score threshold (dest), of top_k, of the weights)
def parsers(monkeypatch):
    return {'eval': (EVAL.parse_args, 'confidence_threshold', 'top_k', 'trained_model'),
            'test': (TEST.parse_args, 'visual_threshold', 'top_k', 'trained_model'),
            'demo.live': (live.parse_args, 'thresh', 'top_k', 'weights'),
            'export': (lambda a: export_args(['--trained_model', 'x.pth'] + a, monkeypatch),
                       'conf_thresh', 'top_k', 'trained_model')}


def test_aliases_set_the_ssd_pytorch_names(monkeypatch):
    for name, (parse, conf, top_k, weights) in parsers(monkeypatch).items():
        a = parse(['--conf', '0.3', '--iou', '0.4', '--max_det', '7', '--weights', 'w.pth'])
        assert (getattr(a, conf), a.nms_thresh, getattr(a, top_k), getattr(a, weights)) == \
            (0.3, 0.4, 7, 'w.pth'), name
        old = parse([f'--{conf}', '0.2', '--nms_thresh', '0.5', '--top_k', '9'])
        assert (getattr(old, conf), old.nms_thresh, getattr(old, top_k)) == (0.2, 0.5, 9), name
    # the defaults stay ssd.pytorch's own
    assert EVAL.parse_args([]).confidence_threshold == 0.01
    assert TEST.parse_args([]).visual_threshold == 0.6
    assert live.parse_args([]).thresh == 0.6
    assert all(p([]).nms_thresh == 0.45 for name, (p, *_) in parsers(monkeypatch).items()
               if name != 'export')
    assert TEST.parse_args(['--source', 'a.jpg', 'b/']).input == ['a.jpg', 'b/']
    assert live.parse_args(['--input', 'clip.mp4']).source == 'clip.mp4'
    assert live.parse_args(['--trained_model', 'w.pth']).weights == 'w.pth'


@pytest.mark.parametrize('cmd', ['train.py', 'eval.py', 'test.py', '-m demo.live',
                                 '-m utils.export'])
def test_help_names_the_shared_flags(cmd, capsys):
    mod = {'train.py': load_script('train'), 'eval.py': EVAL, 'test.py': TEST,
           '-m demo.live': live, '-m utils.export': export}[cmd]
    with pytest.raises(SystemExit):
        mod.main(['--help'])
    out = capsys.readouterr().out
    detects = cmd != 'train.py'
    for flag in ['--conf', '--iou', '--max_det', '--weights'] * detects + \
            ['--device'] * (cmd != '-m utils.export'):
        assert flag in out, (cmd, flag)


def test_device_flag_one_rule(monkeypatch):
    assert [cli.device_flag(v) for v in ('cpu', 'CUDA', 'cuda:1')] == ['cpu', 'cuda', 'cuda:1']
    for bad in ('gpu', 'cuda:', 'cuda:x', 'mps'):
        with pytest.raises(Exception, match='expected cpu, cuda or cuda:N'):
            cli.device_flag(bad)
    assert cli.cuda_request(None, 'cuda:2') == (True, 2)
    assert cli.cuda_request(True, 'cuda') == (True, None)
    assert cli.cuda_request(None, 'cpu') == (False, None)
    with pytest.raises(ValueError, match='--cuda False and --device cuda disagree'):
        cli.cuda_request(False, 'cuda')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert cli.select_device(None, 'cpu').type == 'cpu'
    with pytest.raises(ValueError, match='--cuda True but no CUDA device'):
        cli.select_device(None, 'cuda:0')
    for parse in (EVAL.parse_args, TEST.parse_args, live.parse_args, build_parser().parse_args):
        assert parse(['--device', 'cuda:1']).device == 'cuda:1'
        assert parse([]).device is None


def test_train_resolves_device(monkeypatch):
    from utils.engine.run_config import parse_run_config
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    c = parse_run_config(['--dataset', 'shapes', '--device', 'cpu'])
    assert (c.cuda, c.device) == (False, 'cpu')
    c = parse_run_config(['--dataset', 'shapes'])
    assert (c.cuda, c.device) == (False, 'cpu')


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp('flags')
    torch.manual_seed(0)
    net = build_ssd('train', cfg=shapes, num_classes=6)
    torch.save(net.state_dict(), d / 'ssd160_shapes.pth')
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (72, 96, 3), dtype=np.uint8)
    cv2.imwrite(str(d / 'a.png'), img)
    w = cv2.VideoWriter(str(d / 'clip.avi'), cv2.VideoWriter_fourcc(*'MJPG'), 10, (96, 72))
    w.write(img)
    w.release()
    return d


@pytest.fixture
def spy(monkeypatch):
    """What build_from_weights built: the Detect thresholds of each call."""
    seen = []
    real = W.build_from_weights

    def build(*a, **k):
        out = real(*a, **k)
        seen.append((out.net.detect.nms_thresh, out.net.detect.top_k))
        return out
    monkeypatch.setattr(W, 'build_from_weights', build)
    return seen


def test_iou_and_max_det_reach_detect(files, spy, tmp_path):
    w, img = str(files / 'ssd160_shapes.pth'), str(files / 'a.png')
    assert TEST.main(['--weights', w, '--source', img, '--conf', '0.02', '--iou', '0.3',
                      '--max_det', '7', '--device', 'cpu', '--save_folder', str(tmp_path)]) == 0
    assert spy[-1] == (0.3, 7)
    with open(tmp_path / 'detections.json') as f:
        entries = json.load(f)
    scores = [s for e in (entries if isinstance(entries, list) else entries['images'])
              for s in e['scores']]
    assert scores and min(scores) >= 0.02       # --conf is test.py's --visual_threshold
    assert live.main(['--weights', w, '--source', str(files / 'clip.avi'), '--no_display',
                      '--iou', '0.35', '--max_det', '5', '--device', 'cpu']) == 0
    assert spy[-1] == (0.35, 5)
    assert EVAL.main(['--weights', w, '--dataset', 'shapes', '--num_images', '2',
                      '--iou', '0.25', '--max_det', '6', '--device', 'cpu', '--pr_curves', 'False',
                      '--num_workers', '0', '--save_folder', str(tmp_path / 'eval')]) == 0
    assert spy[-1][0] == 0.25


def test_readme_lists_every_shared_flag():
    with open(os.path.join(ROOT, 'README.md')) as f:
        text = f.read()
    section = text[text.index('Flags shared by every script'):]
    section = section[:section.index('\n## ')] if '\n## ' in section else section
    for flag in ('--conf', '--iou', '--max_det', '--weights', '--source', '--device',
                 '--confidence_threshold', '--visual_threshold', '--thresh', '--conf_thresh',
                 '--nms_thresh', '--top_k', '--trained_model', '--input', '--cuda'):
        assert f'`{flag}' in section, flag
