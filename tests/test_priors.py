"""data.priors: the coverage report (the matcher's IoU on the priors training
uses), the fitted prior file and ``train.py --priors``, bad prior files."""
import glob
import io
import json

import numpy as np
import pytest

from data.config import config_for
from data.priors import Boxes, coverage, dataset_boxes, load_priors, main
from data.shapes_io import write_dataset
from tests._scripts import load_script
from tests.test_data_voc import make_voc
from utils.weights import build_from_weights


def test_voc_fixture_boxes_are_the_loaders_and_their_coverage_is_literal(tmp_path):
    """The VOCdevkit fixture's dog (xmin 11, ymin 6, xmax 51, ymax 26 in a
    100 x 50 image; the person is difficult) is (0.1, 0.1, 0.5, 0.5) for the
    loader and for the report. Under SSD300's VOC priors its best prior is
    conv9_2's extra square, side sqrt(111 * 162) / 300 = 0.44699 at the
    centre 2.5 / (300 / 32) = 0.26667: it spans [0.04317, 0.49016], so the
    IoU is 0.39016^2 / (0.16 + 0.44699^2 - 0.39016^2) = 0.7334."""
    from data import VOCDetection
    root = make_voc(str(tmp_path / 'VOCdevkit'))
    boxes = dataset_boxes(root, 'voc')
    target = VOCDetection(root)[0][1]
    assert len(boxes) == 4 and boxes.classes == ['dog'] * 4
    np.testing.assert_allclose(boxes.xyxy.numpy(), np.repeat(target[:, :4], 4, 0), atol=1e-6)
    rep = coverage(boxes, config_for(21, 300))
    assert rep['all'] == {'boxes': 4, 'covered': 1.0, 'mean_iou': 0.7334}
    assert rep['by_size']['small']['boxes'] == 4      # 40 x 20 px < 32^2
    assert rep['by_class'] == {'dog': rep['all']}


def test_a_prior_itself_and_a_flat_box():
    """conv4_3's 30 px square at cell (10, 10) of SSD300 is centred at
    10.5 / 37.5 = 0.28: the same box scores IoU 1; a 30 x 12 px box there
    lies inside that square and inside its 2:1 prior (42.4 x 21.2 px), so
    its best IoU is 12 / 30 = 0.4 (not covered)."""
    c = 10.5 / 37.5
    boxes = Boxes([[c - 0.05, c - 0.05, c + 0.05, c + 0.05],
                   [c - 0.05, c - 0.02, c + 0.05, c + 0.02]], [900, 360], ['a', 'b'])
    rep = coverage(boxes, config_for(21, 300))
    assert rep['by_class']['a'] == {'boxes': 1, 'covered': 1.0, 'mean_iou': 1.0}
    assert rep['by_class']['b'] == {'boxes': 1, 'covered': 0.0, 'mean_iou': 0.4}
    assert rep['all'] == {'boxes': 2, 'covered': 0.5, 'mean_iou': 0.7}


@pytest.fixture(scope='module')
def thin(tmp_path_factory):
    """A YOLO dataset of tall thin boxes: the shapes, a quarter as wide and
    half as tall again (python -m data.shapes --format yolo, labels edited)."""
    d = tmp_path_factory.mktemp('thin') / 'yolo'
    write_dataset(str(d), 'yolo', num=40, seed=3)
    for f in glob.glob(str(d / 'labels' / '*' / '*.txt')):
        rows = [r.split() for r in open(f).read().splitlines() if r.strip()]
        with open(f, 'w') as out:
            for c, x, y, w, h in rows:
                out.write(f'{c} {x} {y} {float(w) / 4:.6f} {min(float(h) * 1.5, 0.95):.6f}\n')
    return d


