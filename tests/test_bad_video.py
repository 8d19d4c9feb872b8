"""Empty and unreadable videos (issue 10 item 7): one warning line per file
in test.py and demo.live, and no file claimed that was not written;
``python demo/live.py`` runs from the repository root (item 9)."""
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

import demo.live as live
from _scripts import load_script
from data.config import shapes
from ssd import build_ssd
from utils.checkpoint import atomic_save

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEST = load_script('test')


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp('videos')
    torch.manual_seed(0)
    atomic_save(build_ssd('train', cfg=shapes, num_classes=6).state_dict(),
                d / 'ssd_shapes.pth')
    w = cv2.VideoWriter(str(d / 'empty.avi'), cv2.VideoWriter_fourcc(*'MJPG'), 10, (64, 48))
    w.release()                                   # opens, 0 frames
    (d / 'broken.mp4').write_bytes(b'\x00\x00\x00\x18ftypmp42' + b'x' * 4000)
    w = cv2.VideoWriter(str(d / 'good.avi'), cv2.VideoWriter_fourcc(*'MJPG'), 10, (64, 48))
    for i in range(3):
        w.write(np.full((48, 64, 3), 40 * i, np.uint8))
    w.release()
    return d


def _warnings(err, script):
    return [ln for ln in err.splitlines() if ln.startswith(f'{script}: warning:')]


@pytest.mark.parametrize('name,words', [('empty.avi', 'no frame could be read'),
                                        ('broken.mp4', 'cannot open this video file')])
def test_live_empty_or_unreadable_video_warns_and_writes_nothing(files, tmp_path, capfd,
                                                                 name, words):
    out = tmp_path / 'out.mp4'
    rc = live.main(['--weights', str(files / 'ssd_shapes.pth'), '--source',
                    str(files / name), '--output', str(out), '--no_display'])
    cap = capfd.readouterr()
    assert rc == 1
    assert 'written to' not in cap.out + cap.err
    lines = _warnings(cap.err, 'demo.live')
    assert len(lines) == 1 and str(files / name) in lines[0] and words in lines[0], cap.err
    assert lines[0].endswith('nothing written')
    assert not out.exists()


def test_test_py_warns_once_per_bad_video(files, tmp_path, capfd):
    out = tmp_path / 'out'
    assert TEST.main(['--trained_model', str(files / 'ssd_shapes.pth'), '--dataset', 'shapes',
                      '--input', str(files / 'empty.avi'), str(files / 'broken.mp4'),
                      str(files / 'good.avi'), '--save_folder', str(out)]) == 0
    cap = capfd.readouterr()
    lines = _warnings(cap.err, 'test.py')
    assert len(lines) == 2, cap.err
    assert str(files / 'empty.avi') in lines[0] and str(files / 'broken.mp4') in lines[1]
    assert sorted(os.listdir(out)) == ['detections.json', 'good.mp4']
    assert '3 images/frames, 1 files written' in cap.out


def test_demo_live_runs_as_a_script_from_the_root():
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    p = subprocess.run([sys.executable, 'demo/live.py', '--help'], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert '--source' in p.stdout
