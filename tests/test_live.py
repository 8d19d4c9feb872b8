"""demo.live on a generated video, headless: frames written, clean stops."""
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

import demo.live as live
from data.config import shapes
from ssd import build_ssd

N_FRAMES = 5


def count_frames(path):
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp('live')
    torch.manual_seed(0)
    weights = d / 'ssd160_shapes.pth'
    net = build_ssd('train', cfg=shapes, num_classes=6)
    with torch.no_grad():               # background-heavy, like a trained model: few boxes
        for conf in net.conf:
            conf.bias.view(-1, 6)[:, 0] += 4.0
    torch.save(net.state_dict(), weights)
    clip = d / 'clip.avi'
    w = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*'MJPG'), 10, (96, 72))
    rng = np.random.default_rng(0)
    for i in range(N_FRAMES):
        img = rng.integers(0, 255, (72, 96, 3), dtype=np.uint8)
        cv2.circle(img, (20 + 8 * i, 36), 15, (0, 0, 255), -1)
        w.write(img)
    w.release()
    assert count_frames(clip) == N_FRAMES
    return weights, clip, d


def test_video_to_video_headless(files):
    weights, clip, d = files
    out = d / 'out.mp4'
    assert live.main(['--weights', str(weights), '--source', str(clip), '--output', str(out),
                      '--no_display', '--thresh', '0.02']) == 0
    assert count_frames(out) == N_FRAMES
    cap = cv2.VideoCapture(str(out))
    assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (96, 72)


def test_ctrl_c_finalises_output(files, monkeypatch):
    """A KeyboardInterrupt on the 4th frame stops the loop, and the 3 frames
    written so far form a readable video."""
    weights, clip, d = files
    real = live.draw_fps
    calls = []

    def interrupt_on_4th(img, fps):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(img, fps)
    monkeypatch.setattr(live, 'draw_fps', interrupt_on_4th)
    out = d / 'interrupted.avi'
    assert live.main(['--weights', str(weights), '--source', str(clip), '--output', str(out),
                      '--no_display']) == 0
    assert count_frames(out) == 3


def test_bad_inputs_one_line(files, tmp_path, capsys):
    weights, clip, _ = files
    assert live.main(['--weights', str(tmp_path / 'none.pth'), '--source', str(clip),
                      '--no_display']) == 1
    assert live.main(['--weights', str(weights), '--source', str(tmp_path / 'no.mp4'),
                      '--no_display']) == 1
    bad = tmp_path / 'bad.mp4'
    bad.write_bytes(b'not a video')
    assert live.main(['--weights', str(weights), '--source', str(bad), '--no_display']) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith('demo.live: error: ') for line in err[:2])
    assert err[2].startswith('demo.live: warning: ')     # an unreadable video (issue 10)
    assert 'none.pth' in err[0] and 'no.mp4' in err[1] and 'bad.mp4' in err[2]


def test_module_entry_point(files):
    """``python -m demo.live ... --no_display --output`` as the README says."""
    weights, clip, d = files
    out = d / 'cli.avi'
    r = subprocess.run([sys.executable, '-m', 'demo.live', '--weights', str(weights),
                        '--source', str(clip), '--output', str(out), '--no_display',
                        '--max_frames', '3'], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert count_frames(out) == 3
    assert f"shapes at {shapes['min_dim']}, 5 classes" in r.stdout
