"""train.py on shapes: a few CPU iterations, the schedule, the sampler, the
NaN policy and the basenet message."""
import argparse
import csv
import math

import numpy as np
import pytest
import torch

import train
import utils.engine.trainer as trainer
from data.config import coco, shapes, voc, voc512
from utils.checkpoint import CheckpointError, load_file
from data.loader import IterationBatchSampler
from data.config import schedule_defaults
from utils.training.schedule import lr_at
from utils.training.state import get_rng_state, set_rng_state
from utils.training.step import NonFiniteLoss, NonFinitePolicy

SNAP = f"ssd{shapes['min_dim']}_shapes_2.pth"   # ssd.pytorch's snapshot name
BEST = f"ssd{shapes['min_dim']}_shapes_best.pth"
TINY = ['--dataset', 'shapes', '--batch_size', '4', '--train_images', '12',
        '--num_workers', '0', '--quiet', '--log_every', '1']


def run(tmp_path, *extra):
    return train.main(TINY + ['--save_folder', str(tmp_path)] + [str(e) for e in extra])


def rows(path):
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def test_few_iterations_on_shapes(tmp_path):
    assert run(tmp_path, '--max_iter', 3, '--save_every', 2, '--eval_every', 0) == 0
    for name in ('checkpoint.pth', SNAP, 'shapes.pth', 'metrics.csv',
                 'loss.png'):
        assert (tmp_path / name).is_file(), name
    ckpt = load_file(tmp_path / 'checkpoint.pth')
    assert ckpt['iteration'] == 3
    assert set(ckpt) >= {'model', 'optimizer', 'scheduler', 'scaler', 'rng', 'args'}
    assert ckpt['args']['max_iter'] == 3
    assert ckpt['scheduler']['lr_steps'] == list(shapes['lr_steps'])
    assert set(ckpt['rng']) == {'python', 'numpy', 'torch', 'cuda'}
    # the weights-only snapshot is a plain state dict, loadable as in ssd.pytorch
    snap = load_file(tmp_path / SNAP)
    assert 'vgg.0.weight' in snap and 'L2Norm.weight' in snap
    r = rows(tmp_path / 'metrics.csv')
    assert [int(x['iteration']) for x in r] == [1, 2, 3]
    assert all(math.isfinite(float(x['loss'])) and float(x['loss']) > 0 for x in r)
    assert all(abs(float(x['loss_l']) + float(x['loss_c']) - float(x['loss'])) < 1e-4
               for x in r)


def test_weights_only_resume_with_start_iter(tmp_path):
    assert run(tmp_path, '--max_iter', 2, '--save_every', 2, '--eval_every', 0) == 0
    out = tmp_path / 'b'
    assert run(out, '--max_iter', 3, '--eval_every', 0, '--save_every', 5,
               '--resume', tmp_path / SNAP, '--start_iter', 2) == 0
    assert load_file(out / 'checkpoint.pth')['iteration'] == 3
    assert [int(x['iteration']) for x in rows(out / 'metrics.csv')] == [3]


def test_evaluation_during_training_keeps_best(tmp_path):
    assert run(tmp_path, '--max_iter', 2, '--save_every', 10, '--eval_every', 1,
               '--val_images', 3, '--eval_batch_size', 3) == 0
    maps = [x for x in rows(tmp_path / 'metrics.csv') if x['voc07_map']]
    assert [int(x['iteration']) for x in maps] == [1, 2]
    assert all(0.0 <= float(x['voc07_map']) <= 1.0 for x in maps)
    assert (tmp_path / BEST).is_file()
    best = max(float(x['voc07_map']) for x in maps)
    assert load_file(tmp_path / 'checkpoint.pth')['best_map'] == pytest.approx(best, abs=1e-4)


def test_paper_schedules():
    v = schedule_defaults(voc)
    assert (v['batch_size'], v['lr'], v['momentum'], v['weight_decay'], v['gamma']) == \
        (32, 1e-3, 0.9, 5e-4, 0.1)
    assert (v['max_iter'], v['lr_steps']) == (120000, (80000, 100000))
    c = schedule_defaults(coco)
    assert (c['max_iter'], c['lr_steps']) == (400000, (280000, 360000))
    assert schedule_defaults(voc512)['lr_steps'] == (80000, 100000)


def test_lr_schedule_values():
    assert lr_at(0, 1e-3, (80000, 100000)) == 1e-3
    assert lr_at(79999, 1e-3, (80000, 100000)) == 1e-3
    assert lr_at(80000, 1e-3, (80000, 100000)) == pytest.approx(1e-4)
    assert lr_at(100000, 1e-3, (80000, 100000)) == pytest.approx(1e-5)
    assert [lr_at(i, 1.0, (), warmup=4) for i in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]


def test_cosine_lr_schedule_values():
    # warm-up 2, then (1 + cos(pi * (it - 2) / 8)) / 2 down to 0 at iteration 10
    lrs = [lr_at(i, 1.0, (5,), 0.1, 2, 'cosine', 10) for i in (0, 1, 2, 4, 6, 9, 10, 12)]
    assert lrs == pytest.approx([0.5, 1.0, 1.0, 0.8535533905932737, 0.5, 0.03806023374435663,
                                 0.0, 0.0], abs=1e-12)
    with pytest.raises(ValueError, match='max_iter'):
        lr_at(3, 1.0, (), schedule='cosine')
    with pytest.raises(ValueError, match='step or cosine'):
        lr_at(3, 1.0, (), schedule='poly')


