"""train.py --pretrained FILE and --freeze: fine-tune a trained detector on
other classes (issue 11 item 1)."""
import argparse

import pytest
import torch

import train
from data.config import shapes
from data.shapes_io import write_dataset
from ssd import build_ssd
from utils.checkpoint import load_file
from utils.engine.run_config import parse_run_config
from utils.training.finetune import FREEZABLE, freeze, init_from_pretrained, parse_freeze
from utils.weights import load_matching

CONF = [f'conf.{i}.{p}' for i in range(6) for p in ('weight', 'bias')]


@pytest.fixture(scope='module')
def shapes_voc(tmp_path_factory):
    """A VOC-style shapes tree: 5 classes, train/val/trainval splits."""
    root = tmp_path_factory.mktemp('shapes_voc')
    write_dataset(str(root), 'voc', num=10, seed=0)
    return root


def test_pretrained_ssd_pytorch_voc_file_onto_five_classes(tmp_path, shapes_voc, capsys):
    """The acceptance check: an ssd.pytorch SSD300 VOC file onto a custom
    dataset with 5 classes at --lr 0: every weight but conf.* equals the
    file's; conf.* has the new shape and is listed in one line."""
    torch.manual_seed(0)
    src = tmp_path / 'ssd300_VOC.pth'
    torch.save(build_ssd('train', 300, 21).state_dict(), src)     # ssd.pytorch's format
    out = tmp_path / 'run'
    assert train.main(['--dataset', 'custom', '--dataset_root', str(shapes_voc),
                       '--pretrained', str(src), '--lr', '0', '--max_iter', '1',
                       '--batch_size', '1', '--num_workers', '0', '--eval_every', '0',
                       '--save_every', '100', '--quiet', '--save_folder', str(out)]) == 0
    start, end = load_file(src), load_file(out / 'custom.pth')
    assert set(start) == set(end)
    for k in start:
        if k in CONF:
            per_loc = start[k].shape[0] // 21
            assert end[k].shape[0] == per_loc * 6, k          # 5 classes + background
        else:
            assert torch.equal(start[k], end[k]), k
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith('pretrained ')]
    assert len(lines) == 1
    assert lines[0].endswith('re-initialised (not in the file or another shape): '
                             + ', '.join(CONF))
    assert 'loaded 59 of 71 tensors' in lines[0]
    ckpt = load_file(out / 'checkpoint.pth')
    assert ckpt['iteration'] == 1                                # started at 0


def _shapes_net(num_classes, seed):
    torch.manual_seed(seed)
    return build_ssd('train', shapes['min_dim'], num_classes, cfg=dict(shapes))


def test_load_matching_lists_what_does_not_fit(tmp_path):
    sd = _shapes_net(6, 0).state_dict()
    del sd['extras.0.weight']                       # missing from the file
    sd['extra.key'] = torch.zeros(1)                # not in the network
    path = tmp_path / 'f.pth'
    torch.save(sd, path)
    net = _shapes_net(3, 1)                         # 2 classes: other conf shapes
    before = {k: v.clone() for k, v in net.state_dict().items()}
    wf, loaded, reinit, unused = load_matching(net, path)
    assert reinit == ['extras.0.weight'] + CONF[:2 * len(net.conf)]
    assert unused == ['extra.key']
    after = net.state_dict()
    for k in loaded:
        assert torch.equal(after[k], sd[k]), k
    for k in reinit:
        assert torch.equal(after[k], before[k]), k


def test_init_from_pretrained_reinitialises_as_at_the_start(tmp_path):
    """The heads that do not fit get the preset's start-of-training init
    (normal, std head_std, zero bias), not the file's nor PyTorch's default."""
    path = tmp_path / 'f.pth'
    torch.save(_shapes_net(6, 0).state_dict(), path)
    net = _shapes_net(3, 1)
    _, msg = init_from_pretrained(net, path)
    assert '\n' not in msg and msg.count('conf.') == 2 * len(net.conf)
    w = torch.cat([m.weight.detach().flatten() for m in net.conf])
    assert float(w.std()) == pytest.approx(shapes['head_std'], rel=0.1)
    assert all(float(m.bias.detach().abs().max()) == 0 for m in net.conf)


def test_no_fitting_tensor_is_one_line(tmp_path, capsys):
    path = tmp_path / 'other.pth'
    torch.save({'fc.weight': torch.zeros(3, 3)}, path)
    assert train.main(['--dataset', 'shapes', '--pretrained', str(path), '--max_iter', '1',
                       '--save_folder', str(tmp_path / 'o'), '--quiet']) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'no tensor fits' in err[0] and 'other.pth' in err[0]


