"""train.py runs ssd.pytorch's training recipe step for step: from the same
weights (``--resume W --start_iter 0``) on a VOC-layout fixture with
``--augment none``, its weights after K steps equal those of ssd.pytorch's
loop (utils/bench/reference.py: its target transform, BaseTransform, SGD,
loss and schedule) to within float summation order, with an lr step inside
the K steps and momentum carried across them.

The network is SSD300's geometry at 1/8 of the channels
(``utils.bench.recipe.SMALL``): the full SSD300 takes minutes per run on a
CPU; ``python -m utils.bench.recipe`` runs the full one (doc/reproduction.md).
"""
import csv

import pytest

import train
from _scripts import load_script
import utils.engine.trainer as trainer
from utils.bench import recipe
from utils.checkpoint import load_model_state

LR, STEPS, LR_STEPS = 1e-3, 4, (2,)


@pytest.fixture(scope='module')
def voc(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('recipe')
    root = recipe.write_voc_fixture(str(tmp / 'VOCdevkit'))
    w = str(tmp / 'W.pth')
    start = recipe.make_weights(w, recipe.SMALL)
    return root, w, start


@pytest.fixture(scope='module')
def ours(voc, tmp_path_factory):
    root, w, _ = voc
    out = tmp_path_factory.mktemp('ours')
    mp = pytest.MonkeyPatch()
    mp.setattr(trainer, 'model_config', lambda d, n, size=None, backbone=None: dict(recipe.SMALL, num_classes=n))
    try:
        argv = recipe.ours_argv(root, w, str(out), LR, 2, STEPS, LR_STEPS)
        assert train.main(argv + ['--log_every', '1']) == 0
    finally:
        mp.undo()
    with open(out / 'metrics.csv', newline='') as f:
        rows = [r for r in csv.DictReader(f) if r.get('loss')]
    return load_model_state(str(out / 'checkpoint.pth')), rows


def _reference(voc, **kw):
    root, w, _ = voc
    return recipe.run_reference(root, w, recipe.SMALL, LR, 2, STEPS, **kw)


def test_train_py_equals_ssd_pytorch_loop(voc, ours):
    weights, rows = ours
    theirs, hist = _reference(voc, lr_steps=LR_STEPS)
    rel_w, rel_u = recipe.compare(weights, theirs, voc[2])
    assert rel_w < 1e-5
    assert rel_u < 1e-2              # measured 3.9e-3 of the update: near-ties rounded differently
    assert [round(h[0], 12) for h in hist] == [1e-3, 1e-3, 1e-4, 1e-4]
    assert [float(r['lr']) for r in rows] == pytest.approx([h[0] for h in hist])
    assert [float(r['loss_l']) for r in rows] == pytest.approx([h[1] for h in hist], rel=1e-4)
    assert [float(r['loss_c']) for r in rows] == pytest.approx([h[2] for h in hist], rel=1e-4)


def test_nchw_in_dataset_order_is_bit_identical(voc, tmp_path):
    """The order-free form of the check (doc/reproduction.md):
    ``--channels_last False --shuffle False`` against the loop on an NCHW
    network fed in dataset order, with ssd.pytorch's mining
    (``--mining global_max``) and with ours: the same weights bit for bit."""
    root, w, start = voc
    theirs, _ = _reference(voc, lr_steps=LR_STEPS, channels_last=False,
                           order=lambda it: [0, 1])
    mp = pytest.MonkeyPatch()
    mp.setattr(trainer, 'model_config',
               lambda d, n, size=None, backbone=None: dict(recipe.SMALL, num_classes=n))
    try:
        for mining in ('global_max', 'row'):
            out = tmp_path / mining
            argv = recipe.ours_argv(root, w, str(out), LR, 2, STEPS, LR_STEPS)
            assert train.main(argv + ['--channels_last', 'False', '--shuffle', 'False',
                                      '--mining', mining]) == 0
            weights = load_model_state(str(out / 'checkpoint.pth'))
            assert recipe.compare(weights, theirs, start) == (0.0, 0.0)
    finally:
        mp.undo()


@pytest.mark.parametrize('change', [dict(momentum=0.0), dict(lr_steps=())],
                         ids=['no_momentum', 'no_lr_step'])
def test_the_check_sees_momentum_and_the_lr_step(voc, ours, change):
    """Controls: ssd.pytorch's loop without momentum, or without the lr step
    at iteration 2, ends far from train.py (so the equality above is not
    blind to either)."""
    kw = dict(dict(lr_steps=LR_STEPS), **change)
    theirs, _ = _reference(voc, **kw)
    _, rel_u = recipe.compare(ours[0], theirs, voc[2])
    assert rel_u > 0.2


def test_augment_defaults_and_none_is_base_transform(voc):
    from data.augmentations import BaseTransform, SSDAugmentation
    from utils.engine.run_config import parse_run_config
    assert parse_run_config(['--dataset', 'VOC']).augment == 'ssd'
    assert parse_run_config(['--dataset', 'shapes']).augment == 'shapes'
    c = parse_run_config(['--dataset', 'VOC', '--dataset_root', voc[0], '--augment', 'none',
                          '--eval_every', '0'])
    train_ds, _, _ = trainer.build_datasets(c)
    assert type(train_ds.transform) is BaseTransform
    c = parse_run_config(['--dataset', 'VOC', '--dataset_root', voc[0], '--eval_every', '0'])
    assert type(trainer.build_datasets(c)[0].transform) is SSDAugmentation


def test_caffe_bias_groups():
    """--caffe_bias: biases at twice the lr and without weight decay, the
    other parameters as usual, through every lr change."""
    import torch
    from utils.training.schedule import make_optimizer, set_lr
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(4, 2, 1))
    opt = make_optimizer(net, 1e-3, 0.9, 5e-4, 'sgd', caffe_bias=True)
    w, b = opt.param_groups
    assert [p.dim() for p in w['params']] == [4, 4]
    assert [p.dim() for p in b['params']] == [1, 1]
    assert (w['lr'], w['weight_decay'], b['lr'], b['weight_decay']) == (1e-3, 5e-4, 2e-3, 0.0)
    set_lr(opt, 1e-4)
    assert (w['lr'], b['lr']) == (1e-4, 2e-4)
    plain = make_optimizer(net, 1e-3, 0.9, 5e-4, 'sgd')
    assert len(plain.param_groups) == 1 and plain.param_groups[0]['weight_decay'] == 5e-4


def test_eval_keep_top_k_caps_detections_per_image(tmp_path):
    """eval.py --keep_top_k N (Caffe's per-image cap; default off, as in
    ssd.pytorch)."""
    import contextlib
    import io
    import json
    import torch
    from data.config import shapes
    from ssd import build_ssd
    from utils.checkpoint import atomic_save
    ev = load_script('eval')
    torch.manual_seed(0)
    net = build_ssd('train', cfg=shapes, num_classes=6)
    ckpt = tmp_path / 'checkpoint.pth'
    atomic_save({'model': net.state_dict(), 'iteration': 1, 'args': {'dataset': 'shapes'}}, ckpt)
    counts = []
    for extra in ([], ['--keep_top_k', '2']):
        js = tmp_path / f'{len(extra)}.json'
        argv = ['--trained_model', str(ckpt), '--save_folder', str(tmp_path / 'e'), '--num_images', '3',
                '--confidence_threshold', '0.05', '--top_k', '10', '--num_workers', '0',
                '--pr_curves', '0', '--json', str(js)] + extra
        with contextlib.redirect_stdout(io.StringIO()):
            assert ev.main(argv) == 0
        counts.append(json.loads(js.read_text())['detections'])
    assert counts[0] > 6 and counts[1] == 6