def test_lr_schedule_flag_resolution():
    from utils.engine.run_config import parse_run_config
    assert parse_run_config(['--dataset', 'VOC']).lr_schedule == 'step'      # the paper's
    assert parse_run_config(['--dataset', 'VOC', '--lr_schedule', 'cosine']).lr_schedule == 'cosine'
    assert parse_run_config(['--dataset', 'shapes']).lr_schedule == shapes.get('lr_schedule', 'step')


def test_sampler_cycles_epochs_and_restarts_anywhere():
    full = IterationBatchSampler(10, 4, seed=3, start_iter=0, max_iter=7)
    batches = list(full)
    assert len(batches) == 7 and all(len(b) == 4 for b in batches)   # past one epoch
    epoch0 = [i for b in batches[:2] for i, _ in b]
    assert len(set(epoch0)) == 8                                      # no repeats in an epoch
    assert [i for i, _ in batches[2]] != [i for i, _ in batches[0]]   # a new permutation
    late = list(IterationBatchSampler(10, 4, seed=3, start_iter=5, max_iter=7))
    assert late == batches[5:]                                        # restart = same data
    other = list(IterationBatchSampler(10, 4, seed=4, start_iter=0, max_iter=7))
    assert other != batches


def test_sampler_shards_between_ranks():
    r0 = list(IterationBatchSampler(16, 4, seed=0, max_iter=2, rank=0, world_size=2))
    r1 = list(IterationBatchSampler(16, 4, seed=0, max_iter=2, rank=1, world_size=2))
    a = {i for b in r0 for i, _ in b}
    b = {i for b in r1 for i, _ in b}
    assert len(a) == 8 and len(b) == 8 and not a & b


def test_rng_state_round_trip():
    state = get_rng_state()
    x = (np.random.rand(), torch.rand(1).item(), __import__('random').random())
    set_rng_state(state)
    assert (np.random.rand(), torch.rand(1).item(), __import__('random').random()) == x


def test_nan_policy_messages():
    p = NonFinitePolicy('stop')
    assert p.check(0, 1.5, 2.25, False)
    with pytest.raises(NonFiniteLoss, match=r'iteration 1: non-finite loss \(loss_l=nan.*'
                       r'last finite losses at iteration 0: loss_l=1.5000, loss_c=2.2500'):
        p.check(1, float('nan'), 2.0, True)
    s = NonFinitePolicy('skip', max_consecutive=2)
    assert s.check(0, 1.0, 1.0, False)
    assert not s.check(1, float('inf'), 1.0, True)
    assert not s.check(2, float('inf'), 1.0, True)
    assert s.skipped == 2
    with pytest.raises(NonFiniteLoss, match='3 in a row'):
        s.check(3, float('nan'), 1.0, True)


def _nan_at(monkeypatch, bad_iters):
    real = trainer.forward_backward
    calls = {'n': 0}

    def fake(*a, **k):
        loss_l, loss_c = real(*a, **k)
        calls['n'] += 1
        if calls['n'] - 1 in bad_iters:
            loss_l = loss_l * float('nan')
        return loss_l, loss_c
    monkeypatch.setattr(trainer, 'forward_backward', fake)


def test_nan_stops_with_message(tmp_path, monkeypatch, capsys):
    _nan_at(monkeypatch, {2})
    assert run(tmp_path, '--max_iter', 4, '--save_every', 10, '--eval_every', 0) == 1
    err = capsys.readouterr().err
    assert 'iteration 2: non-finite loss' in err
    assert 'last finite losses at iteration 1' in err
    # the run saves first, at the last completed iteration, without the bad update
    assert 'checkpoint.pth saved at iteration 2' in err
    ckpt = load_file(tmp_path / 'checkpoint.pth')
    assert ckpt['iteration'] == 2
    assert all(torch.isfinite(v).all() for v in ckpt['model'].values() if v.is_floating_point())


def test_nan_skip_counts_and_leaves_weights(tmp_path, monkeypatch):
    _nan_at(monkeypatch, {1})
    assert run(tmp_path, '--max_iter', 3, '--save_every', 10, '--eval_every', 0,
               '--nan_policy', 'skip') == 0
    assert load_file(tmp_path / 'checkpoint.pth')['skipped'] == 1
    assert [x['skipped'] for x in rows(tmp_path / 'metrics.csv')] == ['0', '1', '1']


def test_missing_basenet_says_how_to_get_it(tmp_path):
    args = argparse.Namespace(dataset='VOC', basenet='vgg16_reducedfc_missing.pth',
                              save_folder=str(tmp_path))
    from ssd import build_ssd
    net = build_ssd('train', 300, 21)
    with pytest.raises(CheckpointError, match=r'python -m utils.convert_vgg'):
        trainer.load_basenet(net, args)