def test_freeze_keeps_weights_and_batchnorm_statistics(tmp_path):
    """--freeze vgg on the shapes preset (BatchNorm in vgg): vgg's weights
    and running statistics stay the file's, the rest trains."""
    src = tmp_path / 'start.pth'
    torch.save(_shapes_net(6, 0).state_dict(), src)
    out = tmp_path / 'run'
    assert train.main(['--dataset', 'shapes', '--pretrained', str(src), '--freeze', 'vgg',
                       '--max_iter', '2', '--batch_size', '4', '--train_images', '8',
                       '--num_workers', '0', '--eval_every', '0', '--quiet',
                       '--save_folder', str(out)]) == 0
    start, end = load_file(src), load_file(out / 'shapes.pth')
    for k in start:
        if k.startswith('vgg.') and not k.endswith('num_batches_tracked'):
            assert torch.equal(start[k], end[k]), k
    for k in ('L2Norm.weight', 'extras.0.weight', 'loc.0.weight', 'conf.0.weight'):
        assert not torch.equal(start[k], end[k]), k
    opt = load_file(out / 'checkpoint.pth')['optimizer']
    n_trainable = sum(1 for k in start if not k.startswith('vgg.')
                      and not k.endswith(('running_mean', 'running_var', 'num_batches_tracked')))
    assert sum(len(g['params']) for g in opt['param_groups']) == n_trainable


def test_freeze_names():
    assert parse_freeze('vgg') == ('vgg',)
    assert parse_freeze('VGG, extras,l2norm') == ('vgg', 'extras', 'L2Norm')
    assert parse_freeze('') == parse_freeze('none') == ()
    with pytest.raises(argparse.ArgumentTypeError, match="unknown module 'fc'"):
        parse_freeze('vgg,fc')
    net = _shapes_net(6, 0)
    n = freeze(net, FREEZABLE)
    assert n == sum(p.numel() for p in net.parameters())
    assert not any(p.requires_grad for p in net.parameters())


def test_pretrained_flags(tmp_path, capsys):
    """--pretrained replaces --basenet; the file's channel order is the
    default (a Caffe conversion's name says BGR); --channel_order overrides."""
    caffe = tmp_path / 'ssd_300_VOC0712.pth'
    torch.save({}, caffe)
    base = ['--dataset', 'shapes', '--pretrained', str(caffe)]
    c = parse_run_config(base)
    assert (c.channel_order, c.basenet) == ('BGR', 'none')
    assert parse_run_config(base + ['--channel_order', 'RGB']).channel_order == 'RGB'
    assert parse_run_config(['--dataset', 'shapes']).channel_order == 'RGB'
    with pytest.raises(ValueError, match='replaces --basenet'):
        parse_run_config(base + ['--basenet', 'vgg16_reducedfc.pth'])
    with pytest.raises(SystemExit):                          # argparse: the flag's error
        train.main(base + ['--freeze', 'fc'])
    assert "unknown module 'fc'" in capsys.readouterr().err


def test_resume_with_other_classes_points_to_pretrained(tmp_path, capsys):
    """ssd.pytorch's way (--resume a weights-only file of other classes) is
    one line that names the classes and --pretrained."""
    path = tmp_path / 'ssd128_VOC.pth'
    torch.save(_shapes_net(21, 0).state_dict(), path)
    assert train.main(['--dataset', 'shapes', '--resume', str(path), '--max_iter', '1',
                       '--save_folder', str(tmp_path / 'o'), '--quiet']) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'size mismatch for conf.0.weight' in err[0]
    assert 'it has 21 classes, this model 6: --pretrained loads what fits' in err[0]


def test_pretrained_from_torchvision_coco_conversion(tmp_path):
    """torchvision's COCO SSD300 converted by utils.convert_torchvision (a
    random one here) starts a 5-class SSD300: all but conf.* loaded."""
    from torchvision.models.detection import ssd300_vgg16
    from utils.convert_torchvision import convert_torchvision_file
    torch.manual_seed(0)
    tv = tmp_path / 'ssd300_vgg16_coco.pth'
    torch.save(ssd300_vgg16(weights=None, weights_backbone=None).state_dict(), tv)
    ours = tmp_path / 'ssd300_COCO_torchvision.pth'
    ckpt = convert_torchvision_file(str(tv), str(ours))
    c = parse_run_config(['--dataset', 'shapes', '--pretrained', str(ours)])
    assert c.channel_order == 'RGB'                  # recorded in the file
    net = build_ssd('train', 300, 6)
    _, msg = init_from_pretrained(net, ours)
    assert msg.startswith(f'pretrained {ours}: loaded 59 of 71 tensors; re-initialised')
    assert msg.endswith(', '.join(CONF))
    sd = net.state_dict()
    assert all(torch.equal(sd[k], v) for k, v in ckpt['model'].items() if k not in CONF)
