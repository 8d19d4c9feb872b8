"""Error analysis (``eval.py --analysis``, ``utils.evaluation.analysis``):
a hand-worked set with literal counts, ground truth as detections, the
command as typed, and the end of training."""
import contextlib
import io
import json

import numpy as np
import pytest
import torch

from data.config import shapes as shapes_cfg
from ssd import build_ssd
from utils.checkpoint import atomic_save
from utils.evaluation.analysis import analyse
from utils.evaluation.detections import Detections, GroundTruth, write_devkit
from utils.evaluation.evaluate import ground_truth
from utils.evaluation.voc import evaluate_voc

from _scripts import load_script

EVAL = load_script('eval')


def hand_set():
    """Two images, classes A and B (devkit boxes).

    image 0: A [1, 1, 10, 10], B [21, 21, 40, 40]
      A 0.9 on the A box (true), B 0.8 on the A box (false: that object is
      found), A 0.7 on the B box (false; B is otherwise missed: true B,
      predicted A).
    image 1: A [1, 1, 20, 20] difficult, B [30, 30, 50, 50]
      A 0.95 on the difficult box (neither), B 0.6 on B (true), B 0.55 on B
      (a duplicate: false), A 0.3 elsewhere (below the threshold).
    """
    gt = GroundTruth(['i0', 'i1'], ('A', 'B'), np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1]),
                     np.array([[1, 1, 10, 10], [21, 21, 40, 40], [1, 1, 20, 20],
                               [30, 30, 50, 50]], float),
                     np.array([False, False, True, False]), np.array([[60, 60], [60, 60]]))
    dets = Detections(['i0', 'i1'], np.array([0, 0, 0, 1, 1, 1, 1]),
                      np.array([0, 1, 0, 0, 1, 1, 0]),
                      np.array([0.9, 0.8, 0.7, 0.95, 0.6, 0.55, 0.3]),
                      np.array([[1, 1, 10, 10], [1, 1, 10, 10], [21, 21, 40, 40],
                                [1, 1, 20, 20], [30, 30, 50, 50], [31, 31, 50, 50],
                                [40, 1, 55, 12]], float))
    return dets, gt


def test_hand_worked_counts():
    dets, gt = hand_set()
    res, errs = analyse(dets, gt, thresh=0.5)
    # rows: true A, B, background; columns: predicted A, B, background
    assert res['confusion']['matrix'] == [[1, 0, 0], [1, 1, 0], [0, 2, 0]]
    a, b = res['per_class']['A'], res['per_class']['B']
    assert (a['objects'], a['tp'], a['fp'], a['fn']) == (1, 1, 1, 0)
    assert (a['precision'], a['recall']) == (0.5, 1.0) and a['f1'] == pytest.approx(2 / 3)
    assert (b['objects'], b['tp'], b['fp'], b['fn']) == (2, 1, 2, 1)
    assert b['precision'] == pytest.approx(1 / 3) and b['f1'] == pytest.approx(0.4)
    # the F1-best points of the PR curves
    assert (a['best_thresh'], a['best_f1']) == (0.9, 1.0)
    assert (b['best_thresh'], b['best_f1']) == (0.6, 0.5)
    # every box is small (areas 81, 361, 400): A's AP07 1, B's 6 x 0.5 / 11
    small = res['by_size']['small']
    assert small['objects'] == 3
    assert small['voc07'] == pytest.approx((1 + 3 / 11) / 2)
    assert small['voc07'] == pytest.approx(evaluate_voc(dets, gt, True)['map'])
    assert res['by_size']['medium'] == {'objects': 0, 'voc07': None, 'voc12': None}
    assert errs['per_image'].tolist() == [[1, 2], [0, 1]]   # (missed, false) per image


def test_a_threshold_counts_only_the_boxes_above_it():
    dets, gt = hand_set()
    res, _ = analyse(dets, gt, thresh=0.75)
    # left: A 0.9 (true), B 0.8 (false), A 0.95 (difficult): B's two objects are missed
    assert res['confusion']['matrix'] == [[1, 0, 0], [0, 0, 2], [0, 1, 0]]
    assert res['per_class']['B']['fn'] == 2 and res['per_class']['B']['tp'] == 0


