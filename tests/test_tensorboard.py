"""train.py --tensorboard: the loss scalars, lr, img/s and the validation
metric as TensorBoard events, read back with tensorboard's event reader."""
import csv

import pytest

import train

ea = pytest.importorskip('tensorboard.backend.event_processing.event_accumulator')

TINY = ['--dataset', 'shapes', '--batch_size', '1', '--train_images', '2', '--num_workers', '0',
        '--quiet', '--log_every', '2', '--max_iter', '4', '--save_every', '4']


def scalars(folder):
    acc = ea.EventAccumulator(str(folder))
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()['scalars']}


def test_tensorboard_dir_holds_losses_and_metric(tmp_path):
    tb = tmp_path / 'tb'
    assert train.main(TINY + ['--save_folder', str(tmp_path), '--tensorboard', str(tb),
                              '--eval_every', '4', '--val_images', '2',
                              '--eval_batch_size', '2']) == 0
    s = scalars(tb)
    assert {'train/loss_l', 'train/loss_c', 'train/loss', 'train/lr', 'train/img_per_s',
            'val/voc07_map'} <= set(s)
    with open(tmp_path / 'metrics.csv', newline='') as f:
        rows = list(csv.DictReader(f))
    losses = [r for r in rows if r['loss']]
    for tag in ('loss_l', 'loss_c', 'loss', 'lr'):
        assert [st for st, _ in s[f'train/{tag}']] == [2, 4]
        # metrics.csv: losses with 5 decimals, lr with 3 significant digits
        tol = dict(rel=5e-3) if tag == 'lr' else dict(abs=1e-5)
        assert [v for _, v in s[f'train/{tag}']] == \
            pytest.approx([float(r[tag]) for r in losses], **tol)
    (ev,) = [r for r in rows if r['voc07_map']]
    assert s['val/voc07_map'] == [(4, pytest.approx(float(ev['voc07_map']), abs=1e-4))]


def test_tensorboard_true_uses_save_folder(tmp_path):
    assert train.main(TINY + ['--save_folder', str(tmp_path), '--tensorboard', 'True',
                              '--eval_every', '0']) == 0
    s = scalars(tmp_path / 'tensorboard')
    assert [st for st, _ in s['train/loss']] == [2, 4]
    assert 'val/voc07_map' not in s


def test_no_tensorboard_by_default(tmp_path):
    assert train.main(TINY + ['--save_folder', str(tmp_path), '--eval_every', '0']) == 0
    assert not (tmp_path / 'tensorboard').exists()
