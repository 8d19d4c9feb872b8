"""Issue 10, the bad-input half: non-finite numbers, empty sets, one decoding
policy for images, and the COCO metric for a COCO results file. Each bad
input is one line naming the file (and line or entry) in the loaders, in
``python -m data.check`` and in the evaluator, with a non-zero exit."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from data import DatasetError, get_dataset
from _scripts import load_script
from data.check import check_dataset, main as check_main
from data.shapes import SHAPES_CLASSES
from data.shapes_io import write_dataset
from utils.evaluation.coco import load_coco_gt, read_results
from utils.evaluation.detections import EvalInputError, load_voc_gt, read_devkit
from utils.evaluation.evaluate import ground_truth

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = os.path.join(ROOT, '.venv', 'bin', 'python')
if not os.path.exists(PYTHON):
    PYTHON = sys.executable


EVAL = load_script('eval')


def run_eval(argv, capsys):
    """eval.py's main: (exit code, stdout, stderr lines)."""
    rc = EVAL.main(argv + ['--pr_curves', 'false'])
    out, err = capsys.readouterr()
    return rc, out, [ln for ln in err.splitlines() if ln.strip()]


def _one_line_error(rc, err, *parts):
    assert rc == 1, err
    assert len(err) == 1 and err[0].startswith('eval.py: error: '), err
    for p in parts:
        assert p in err[0], (p, err)


def _problems(root, fmt, **kw):
    return [p['file'] + ': ' + p['message']
            for p in check_dataset(root, fmt, **kw).as_dict()['problems']]


def _voc(tmp_path, num=2):
    """A VOCdevkit/VOC2007 of shapes: split 'train' = 000000, 'val' = 000001."""
    base = str(tmp_path / 'VOCdevkit' / 'VOC2007')
    write_dataset(base, 'voc', num=num, seed=1, val_fraction=0.5)
    return base


def _sub(path, pattern, repl, count=1):
    with open(path) as f:
        text = f.read()
    with open(path, 'w') as f:
        f.write(re.sub(pattern, repl, text, count=count, flags=re.S))


# ------------------------------------------------------- non-finite numbers
@pytest.mark.parametrize('value', ['nan', 'inf', '-Infinity'])
def test_non_finite_voc_coordinate_is_an_error_everywhere(tmp_path, value):
    base = _voc(tmp_path)
    xml = os.path.join(base, 'Annotations', '000001.xml')
    _sub(xml, r'<xmin>\d+</xmin>', f'<xmin>{value}</xmin>')
    msg = re.escape(f"{xml}: <xmin> in object 0 (") + r'.*not a finite number'
    ds = get_dataset('custom', base, 'val')
    for call in (lambda: ds[0], lambda: ds.pull_gt(0), lambda: ground_truth(ds),
                 lambda: load_voc_gt(str(tmp_path / 'VOCdevkit'), '2007', 'val',
                                     SHAPES_CLASSES)):
        with pytest.raises(DatasetError, match=msg):
            call()
    rep = check_dataset(base, 'voc', split='val').as_dict()
    assert len(rep['problems']) == 1
    assert re.match(msg, rep['problems'][0]['file'] + ': ' + rep['problems'][0]['message'])
    assert 'nan' not in json.dumps(rep['box_stats']).lower()
    assert check_main([base, '--format', 'voc', '--split', 'val']) == 1


@pytest.mark.parametrize('value', [float('nan'), float('inf')])
def test_non_finite_coco_bbox_is_an_error_everywhere(tmp_path, value):
    root = write_dataset(str(tmp_path / 'coco'), 'coco', num=3, seed=2, val_fraction=0)
    ann = os.path.join(root, 'annotations', 'instances_train2017.json')
    d = json.loads(Path(ann).read_text())
    d['annotations'][1]['bbox'][2] = value
    with open(ann, 'w') as f:
        json.dump(d, f)                     # writes NaN / Infinity
    msg = re.escape(f'{ann}: annotations[1]: bbox has a non-finite number')
    for call in (lambda: get_dataset('COCO', root, 'train2017'), lambda: load_coco_gt(ann)):
        with pytest.raises(DatasetError, match=msg):
            call()
    problems = _problems(root, 'coco', split='train2017')
    assert len(problems) == 1 and re.match(msg, problems[0])


