"""train.py --eval_metric: the metric evaluation during training computes,
logs (metrics.csv, TensorBoard) and keeps the best model by; its default per
dataset."""
import csv

import pytest
import torch

import train
import utils.evaluation.evaluate as evaluate
from data.config import shapes
from utils.checkpoint import load_file

TINY = ['--dataset', 'shapes', '--batch_size', '1', '--train_images', '2', '--num_workers', '0',
        '--quiet', '--log_every', '2', '--max_iter', '6', '--eval_every', '2',
        '--save_every', '2', '--val_images', '2']
SIZE = shapes['min_dim']


def scripted(monkeypatch, values):
    """evaluate_model answering ``values`` in turn for whichever metric is
    asked; returns the list of metric tuples it was asked for."""
    asked, it = [], iter(values)

    def fake(net, dataset, metrics=('voc07',), **kw):
        asked.append(tuple(metrics))
        v = next(it)
        res = {'images': len(dataset), 'detections': 0}
        for m in metrics:
            res[m] = {'AP': v, 'AP50': v} if m == 'coco' else {'map': v, 'ap': {}}
        return res
    monkeypatch.setattr(evaluate, 'evaluate_model', fake)
    return asked


@pytest.mark.parametrize('metric,column', [('coco', 'coco_ap'), ('voc12', 'voc12_map')])
def test_best_model_by_the_chosen_metric(tmp_path, monkeypatch, metric, column):
    asked = scripted(monkeypatch, [0.2, 0.5, 0.3])
    assert train.main(TINY + ['--save_folder', str(tmp_path), '--eval_metric', metric,
                              '--tensorboard', str(tmp_path / 'tb')]) == 0
    assert asked == [(metric,)] * 3
    with open(tmp_path / 'metrics.csv', newline='') as f:
        evals = [r for r in csv.DictReader(f) if r[column]]
    assert [(int(r['iteration']), float(r[column])) for r in evals] == \
        [(2, 0.2), (4, 0.5), (6, 0.3)]
    assert all(r['voc07_map'] == '' for r in evals)
    # the best weights are those of iteration 4, the best by the chosen metric
    best = load_file(tmp_path / f'ssd{SIZE}_shapes_best.pth')
    at4 = load_file(tmp_path / f'ssd{SIZE}_shapes_4.pth')
    at6 = load_file(tmp_path / f'ssd{SIZE}_shapes_6.pth')
    assert all(torch.equal(best[k], at4[k]) for k in at4)
    assert not all(torch.equal(best[k], at6[k]) for k in at6)
    assert load_file(tmp_path / 'checkpoint.pth')['best_map'] == pytest.approx(0.5)
    ea = pytest.importorskip('tensorboard.backend.event_processing.event_accumulator')
    acc = ea.EventAccumulator(str(tmp_path / 'tb'))
    acc.Reload()
    assert [(e.step, round(e.value, 4)) for e in acc.Scalars(f'val/{column}')] == \
        [(2, 0.2), (4, 0.5), (6, 0.3)]


def test_default_metric_per_dataset(tmp_path):
    from utils.engine.run_config import parse_run_config
    got = {d: parse_run_config(['--dataset', d, '--dataset_root', str(tmp_path)]).eval_metric
           for d in ('VOC', 'COCO', 'custom', 'shapes')}
    assert got == {'VOC': 'voc07', 'COCO': 'coco', 'custom': 'voc07', 'shapes': 'voc07'}
    assert parse_run_config(['--dataset', 'COCO', '--eval_metric', 'voc12']).eval_metric == 'voc12'
