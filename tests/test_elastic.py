"""Multi-node and elastic training through torchrun (issue 10 item 11), on
gloo with 2 CPU processes and a tiny shapes run: two launchers as two
nodes; a worker killed under ``--max_restarts=1 --resume auto`` restarts the
group, which resumes from checkpoint.pth and finishes at --max_iter."""
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid

import pytest

from utils.checkpoint import load_file
from utils.engine.run_config import parse_run_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['train.py', '--dataset', 'shapes', '--batch_size', '4', '--train_images', '8',
        '--eval_every', '0', '--num_workers', '0', '--quiet', '--log_every', '1']
ENV = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1')


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def loss_rows(folder):
    with open(folder / 'metrics.csv', newline='') as f:
        return [int(r['iteration']) for r in csv.DictReader(f) if r['loss']]


def wait_for(cond, procs, timeout=240):
    """Poll ``cond()`` until it is true; fail when a process ends first or
    the timeout passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        for p in procs:
            if p.poll() is not None:
                pytest.fail(f'exited with {p.returncode} first: {p.stderr.read()[-3000:]}')
        time.sleep(0.1)
    pytest.fail('timed out')


def stop_all(procs, folder=None):
    """Kill the launchers and, by their --save_folder on the command line,
    any worker left behind (torchrun starts workers in their own sessions)."""
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        p.wait(timeout=60)
    if folder is None:
        return
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            with open(f'/proc/{pid}/cmdline', 'rb') as f:
                args = f.read().split(b'\0')
        except OSError:
            continue
        if str(folder).encode() in args:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_resume_auto_resolves_to_the_checkpoint_or_a_fresh_start(tmp_path):
    argv = ['--dataset', 'shapes', '--save_folder', str(tmp_path), '--resume', 'auto']
    assert parse_run_config(argv).resume is None
    (tmp_path / 'checkpoint.pth').write_bytes(b'x')
    assert parse_run_config(argv).resume == str(tmp_path / 'checkpoint.pth')


def test_two_launchers_as_two_nodes(tmp_path):
    out, port, run_id = tmp_path / 'out', free_port(), uuid.uuid4().hex[:8]
    procs = []
    try:
        for node in (0, 1):
            cmd = [sys.executable, '-m', 'torch.distributed.run', '--nnodes=2',
                   '--nproc_per_node=1', '--rdzv_backend=c10d',
                   f'--rdzv_endpoint=127.0.0.1:{port}', f'--rdzv_id={run_id}',
                   f'--node_rank={node}'] + TINY + [
                '--max_iter', '3', '--save_every', '2', '--save_folder', str(out)]
            procs.append(subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True,
                                          start_new_session=True))
        errs = []
        for p in procs:
            _, err = p.communicate(timeout=300)
            errs.append(err)
            assert p.returncode == 0, err[-3000:]
    finally:
        stop_all(procs, out)
    assert load_file(out / 'checkpoint.pth')['iteration'] == 3
    assert loss_rows(out) == [1, 2, 3]
    assert sum(e.count('on cpu x2; batch 4 (global)') for e in errs) == 1
    assert not (out / 'train.lock').exists()


def test_killed_worker_restarts_the_group_which_resumes(tmp_path):
    out, max_iter = tmp_path / 'out', 14
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone',
           # one restart, for the kill (the command); the restarted group's
           # process group uses a fresh store prefix (utils.training.distributed)
           '--nproc_per_node=2', '--max_restarts=1', '--monitor_interval=0.5'] + TINY + [
        '--max_iter', str(max_iter), '--save_every', '2', '--resume', 'auto',
        '--save_folder', str(out)]
    p = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        def past_first_checkpoint():
            try:
                return max(loss_rows(out)) >= 3 and (out / 'train.lock').exists()
            except (OSError, ValueError, KeyError):
                return False
        wait_for(past_first_checkpoint, [p])
        holder = json.loads((out / 'train.lock').read_text())     # rank 0
        assert holder['run_id']
        os.kill(holder['pid'], signal.SIGKILL)
        _, err = p.communicate(timeout=400)
    finally:
        stop_all([p], out)
    assert p.returncode == 0, err[-4000:]
    ckpt = load_file(out / 'checkpoint.pth')
    assert ckpt['iteration'] == max_iter
    # the restarted group took over rank 0's lock and resumed from a checkpoint
    assert 'taking over the lock of a run that ended' in err
    starts = [int(x.split('..')[0].split()[-1]) for x in err.split('iterations ')[1:]]
    assert starts[0] == 0 and len(starts) >= 2 and starts[-1] >= 2 and starts[-1] % 2 == 0, starts
    # metrics.csv: every iteration once, none missing after the resume point
    assert loss_rows(out) == list(range(1, max_iter + 1))
    assert not (out / 'train.lock').exists()


SITE = '''
import os
if os.environ.get('RANK') == '1':
    from data.base import read_image
    from data.shapes import ShapesDetection
    _bad, _path = int(os.environ['BAD_INDEX']), os.environ['BAD_FILE']
    _original = ShapesDetection.pull_image

    def pull_image(self, index):
        if self.image_set == 'train' and index == _bad:
            return read_image(_path)
        return _original(self, index)
    ShapesDetection.pull_image = pull_image
'''


def test_bad_sample_on_one_rank_stops_all_after_saving(tmp_path):
    """Rank 1 meets a truncated JPEG at iteration 2: it stops with the file
    named, rank 0 stops with it (no hang), after saving checkpoint.pth at 2."""
    from data.loader import IterationBatchSampler
    s = IterationBatchSampler(8, 2, 0, 0, 3, rank=1, world_size=2)
    seen = {i for it in range(2) for i, _ in s.batch(it)}
    bad_index = next(i for i, _ in s.batch(2) if i not in seen)
    bad = tmp_path / 'bad.jpg'
    bad.write_bytes(b'\xff\xd8\xff\xe0' + b'\0' * 200)        # a JPEG cut short
    (tmp_path / 'site').mkdir()
    (tmp_path / 'site' / 'sitecustomize.py').write_text(SITE)
    env = dict(ENV, PYTHONPATH=f"{tmp_path / 'site'}{os.pathsep}{ROOT}",
               BAD_INDEX=str(bad_index), BAD_FILE=str(bad))
    out = tmp_path / 'out'
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone',
           '--nproc_per_node=2'] + TINY + ['--max_iter', '6', '--save_every', '100',
                                           '--save_folder', str(out)]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode != 0
    assert f'train.py: error: {bad}: truncated JPEG' in p.stderr, p.stderr[-3000:]
    assert 'train.py: error: process 1 stopped on an error at iteration 2' in p.stderr
    assert 'saved at iteration 2' in p.stderr
    assert 'Original Traceback' not in p.stderr
    assert load_file(out / 'checkpoint.pth')['iteration'] == 2
    assert not (out / 'train.lock').exists()
