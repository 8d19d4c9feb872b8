"""A progress bar (tqdm on stderr: count, rate and ETA) on the long jobs:
python -m data.check, test.py --input, python -m demo.live --no_display,
train.py and its validation; train.py --quiet turns them off."""
import re

import cv2
import pytest
import torch

import demo.live as live
from _scripts import load_script
import train
from data.check import main as check_main
from data.config import shapes as shapes_cfg
from data.shapes import ShapesDetection
from data.shapes_io import write_dataset
from ssd import build_ssd
from utils.checkpoint import atomic_save

TEST = load_script('test')

# tqdm's bar: "n/total [elapsed<ETA, rate unit/s]" (or "s/unit" when slower than 1/s)
BAR = re.compile(r'(\d+)/(\d+) \[\d+:\d+<\d+:\d+, +\d+(?:\.\d+)?(?:\w+/s|s/\w+)')


def final_counts(err):
    """(n, total) of every bar tqdm finished on stderr."""
    return [(int(m[1]), int(m[2])) for m in BAR.finditer(err)]


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp('progress')
    torch.manual_seed(0)
    net = build_ssd('train', cfg=shapes_cfg, num_classes=6)
    atomic_save(net.state_dict(), d / 'ssd_shapes.pth')
    ds = ShapesDetection('val', num_images=3)
    (d / 'images').mkdir()
    for i in range(3):
        cv2.imwrite(str(d / 'images' / f'{i}.jpg'), ds.pull_image(i))
    video = cv2.VideoWriter(str(d / 'clip.avi'), cv2.VideoWriter_fourcc(*'MJPG'), 5, (96, 64))
    for i in range(4):
        video.write(cv2.resize(ds.pull_image(i % 3), (96, 64)))
    video.release()
    voc = write_dataset(str(d / 'VOC2007'), 'voc', num=5, seed=1)
    return d, voc


def test_data_check_bar(files, capsys):
    _, voc = files
    assert check_main([voc, '--format', 'voc']) == 0
    out, err = capsys.readouterr()
    assert (5, 5) in final_counts(err)
    assert not BAR.search(out)                     # the report on stdout stays clean


def test_test_script_bar(files, tmp_path, capsys):
    d, _ = files
    assert TEST.main(['--trained_model', str(d / 'ssd_shapes.pth'), '--dataset', 'shapes',
                      '--input', str(d / 'images'), str(d / 'clip.avi'),
                      '--save_folder', str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert (3, 3) in final_counts(err)              # the images
    assert (4, 4) in final_counts(err)              # the video's frames


def test_live_no_display_bar(files, tmp_path, capsys):
    d, _ = files
    assert live.main(['--weights', str(d / 'ssd_shapes.pth'), '--source', str(d / 'clip.avi'),
                      '--output', str(tmp_path / 'out.avi'), '--no_display']) == 0
    assert (4, 4) in final_counts(capsys.readouterr().err)


def test_training_and_validation_bars_and_quiet(tmp_path, capsys):
    args = ['--dataset', 'shapes', '--batch_size', '1', '--train_images', '2',
            '--val_images', '3', '--eval_batch_size', '1', '--num_workers', '0',
            '--max_iter', '2', '--eval_every', '2', '--save_every', '2']
    assert train.main(args + ['--save_folder', str(tmp_path / 'a')]) == 0
    counts = final_counts(capsys.readouterr().err)
    assert (2, 2) in counts                          # the iterations
    assert (3, 3) in counts                          # the validation images
    assert train.main(args + ['--save_folder', str(tmp_path / 'b'), '--quiet']) == 0
    assert final_counts(capsys.readouterr().err) == []
