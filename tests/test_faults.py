"""Faults during training and bad settings (issue 10): flags refused when
parsed, short weight-file errors, a full disk or an unwritable folder, a
killed save's temporary file, a failing run that saves first, bad samples
(with and without DataLoader workers, with --skip_bad), one run per save
folder."""
import contextlib
import os
import socket
import subprocess
import sys

import pytest
import torch

import train
from data.config import shapes
from ssd import build_ssd
from utils.checkpoint import (CheckpointError, SaveError, atomic_save, load_file,
                              remove_stale_temp)
from utils.engine.run_config import default_workers, parse_run_config
from utils.weights import build_from_weights, load_weights, read_weights

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--dataset', 'shapes', '--batch_size', '2', '--train_images', '6',
        '--quiet', '--log_every', '1', '--eval_every', '0', '--num_workers', '0']


def run(folder, *extra):
    return train.main(TINY + ['--save_folder', str(folder)] + [str(e) for e in extra])


def one_error_line(err, script='train.py'):
    """The stderr of a failed script holds exactly one error line and no
    traceback; return that line."""
    assert 'Traceback' not in err, err[-3000:]
    lines = [ln for ln in err.splitlines() if f'{script}: error:' in ln]
    assert len(lines) == 1, err[-3000:]
    return lines[0]


# ------------------------------------------------------------------ flags

@pytest.mark.parametrize('flag,value', [('--batch_size', '0'), ('--save_every', '0'),
                                        ('--max_iter', '-1'), ('--max_iter', '0'),
                                        ('--eval_every', '-5'), ('--batch_size', '-2')])
def test_bad_flag_is_an_argparse_error(flag, value, capsys):
    with pytest.raises(SystemExit) as e:
        train.main(TINY + [flag, value])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert 'Traceback' not in err
    assert f'error: argument {flag}:' in err and value in err.splitlines()[-1]


def test_eval_every_zero_is_allowed_and_lr_steps_beyond_max_iter_warn():
    with pytest.warns(RuntimeWarning, match='--lr_steps 500 at or beyond --max_iter 100'):
        c = parse_run_config(['--dataset', 'shapes', '--max_iter', '100',
                              '--lr_steps', '50,500', '--eval_every', '0'])
    assert c.eval_every == 0 and c.val_splits == ()


def test_default_workers_never_exceed_the_available_cpus(monkeypatch):
    monkeypatch.setattr(os, 'sched_getaffinity', lambda pid: {0})
    assert default_workers() == 1
    monkeypatch.setattr(os, 'sched_getaffinity', lambda pid: set(range(64)))
    assert default_workers() == 4


# ----------------------------------------------------------- weight files

def _shapes_state():
    torch.manual_seed(0)
    return build_ssd('train', cfg=shapes, num_classes=6).state_dict()