@pytest.mark.parametrize('line', ['0 nan 0.5 0.1 0.1', '1 0.5 0.5 inf 0.1'])
def test_non_finite_yolo_number_is_an_error_everywhere(tmp_path, line):
    root = write_dataset(str(tmp_path / 'y'), 'yolo', num=4, seed=2, val_fraction=0)
    lab = os.path.join(root, 'labels', 'train', '000002.txt')
    n = len(Path(lab).read_text().splitlines()) + 1
    with open(lab, 'a') as f:
        f.write(line + '\n')
    msg = re.escape(f'{lab}: line {n}: not a finite number')
    ds = get_dataset('custom', root, 'train')
    k = ds.ids.index('000002.jpg')
    for call in (lambda: ds[k], lambda: ds.pull_gt(k), lambda: ground_truth(ds)):
        with pytest.raises(DatasetError, match=msg):
            call()
    problems = _problems(root, 'yolo', split='train')
    assert len(problems) == 1 and re.match(msg, problems[0])


def _devkit(tmp_path):
    """A VOC tree (split 'val' = 000001) and a folder of det files."""
    base = _voc(tmp_path)
    dets = tmp_path / 'dets'
    dets.mkdir()
    for c in SHAPES_CLASSES + ('aeroplane',):      # aeroplane: for --voc_root's 20 classes
        (dets / f'det_val_{c}.txt').write_text('000001 0.900 10.0 10.0 50.0 50.0\n'
                                               '000001 0.800 12.0 12.0 52.0 52.0\n')
    return base, dets


@pytest.mark.parametrize('line, what', [
    ('000001 nan 12.0 12.0 52.0 52.0', "score 'nan' is not a finite number"),
    ('000001 0.5 12.0 inf 52.0 52.0', "y1 'inf' is not a finite number"),
    ('000001 -Infinity 1 2 3 4', "score '-Infinity' is not a finite number"),
    ('000001 high 12.0 12.0 52.0 52.0', "score 'high' is not a number"),
])
def test_bad_devkit_number_names_file_and_line(tmp_path, capsys, line, what):
    base, dets = _devkit(tmp_path)
    path = dets / 'det_val_circle.txt'
    path.write_text('000001 0.900 10.0 10.0 50.0 50.0\n' + line + '\n')
    with pytest.raises(EvalInputError, match=re.escape(f'{path}:2: {what}')):
        read_devkit(str(dets), SHAPES_CLASSES, ['000000', '000001'], 'val')
    rc, _, err = run_eval(['--dataset', 'custom', '--dataset_root', base, '--set_type', 'val',
                           '--detections', str(dets), '--save_folder', str(tmp_path / 'o')],
                          capsys)
    _one_line_error(rc, err, f'{path}:2: {what}')


def test_binary_devkit_file_is_named(tmp_path, capsys):
    base, dets = _devkit(tmp_path)
    path = dets / 'det_val_square.txt'
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(EvalInputError, match=re.escape(f'{path}: not a text detection file')):
        read_devkit(str(dets), SHAPES_CLASSES, ['000000', '000001'], 'val')
    rc, _, err = run_eval(['--dataset', 'custom', '--dataset_root', base, '--set_type', 'val',
                           '--detections', str(dets), '--save_folder', str(tmp_path / 'o')],
                          capsys)
    _one_line_error(rc, err, f'{path}: not a text detection file (binary data)')


def _coco_files(tmp_path):
    from tests.test_coco_eval import GT, RES
    ann, dets = tmp_path / 'ann.json', tmp_path / 'dets.json'
    ann.write_text(json.dumps(GT))
    dets.write_text(json.dumps(RES))
    return ann, dets, [dict(r) for r in RES]


@pytest.mark.parametrize('key, value, what', [
    ('score', float('nan'), 'entry 1: score nan is not a finite number'),
    ('score', float('inf'), 'entry 1: score inf is not a finite number'),
    ('score', 'high', "entry 1: score 'high' is not a number"),
    ('bbox', [1, 2, float('nan'), 4], 'entry 1: bbox has a non-finite number'),
])
def test_bad_coco_result_names_file_and_entry(tmp_path, capsys, key, value, what):
    ann, dets, res = _coco_files(tmp_path)
    res[1][key] = value
    dets.write_text(json.dumps(res))
    with pytest.raises(EvalInputError, match=re.escape(f'{dets}: {what}')):
        read_results(str(dets))
    rc, _, err = run_eval(['--detections', str(dets), '--ann_file', str(ann),
                           '--save_folder', str(tmp_path / 'o')], capsys)
    _one_line_error(rc, err, f'{dets}: {what}')


