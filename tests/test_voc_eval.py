"""VOC metric: hand-computed cases, the devkit port's equality, file round trip."""
import numpy as np
import pytest

from utils.bench.voc_eval import gt_records, port_voc_ap, port_voc_eval, synthetic_voc
from data import DatasetError
from utils.evaluation.detections import (Detections, EvalInputError, GroundTruth, load_voc_gt,
                                 read_devkit, write_devkit)
from utils.evaluation.voc import evaluate_voc, voc_ap

CLASSES = ('cat', 'dog')


def make_gt(objs, n_images=2):
    """objs: (image, label, box, difficult)."""
    recs = [dict(boxes=[], labels=[], difficult=[]) for _ in range(n_images)]
    for i, lab, box, diff in objs:
        recs[i]['boxes'].append(box)
        recs[i]['labels'].append(lab)
        recs[i]['difficult'].append(diff)
    return GroundTruth.from_records([f'im{i}' for i in range(n_images)], CLASSES, recs)


def make_dets(rows, n_images=2):
    """rows: (image, label, score, box)."""
    ids = [f'im{i}' for i in range(n_images)]
    if not rows:
        return Detections.empty(ids)
    i, l, s, b = zip(*rows)
    return Detections(ids, np.array(i), np.array(l), np.array(s, float), np.array(b, float))


A, B = [1, 1, 50, 50], [60, 60, 120, 100]


def both(dets, gt):
    return evaluate_voc(dets, gt, True), evaluate_voc(dets, gt, False)


def test_perfect_detections_give_ap_one():
    gt = make_gt([(0, 0, A, False), (1, 0, B, False), (1, 1, A, False)])
    dets = make_dets([(0, 0, .9, A), (1, 0, .8, B), (1, 1, .7, A)])
    for r in both(dets, gt):
        # 11 x (1/11) sums to 1 + 2e-16, in the port too
        assert r['ap'] == pytest.approx({'cat': 1.0, 'dog': 1.0}, abs=1e-12)
        assert r['map'] == pytest.approx(1.0, abs=1e-12)


def test_all_wrong_give_ap_zero():
    gt = make_gt([(0, 0, A, False), (1, 1, B, False)])
    # wrong place, wrong class, wrong image
    dets = make_dets([(0, 0, .9, B), (1, 0, .8, B), (0, 1, .7, B)])
    for r in both(dets, gt):
        assert r['ap'] == {'cat': 0.0, 'dog': 0.0}


def test_duplicates_are_false_positives():
    # d1 on A (TP), d2 duplicate on A (FP), d3 on B (TP): rec .5 .5 1, prec 1 .5 2/3
    gt = make_gt([(0, 0, A, False), (1, 0, B, False)])
    dets = make_dets([(0, 0, .9, A), (0, 0, .8, [2, 2, 50, 50]), (1, 0, .7, B)])
    r07, r12 = both(dets, gt)
    assert r07['ap']['cat'] == pytest.approx(28 / 33, abs=1e-12)   # 6/11 * 1 + 5/11 * 2/3
    assert r12['ap']['cat'] == pytest.approx(5 / 6, abs=1e-12)     # .5 * 1 + .5 * 2/3
    np.testing.assert_allclose(r12['rec']['cat'], [.5, .5, 1.])
    np.testing.assert_allclose(r12['prec']['cat'], [1., .5, 2 / 3])


def test_difficult_objects_are_ignored():
    # the best detection hits a difficult object: neither TP nor FP
    gt = make_gt([(0, 0, A, False), (0, 0, B, True), (1, 1, B, True)])
    dets = make_dets([(0, 0, .95, B), (0, 0, .9, A), (1, 1, .8, B), (0, 1, .7, A)])
    for r in both(dets, gt):
        assert r['ap']['cat'] == pytest.approx(1.0, abs=1e-12)
        assert r['npos'] == {'cat': 1, 'dog': 0}
        assert r['ap']['dog'] is None         # only difficult objects: npos 0, n/a
        assert r['map'] == r['ap']['cat']     # left out of the mean
    np.testing.assert_array_equal(r['prec']['cat'], [0., 1.])


