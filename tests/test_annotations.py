"""One reader per annotation format: the loaders, ``python -m data.check``
and the evaluator agree on every object (class-name case, ``difficult``
spellings, unknown classes, split files, COCO image paths), and feeding the
ground truth back to ``eval.py --detections`` gives mAP 1.0 even when the
evaluated set lacks a class."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from data import DatasetError, get_dataset
from data.check import check_dataset, main as check_main
from data.shapes_io import write_dataset
from utils.evaluation.detections import load_voc_gt
from utils.evaluation.evaluate import ground_truth

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIFFICULT = ['true', '1', 'TRUE', 'yes', 'False', '0', '', 'no']


PYTHON = os.path.join(ROOT, '.venv', 'bin', 'python')
if not os.path.exists(PYTHON):
    PYTHON = sys.executable


def _edit_xmls(root, fn):
    ann = os.path.join(root, 'Annotations')
    for name in sorted(os.listdir(ann)):
        path = os.path.join(ann, name)
        with open(path) as f:
            text = f.read()
        with open(path, 'w') as f:
            f.write(fn(name, text))


@pytest.fixture(scope='module')
def custom_voc(tmp_path_factory):
    """A shapes VOC tree whose XML spells 'Circle' (classes.txt: 'circle'),
    marks difficult with several spellings, and whose 'val' split has no
    'cross' at all."""
    root = write_dataset(str(tmp_path_factory.mktemp('ann') / 'custom'),
                         'voc', num=8, seed=3, val_fraction=0.5)
    val = open(os.path.join(root, 'ImageSets', 'Main', 'val.txt')).read().split()
    counter = iter(range(10 ** 6))

    def edit(name, text):
        text = text.replace('<name>circle</name>', '<name>Circle</name>')
        text = re.sub(r'<difficult>\d</difficult>',
                      lambda m: '<difficult>%s</difficult>'
                      % DIFFICULT[next(counter) % len(DIFFICULT)], text)
        if name[:-4] in val:     # drop every cross from the evaluated split
            text = re.sub(r'<object>\s*<name>cross</name>.*?</object>\s*', '',
                          text, flags=re.S)
        return text
    _edit_xmls(root, edit)
    return root


def _loader_objects(ds):
    """(image id, label, XML box, difficult) of every object, from pull_gt."""
    rows = []
    for i in range(len(ds)):
        g = ds.pull_gt(i)
        for b, lab, d in zip(g['boxes'], g['labels'], g['difficult']):
            rows.append((g['image_id'], int(lab), tuple(float(v) + 1 for v in b), bool(d)))
    return rows


def test_loader_check_and_evaluator_agree(custom_voc, tmp_path):
    ds = get_dataset('custom', custom_voc, 'val')
    rows = _loader_objects(ds)
    n_diff = sum(r[3] for r in rows)
    assert 0 < n_diff < len(rows)
    assert any(r[1] == 0 for r in rows)          # 'Circle' objects are read as circle
    assert not any(r[1] == 4 for r in rows)      # no cross in val
    gt = ground_truth(ds)
    ev = [(gt.image_ids[i], int(lab), tuple(map(float, b)), bool(d))
          for i, lab, b, d in zip(gt.img, gt.labels, gt.boxes, gt.difficult)]
    assert ev == rows
    assert gt.boxes.dtype == np.float64
    assert check_main([custom_voc, '--format', 'voc', '--split', 'val',
                       '--json', str(tmp_path / 'check.json')]) == 0
    rep = json.loads((tmp_path / 'check.json').read_text())
    assert rep['problems'] == []
    assert rep['objects'] == len(rows) and rep['difficult'] == n_diff
    per_class = {}
    for r in rows:
        per_class[ds.classes[r[1]]] = per_class.get(ds.classes[r[1]], 0) + 1
    assert rep['per_class'] == per_class
    # training targets leave out exactly the difficult objects
    assert sum(len(ds.pull_anno(i)[1]) for i in range(len(ds))) == len(rows) - n_diff


def _write_gt_as_devkit(ds, folder, set_type='val'):
    os.makedirs(folder, exist_ok=True)
    lines = {c: [] for c in ds.classes}
    for img_id, lab, b, _ in _loader_objects(ds):
        lines[ds.classes[lab]].append(f'{img_id} 1.000 ' + ' '.join(f'{v:.1f}' for v in b))
    for c, ls in lines.items():
        with open(os.path.join(folder, f'det_{set_type}_{c}.txt'), 'w') as f:
            f.write(''.join(x + '\n' for x in ls))


def test_ground_truth_fed_back_gives_map_one(custom_voc, tmp_path):
    ds = get_dataset('custom', custom_voc, 'val')
    dets = tmp_path / 'dets'
    _write_gt_as_devkit(ds, str(dets))
    # the documented command; the default custom set is 'test', else 'val'
    p = subprocess.run(
        [PYTHON, 'eval.py', '--dataset', 'custom', '--dataset_root', custom_voc,
         '--detections', str(dets), '--metric', 'voc07,voc12',
         '--save_folder', str(tmp_path / 'out'), '--json', str(tmp_path / 'r.json'),
         '--pr_curves', 'false'], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    res = json.loads((tmp_path / 'r.json').read_text())
    for m in ('voc07', 'voc12'):
        assert res[m]['map'] == pytest.approx(1.0, abs=1e-12)
        assert res[m]['ap']['cross'] is None                  # no ground truth: n/a
        assert res[m]['ap']['circle'] == pytest.approx(1.0, abs=1e-12)
    # n/a exactly for the classes without a non-difficult object (npos == 0)
    counted = {ds.classes[lab] for _, lab, _, d in _loader_objects(ds) if not d}
    assert 'cross' not in counted and len(counted) >= 3
    expect = ['1.000' if c in counted else 'n/a' for c in ds.classes]
    assert [c for c in ds.classes if res['voc07']['ap'][c] is None] == \
        [c for c in ds.classes if c not in counted]
    text = p.stdout.splitlines()
    assert 'AP for cross = n/a' in text
    assert 'Mean AP = 1.0000' in text
    k = text.index('Results:')
    assert text[k + 1:k + 7] == expect + ['1.000']


@pytest.mark.parametrize('value', ['maybe', '2'])
def test_bad_difficult_is_the_same_error_everywhere(tmp_path, value):
    root = write_dataset(str(tmp_path / 'd'), 'voc', num=2, seed=1, val_fraction=0.5)
    _edit_xmls(root, lambda n, t: t.replace('<difficult>0</difficult>',
                                            f'<difficult>{value}</difficult>', 1))
    xml = os.path.join(root, 'Annotations', '000001.xml')
    msg = re.escape(f"{xml}: object 0") + f".*<difficult>.*'{value}'"
    ds = get_dataset('custom', root, 'val')
    with pytest.raises(DatasetError, match=msg):
        ds.pull_gt(0)
    with pytest.raises(DatasetError, match=msg):
        ds[0]
    with pytest.raises(DatasetError, match=msg):
        ground_truth(ds)
    rep = check_dataset(root, 'voc', split='val').as_dict()
    assert [(p['file'], bool(re.match(msg, p['file'] + ': ' + p['message'])))
            for p in rep['problems']] == [(xml, True)]


def test_unknown_class_is_an_error_in_the_evaluator_too(tmp_path):
    root = write_dataset(str(tmp_path / 'd'), 'voc', num=2, seed=1, val_fraction=0.5)
    _edit_xmls(root, lambda n, t: re.sub(r'<name>\w+</name>', '<name>unicorn</name>', t,
                                         count=1))
    xml = os.path.join(root, 'Annotations', '000001.xml')
    msg = re.escape(f"{xml}: unknown class 'unicorn' (object 0)")
    ds = get_dataset('custom', root, 'val')
    for call in (lambda: ds.pull_gt(0), lambda: ground_truth(ds)):
        with pytest.raises(DatasetError, match=msg):
            call()
    rep = check_dataset(root, 'voc', split='val').as_dict()
    assert [p['file'] + ': ' + p['message'] for p in rep['problems']] == \
        [f"{xml}: unknown class 'unicorn' (object 0)"]


def test_class_names_match_ignoring_case_only_when_unique(tmp_path):
    from data.annotations import class_label
    ind = {'circle': 0, 'Square': 1, 'tri': 2, 'TRI': 3}
    assert class_label('circle', ind, 'f.xml', 0) == 0
    assert class_label('CIRCLE', ind, 'f.xml', 0) == 0
    assert class_label('square', ind, 'f.xml', 0) == 1
    assert class_label('TRI', ind, 'f.xml', 0) == 3            # exact match first
    with pytest.raises(DatasetError, match=r"f.xml: unknown class 'Tri' \(object 4\)"):
        class_label('Tri', ind, 'f.xml', 4)                    # ambiguous
    with pytest.raises(DatasetError, match=r"f.xml: unknown class 'dog' \(object 1\)"):
        class_label('dog', ind, 'f.xml', 1)


def test_difficult_values():
    from data.annotations import parse_difficult
    for v in ('1', 'true', 'True', 'YES', ' yes '):
        assert parse_difficult(v, 'f.xml: object 0') is True
    for v in ('0', 'false', 'FALSE', 'no', '', None):
        assert parse_difficult(v, 'f.xml: object 0') is False
    with pytest.raises(DatasetError, match=r"f.xml: object 0: <difficult> .*'0.5'"):
        parse_difficult('0.5', 'f.xml: object 0')


def test_evaluator_split_file_refuses_paths_leaving_the_root(tmp_path):
    root = tmp_path / 'VOCdevkit'
    write_dataset(str(root / 'VOC2007'), 'voc', num=2, seed=1, val_fraction=0.5)
    split = root / 'VOC2007' / 'ImageSets' / 'Main' / 'val.txt'
    with open(split, 'a') as f:
        f.write('../../../etc/passwd\n')
    from data.shapes import SHAPES_CLASSES
    with pytest.raises(DatasetError, match=re.escape(f'{split}: line 2: ') + '.*leaves'):
        load_voc_gt(str(root), '2007', 'val', SHAPES_CLASSES)
    with pytest.raises(DatasetError, match=re.escape(f'{split}: line 2: ') + '.*leaves'):
        get_dataset('custom', str(root / 'VOC2007'), 'val')
    rep = check_dataset(str(root / 'VOC2007'), 'voc', split='val').as_dict()
    assert [p['file'] for p in rep['problems']] == [str(split)]


def test_evaluator_reads_xml_numbers_as_float64(tmp_path):
    root = tmp_path / 'VOCdevkit'
    write_dataset(str(root / 'VOC2007'), 'voc', num=1, seed=1, val_fraction=1.0)
    _edit_xmls(str(root / 'VOC2007'), lambda n, t: re.sub(
        r'<xmin>\d+</xmin>', '<xmin>12.3</xmin>', t, count=1))
    from data.shapes import SHAPES_CLASSES
    gt = load_voc_gt(str(root), '2007', 'val', SHAPES_CLASSES)
    assert gt.boxes.dtype == np.float64 and gt.boxes[0, 0] == 12.3   # not float32(11.3) + 1


def test_coco_loader_and_check_name_the_same_missing_image(tmp_path):
    from tests.test_data_coco import make_coco
    root = make_coco(str(tmp_path), 'valminusminival2014',
                     names=('COCO_val2014_000000000010.jpg',), folder='val2014')
    img = os.path.join(root, 'val2014', 'COCO_val2014_000000000010.jpg')
    os.remove(img)
    ds = get_dataset('COCO', root, 'valminusminival2014')
    with pytest.raises(DatasetError, match=re.escape(f'{img}: missing image')):
        ds.pull_image(0)
    rep = check_dataset(root, 'coco', split='valminusminival2014').as_dict()
    assert {'file': img, 'message': 'missing image'} in rep['problems']


def test_coco_json_unknown_class_is_the_same_error_everywhere(tmp_path):
    from tests.test_data_coco import make_coco
    from utils.evaluation.coco import load_coco_gt
    root = make_coco(str(tmp_path), 'val2017')
    ann = os.path.join(root, 'annotations', 'instances_val2017.json')
    d = json.load(open(ann))
    d['annotations'][0]['category_id'] = 5
    json.dump(d, open(ann, 'w'))
    msg = re.escape(f'{ann}: annotations[0]: unknown class (category_id 5)')
    with pytest.raises(DatasetError, match=msg):
        get_dataset('COCO', root, 'val2017')
    with pytest.raises(DatasetError, match=msg):        # was: silently dropped
        load_coco_gt(ann)
    rep = check_dataset(root, 'coco', split='val2017').as_dict()
    assert [p['file'] + ': ' + p['message'] for p in rep['problems']] == \
        [f'{ann}: annotations[0]: unknown class (category_id 5)']
    with open(ann, 'w') as f:
        f.write('{"images": [')
    for call in (lambda: get_dataset('COCO', root, 'val2017'), lambda: load_coco_gt(ann)):
        with pytest.raises(DatasetError, match=re.escape(f'{ann}: malformed JSON')):
            call()