def test_binary_coco_results_file_is_named(tmp_path, capsys):
    ann, dets, _ = _coco_files(tmp_path)
    dets.write_bytes(b'\x89PNG\r\n\x1a\n' + bytes(range(256)))
    rc, _, err = run_eval(['--detections', str(dets), '--ann_file', str(ann),
                           '--save_folder', str(tmp_path / 'o')], capsys)
    _one_line_error(rc, err, f'{dets}: not a COCO results JSON (binary data)')


# ------------------------------------------------------------- empty inputs
def test_empty_split_is_an_error_everywhere(tmp_path, capsys):
    base, dets = _devkit(tmp_path)
    split = os.path.join(base, 'ImageSets', 'Main', 'val.txt')
    Path(split).write_text('\n  \n')
    msg = f'{split}: empty split (no image ids)'
    with pytest.raises(DatasetError, match=re.escape(msg)):
        get_dataset('custom', base, 'val')
    rc, _, err = run_eval(['--dataset', 'custom', '--dataset_root', base, '--set_type', 'val',
                           '--detections', str(dets), '--save_folder', str(tmp_path / 'o')],
                          capsys)
    _one_line_error(rc, err, msg)
    rc, out, err = run_eval(['--voc_root', str(tmp_path / 'VOCdevkit'), '--set_type', 'val',
                             '--detections', str(dets), '--save_folder', str(tmp_path / 'o')],
                            capsys)
    _one_line_error(rc, err, msg)
    assert 'Mean AP' not in out
    assert check_main([base, '--format', 'voc', '--split', 'val']) == 1
    assert f'PROBLEM {msg}' in capsys.readouterr().out
    assert _problems(base, 'voc') == [msg]      # every split checked: val named


def test_network_path_refuses_an_empty_split(tmp_path, capsys):
    import torch
    from data.config import shapes as shapes_cfg
    from ssd import build_ssd
    from utils.checkpoint import atomic_save
    base = _voc(tmp_path)
    Path(base, 'ImageSets', 'Main', 'val.txt').write_text('')
    torch.manual_seed(0)
    ckpt = tmp_path / 'checkpoint.pth'
    atomic_save({'model': build_ssd('train', cfg=shapes_cfg, num_classes=6).state_dict(),
                 'iteration': 1, 'args': {'dataset': 'shapes'}}, ckpt)
    rc, out, err = run_eval(['--trained_model', str(ckpt), '--dataset', 'custom',
                             '--dataset_root', base, '--set_type', 'val', '--cuda', 'false',
                             '--num_workers', '0', '--save_folder', str(tmp_path / 'o')],
                            capsys)
    _one_line_error(rc, err, 'val.txt: empty split')
    assert 'Mean AP' not in out


def _drop_objects(xml, difficult=False):
    if difficult:      # keep the objects, every one difficult
        _sub(xml, r'<difficult>\d</difficult>', '<difficult>1</difficult>', count=0)
    else:
        _sub(xml, r'<object>.*?</object>\s*', '', count=0)


@pytest.mark.parametrize('difficult', [False, True])
def test_split_without_objects_to_score_is_an_error(tmp_path, capsys, difficult):
    base, dets = _devkit(tmp_path)
    _drop_objects(os.path.join(base, 'Annotations', '000001.xml'), difficult)
    split = os.path.join(base, 'ImageSets', 'Main', 'val.txt')
    paths = [['--dataset', 'custom', '--dataset_root', base]]
    if not difficult:      # (the shapes class names are not VOC's)
        paths.append(['--voc_root', str(tmp_path / 'VOCdevkit')])
    for argv in paths:
        rc, out, err = run_eval(argv + ['--set_type', 'val', '--detections', str(dets),
                                        '--metric', 'voc07,coco',
                                        '--save_folder', str(tmp_path / 'o')], capsys)
        _one_line_error(rc, err, f'{split}: no objects to score in 1 images')
        assert 'Mean AP' not in out
    assert check_main([base, '--format', 'voc', '--split', 'val']) == 1
    out = capsys.readouterr().out
    assert re.search(r'^PROBLEM .*: no objects to score in 1 images', out, re.M), out
    # the same tree with a split that has objects passes
    assert check_main([base, '--format', 'voc', '--split', 'train']) == 0


