"""test.py: drawn pictures, a drawn video and detections.json on generated
inputs; ssd.pytorch's test1.txt format; one-line errors."""
import contextlib
import io
import json
import os

import cv2
import numpy as np
import pytest
import torch

from data import SHAPES_CLASSES, ShapesDetection
from _scripts import load_script
from data.config import shapes as shapes_cfg
from ssd import build_ssd
from utils.checkpoint import atomic_save
from utils.engine.tester import write_test1

TEST = load_script('test')


@pytest.fixture(scope='module')
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp('inputs')
    torch.manual_seed(0)
    net = build_ssd('train', cfg=shapes_cfg, num_classes=6)
    atomic_save(net.state_dict(), d / 'ssd160_shapes.pth')          # weights-only snapshot
    ds = ShapesDetection('val', num_images=5)
    (d / 'folder').mkdir()
    cv2.imwrite(str(d / 'a.jpg'), ds.pull_image(0))
    cv2.imwrite(str(d / 'folder' / 'b.png'), ds.pull_image(1))
    cv2.imwrite(str(d / 'folder' / 'a.jpg'), ds.pull_image(2))       # same name as ../a.jpg
    (d / 'folder' / 'notes.txt').write_text('not an image')
    video = cv2.VideoWriter(str(d / 'clip.mp4'), cv2.VideoWriter_fourcc(*'mp4v'), 5, (96, 64))
    for i in range(5):
        video.write(cv2.resize(ds.pull_image(i % 3), (96, 64)))
    video.release()
    return d


def test_images_folders_and_video(inputs, tmp_path):
    out = tmp_path / 'out'
    with contextlib.redirect_stdout(io.StringIO()):
        assert TEST.main([
            '--trained_model', str(inputs / 'ssd160_shapes.pth'), '--dataset', 'shapes',
            '--input', str(inputs / 'a.jpg'), str(inputs / 'folder'), str(inputs / 'clip.mp4'),
            '--save_folder', str(out), '--visual_threshold', '0.2', '--top_k', '5']) == 0
    assert sorted(os.listdir(out)) == ['a.jpg', 'a_1.jpg', 'b.png', 'clip.mp4', 'detections.json']
    drawn = cv2.imread(str(out / 'b.png'))
    assert drawn.shape == cv2.imread(str(inputs / 'folder' / 'b.png')).shape
    cap = cv2.VideoCapture(str(out / 'clip.mp4'))
    frames = 0
    while cap.read()[0]:
        frames += 1
    assert frames == 5
    entries = json.loads((out / 'detections.json').read_text())
    assert len(entries) == 3 + 5
    assert [e.get('frame') for e in entries[3:]] == [0, 1, 2, 3, 4]
    assert all(e['file'].endswith('clip.mp4') for e in entries[3:])
    for e in entries:
        assert set(e) >= {'file', 'boxes', 'labels', 'names', 'scores'}
        assert len(e['boxes']) == len(e['labels']) == len(e['names']) == len(e['scores'])
        assert all(s >= 0.2 for s in e['scores'])
        assert all(SHAPES_CLASSES[k] == n for k, n in zip(e['labels'], e['names']))
    assert sum(len(e['boxes']) for e in entries) > 0


def test_missing_input_is_one_line_error(inputs, tmp_path, capsys):
    assert TEST.main(['--trained_model', str(inputs / 'ssd160_shapes.pth'),
                      '--input', str(tmp_path / 'nope.jpg')]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f'test.py: error: {tmp_path / "nope.jpg"}: no such file or folder']


class StubPredictor:
    def __call__(self, images):
        return [dict(boxes=np.array([[1.5, 2.25, 30, 40], [5, 6, 7, 8], [0, 0, 1, 1]], np.float32),
                     scores=np.array([0.9, 0.7, 0.3], np.float32),
                     labels=np.array([1, 0, 1]))] * len(images)


class StubSet:
    def __len__(self):
        return 1

    def pull_image(self, i):
        return np.zeros((10, 10, 3), np.uint8)

    def pull_anno(self, i):
        return ['000001', [[47.0, 239.0, 194.0, 370.0, 11.0]]]


def test_test1_txt_is_ssd_pytorch_format(tmp_path):
    with contextlib.redirect_stderr(io.StringIO()):
        path = write_test1(StubPredictor(), StubSet(), ('cat', 'dog'), str(tmp_path), 0.6)
    assert open(path).read() == (
        '\nGROUND TRUTH FOR: 000001\n'
        'label: 47.0 || 239.0 || 194.0 || 370.0 || 11\n'
        'PREDICTIONS: \n'
        '1 label: cat score: 0.699999988079071 5.0 || 6.0 || 7.0 || 8.0\n'
        '2 label: dog score: 0.8999999761581421 1.5 || 2.25 || 30.0 || 40.0\n')
