"""train.py --mlflow: the TensorBoard scalars and the settings in a local
MLflow store (no server), read back with MLflow's own client."""
import json
import os

import pytest

from utils.training import logger

from _scripts import load_script

mlflow = pytest.importorskip('mlflow')
train = load_script('train')


def test_a_tiny_run_logs_params_and_metrics(tmp_path):
    folder = tmp_path / 'run'
    assert train.main(['--dataset', 'shapes', '--batch_size', '4', '--train_images', '8',
                       '--val_images', '4', '--num_workers', '0', '--quiet', '--max_iter', '4',
                       '--log_every', '2', '--eval_every', '4', '--save_folder', str(folder),
                       '--mlflow']) == 0
    assert (folder / 'mlruns').is_dir()
    os.environ.setdefault('MLFLOW_ALLOW_FILE_STORE', 'true')
    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri='file:' + str(folder / 'mlruns'))
    exp = client.get_experiment_by_name('ssd')
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == 'FINISHED' and run.info.run_name == 'run'
    p = run.data.params
    with open(folder / 'config.json') as f:
        settings = json.load(f)['settings']
    assert set(p) == set(settings)
    assert (p['max_iter'], p['dataset'], p['optimizer'], p['lr_steps']) == \
        ('4', 'shapes', 'adamw', '[]')
    assert run.data.tags['ssd.torch'] == __import__('torch').__version__
    hist = {k: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, k)]
            for k in ('train/loss_l', 'train/loss_c', 'train/loss', 'train/lr',
                      'train/img_per_s', 'val/voc07_map')}
    assert [s for s, _ in hist['train/loss']] == [2, 4]          # one per metrics.csv row
    for (s, total), (_, l), (_, c) in zip(hist['train/loss'], hist['train/loss_l'],
                                          hist['train/loss_c']):
        assert total == pytest.approx(l + c)
    assert [s for s, _ in hist['val/voc07_map']] == [4]
    assert 0.0 <= hist['val/voc07_map'][0][1] <= 1.0


def test_uri_rule(tmp_path):
    assert logger.mlflow_uri('True', 'runs/x') == 'file:' + os.path.abspath('runs/x/mlruns')
    assert logger.mlflow_uri('false', 'runs/x') is None
    assert logger.mlflow_uri('sqlite:///m.db', 'r') == 'sqlite:///m.db'
    assert logger.mlflow_uri(str(tmp_path), 'r') == 'file:' + str(tmp_path)


def test_without_mlflow_it_is_one_line(monkeypatch, tmp_path, capsys):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec',
                        lambda name, *a: None if name == 'mlflow' else real(name, *a))
    assert train.main(['--dataset', 'shapes', '--mlflow', '--save_folder', str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ['train.py: error: --mlflow needs the mlflow package: pip install mlflow']