def test_no_detections():
    gt = make_gt([(0, 0, A, False)])
    for r in both(make_dets([]), gt):
        assert r['ap'] == {'cat': 0.0, 'dog': None} and r['map'] == 0.0


def test_iou_uses_plus_one_and_strict_threshold():
    gt = make_gt([(0, 0, [1, 1, 10, 10], False), (1, 0, [1, 1, 10, 10], False)])
    # image 0: IoU (+1) = 100/190 > .5 -> TP (without +1 it would be exactly .5)
    # image 1: IoU (+1) = 100/200 = .5, not > .5 -> FP
    dets = make_dets([(0, 0, .9, [1, 1, 10, 19]), (1, 0, .8, [1, 1, 10, 20])])
    r = evaluate_voc(dets, gt, False)
    np.testing.assert_array_equal(r['rec']['cat'], [.5, .5])
    np.testing.assert_array_equal(r['prec']['cat'], [1., .5])


def test_each_detection_takes_its_best_object_only():
    # the second detection's best object is already taken: FP, even though
    # another object overlaps it by more than 0.5 (the devkit's rule)
    g1, g2 = [1, 1, 40, 40], [5, 1, 44, 40]
    gt = make_gt([(0, 0, g1, False), (0, 0, g2, False)])
    dets = make_dets([(0, 0, .9, g1), (0, 0, .8, [2, 1, 41, 40])])
    r = evaluate_voc(dets, gt, False)
    np.testing.assert_array_equal(r['rec']['cat'], [.5, .5])


def test_voc_ap_hand_values():
    rec, prec = np.array([.2, .4, .4, .8]), np.array([1., 1., .5, .5])
    # 11-point: t in 0..0.4 -> 1 (5 points), 0.5..0.8 -> .5 (4 points), 0.9, 1 -> 0
    assert voc_ap(rec, prec, True) == pytest.approx((5 + 4 * .5) / 11, abs=1e-12)
    # area: .4 * 1 + .4 * .5
    assert voc_ap(rec, prec, False) == pytest.approx(.6, abs=1e-12)
    for use07 in (True, False):
        assert voc_ap(rec, prec, use07) == pytest.approx(port_voc_ap(rec, prec, use07), abs=1e-15)


@pytest.mark.parametrize('use_07', [True, False])
def test_equal_to_devkit_port_with_ties(tmp_path, use_07):
    gt, dets = synthetic_voc(num_images=60, dets_per_image=30, seed=3)
    dets.scores = np.round(dets.scores, 1)          # many ties: ranking must match too
    write_devkit(dets, gt.class_names, tmp_path, 'test')
    ours = evaluate_voc(read_devkit(tmp_path, gt.class_names, gt.image_ids, 'test'), gt, use_07)
    recs = gt_records(gt)
    for c in gt.class_names:
        path = tmp_path / f'det_test_{c}.txt'
        if path.stat().st_size == 0:
            continue                        # the port needs a detection
        rec, prec, ap = port_voc_eval(str(path), recs, gt.image_ids, c, 0.5, use_07)
        assert abs(ours['ap'][c] - ap) < 1e-6, c
        np.testing.assert_allclose(ours['rec'][c], rec, atol=1e-12)


def test_devkit_round_trip_and_any_prefix(tmp_path):
    dets = make_dets([(0, 0, .91234, [0.5, 2.04, 30.96, 40]), (1, 1, .5, B), (1, 0, .25, A)])
    paths = write_devkit(dets, CLASSES, tmp_path, 'test', prefix='comp4_')
    assert [p.rsplit('/', 1)[1] for p in paths] == ['comp4_det_test_cat.txt',
                                                    'comp4_det_test_dog.txt']
    assert (tmp_path / 'comp4_det_test_cat.txt').read_text().splitlines()[0] == \
        'im0 0.912 0.5 2.0 31.0 40.0'
    back = read_devkit(tmp_path, CLASSES, dets.image_ids, 'test')
    q = dets.quantized()
    order = np.lexsort((q.img, q.labels))
    for k in ('img', 'labels', 'scores', 'boxes'):
        np.testing.assert_array_equal(getattr(back, k), getattr(q, k)[order])