def test_weight_file_errors_are_one_short_sentence(tmp_path):
    sd = _shapes_state()
    torch.save(sd, tmp_path / 'ok.pth')
    data = (tmp_path / 'ok.pth').read_bytes()
    (tmp_path / 'cut.pth').write_bytes(data[:len(data) // 2])
    (tmp_path / 'empty.pth').write_bytes(b'')
    (tmp_path / 'text.pth').write_bytes(b'this is not a weight file\n' * 10)

    class Code:
        def __reduce__(self):
            return (os.system, ('echo never',))
    torch.save({'model': Code()}, tmp_path / 'code.pth')
    expect = {'cut.pth': 'truncated or corrupted', 'empty.pth': 'empty or truncated',
              'text.pth': 'not a PyTorch weight file',
              'code.pth': 'refused because loading it could run code'}
    for name, words in expect.items():
        with pytest.raises(CheckpointError) as e:
            read_weights(tmp_path / name)
        msg = str(e.value)
        assert msg.startswith(str(tmp_path / name) + ': ') and words in msg, msg
        assert 'weights_only' not in msg and '\n' not in msg and len(msg) < 200 + len(str(tmp_path))


def test_weights_with_nan_name_the_first_bad_tensor(tmp_path):
    sd = _shapes_state()
    sd['conf.1.bias'][2] = float('nan')
    sd['conf.3.weight'][0, 0, 0, 0] = float('inf')   # a later tensor
    torch.save({'model': sd, 'iteration': 3}, tmp_path / 'nan.pth')
    with pytest.raises(CheckpointError, match=r'nan.pth: tensor conf.1.bias holds 1 NaN/Inf'):
        read_weights(tmp_path / 'nan.pth')


def test_ssd512_weights_as_300_suggest_the_size(tmp_path):
    torch.save(build_ssd('train', 512, 21).state_dict(), tmp_path / 'w512.pth')
    with pytest.raises(CheckpointError, match=r'w512.pth: these are SSD512 weights, not '
                                              r'SSD300: pass --size 512$'):
        build_from_weights(tmp_path / 'w512.pth', size=300)
    with pytest.raises(CheckpointError, match='pass --size 512$'):
        load_weights(build_ssd('train', 300, 21), tmp_path / 'w512.pth')
    torch.save(build_ssd('train', 300, 21).state_dict(), tmp_path / 'w300.pth')
    with pytest.raises(CheckpointError, match='SSD300 weights, not SSD512: pass --size 300$'):
        build_from_weights(tmp_path / 'w300.pth', size=512)


# ------------------------------------------------------ disk and folders

@contextlib.contextmanager
def small_tmpfs(path, size='3m'):
    """A tmpfs of ``size`` mounted on ``path``; skips the test where the
    machine does not allow it (not root, no mount)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip('mounting a small tmpfs needs root')
    p = subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', str(path)],
                       capture_output=True, text=True)
    if p.returncode:
        pytest.skip(f'cannot mount a tmpfs here: {p.stderr.strip()}')
    try:
        yield path
    finally:
        subprocess.run(['umount', '-l', str(path)], capture_output=True)


def test_full_disk_is_one_line_and_keeps_the_previous_file(tmp_path):
    with small_tmpfs(tmp_path / 'small', '1m') as folder:
        small = {'w': torch.arange(1000.)}
        atomic_save(small, folder / 'checkpoint.pth')
        with pytest.raises(SaveError) as e:
            atomic_save({'w': torch.zeros(1_000_000)}, folder / 'checkpoint.pth')
        assert str(e.value) == (f'{folder}: no space left on device while writing '
                                'checkpoint.pth (the previous one is kept)')
        assert torch.equal(load_file(folder / 'checkpoint.pth')['w'], small['w'])
        assert os.listdir(folder) == ['checkpoint.pth']     # no .tmp-*.pth left


def test_unwritable_folder_is_one_line(tmp_path):
    (tmp_path / 'file').write_text('x')
    with pytest.raises(SaveError, match='file: .*while writing checkpoint.pth'):
        atomic_save({'w': torch.ones(2)}, tmp_path / 'file' / 'checkpoint.pth')


def test_temporary_file_of_a_killed_save_is_removed(tmp_path):
    (tmp_path / '.tmp-abc123.pth').write_bytes(b'half a checkpoint')
    (tmp_path / 'keep.pth').write_bytes(b'x')
    assert remove_stale_temp(tmp_path) == ['.tmp-abc123.pth']
    assert sorted(os.listdir(tmp_path)) == ['keep.pth']


# ------------------------------------------- a failing run saves first

def _truncated_jpeg(path):
    import cv2
    import numpy as np
    img = (np.arange(64 * 64 * 3) % 251).astype(np.uint8).reshape(64, 64, 3)
    data = cv2.imencode('.jpg', img)[1].tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[:len(data) * 2 // 3])
    return path


def _first_new_index(at, num=12, batch=2):
    """A training index first used at iteration ``at`` (TINY's order)."""
    from data.loader import IterationBatchSampler
    s = IterationBatchSampler(num, batch, 0, 0, at + 1)
    before = {i for it in range(at) for i, _ in s.batch(it)}
    return next(i for i, _ in s.batch(at) if i not in before)


def _bad_files(monkeypatch, tmp_path, *iterations):
    """Training images read from truncated JPEG files, first needed at
    ``iterations``; returns {index: path}."""
    from data.base import read_image
    from data.shapes import ShapesDetection
    bad = {_first_new_index(at): _truncated_jpeg(tmp_path / 'images' / f'{at:06d}.jpg')
           for at in iterations}
    original = ShapesDetection.pull_image

    def pull_image(self, index):
        if self.image_set == 'train' and index in bad:
            return read_image(str(bad[index]))
        return original(self, index)
    monkeypatch.setattr(ShapesDetection, 'pull_image', pull_image)
    return bad


@pytest.mark.parametrize('workers', [0, 1])
def test_bad_sample_stops_with_one_line_after_saving(tmp_path, monkeypatch, capfd, workers):
    bad = _bad_files(monkeypatch, tmp_path, 4)
    out = tmp_path / 'out'
    rc = run(out, '--train_images', 12, '--max_iter', 8, '--save_every', 100,
             '--num_workers', workers)
    err = capfd.readouterr().err
    assert rc == 1
    line = one_error_line(err)
    path = str(next(iter(bad.values())))
    assert line.startswith(f'train.py: error: {path}: truncated JPEG'), line
    assert 'saved at iteration 4' in line and 'Caught' not in err
    assert 'Original Traceback' not in err
    assert load_file(out / 'checkpoint.pth')['iteration'] == 4
    # --resume continues from there (and stops at the same sample again)
    assert run(out, '--train_images', 12, '--max_iter', 8, '--save_every', 100,
               '--resume', 'auto') == 1
    assert 'iterations 4..8' in capfd.readouterr().err


def test_skip_bad_names_each_sample_once_and_finishes(tmp_path, monkeypatch, capfd):
    from data.loader import IterationBatchSampler
    bad = _bad_files(monkeypatch, tmp_path, 1, 4)
    out = tmp_path / 'out'
    assert run(out, '--train_images', 12, '--max_iter', 10, '--save_every', 100,
               '--num_workers', 1, '--skip_bad') == 0
    err = capfd.readouterr().err
    assert 'Traceback' not in err
    assert err.count('skipping bad sample') == 2
    for path in bad.values():
        assert err.count(f'{path}: truncated JPEG') == 1
    s = IterationBatchSampler(12, 2, 0, 0, 10)
    times = sum(i in bad for it in range(10) for i, _ in s.batch(it))
    assert times > 2
    assert f'--skip_bad: skipped {times} times 2 bad samples:' in err, err[-1500:]
    assert load_file(out / 'checkpoint.pth')['iteration'] == 10
    # a cap
    assert run(tmp_path / 'capped', '--train_images', 12, '--max_iter', 6,
               '--save_every', 100, '--skip_bad', '--max_bad', 1) == 1
    line = one_error_line(capfd.readouterr().err)
    assert 'more than --max_bad 1 bad samples' in line and 'saved at iteration 4' in line


def test_nan_stop_and_evaluation_error_save_first(tmp_path, monkeypatch, capfd):
    from utils.engine import trainer
    calls = []
    real = trainer.forward_backward

    def nan_at_3(*a, **kw):
        calls.append(1)
        loss_l, loss_c = real(*a, **kw)
        return (loss_l * float('nan'), loss_c) if len(calls) == 4 else (loss_l, loss_c)
    monkeypatch.setattr(trainer, 'forward_backward', nan_at_3)
    assert run(tmp_path / 'nan', '--max_iter', 6, '--save_every', 100) == 1
    line = one_error_line(capfd.readouterr().err)
    assert 'iteration 3: non-finite loss' in line and 'saved at iteration 3' in line
    assert load_file(tmp_path / 'nan' / 'checkpoint.pth')['iteration'] == 3
    monkeypatch.setattr(trainer, 'forward_backward', real)

    import utils.evaluation.evaluate as ev

    def broken(*a, **kw):
        raise ValueError('val split: evaluation failed')
    monkeypatch.setattr(ev, 'evaluate_model', broken)
    assert run(tmp_path / 'ev', '--max_iter', 6, '--save_every', 100, '--eval_every', 2,
               '--val_images', 4) == 1
    line = one_error_line(capfd.readouterr().err)
    assert 'evaluation failed [' in line and 'saved at iteration 2' in line
    assert load_file(tmp_path / 'ev' / 'checkpoint.pth')['iteration'] == 2


def test_disk_full_during_training_keeps_the_last_checkpoint(tmp_path, capfd):
    first = tmp_path / 'first'
    assert run(first, '--max_iter', 2, '--save_every', 2) == 0
    snap, ckpt = first / f"ssd{shapes['min_dim']}_shapes_2.pth", first / 'checkpoint.pth'
    size = snap.stat().st_size + ckpt.stat().st_size + snap.stat().st_size // 2
    with small_tmpfs(tmp_path / 'small', f'{size // 1024 + 64}k') as folder:
        for f in (snap, ckpt):
            (folder / f.name).write_bytes(f.read_bytes())
        (folder / '.tmp-killed.pth').write_bytes(b'\0' * 1000)   # a killed save's
        capfd.readouterr()
        assert run(folder, '--max_iter', 4, '--save_every', 2, '--resume', 'auto') == 1
        line = one_error_line(capfd.readouterr().err)
        assert line.startswith(f'train.py: error: {folder}: no space left on device while '
                               'writing '), line
        kept = torch.load(folder / 'checkpoint.pth', weights_only=True)
        assert kept['iteration'] == 2
        assert not [n for n in os.listdir(folder) if n.startswith('.tmp-')]


# ------------------------------------------------- one run per save folder

def test_second_run_into_a_busy_folder_refuses(tmp_path, capfd):
    from utils.training.lock import SaveFolderLock
    out = tmp_path / 'busy'
    with SaveFolderLock(out):
        assert run(out, '--max_iter', 1) == 1
        line = one_error_line(capfd.readouterr().err)
    assert f'{out} is in use by another training run (pid {os.getpid()} on ' \
           f'{socket.gethostname()}' in line
    assert not (out / 'metrics.csv').exists()
    # a lock left by a dead process is taken over with a warning
    p = subprocess.run([sys.executable, '-c', 'import os, sys; '
                        'from utils.training.lock import SaveFolderLock; '
                        'SaveFolderLock(sys.argv[1]).acquire(); os._exit(9)', str(out)],
                       cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), timeout=60)
    assert p.returncode == 9 and (out / 'train.lock').exists()
    with pytest.warns(RuntimeWarning, match='taking over the lock of a run that ended'):
        assert run(out, '--max_iter', 1) == 0
    assert not (out / 'train.lock').exists()


def test_resume_of_ssd512_checkpoint_as_300_suggests_the_size(tmp_path, capfd):
    from data.shapes_io import write_dataset
    root = write_dataset(str(tmp_path / 'data'), 'voc', num=4, seed=0, val_fraction=0.5)
    net = build_ssd('train', 512, 6)
    torch.save({'model': net.state_dict(), 'iteration': 3, 'optimizer': {}},
               tmp_path / 'ckpt512.pth')
    assert train.main(['--dataset', 'custom', '--dataset_root', root, '--basenet', 'none',
                       '--resume', str(tmp_path / 'ckpt512.pth'), '--max_iter', '5',
                       '--eval_every', '0', '--quiet', '--num_workers', '0',
                       '--save_folder', str(tmp_path / 'out')]) == 1
    line = one_error_line(capfd.readouterr().err)
    assert line.endswith('ckpt512.pth: these are SSD512 weights, not SSD300: pass --size 512')


class _BadImages(torch.utils.data.Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, i):
        from data.base import DatasetError
        raise DatasetError(f'/data/{i}.jpg: truncated JPEG (no end-of-image marker)')


def test_any_dataloader_worker_error_is_its_own_one_line():
    """The exit wrapper's one line for an error torch re-raised from a worker
    (evaluation's loader) is the worker's message."""
    from utils.engine.cli import one_line
    with pytest.raises(ValueError) as e:
        list(torch.utils.data.DataLoader(_BadImages(), num_workers=1))
    assert 'Original Traceback' in str(e.value)
    assert one_line(e.value) == '/data/0.jpg: truncated JPEG (no end-of-image marker)'


def test_lock_of_a_killed_run_is_free_while_its_forked_workers_live(tmp_path):
    """A run killed while its DataLoader workers (forked) still live: the
    lock is taken over at once, not after the workers exit."""
    from utils.training.lock import SaveFolderLock
    code = ('import os, sys\n'
            'from utils.training.lock import SaveFolderLock\n'
            'SaveFolderLock(sys.argv[1]).acquire()\n'
            'if os.fork() == 0:\n'
            '    sys.stdin.read()\n'          # the "worker" lives until stdin closes
            '    os._exit(0)\n'
            'os._exit(9)\n')
    p = subprocess.Popen([sys.executable, '-c', code, str(tmp_path)], cwd=ROOT,
                         env=dict(os.environ, PYTHONPATH=ROOT), stdin=subprocess.PIPE)
    try:
        assert p.wait(timeout=60) == 9
        with pytest.warns(RuntimeWarning, match='taking over the lock'):
            lock = SaveFolderLock(tmp_path).acquire()
        lock.release()
    finally:
        p.stdin.close()


def test_nan_skip_leaves_batchnorm_statistics_untouched(tmp_path, monkeypatch):
    """A NaN image at iteration 2 on a BatchNorm network: its forward pass
    folds NaN into the running statistics before the loss is seen; --nan_policy
    skip drops the update and puts the statistics back, so they stay finite
    and count only the applied steps."""
    from utils.engine import trainer
    calls = []
    real = trainer.forward_backward

    def nan_image_at_2(model, criterion, images, targets, *a, **kw):
        calls.append(1)
        if len(calls) == 3:
            images = images * float('nan')
        return real(model, criterion, images, targets, *a, **kw)
    monkeypatch.setattr(trainer, 'forward_backward', nan_image_at_2)
    assert run(tmp_path, '--backbone', 'mobilenet_v3_large', '--max_iter', 4,
               '--save_every', 100, '--nan_policy', 'skip') == 0
    state = load_file(tmp_path / 'checkpoint.pth')['model']
    stats = {k: v for k, v in state.items() if 'running_' in k}
    assert stats and all(bool(torch.isfinite(v).all()) for v in stats.values())
    tracked = {int(v) for k, v in state.items() if k.endswith('num_batches_tracked')}
    assert tracked == {3}                        # 4 steps, one skipped