def test_ground_truth_as_detections_is_diagonal():
    from data import ShapesDetection
    ds = ShapesDetection(image_set='val', num_images=12)
    gt = ground_truth(ds)
    keep = ~gt.difficult
    dets = Detections(gt.image_ids, gt.img[keep], gt.labels[keep], np.ones(int(keep.sum())),
                      gt.boxes[keep])
    res, _ = analyse(dets, gt)
    m = np.array(res['confusion']['matrix'])
    assert np.array_equal(m, np.diag(np.diag(m))) and m.trace() == keep.sum()
    assert all(r['f1'] == 1.0 and r['best_f1'] == 1.0 for r in res['per_class'].values()
               if r['objects'])
    assert all(r['voc07'] is None or r['voc07'] == pytest.approx(1.0)
               for r in res['by_size'].values())


def test_eval_analysis_as_typed(tmp_path):
    """eval.py --detections (the ground truth of 6 shapes images, one class
    renamed wrongly) --analysis DIR: the files, the table, the gallery."""
    from data import ShapesDetection
    ds = ShapesDetection(image_set='val', num_images=6)
    gt = ground_truth(ds)
    labels = gt.labels.copy()
    labels[0] = (labels[0] + 1) % len(gt.class_names)       # one confusion
    dets = Detections(gt.image_ids, gt.img, labels, np.ones(gt.img.size), gt.boxes)
    write_devkit(dets, gt.class_names, str(tmp_path / 'dets'), 'val')
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert EVAL.main(['--detections', str(tmp_path / 'dets'), '--dataset', 'shapes',
                          '--num_images', '6', '--save_folder', str(tmp_path / 'eval'),
                          '--analysis', str(tmp_path / 'an')]) == 0
    text = out.getvalue()
    assert 'Per class at score >= 0.5' in text and 'AP by object size' in text
    names = {p.name for p in (tmp_path / 'an').iterdir()}
    assert names == {'analysis.json', 'confusion_matrix.json', 'confusion_matrix.png',
                     'per_class.csv', 'gallery.png'}
    m = np.array(json.loads((tmp_path / 'an' / 'confusion_matrix.json').read_text())['matrix'])
    true, pred = gt.labels[0], labels[0]
    assert m[true, pred] == 1 and m.sum() - m.trace() == 1
    assert (tmp_path / 'an' / 'per_class.csv').read_text().startswith('class,objects,')
    import cv2
    assert cv2.imread(str(tmp_path / 'an' / 'gallery.png')) is not None


def test_training_writes_the_analysis_at_the_end(tmp_path):
    torch.manual_seed(0)
    train = load_script('train')
    assert train.main(['--dataset', 'shapes', '--max_iter', '3', '--batch_size', '2',
                       '--eval_every', '2', '--val_images', '4', '--save_every', '100',
                       '--num_workers', '0', '--quiet', '--save_folder', str(tmp_path)]) == 0
    a = json.loads((tmp_path / 'analysis' / 'analysis.json').read_text())
    assert a['images'] == 4 and len(a['confusion']['matrix']) == 6
    assert (tmp_path / 'analysis' / 'gallery.png').is_file()


def test_network_analysis_and_bad_flags(tmp_path, capsys):
    net = build_ssd('train', cfg=shapes_cfg, num_classes=6)
    ckpt = tmp_path / 'w.pth'
    atomic_save({'model': net.state_dict(), 'args': {'dataset': 'shapes'}}, ckpt)
    with contextlib.redirect_stdout(io.StringIO()):
        assert EVAL.main(['--trained_model', str(ckpt), '--num_images', '3', '--num_workers',
                          '0', '--save_folder', str(tmp_path / 'e'), '--analysis',
                          str(tmp_path / 'a'), '--gallery', '2', '--analysis_thresh',
                          '0.01']) == 0
    assert (tmp_path / 'a' / 'gallery.png').is_file()
    for flag, value in (('--analysis_thresh', '2'), ('--gallery', '-1')):
        with pytest.raises(SystemExit):
            EVAL.parse_args(['--analysis', 'x', flag, value])
        assert flag in capsys.readouterr().err
