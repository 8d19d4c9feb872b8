"""Issue 20's acceptance, as a user types it: train.py on shapes with a light
backbone, then eval.py, test.py --input, demo.live --no_display, utils.export
and test.py --onnx on the saved weights, none of them naming the backbone."""
import json

import cv2
import numpy as np
import pytest
import torch

import demo.live as live
import utils.export as export
from tests._scripts import load_script
from utils.weights import build_from_weights, read_weights

train, evaluate, test = (load_script(n) for n in ('train', 'eval', 'test'))


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp('lite')
    out = d / 'X'
    assert train.main(['--dataset', 'shapes', '--backbone', 'mobilenet_v3_large',
                       '--max_iter', '30', '--save_folder', str(out), '--quiet',
                       '--train_images', '64', '--val_images', '8']) == 0
    images = d / 'images'
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        img = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
        cv2.circle(img, (60 + 20 * i, 60), 30, (0, 0, 255), -1)
        cv2.imwrite(str(images / f'{i}.jpg'), img)
    clip = d / 'clip.avi'
    w = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*'MJPG'), 10, (160, 120))
    for i in range(3):
        w.write(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))
    w.release()
    return out, images, clip, d


def test_the_files_record_the_backbone(run):
    out = run[0]
    for name in ('shapes.pth', 'checkpoint.pth'):
        rec = read_weights(out / name).record
        assert rec['cfg']['backbone'] == 'mobilenet_v3_large'
        assert rec['cfg']['mean'] == rec['cfg']['std'] == [127.5, 127.5, 127.5]
        assert rec['dataset'] == 'shapes' and len(rec['classes']) == 5
    net, classes, order = build_from_weights(out / 'shapes.pth')
    assert net.backbone_name == 'mobilenet_v3_large' and not hasattr(net, 'vgg')
    assert (net.size, order) == (net.cfg['min_dim'], 'RGB')


def test_eval_test_live_export_need_no_backbone_flag(run, capsys):
    out, images, clip, d = run
    weights = str(out / 'shapes.pth')
    assert evaluate.main(['--trained_model', weights, '--save_folder', str(d / 'eval'),
                          '--num_images', '8', '--json', str(d / 'eval.json')]) == 0
    assert 'voc07' in json.loads((d / 'eval.json').read_text())
    assert test.main(['--trained_model', weights, '--input', str(images),
                      '--save_folder', str(d / 'test')]) == 0
    assert len(json.loads((d / 'test' / 'detections.json').read_text())) == 2
    assert live.main(['--weights', weights, '--source', str(clip), '--no_display',
                      '--output', str(d / 'live.mp4')]) == 0
    onnx = d / 'lite.onnx'
    assert export.main(['--trained_model', weights, '--out', str(onnx)]) == 0
    assert test.main(['--onnx', str(onnx), '--input', str(images),
                      '--save_folder', str(d / 'onnx')]) == 0
    a = json.loads((d / 'test' / 'detections.json').read_text())
    b = json.loads((d / 'onnx' / 'detections.json').read_text())
    for x, y in zip(a, b):
        assert x['labels'] == y['labels']
        np.testing.assert_allclose(x['boxes'], y['boxes'], atol=0.05)
        np.testing.assert_allclose(x['scores'], y['scores'], atol=1e-3)


def test_a_file_of_another_backbone_is_one_line(run, capsys):
    out, _, _, d = run
    assert train.main(['--dataset', 'shapes', '--backbone', 'vgg16', '--resume',
                       str(out / 'checkpoint.pth'), '--max_iter', '31', '--quiet',
                       '--save_folder', str(d / 'Y'), '--train_images', '8']) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'mobilenet_v3_large SSD' in err[0] and 'vgg16 SSD' in err[0]


def test_resume_takes_the_backbone_from_the_file(run):
    out, _, _, d = run
    assert train.main(['--dataset', 'shapes', '--resume', str(out / 'checkpoint.pth'),
                       '--max_iter', '32', '--quiet', '--save_folder', str(out),
                       '--train_images', '64', '--val_images', '8']) == 0
    ck = torch.load(out / 'checkpoint.pth', weights_only=True)
    assert ck['iteration'] == 32 and ck['record']['cfg']['backbone'] == 'mobilenet_v3_large'
