"""train.py's config.json (utils/engine/replay.py): written at the start of
every run, replayed by --config with the flags given over it."""
import csv
import json

import pytest
import torch

from utils.engine import replay
from utils.engine.run_config import build_parser, parse_run_config

from _scripts import load_script

train = load_script('train')
TINY = ['--dataset', 'shapes', '--batch_size', '4', '--train_images', '8', '--val_images', '4',
        '--num_workers', '0', '--quiet', '--log_every', '1', '--eval_every', '0']


@pytest.fixture(scope='module')
def recorded(tmp_path_factory):
    """A 3-iteration shapes run; its folder."""
    folder = tmp_path_factory.mktemp('run')
    assert train.main(TINY + ['--max_iter', '3', '--save_folder', str(folder)]) == 0
    return folder


def read(folder):
    with open(folder / 'config.json') as f:
        return json.load(f)


def test_config_json_holds_the_resolved_run(recorded):
    rec = read(recorded)
    assert rec['format'] == replay.FORMAT and rec['version'] == 1
    assert rec['argv'][-2:] == ['--save_folder', str(recorded)]
    s = rec['settings']
    assert set(s) == set(replay.flag_dests(build_parser())) - {'config'}
    # defaults after resolution: the shapes preset's schedule and size
    assert (s['max_iter'], s['size'], s['optimizer'], s['lr_schedule'], s['basenet']) == \
        (3, 160, 'adamw', 'cosine', 'none')
    assert s['cuda'] is False and s['device'] == 'cpu'
    assert rec['model']['min_dim'] == 160 and rec['model']['num_classes'] == 6
    assert 'min_sizes' in rec['model'] and 'aspect_ratios' in rec['model']
    assert rec['schedule']['max_iter'] == 3 and rec['schedule']['name'] == 'cosine'
    assert rec['versions']['torch'] == torch.__version__
    assert rec['git_commit'] is None or len(rec['git_commit']) == 40
    assert isinstance(rec['command'], list) and rec['replayed_from'] is None


def test_replay_elsewhere_takes_the_record_and_the_override(recorded, tmp_path):
    out = tmp_path / 'again'
    assert train.main(['--config', str(recorded / 'config.json'), '--max_iter', '5',
                       '--save_folder', str(out)]) == 0
    a, b = read(recorded)['settings'], read(out)['settings']
    assert {k for k in a if a[k] != b[k]} == {'max_iter', 'save_folder'}
    assert (b['max_iter'], b['resume']) == (5, None)          # from the start
    with open(out / 'metrics.csv', newline='') as f:
        assert [r['iteration'] for r in csv.DictReader(f)] == ['1', '2', '3', '4', '5']
    assert read(out)['replayed_from'] == str((recorded / 'config.json').resolve())


def test_replay_into_its_own_folder_continues_it(tmp_path, capsys):
    assert train.main(TINY + ['--max_iter', '2', '--save_folder', str(tmp_path)]) == 0
    assert train.main(['--config', str(tmp_path / 'config.json'), '--max_iter', '4']) == 0
    assert 'continuing' in capsys.readouterr().err
    assert torch.load(tmp_path / 'checkpoint.pth', weights_only=True)['iteration'] == 4
    with open(tmp_path / 'metrics.csv', newline='') as f:
        assert [r['iteration'] for r in csv.DictReader(f)] == ['1', '2', '3', '4']
    assert read(tmp_path)['settings']['resume'] == str(tmp_path / 'checkpoint.pth')
    elsewhere = parse_run_config(['--config', str(tmp_path / 'config.json'),
                                  '--save_folder', str(tmp_path / 'new')])
    assert (elsewhere.resume, elsewhere.max_iter) == (None, 4)     # from the start


def test_a_changed_default_is_pinned_the_machine_is_not(recorded, tmp_path, monkeypatch):
    rec = read(recorded)
    rec['settings']['lr'] = 0.123            # as if the preset's lr had changed since
    rec['settings']['threads'] = 999         # another machine's
    path = tmp_path / 'config.json'
    path.write_text(json.dumps(rec))
    c = parse_run_config(['--config', str(path), '--save_folder', str(tmp_path / 'x')])
    assert c.lr == 0.123 and c.threads == torch.get_num_threads()
    c = parse_run_config(['--config', str(path), '--lr', '0.5', '--save_folder', str(tmp_path)])
    assert c.lr == 0.5 and c.max_iter == 3


@pytest.mark.parametrize('content, message', [
    ('{"a": 1}', 'not a train.py config.json'),
    ('[1, 2]', 'not a train.py config.json'),
    ('{oops', 'not JSON'),
    (None, 'unknown keys: extra, settings.no_such_flag'),
    ('argv', 'unknown flags: --frobnicate 3'),
    ('missing', 'No such file')])
def test_bad_config_is_one_line(recorded, tmp_path, capsys, content, message):
    path = tmp_path / 'c.json'
    if content is None:
        rec = read(recorded)
        rec['extra'] = 1
        rec['settings']['no_such_flag'] = 2
        content = json.dumps(rec)
    elif content == 'argv':
        rec = read(recorded)
        rec['argv'] += ['--frobnicate', '3']
        content = json.dumps(rec)
    if content != 'missing':
        path.write_text(content)
    assert train.main(['--config', str(path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('train.py: error: --config ') and message in err[0]
