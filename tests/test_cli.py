"""utils.engine.cli: the helpers the four scripts share, checked through the
scripts themselves (train.py, eval.py, test.py, python -m demo.live)."""
import argparse

import pytest
import torch

import demo.live as live
from data.config import eval_splits
from utils.engine import cli, evaluator
from utils.engine.run_config import build_parser, resolve_run_config

from _scripts import load_script





SCRIPTS = {name: load_script(name) for name in ('train', 'eval', 'test')}
SCRIPTS['demo.live'] = live


@pytest.mark.parametrize('text, value', [
    ('True', True), ('yes', True), ('t', True), ('Y', True), ('1', True),
    ('False', False), ('no', False), ('f', False), ('N', False), ('0', False)])
def test_str2bool_values(text, value):
    assert cli.str2bool(text) is value


@pytest.mark.parametrize('argv', [
    ('eval', ['--cleanup', 'Ture']), ('eval', ['--pr_curves', 'nope']),
    ('train', ['--visdom', 'flase']), ('test', ['--cuda', 'maybe']),
    ('demo.live', ['--cuda', 'yess'])])
def test_a_typo_is_an_argparse_error_not_false(argv, capsys):
    """In eval.py a typo used to mean False silently."""
    name, flags = argv
    with pytest.raises(SystemExit) as e:
        SCRIPTS[name].main(flags)
    assert e.value.code == 2
    assert 'expected True or False' in capsys.readouterr().err


def test_dataset_names_one_rule(capsys):
    for name in SCRIPTS:
        with pytest.raises(SystemExit):
            SCRIPTS[name].main(['--dataset', 'vco'])
        assert 'unknown dataset' in capsys.readouterr().err
    assert build_parser().parse_args(['--dataset', 'voc']).dataset == 'VOC'
    assert SCRIPTS['eval'].parse_args(['--dataset', 'Shapes']).dataset == 'shapes'
    assert SCRIPTS['test'].parse_args(['--dataset', 'coco']).dataset == 'COCO'
    assert live.parse_args(['--dataset', 'CUSTOM']).dataset == 'custom'


def test_default_splits_one_rule():
    """Evaluation during training and eval.py use the same default split."""
    for name, splits in [('VOC', ('test',)), ('COCO', ('val2017', 'val2014')),
                         ('shapes', ('val',)), ('custom', ('val', 'test'))]:
        assert eval_splits(name) == splits
        argv = ['--dataset', name] + (['--dataset_root', 'x'] if name == 'custom' else [])
        assert resolve_run_config(build_parser().parse_args(argv)).val_splits == splits
        args = argparse.Namespace(set_type=None)
        assert evaluator.set_name(name, args) == splits[0]


def test_device_rule(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert cli.select_device(None).type == 'cpu'
    assert cli.select_device(False).type == 'cpu'
    with pytest.raises(ValueError, match='--cuda True but no CUDA device is available'):
        cli.select_device(True)
    for name in SCRIPTS:        # default: CUDA when present, in every script
        parse = build_parser().parse_args if name == 'train' else SCRIPTS[name].parse_args
        assert parse([]).cuda is None and parse(['--cuda']).cuda is True


@pytest.mark.parametrize('name', ['train', 'eval', 'test', 'demo.live'])
def test_cuda_true_without_cuda_is_the_same_error_everywhere(name, monkeypatch, capsys,
                                                             tmp_path):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    monkeypatch.chdir(tmp_path)
    flags = {'train': ['--dataset', 'shapes', '--max_iter', '1'],
             'demo.live': ['--source', __file__, '--no_display']}.get(name, [])
    assert SCRIPTS[name].main(flags + ['--cuda', 'True']) == 1
    err = capsys.readouterr().err.strip().splitlines()
    script = name if name == 'demo.live' else f'{name}.py'
    assert err[-1] == (f'{script}: error: --cuda True but no CUDA device is available '
                       '(run with --cuda False, or leave --cuda out)')
    assert not list(tmp_path.iterdir())          # failed before writing anything


def test_exit_wrapper():
    def bad():
        raise cli.CheckpointError('w.pth: no such file\nsecond line')
    assert cli.run_script('x.py', lambda: None) == 0
    assert cli.run_script('x.py', lambda: 130) == 130
    assert cli.run_script('x.py', bad) == 1
    with pytest.raises(ZeroDivisionError):          # a bug keeps its traceback
        cli.run_script('x.py', lambda: 1 / 0)
