"""Image sets chosen by flag for every dataset (train.py --train_sets /
--val_set, eval.py --set), custom folders with only trainval.txt or in COCO
JSON, and the custom schedule scaled to the dataset's size (issue 11 item 2)."""
import json
import os
import shutil

import pytest
import torch

import eval as eval_script
import train
from data import get_dataset
from data.config import scaled_schedule, voc
from data.factory import ConcatDetection, _voc_sets, default_train_sets, has_split
from data.shapes import SHAPES_CLASSES
from data.shapes_io import write_dataset
from ssd import build_ssd
from utils.engine.run_config import parse_run_config
from utils.engine.trainer import build_datasets

VOC_NAMES = ('aeroplane', 'bicycle', 'bird', 'boat', 'bottle')     # for the 5 shapes


@pytest.fixture(scope='module')
def voc2007(tmp_path_factory):
    """A VOCdevkit holding only VOC2007 (trainval 10 images, test 2), with
    VOC class names."""
    devkit = tmp_path_factory.mktemp('vocdevkit')
    root = devkit / 'VOC2007'
    write_dataset(str(root), 'voc', num=10, seed=0)
    for xml in (root / 'Annotations').iterdir():
        text = xml.read_text()
        for shape, name in zip(SHAPES_CLASSES, VOC_NAMES):
            text = text.replace(f'<name>{shape}</name>', f'<name>{name}</name>')
        xml.write_text(text)
    main = root / 'ImageSets' / 'Main'
    shutil.copy(main / 'val.txt', main / 'test.txt')
    return devkit


def test_voc_set_names():
    assert _voc_sets(None) == [('2007', 'trainval'), ('2012', 'trainval')]
    assert _voc_sets('2007_trainval') == [('2007', 'trainval')]
    assert _voc_sets('2007_trainval,2012_trainval') == _voc_sets(None)
    assert _voc_sets('test') == _voc_sets('2007_test') == [('2007', 'test')]
    assert _voc_sets([('2012', 'val')]) == [('2012', 'val')]      # ssd.pytorch's pairs
    c = parse_run_config(['--dataset', 'VOC'])
    assert c.train_sets == ('2007_trainval', '2012_trainval') and c.val_splits == ('test',)


def test_voc2007_only_trains_with_train_sets(voc2007, tmp_path, capsys):
    assert has_split('VOC', voc2007, '2007_trainval')
    assert not has_split('VOC', voc2007, '2012_trainval')
    out = tmp_path / 'run'
    assert train.main(['--dataset', 'VOC', '--dataset_root', str(voc2007),
                       '--train_sets', '2007_trainval', '--val_set', '2007_test',
                       '--basenet', 'none', '--max_iter', '1', '--batch_size', '1',
                       '--eval_every', '1', '--num_workers', '0', '--quiet',
                       '--save_folder', str(out)]) == 0
    assert 'SSD300 on VOC (10 images, 20 classes)' in capsys.readouterr().err
    assert (out / 'ssd300_VOC_best.pth').is_file()          # evaluated on 2007_test
    # the default 07+12 names the missing VOC2012 split and the flag, in one line
    assert train.main(['--dataset', 'VOC', '--dataset_root', str(voc2007), '--basenet', 'none',
                       '--max_iter', '1', '--save_folder', str(tmp_path / 'x'), '--quiet']) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert 'VOC2012' in err[0] and 'split file not found' in err[0]
    assert '--train_sets' in err[0] and 'e.g. 2007_trainval' in err[0]


def test_eval_py_takes_the_same_spelling(voc2007, tmp_path):
    torch.manual_seed(0)
    weights = tmp_path / 'ssd300_VOC.pth'
    torch.save(build_ssd('train', 300, 21).state_dict(), weights)
    out = tmp_path / 'eval'
    assert eval_script.main(['--trained_model', str(weights), '--voc_root', str(voc2007),
                             '--set', '2007_test', '--save_folder', str(out),
                             '--num_workers', '0', '--pr_curves', 'False',
                             '--json', str(out / 'r.json')]) == 0
    assert json.loads((out / 'r.json').read_text())['images'] == 2
    assert (out / 'det_test_aeroplane.txt').is_file()
    args = eval_script.parse_args(['--val_set', '2012_val'])
    assert (args.year, args.set_type) == ('2012', 'val')
    args = eval_script.parse_args(['--year', '2012', '--set_type', 'val'])   # ssd.pytorch's
    assert (args.year, args.set_type) == ('2012', 'val')


