"""DDP through torchrun: 2 CPU processes on gloo, a tiny shapes run."""
import os
import subprocess
import sys

import pytest

from data.config import shapes
from utils.checkpoint import load_file
from utils.training.distributed import per_rank_batch, rank_seed

SNAP = f"ssd{shapes['min_dim']}_shapes_2.pth"   # ssd.pytorch's snapshot name
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_torchrun_two_processes_gloo(tmp_path):
    out = tmp_path / 'X'
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone',
           '--nproc_per_node=2', 'train.py', '--dataset', 'shapes', '--max_iter', '2',
           '--save_every', '2', '--batch_size', '4', '--train_images', '8',
           '--eval_every', '0', '--num_workers', '0', '--quiet', '--log_every', '1',
           '--save_folder', str(out)]
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1')
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    ckpt = load_file(out / 'checkpoint.pth')
    assert ckpt['iteration'] == 2
    # no 'module.' prefix: the snapshot loads into a plain SSD
    assert all(not k.startswith('module.') for k in ckpt['model'])
    assert (out / SNAP).is_file()
    # rank 0 alone logs: one header and one row per iteration
    lines = (out / 'metrics.csv').read_text().splitlines()
    assert [l.split(',')[0] for l in lines] == ['iteration', '1', '2']
    assert p.stderr.count(f"SSD{shapes['min_dim']} on shapes") == 1
    assert 'on cpu x2; batch 4 (global)' in p.stderr


def test_batch_is_global_and_seeds_per_rank():
    assert per_rank_batch(32, 4) == 8
    assert rank_seed(0, 0) != rank_seed(0, 1)
    with pytest.raises(ValueError, match='divisible'):
        per_rank_batch(6, 4)


STUCK = '''
import os, sys, time
import torch
from utils.training import distributed as D
info = D.init_distributed(False, timeout=3)
if info.rank == 1:
    time.sleep(12)                       # a stuck peer: never joins the collective
    sys.exit(0)
try:
    D.first_failed(False, info.device)
except D.PeerStopped as e:
    print('PEER-STOPPED', e, flush=True)
    sys.exit(3)
'''


def test_stuck_peer_is_a_one_line_error_after_dist_timeout(tmp_path):
    """gloo's own timeout is 30 minutes: with --dist_timeout (here 3 s) the
    waiting process stops with one line naming the wait."""
    script = tmp_path / 'stuck.py'
    script.write_text(STUCK)
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone',
           '--nproc_per_node=2', str(script)]
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1')
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    line = next(l for l in p.stdout.splitlines() if l.startswith('PEER-STOPPED'))
    assert 'process 0: no answer from the other processes within --dist_timeout 3 s' in line
    assert 'first_failed' in line


def test_dist_timeout_flag():
    from utils.engine.run_config import parse_run_config
    assert parse_run_config(['--dataset', 'shapes']).dist_timeout == 600
    assert parse_run_config(['--dataset', 'shapes', '--dist_timeout', '30']).dist_timeout == 30
    with pytest.raises(SystemExit):
        parse_run_config(['--dataset', 'shapes', '--dist_timeout', '0'])
