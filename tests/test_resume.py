"""Exact resume: 2 + 2 iterations through checkpoint.pth end bit-identical to
4 uninterrupted ones (also with a different number of DataLoader workers),
and SIGTERM saves checkpoint.pth before exiting."""
import os
import signal
import subprocess
import sys
import time

import torch

import train
from data.config import shapes
from utils.checkpoint import load_file

SNAP = f"ssd{shapes['min_dim']}_shapes_2.pth"   # ssd.pytorch's snapshot name
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--dataset', 'shapes', '--batch_size', '4', '--train_images', '6',
        '--quiet', '--log_every', '1', '--eval_every', '0']


def run(folder, *extra):
    return train.main(TINY + ['--save_folder', str(folder)] + [str(e) for e in extra])


def assert_same_tensors(a, b, where=''):
    if torch.is_tensor(a):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same_tensors(a[k], b[k], f'{where}.{k}')
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tensors(x, y, f'{where}[{i}]')
    else:
        assert a == b, where


def test_interrupted_run_is_bit_identical(tmp_path):
    a, b = tmp_path / 'A', tmp_path / 'B'
    # 6 images, batch 4: iterations 2-3 come from the second epoch
    assert run(a, '--max_iter', 4, '--save_every', 2, '--num_workers', 0) == 0
    assert run(b, '--max_iter', 2, '--save_every', 2, '--num_workers', 0) == 0
    assert load_file(b / 'checkpoint.pth')['iteration'] == 2
    assert run(b, '--max_iter', 4, '--save_every', 2, '--num_workers', 1,
               '--resume', b / 'checkpoint.pth') == 0
    ca, cb = load_file(a / 'checkpoint.pth'), load_file(b / 'checkpoint.pth')
    assert ca['iteration'] == cb['iteration'] == 4
    assert_same_tensors(ca['model'], cb['model'], 'model')
    assert_same_tensors(ca['optimizer'], cb['optimizer'], 'optimizer')
    # the snapshot at 2 is the same too, and the logs of both runs agree
    assert_same_tensors(load_file(a / SNAP),
                        load_file(b / SNAP), 'snapshot')
    la = (a / 'metrics.csv').read_text().splitlines()
    lb = (b / 'metrics.csv').read_text().splitlines()
    # iteration, loss_l, loss_c, loss (the times differ)
    assert [x.split(',')[:4] for x in la] == [x.split(',')[:4] for x in lb]
    assert len(la) == 5


def test_sigterm_saves_checkpoint(tmp_path):
    out = tmp_path / 'sig'
    cmd = [sys.executable, 'train.py'] + TINY + [
        '--max_iter', '100000', '--save_every', '100000', '--num_workers', '0',
        '--save_folder', str(out)]
    env = dict(os.environ, PYTHONPATH=ROOT)
    p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        csv = out / 'metrics.csv'
        while time.time() < deadline and p.poll() is None:
            if csv.exists() and len(csv.read_text().splitlines()) >= 3:
                break
            time.sleep(0.2)
        assert p.poll() is None, p.communicate()[1][-2000:]
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, err[-2000:]
    assert 'signal received' in err
    ckpt = load_file(out / 'checkpoint.pth')
    assert ckpt['iteration'] >= 2
    rows = csv.read_text().splitlines()
    assert rows[-1].split(',')[0] == str(ckpt['iteration'])