def test_devkit_reader_errors(tmp_path):
    with pytest.raises(EvalInputError, match='no \\*det_test'):
        read_devkit(tmp_path, CLASSES, ['im0'], 'test')
    (tmp_path / 'det_test_cat.txt').write_text('im9 0.5 1 1 5 5\n')
    with pytest.raises(EvalInputError, match="det_test_cat.txt:1: image 'im9'"):
        read_devkit(tmp_path, CLASSES, ['im0'], 'test')
    (tmp_path / 'det_test_cat.txt').write_text('im0 0.5 1 1 5\n')
    with pytest.raises(EvalInputError, match='det_test_cat.txt:1: expected'):
        read_devkit(tmp_path, CLASSES, ['im0'], 'test')
    (tmp_path / 'det_test_cat.txt').write_text('im0 0.5 1 1 5 5\n')
    d = read_devkit(tmp_path, CLASSES, ['im0'], 'test')     # dog: no file, no detections
    assert len(d) == 1 and d.labels.tolist() == [0]


XML = """<annotation><size><width>200</width><height>100</height><depth>3</depth></size>
{}</annotation>"""
OBJ = """<object><name>{}</name><pose>Left</pose><truncated>0</truncated>
<difficult>{}</difficult><bndbox><xmin>{}</xmin><ymin>{}</ymin><xmax>{}</xmax>
<ymax>{}</ymax></bndbox></object>"""


def write_voc(root, objs_per_image):
    base = root / 'VOC2007'
    (base / 'Annotations').mkdir(parents=True)
    (base / 'ImageSets' / 'Main').mkdir(parents=True)
    (base / 'ImageSets' / 'Main' / 'test.txt').write_text(
        ''.join(f'{i}\n' for i in objs_per_image))
    for i, objs in objs_per_image.items():
        (base / 'Annotations' / f'{i}.xml').write_text(
            XML.format(''.join(OBJ.format(*o) for o in objs)))


def test_load_voc_gt_reads_xml_like_the_devkit(tmp_path):
    write_voc(tmp_path, {'000001': [('cat', 0, 1, 2, 30, 40), ('dog', 1, 5, 5, 9, 9)],
                         '000002': [('Dog', 'true', 1, 1, 5, 5), ('cat', 0, 10, 10, 20, 20)]})
    gt = load_voc_gt(tmp_path, '2007', 'test', CLASSES)
    assert gt.image_ids == ['000001', '000002']
    assert gt.img.tolist() == [0, 0, 1, 1] and gt.labels.tolist() == [0, 1, 1, 0]
    assert gt.boxes.tolist() == [[1, 2, 30, 40], [5, 5, 9, 9], [1, 1, 5, 5], [10, 10, 20, 20]]
    assert gt.boxes.dtype == np.float64
    assert gt.difficult.tolist() == [False, True, True, False]
    assert gt.sizes.tolist() == [[200, 100], [200, 100]]
    with pytest.raises(DatasetError, match='val.txt: split file not found'):
        load_voc_gt(tmp_path, '2007', 'val', CLASSES)
    # a class outside the list is an error naming the file and object, not a skip
    write_voc(tmp_path / 'b', {'000003': [('cat', 0, 1, 1, 5, 5), ('horse', 0, 1, 1, 5, 5)]})
    with pytest.raises(DatasetError, match=r"000003.xml: unknown class 'horse' \(object 1\)"):
        load_voc_gt(tmp_path / 'b', '2007', 'test', CLASSES)