def test_coco_without_images_or_objects_is_an_error(tmp_path, capsys):
    ann, dets, _ = _coco_files(tmp_path)
    d = json.loads(ann.read_text())
    d['annotations'] = []
    ann.write_text(json.dumps(d))
    rc, out, err = run_eval(['--detections', str(dets), '--ann_file', str(ann),
                             '--save_folder', str(tmp_path / 'o')], capsys)
    _one_line_error(rc, err, f'{ann}: no objects to score in 2 images')
    d['images'] = []
    ann.write_text(json.dumps(d))
    with pytest.raises(DatasetError, match=re.escape(f'{ann}: no images')):
        load_coco_gt(str(ann))
    root = write_dataset(str(tmp_path / 'coco'), 'coco', num=2, seed=2, val_fraction=0)
    js = os.path.join(root, 'annotations', 'instances_train2017.json')
    d = json.loads(Path(js).read_text())
    d['annotations'] = []
    Path(js).write_text(json.dumps(d))
    assert [p.split(': ', 1)[1] for p in _problems(root, 'coco', split='train2017')] == \
        ['no objects to score in 2 images (0 difficult/crowd)']
    d['images'] = []
    Path(js).write_text(json.dumps(d))
    assert _problems(root, 'coco', split='train2017') == \
        [f'{js}: no images (the "images" list is empty)']
    with pytest.raises(DatasetError, match='no images'):
        get_dataset('COCO', root, 'train2017')


def test_empty_yolo_split_is_a_problem(tmp_path):
    root = write_dataset(str(tmp_path / 'y'), 'yolo', num=2, seed=2, val_fraction=0)
    os.makedirs(os.path.join(root, 'images', 'val'), exist_ok=True)
    msg = f"{os.path.join(root, 'images', 'val')}: no images (empty split)"
    assert _problems(root, 'yolo', split='val') == [msg]
    with pytest.raises(DatasetError, match=re.escape(msg)):
        get_dataset('custom', root, 'val')


