"""eval.py end to end: a random shapes-preset model on a tiny shapes set, the
devkit files read back, VOC detection files vs the devkit port, COCO JSON vs
pycocotools, one-line errors."""
import contextlib
import io
import json
import os
import tempfile

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from data import SHAPES_CLASSES, VOC_CLASSES
from data.config import shapes as shapes_cfg
from ssd import build_ssd
from utils.bench.voc_eval import port_voc_eval
from utils.checkpoint import atomic_save
from utils.evaluation.coco import STAT_NAMES

from _scripts import load_script





EVAL = load_script('eval')


def run_eval(argv):
    """eval.py's main(argv); returns (its --json dict, stdout)."""
    out = io.StringIO()
    if '--json' in argv:
        path, extra = argv[argv.index('--json') + 1], []
    else:
        fd, path = tempfile.mkstemp(suffix='.json')
        os.close(fd)
        extra = ['--json', path]
    with contextlib.redirect_stdout(out):
        assert EVAL.main(argv + extra) == 0
    with open(path) as f:
        return json.load(f), out.getvalue()


@pytest.fixture(scope='module')
def shapes_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    net = build_ssd('train', cfg=shapes_cfg, num_classes=6)
    path = tmp_path_factory.mktemp('ckpt') / 'checkpoint.pth'
    atomic_save({'model': net.state_dict(), 'iteration': 1, 'args': {'dataset': 'shapes'}}, path)
    return str(path)


TINY = ['--num_images', '3', '--confidence_threshold', '0.05', '--top_k', '10',
        '--num_workers', '0', '--batch_size', '2']


def test_shapes_end_to_end_and_detections_round_trip(shapes_ckpt, tmp_path):
    out = tmp_path / 'eval'
    res, text = run_eval(['--trained_model', shapes_ckpt, '--save_folder', str(out),
                          '--metric', 'voc07,voc12,coco', '--json', str(out / 'eval.json')] + TINY)
    saved = json.loads((out / 'eval.json').read_text())
    assert saved == res
    assert list(saved) == ['voc07', 'voc12', 'coco', 'images', 'detections']
    assert saved['images'] == 3 and saved['detections'] > 0
    assert list(saved['voc07']['ap']) == list(SHAPES_CLASSES)
    assert list(saved['coco']) == list(STAT_NAMES)
    for c in SHAPES_CLASSES:
        assert (out / f'det_val_{c}.txt').exists() and (out / f'{c}_pr.png').exists()
    lines = text.splitlines()
    k = lines.index('VOC07 metric? Yes')
    for j, (c, ap) in enumerate(saved['voc07']['ap'].items()):   # n/a: no ground truth
        assert lines[k + 1 + j] == f'AP for {c} = ' + ('n/a' if ap is None else f'{ap:.4f}')
    assert lines[k + 6] == 'Mean AP = {:.4f}'.format(saved['voc07']['map'])
    assert lines[k + 7:k + 9] == ['~~~~~~~~', 'Results:']
    assert lines[k + 14] == '{:.3f}'.format(saved['voc07']['map'])
    assert 'VOC07 metric? No' in lines
    # the same files through --detections give the same numbers
    again, _ = run_eval(['--detections', str(out), '--dataset', 'shapes', '--num_images', '3',
                         '--metric', 'voc07,voc12', '--save_folder', str(tmp_path / 'again'),
                         '--pr_curves', 'no'])
    assert again['voc07'] == saved['voc07'] and again['voc12'] == saved['voc12']
    assert again['detections'] == saved['detections']


def test_json_holds_only_the_chosen_metric(shapes_ckpt, tmp_path):
    res, _ = run_eval(['--trained_model', shapes_ckpt, '--save_folder', str(tmp_path),
                       '--dataset', 'shapes', '--metric', 'voc12', '--cleanup', 'true', '--pr_curves', '0'] + TINY)
    assert list(res) == ['voc12', 'images', 'detections']
    assert not list(tmp_path.glob('det_*.txt'))


