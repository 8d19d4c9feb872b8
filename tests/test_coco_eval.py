"""COCO metric: equal to pycocotools run directly, conversions, results JSON."""
import contextlib
import io
import json

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from utils.evaluation.coco import (STAT_NAMES, coco_from_gt, coco_results, dets_from_results,
                             evaluate_coco, gt_from_coco, load_coco_gt, read_results,
                             write_results)
from data import DatasetError
from utils.evaluation.detections import EvalInputError, GroundTruth

# non-contiguous category ids, small / medium / large objects, one crowd
GT = {
    'images': [{'id': 7, 'file_name': 'a.jpg', 'width': 640, 'height': 480},
               {'id': 9, 'file_name': 'b.jpg', 'width': 640, 'height': 480}],
    'categories': [{'id': 1, 'name': 'person'}, {'id': 3, 'name': 'car'}],
    'annotations': [
        {'id': 1, 'image_id': 7, 'category_id': 1, 'bbox': [10, 10, 20, 20], 'area': 400, 'iscrowd': 0},
        {'id': 2, 'image_id': 7, 'category_id': 3, 'bbox': [100, 100, 60, 50], 'area': 3000, 'iscrowd': 0},
        {'id': 3, 'image_id': 9, 'category_id': 1, 'bbox': [200, 50, 150, 200], 'area': 30000, 'iscrowd': 0},
        {'id': 4, 'image_id': 9, 'category_id': 3, 'bbox': [0, 300, 100, 100], 'area': 10000, 'iscrowd': 1},
    ]}
RES = [
    {'image_id': 7, 'category_id': 1, 'bbox': [11, 10, 20, 21], 'score': .9},
    {'image_id': 7, 'category_id': 1, 'bbox': [300, 300, 20, 20], 'score': .8},
    {'image_id': 7, 'category_id': 3, 'bbox': [105, 98, 60, 55], 'score': .7},
    {'image_id': 9, 'category_id': 1, 'bbox': [190, 60, 150, 190], 'score': .95},
    {'image_id': 9, 'category_id': 3, 'bbox': [0, 300, 50, 50], 'score': .6},
    {'image_id': 9, 'category_id': 3, 'bbox': [400, 10, 80, 80], 'score': .5},
]


def reference_stats(ann_file, res_file):
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann_file))
        ev = COCOeval(gt, gt.loadRes(str(res_file)), 'bbox')
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


@pytest.fixture
def files(tmp_path):
    ann = tmp_path / 'instances_val.json'
    ann.write_text(json.dumps(GT))
    res = write_results(RES, str(tmp_path / 'res.json'))
    return ann, res


def test_equal_to_pycocotools(files):
    ann, res = files
    ref = reference_stats(ann, res)
    out = evaluate_coco(load_coco_gt(str(ann)), read_results(res), verbose=False)
    assert list(out['stats']) == list(STAT_NAMES)
    np.testing.assert_allclose(list(out['stats'].values()), ref, atol=1e-6)
    assert set(out['ap']) == {'person', 'car'}
    assert 'Average Precision' in out['summary']


def test_round_trip_through_devkit_coordinates(files):
    """COCO json -> GroundTruth/Detections (devkit coords) -> COCO again gives
    the same numbers as pycocotools on the original files."""
    ann, res = files
    ref = reference_stats(ann, res)
    gt, img_ids, cat_ids = gt_from_coco(load_coco_gt(str(ann)))
    assert gt.image_ids == ['7', '9'] and cat_ids == [1, 3]
    np.testing.assert_array_equal(gt.boxes[0], [11, 11, 31, 31])    # x + 1, x + w + 1
    assert gt.difficult.tolist() == [False, False, False, True]
    dets = dets_from_results(read_results(res), img_ids, cat_ids)
    rebuilt = coco_from_gt(gt)                  # image ids 1..I, category ids 1..K
    out = evaluate_coco(rebuilt, coco_results(dets, [1, 2], [1, 2]), verbose=False)
    np.testing.assert_allclose(list(out['stats'].values()), ref, atol=1e-6)


def test_perfect_and_empty():
    gt = GroundTruth.from_records(['a'], ('x',), [dict(
        boxes=[[11, 11, 60, 40]], labels=[0], difficult=[False], width=100, height=80)])
    coco = coco_from_gt(gt)
    perfect = [{'image_id': 1, 'category_id': 1, 'bbox': [10, 10, 49, 29], 'score': .9}]
    out = evaluate_coco(coco, perfect, verbose=False)
    assert out['stats']['AP'] == pytest.approx(1.0) and out['stats']['AR100'] == pytest.approx(1.0)
    assert evaluate_coco(coco, [], verbose=False)['stats'] == {k: 0.0 for k in STAT_NAMES}


def test_bad_results_are_one_line_errors(tmp_path, files):
    ann, _ = files
    bad = tmp_path / 'bad.json'
    bad.write_text('{"not": "a list"}')
    with pytest.raises(EvalInputError, match='bad.json: a COCO results JSON is a list'):
        read_results(str(bad))
    bad.write_text('[{"image_id": 1}]')
    with pytest.raises(EvalInputError, match='entry 0'):
        read_results(str(bad))
    gt, img_ids, cat_ids = gt_from_coco(load_coco_gt(str(ann)))
    with pytest.raises(EvalInputError, match='image_id 5'):
        dets_from_results([{'image_id': 5, 'category_id': 1, 'bbox': [0, 0, 1, 1],
                            'score': 1.}], img_ids, cat_ids)
    with pytest.raises(DatasetError, match='missing.json: annotation file not found'):
        load_coco_gt(str(tmp_path / 'missing.json'))