def test_custom_folder_with_only_trainval(tmp_path):
    """Only ImageSets/Main/trainval.txt: trains on it; no val/test split, so
    evaluation during training is off with a warning, not an error."""
    root = tmp_path / 'mydata'
    write_dataset(str(root), 'voc', num=10, seed=0)
    for split in ('train', 'val'):
        os.remove(root / 'ImageSets' / 'Main' / f'{split}.txt')
    c = parse_run_config(['--dataset', 'custom', '--dataset_root', str(root)])
    assert c.train_sets == ('trainval',)
    with pytest.warns(RuntimeWarning, match='evaluation during training is off'):
        train_ds, val_ds, cfg = build_datasets(c)
    assert len(train_ds) == 10 and val_ds is None and cfg['num_classes'] == 6
    c = parse_run_config(['--dataset', 'custom', '--dataset_root', str(root),
                          '--train_sets', 'trainval', '--val_set', 'none'])
    assert c.val_splits == ()
    with pytest.raises(ValueError, match='--val_set test: not found'):
        parse_run_config(['--dataset', 'custom', '--dataset_root', str(root),
                          '--val_set', 'test'])


def test_custom_coco_json_folder(tmp_path):
    """ROOT/annotations/instances_{train,val}.json plus one image folder
    ROOT/images/: --dataset custom reads it; the schedule follows its size."""
    src, root = tmp_path / 'coco', tmp_path / 'mycoco'
    write_dataset(str(src), 'coco', num=10, seed=0)
    (root / 'annotations').mkdir(parents=True)
    (root / 'images').mkdir()
    for split in ('train', 'val'):
        shutil.copy(src / 'annotations' / f'instances_{split}2017.json',
                    root / 'annotations' / f'instances_{split}.json')
        for f in (src / f'{split}2017').iterdir():
            shutil.copy(f, root / 'images' / f.name)
    c = parse_run_config(['--dataset', 'custom', '--dataset_root', str(root)])
    assert c.train_sets == ('train',)
    want = scaled_schedule(8, 32)
    assert (c.max_iter, c.lr_steps, c.eval_every, c.save_every) == \
        (want['max_iter'], want['lr_steps'], want['eval_every'], want['save_every'])
    assert c.max_iter == 100 and c.max_iter not in (120000, 400000)
    train_ds, val_ds, cfg = build_datasets(c)
    assert (len(train_ds), len(val_ds)) == (8, 2)
    assert train_ds.classes == SHAPES_CLASSES and cfg['num_classes'] == 6
    img, target = train_ds[0]
    assert img.shape == (3, 300, 300) and len(target) > 0


def test_coco_sets(tmp_path):
    root = tmp_path / 'coco'
    write_dataset(str(root), 'coco', num=10, seed=0)
    assert default_train_sets('COCO', root) == ('train2017',)
    both = get_dataset('COCO', str(root), 'train2017,val2017')
    assert isinstance(both, ConcatDetection) and len(both) == 10
    assert both.classes == SHAPES_CLASSES
    assert len(parse_run_config(['--dataset', 'COCO', '--dataset_root', str(root),
                                 '--train_sets', 'train2017,val2017']).train_sets) == 2
    for split in ('train', 'val'):        # the 2014 names only
        os.rename(root / 'annotations' / f'instances_{split}2017.json',
                  root / 'annotations' / f'instances_{split}2014.json')
        os.rename(root / f'{split}2017', root / f'{split}2014')
    assert default_train_sets('COCO', root) == ('train2014',)
    c = parse_run_config(['--dataset', 'COCO', '--dataset_root', str(root), '--val_set',
                          'val2014'])
    assert (c.train_sets, c.val_splits, c.max_iter) == (('train2014',), ('val2014',), 400000)
    assert len(get_dataset('COCO', str(root), c.train_sets)) == 8


def test_scaled_schedule_values():
    """232 epochs (120k iterations at batch 32 over 16551 images), rounded up
    to 100 iterations, at most VOC's 120k; steps at 2/3 and 5/6."""
    assert scaled_schedule(500, 32) == dict(max_iter=3700, lr_steps=(2466, 3083),
                                            eval_every=308, save_every=154)
    assert scaled_schedule(16551, 32) == dict(max_iter=120000, lr_steps=(80000, 100000),
                                              eval_every=10000, save_every=5000)
    assert scaled_schedule(10 ** 6, 32)['max_iter'] == voc['max_iter']
    assert scaled_schedule(500, 8)['max_iter'] == 14600        # 4x the steps at batch 8
    assert scaled_schedule(500, 32, max_iter=3000)['lr_steps'] == (2000, 2500)
    assert scaled_schedule(20, 2, max_iter=2) == dict(max_iter=2, lr_steps=(1,),
                                                      eval_every=2, save_every=2)
    # short runs: at the end, not every iteration (30 iterations: 1 and 2 before)
    assert scaled_schedule(160, 32, max_iter=30) == dict(max_iter=30, lr_steps=(20, 25),
                                                         eval_every=30, save_every=30)
    assert scaled_schedule(8, 32) == dict(max_iter=100, lr_steps=(66, 83),
                                          eval_every=100, save_every=100)
    assert scaled_schedule(500, 32, max_iter=2400)['save_every'] == 100   # 1/24 would be 100
    assert scaled_schedule(500, 32, max_iter=1200)['save_every'] == 100   # not 50
