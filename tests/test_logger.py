"""TrainLogger: metrics.csv rows (means over the log window), truncation on
resume, evaluation rows per metric, TensorBoard scalars read back with
tensorboard's event reader, the loss plot; VisdomPlotter never raises."""
import math
import warnings

import pytest

from utils.training.logger import (TrainLogger, VisdomPlotter, _truncate_csv, plot_loss_curves,
                                   read_metrics)


def test_csv_rows_are_window_means(tmp_path):
    log = TrainLogger(tmp_path, 0, 4, log_every=2, progress=False)
    log.step(0, 1.0, 3.0, 1e-3, 8)
    log.step(1, 2.0, 5.0, 1e-3, 8)
    log.step(2, 0.5, 1.0, 1e-4, 8)
    log.evaluation(3, 0.25)
    log.step(3, float('nan'), 1.0, 1e-4, 8, skipped=1)
    log.close()
    m = read_metrics(tmp_path / 'metrics.csv')
    assert m['iteration'] == [2.0, 4.0]
    assert m['loss_l'] == [1.5, 0.5] and m['loss_c'] == [4.0, 1.0]
    assert m['loss'] == [5.5, 1.5]
    assert m['eval_iteration'] == [3.0] and m['voc07_map'] == [0.25]
    text = (tmp_path / 'metrics.csv').read_text().splitlines()
    assert text[0] == ('iteration,loss_l,loss_c,loss,lr,img_per_s,train_time_s,skipped,'
                       'voc07_map,voc12_map,coco_ap')
    assert text[3].split(',')[-4:] == ['1', '', '', '']


def test_evaluation_rows_per_metric(tmp_path):
    log = TrainLogger(tmp_path, 0, 4, log_every=2, progress=False)
    log.evaluation(2, 0.125, 'coco')
    log.evaluation(4, 0.5, 'voc12')
    log.close()
    m = read_metrics(tmp_path / 'metrics.csv')
    assert m['eval_iteration'] == [2.0, 4.0]
    assert m['coco_ap'][0] == 0.125 and math.isnan(m['coco_ap'][1])
    assert math.isnan(m['voc12_map'][0]) and m['voc12_map'][1] == 0.5
    assert all(math.isnan(v) for v in m['voc07_map'])
    text = (tmp_path / 'metrics.csv').read_text().splitlines()
    assert text[1].split(',')[-3:] == ['', '', '0.1250']


def test_window_of_skipped_steps_logs_nan(tmp_path):
    log = TrainLogger(tmp_path, 0, 1, log_every=1, progress=False)
    log.step(0, float('nan'), float('nan'), 1e-3, 4, skipped=1)
    log.close()
    assert math.isnan(read_metrics(tmp_path / 'metrics.csv')['loss'][0])


def test_resume_truncates_later_rows(tmp_path):
    log = TrainLogger(tmp_path, 0, 6, log_every=2, progress=False)
    for i in range(6):
        log.step(i, 1.0, 1.0, 1e-3, 2)
    log.close()
    assert _truncate_csv(tmp_path / 'metrics.csv', 4) >= 0.0
    assert read_metrics(tmp_path / 'metrics.csv')['iteration'] == [2.0, 4.0]
    log = TrainLogger(tmp_path, 4, 6, log_every=2, progress=False)
    log.step(4, 2.0, 2.0, 1e-3, 2)
    log.step(5, 2.0, 2.0, 1e-3, 2)
    log.close()
    m = read_metrics(tmp_path / 'metrics.csv')
    assert m['iteration'] == [2.0, 4.0, 6.0] and m['loss'] == [2.0, 2.0, 4.0]
    assert m['train_time_s'] == sorted(m['train_time_s'])


def test_loss_plot_png(tmp_path):
    log = TrainLogger(tmp_path, 0, 3, log_every=1, progress=False)
    for i in range(3):
        log.step(i, 1.0 / (i + 1), 2.0 / (i + 1), 1e-3, 2)
    log.close()
    png = plot_loss_curves(tmp_path / 'metrics.csv', tmp_path / 'loss.png')
    with open(png, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'


def test_disabled_logger_writes_nothing(tmp_path):
    log = TrainLogger(tmp_path, 0, 2, enabled=False)
    log.step(0, 1.0, 1.0, 1e-3, 2)
    log.evaluation(1, 0.5)
    log.close()
    assert not (tmp_path / 'metrics.csv').exists()


def test_visdom_unreachable_warns_once(monkeypatch):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        v = VisdomPlotter(port=1, timeout=0.5)      # nothing listens on port 1
        v.losses(1, 1.0, 2.0)
        v.map(1, 0.5)
    assert not v.enabled
    assert len([x for x in w if 'visdom' in str(x.message)]) == 1


def scalars(folder):
    """{tag: [(step, value)]} from the event files in ``folder``."""
    ea = pytest.importorskip('tensorboard.backend.event_processing.event_accumulator')
    acc = ea.EventAccumulator(str(folder))
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()['scalars']}


def test_tensorboard_scalars(tmp_path):
    log = TrainLogger(tmp_path, 0, 4, log_every=2, progress=False, tensorboard=tmp_path / 'tb')
    for i in range(4):
        log.step(i, 1.0 + i, 2.0, 0.5 if i < 2 else 0.25, 8)
    log.evaluation(4, 0.75, 'coco')
    log.close()
    s = scalars(tmp_path / 'tb')
    assert set(s) == {'train/loss_l', 'train/loss_c', 'train/loss', 'train/lr',
                      'train/img_per_s', 'val/coco_ap'}
    assert s['train/loss_l'] == [(2, 1.5), (4, 3.5)]
    assert s['train/loss_c'] == [(2, 2.0), (4, 2.0)]
    assert s['train/loss'] == [(2, 3.5), (4, 5.5)]
    assert s['train/lr'] == [(2, 0.5), (4, 0.25)]
    assert [st for st, v in s['train/img_per_s']] == [2, 4]
    assert all(v > 0 for _, v in s['train/img_per_s'])
    assert s['val/coco_ap'] == [(4, 0.75)]


def test_tensorboard_resume_hides_later_events(tmp_path):
    log = TrainLogger(tmp_path, 0, 4, log_every=1, progress=False, tensorboard=tmp_path / 'tb')
    for i in range(4):
        log.step(i, 1.0, 1.0, 1e-3, 2)
    log.close()
    log = TrainLogger(tmp_path, 2, 4, log_every=1, progress=False, tensorboard=tmp_path / 'tb')
    for i in range(2, 4):
        log.step(i, 3.0, 3.0, 1e-3, 2)
    log.close()
    assert scalars(tmp_path / 'tb')['train/loss'] == [(1, 2.0), (2, 2.0), (3, 6.0), (4, 6.0)]
