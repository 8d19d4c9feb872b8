"""Each script's documented command without its optional flags, as a user
types it from the README (a default is part of the feature). Evaluation
during training once hid behind tests that all passed --eval_every."""
import contextlib
import csv
import io
import os
import subprocess
import sys

import cv2
import pytest

import demo.live as live
from data import ShapesDetection

from _scripts import load_script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))




@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """``python train.py --dataset shapes --max_iter 2 --save_folder X/``: no
    --eval_every; --max_iter only to keep the test short."""
    out = tmp_path_factory.mktemp('run')
    r = subprocess.run([sys.executable, os.path.join(ROOT, 'train.py'), '--dataset', 'shapes',
                        '--max_iter', '2', '--save_folder', f'{out}/'],
                       cwd=out, capture_output=True, text=True, timeout=600)
    return out, r


def test_train_evaluates_by_default_and_keeps_the_best(trained):
    out, r = trained
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'iteration 2: VOC07 mAP ' in r.stderr + r.stdout
    assert (out / 'ssd160_shapes_best.pth').is_file()
    assert (out / 'shapes.pth').is_file() and (out / 'checkpoint.pth').is_file()
    with open(out / 'metrics.csv', newline='') as f:
        rows = [row for row in csv.DictReader(f) if row.get('voc07_map')]
    assert [row['iteration'] for row in rows] == ['2']


def test_eval_every_0_turns_it_off():
    from utils.engine.run_config import parse_run_config
    from data.config import shapes
    c = parse_run_config(['--dataset', 'shapes'])
    assert (c.eval_every, c.val_splits, c.max_iter, c.basenet) == \
        (shapes['eval_every'], ('val',), shapes['max_iter'], 'none')
    c = parse_run_config(['--dataset', 'VOC'])
    assert (c.eval_every, c.val_splits, c.lr_steps, c.num_workers) == \
        (10000, ('test',), (80000, 100000), min(4, len(os.sched_getaffinity(0))))
    assert parse_run_config(['--dataset', 'shapes', '--eval_every', '0']).val_splits == ()


def test_eval_py_on_a_checkpoint(trained, tmp_path, monkeypatch):
    """``python eval.py --trained_model runs/demo/checkpoint.pth`` (README)."""
    out, _ = trained
    monkeypatch.chdir(tmp_path)
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        assert load_script('eval').main(['--trained_model', str(out / 'checkpoint.pth')]) == 0
    assert 'Mean AP = ' in text.getvalue()
    assert (tmp_path / 'eval').is_dir()


def test_test_py_on_weights_only(trained, tmp_path, monkeypatch):
    """``python test.py --trained_model FILE``: test1.txt on the default split,
    the dataset inferred from a weights-only shapes file."""
    out, _ = trained
    monkeypatch.chdir(tmp_path)
    with contextlib.redirect_stdout(io.StringIO()):
        assert load_script('test').main(['--trained_model', str(out / 'shapes.pth')]) == 0
    text = (tmp_path / 'eval' / 'test1.txt').read_text()
    assert text.count('GROUND TRUTH FOR: ') == len(ShapesDetection('val'))


def test_live_on_a_video(trained, tmp_path, capsys):
    """``python -m demo.live --weights FILE --source clip.mp4 --no_display``."""
    out, _ = trained
    ds = ShapesDetection('val', num_images=3)
    clip = tmp_path / 'clip.mp4'
    video = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*'mp4v'), 5, (96, 64))
    for i in range(3):
        video.write(cv2.resize(ds.pull_image(i), (96, 64)))
    video.release()
    assert live.main(['--weights', str(out / 'shapes.pth'), '--source', str(clip),
                      '--no_display']) == 0
    assert '3 frames in ' in capsys.readouterr().out