# ------------------------------------------------------- decoding policy
def _corrupt_jpeg(path):
    """Damage the middle of a JPEG's scan: libjpeg still returns an image
    and prints 'Corrupt JPEG data: ...' on stderr, without a file name."""
    b = bytearray(Path(path).read_bytes())
    b[len(b) // 2:len(b) // 2 + 50] = b'\xff\xd0' * 25
    Path(path).write_bytes(bytes(b))


def test_jpeg_corrupt_in_the_middle_is_the_same_error_everywhere(tmp_path, capfd):
    base = _voc(tmp_path, num=4)
    img = os.path.join(base, 'JPEGImages', '000003.jpg')
    _corrupt_jpeg(img)
    msg = re.escape(f'{img}: corrupt image data (decoder: Corrupt JPEG data')
    ds = get_dataset('custom', base, 'val')
    k = [i for _, i in ds.ids].index('000003')
    for call in (lambda: ds[k], lambda: ds.pull_image(k)):
        with pytest.raises(DatasetError, match=msg):
            call()
    problems = _problems(base, 'voc', split='val')
    assert len(problems) == 1 and re.match(msg, problems[0])
    ds = get_dataset('custom', base, 'val', skip_bad=True)
    with pytest.warns(UserWarning, match=msg):
        ds[k]
    # libjpeg's own line never reaches the terminal without the file
    err = capfd.readouterr().err
    assert not re.search(r'^Corrupt JPEG data', err, re.M), err


def test_other_decoder_messages_are_warnings_naming_the_file(tmp_path, capfd):
    from data.base import read_image
    base = _voc(tmp_path)
    img = os.path.join(base, 'JPEGImages', '000001.jpg')
    b = bytearray(Path(img).read_bytes())
    assert b[6:11] == b'JFIF\x00'
    b[11] = 2                               # JFIF major version 2: libjpeg warns
    Path(img).write_bytes(bytes(b))
    with pytest.warns(UserWarning, match=re.escape(f'{img}: decoder warning: ')
                      + '.*JFIF revision'):
        assert read_image(img).dtype == np.uint8
    rep = check_dataset(base, 'voc', split='val').as_dict()
    assert rep['problems'] == []
    assert any(w['file'] == img and 'JFIF revision' in w['message'] for w in rep['warnings'])
    err = capfd.readouterr().err
    assert not re.search(r'^Warning: unknown JFIF', err, re.M), err


def test_decoding_in_a_dataloader_worker_names_the_file(tmp_path):
    """The scratch file of fd 2 is per process: a forked worker's decode
    reports its own file."""
    base = _voc(tmp_path, num=4)
    img = os.path.join(base, 'JPEGImages', '000003.jpg')
    _corrupt_jpeg(img)
    code = ('import sys, torch.utils.data as tud\n'
            'from data import get_dataset\n'
            'from data.base import read_image\n'
            f'read_image({os.path.join(base, "JPEGImages", "000002.jpg")!r})\n'
            f'ds = get_dataset("custom", {base!r}, "val")\n'
            'dl = tud.DataLoader(ds, batch_size=1, num_workers=1, collate_fn=lambda b: b)\n'
            'try:\n    list(dl)\n'
            'except Exception as e:\n    print("ERR", "corrupt image data" in str(e) and '
            f'{img!r} in str(e))\n')
    p = subprocess.run([PYTHON, '-c', code], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert 'ERR True' in p.stdout, p.stdout + p.stderr
    assert not re.search(r'^Corrupt JPEG data', p.stderr, re.M), p.stderr


# ---------------------------------------------- COCO results: the COCO metric
def test_coco_results_file_gets_the_coco_metric_by_default(tmp_path, capsys):
    ann, dets, _ = _coco_files(tmp_path)
    js = tmp_path / 'r.json'
    # the README's command: no --dataset, no --metric
    rc, out, err = run_eval(['--detections', str(dets), '--ann_file', str(ann),
                             '--save_folder', str(tmp_path / 'o'), '--json', str(js)], capsys)
    assert rc == 0, err
    res = json.loads(js.read_text())
    assert list(res) == ['coco', 'images', 'detections']
    assert 'Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]' in out
    assert 'VOC07 metric' not in out
    assert np.isfinite(res['coco']['AP'])


def test_test_script_skips_a_corrupt_jpeg_naming_it(tmp_path, capfd):
    import cv2
    import torch
    from data.config import shapes as shapes_cfg
    from data.shapes import ShapesDetection
    from ssd import build_ssd
    from utils.checkpoint import atomic_save
    torch.manual_seed(0)
    weights = tmp_path / 'ssd160_shapes.pth'
    atomic_save(build_ssd('train', cfg=shapes_cfg, num_classes=6).state_dict(), weights)
    ds = ShapesDetection('val', num_images=2)
    (tmp_path / 'in').mkdir()
    for i in range(2):
        cv2.imwrite(str(tmp_path / 'in' / f'{i}.jpg'), ds.pull_image(i))
    bad = tmp_path / 'in' / '1.jpg'
    _corrupt_jpeg(bad)
    out = tmp_path / 'out'
    rc = load_script('test').main(['--trained_model', str(weights), '--dataset', 'shapes',
                               '--input', str(tmp_path / 'in'), '--save_folder', str(out),
                               '--cuda', 'false'])
    err = capfd.readouterr().err
    assert rc == 0, err
    assert sorted(os.listdir(out)) == ['0.jpg', 'detections.json']    # the same policy
    lines = re.split(r'[\r\n]', err)              # (tqdm's bar redraws with \r)
    assert any(ln.startswith(f'test.py: warning: {bad}: corrupt image data (decoder: Corrupt '
                             'JPEG data') for ln in lines), err
    assert not any(ln.startswith('Corrupt JPEG data') for ln in lines), err


def test_default_split_that_is_empty_is_not_passed_over(tmp_path, capsys):
    base, dets = _devkit(tmp_path)
    split = os.path.join(base, 'ImageSets', 'Main', 'val.txt')
    Path(split).write_text('')
    Path(base, 'ImageSets', 'Main', 'test.txt').write_text('000000\n')
    # custom's default evaluation splits are val, then test: an empty val is
    # an error, not a reason to score test instead
    rc, out, err = run_eval(['--dataset', 'custom', '--dataset_root', base,
                             '--detections', str(dets), '--save_folder', str(tmp_path / 'o')],
                            capsys)
    _one_line_error(rc, err, f'{split}: empty split (no image ids)')