def test_fitting_raises_coverage_and_train_uses_the_file(thin, tmp_path):
    out = io.StringIO()
    pri = tmp_path / 'priors.json'
    assert main([str(thin), '--format', 'yolo', '--split', 'train', '--out', str(pri),
                 '--json', str(tmp_path / 'cov.json')], out=out) == 0
    text = out.getvalue()
    assert 'VOC priors (vgg16, 300)' in text and 'fitted priors' in text and 'by class' in text
    cov = json.loads((tmp_path / 'cov.json').read_text())
    before, after = cov['before']['all']['covered'], cov['after']['all']['covered']
    assert before < 0.35 and after > before + 0.15
    doc = json.loads(pri.read_text())
    assert doc['min_dim'] == 300 and doc['backbone'] == 'vgg16'
    assert doc['coverage_after'] == cov['after']['all']
    assert [len(a) for a in doc['aspect_ratios']] == [1, 2, 2, 2, 1, 1]  # the preset's counts
    assert max(max(a) for a in doc['aspect_ratios']) > 3                # tall boxes: wide ratios
    # train.py --priors: the weight file records them; the tools build from it
    save = tmp_path / 'run'
    assert load_script('train').main([
        '--dataset', 'custom', '--dataset_root', str(thin), '--priors', str(pri),
        '--basenet', 'none', '--max_iter', '2', '--batch_size', '2', '--eval_every', '0',
        '--save_every', '2', '--save_folder', str(save), '--quiet', '--num_workers', '0']) == 0
    net = build_from_weights(save / 'custom.pth').net
    assert net.cfg['min_sizes'] == pytest.approx(doc['min_sizes'])
    assert net.cfg['aspect_ratios'] == doc['aspect_ratios']
    assert json.loads((save / 'config.json').read_text())['settings']['priors'] == str(pri)


def test_sizes_follow_the_input_size_and_mbox_the_ratios(tmp_path):
    p = tmp_path / 'p.json'
    p.write_text(json.dumps({'min_dim': 300, 'min_sizes': [30, 60, 90, 120, 150, 180],
                             'max_sizes': [60, 90, 120, 150, 180, 210],
                             'aspect_ratios': [[2, 3]] * 5 + [[]]}))
    cfg = load_priors(p, config_for(21, 384))
    assert cfg['min_sizes'][:2] == pytest.approx([38.4, 76.8])
    assert cfg['max_sizes'][-1] == pytest.approx(268.8)
    assert cfg['mbox'] == [6, 6, 6, 6, 6, 2]
    assert len(cfg['feature_maps']) == 6 and cfg['min_dim'] == 384
    with pytest.raises(ValueError, match=r'one entry per source of the network \(7\), got 6'):
        load_priors(p, config_for(21, 512))      # SSD512 has a seventh source


GOOD = {'min_sizes': [30, 60, 111, 162, 213, 264], 'max_sizes': [60, 111, 162, 213, 264, 315],
        'aspect_ratios': [[2], [2, 3], [2, 3], [2, 3], [2], [2]]}


@pytest.mark.parametrize('change, words', [
    ({'min_sizes': [30, 60]}, 'min_sizes must list one entry per source of the network (6), got 2'),
    ({'max_sizes': [60, 111, 162, 213, 264, -1]}, 'max_sizes must be positive numbers, got -1'),
    ({'min_sizes': [30, 60, 111, 162, 213, 400]}, 'max_sizes[5] (315) is below min_sizes[5] (400)'),
    ({'aspect_ratios': [[2], [0.5], [2], [2], [2], [2]]}, 'aspect_ratios[1] must be a list'),
    ({'steps': [8]}, 'unknown key(s) steps'),
    ({'min_sizes': None}, 'min_sizes must list one entry per source'),
])
def test_bad_prior_file_is_one_line_naming_the_key(tmp_path, change, words):
    p = tmp_path / 'bad.json'
    p.write_text(json.dumps(dict(GOOD, **change)))
    with pytest.raises(ValueError) as e:
        load_priors(p, config_for(21, 300))
    msg = str(e.value)
    assert msg.startswith(str(p)) and words in msg and '\n' not in msg


@pytest.mark.parametrize('text, words', [('nope', 'not a JSON prior file'),
                                         ('[1, 2]', 'a prior file needs min_sizes'),
                                         ('{"min_sizes": []}', 'a prior file needs')])
def test_not_a_prior_file(tmp_path, text, words):
    p = tmp_path / 'bad.json'
    p.write_text(text)
    with pytest.raises(ValueError, match=words):
        load_priors(p, config_for(21, 300))


@pytest.mark.parametrize('with_image', [False, True])
def test_folder_without_boxes_is_one_line(tmp_path, capsys, with_image):
    import cv2
    import numpy as np
    (tmp_path / 'images').mkdir()
    (tmp_path / 'classes.txt').write_text('thing\n')
    if with_image:                             # an image, but no label file: no boxes
        cv2.imwrite(str(tmp_path / 'images' / 'a.jpg'), np.zeros((32, 32, 3), np.uint8))
    assert main([str(tmp_path), '--format', 'yolo']) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]   # after the progress bar
    assert err.startswith('error: ') and str(tmp_path) in err