OBJ = ('<object><name>{}</name><difficult>{}</difficult><bndbox><xmin>{}</xmin>'
       '<ymin>{}</ymin><xmax>{}</xmax><ymax>{}</ymax></bndbox></object>')


def test_voc_detection_files_equal_devkit_port(tmp_path):
    rng = np.random.default_rng(1)
    base = tmp_path / 'VOCdevkit' / 'VOC2007'
    (base / 'Annotations').mkdir(parents=True)
    (base / 'ImageSets' / 'Main').mkdir(parents=True)
    ids = [f'{i:06d}' for i in range(12)]
    (base / 'ImageSets' / 'Main' / 'test.txt').write_text('\n'.join(ids) + '\n')
    recs, det_lines = {}, {c: [] for c in ('cat', 'dog', 'person')}
    for i in ids:
        objs = []
        for _ in range(rng.integers(1, 5)):
            c = ('cat', 'dog', 'person')[rng.integers(0, 3)]
            x, y = rng.integers(1, 200, 2)
            w, h = rng.integers(10, 100, 2)
            objs.append({'name': c, 'difficult': int(rng.random() < .2),
                         'bbox': [int(x), int(y), int(x + w), int(y + h)]})
            for _ in range(2):     # near hits, rounded scores (ties)
                jit = rng.normal(0, 6, 4)
                b = np.array(objs[-1]['bbox']) + jit
                det_lines[c].append(f'{i} {rng.random():.1f} ' + ' '.join(f'{v:.1f}' for v in b))
        recs[i] = objs
        (base / 'Annotations' / f'{i}.xml').write_text('<annotation>' + ''.join(
            OBJ.format(o['name'], o['difficult'], *o['bbox']) for o in objs) + '</annotation>')
    dets = tmp_path / 'dets'
    dets.mkdir()
    for c, lines in det_lines.items():
        (dets / f'comp4_det_test_{c}.txt').write_text('\n'.join(lines) + '\n')
    res, _ = run_eval(['--detections', str(dets), '--voc_root', str(tmp_path / 'VOCdevkit'),
                       '--metric', 'voc07,voc12', '--save_folder', str(tmp_path / 'out'),
                       '--pr_curves', 'false'])
    for metric, use07 in (('voc07', True), ('voc12', False)):
        for c in det_lines:
            ap = port_voc_eval(str(dets / f'comp4_det_test_{c}.txt'), recs, ids, c, 0.5, use07)[2]
            assert abs(res[metric]['ap'][c] - ap) < 1e-6
        assert set(res[metric]['ap']) == set(VOC_CLASSES)
        assert res[metric]['ap']['aeroplane'] is None     # no ground truth: n/a
        assert res[metric]['map'] == pytest.approx(
            np.mean([res[metric]['ap'][c] for c in det_lines]), abs=1e-12)


def test_coco_results_json_equals_pycocotools(tmp_path):
    from tests.test_coco_eval import GT, RES
    ann, dets = tmp_path / 'ann.json', tmp_path / 'dets.json'
    ann.write_text(json.dumps(GT))
    dets.write_text(json.dumps(RES))
    res, text = run_eval(['--detections', str(dets), '--ann_file', str(ann), '--dataset', 'COCO',
                          '--save_folder', str(tmp_path / 'out')])
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann))
        ev = COCOeval(gt, gt.loadRes(str(dets)), 'bbox')
        ev.evaluate(), ev.accumulate(), ev.summarize()
    assert list(res) == ['coco', 'images', 'detections']
    np.testing.assert_allclose([res['coco'][k] for k in STAT_NAMES], ev.stats, atol=1e-6)
    assert 'Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]' in text


@pytest.mark.parametrize('content', [b'', b'PK\x03\x04 truncated zip', b'not a torch file'])
def test_bad_weight_file_is_one_line_error(tmp_path, capsys, content):
    bad = tmp_path / 'bad.pth'
    bad.write_bytes(content)
    assert EVAL.main(['--trained_model', str(bad), '--dataset', 'shapes']) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('eval.py: error: ') and 'bad.pth' in err[0]
