"""python -m data.check: counts on a clean tree, and every bad input named
on its own line, with exit status 1 and the JSON report."""
import json
import os
import re
import subprocess
import sys

import pytest

from data.check import main as check_main
from data.shapes_io import write_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def clean_voc(tmp_path_factory):
    return write_dataset(str(tmp_path_factory.mktemp('c') / 'VOC2007'), 'voc',
                         num=8, seed=5)


def _run(args, capsys):
    rc = check_main(args)
    return rc, capsys.readouterr().out


def test_clean_voc_counts(clean_voc, tmp_path, capsys):
    from data.shapes import generate
    gts = [generate(5, i)[1] for i in range(8)]
    n_obj = sum(len(g['labels']) for g in gts)
    n_diff = sum(int(g['difficult'].sum()) for g in gts)
    rc, out = _run([clean_voc, '--format', 'voc', '--json',
                    str(tmp_path / 'r.json')], capsys)
    assert rc == 0 and 'problems: 0' in out
    r = json.load(open(tmp_path / 'r.json'))
    assert {'images', 'objects', 'difficult', 'problems',
            'warnings'} <= set(r)
    assert (r['images'], r['objects'], r['difficult']) == (8, n_obj, n_diff)
    assert r['problems'] == []
    rc, out = _run([clean_voc, '--format', 'voc', '--split', 'val'], capsys)
    assert rc == 0 and re.search(r'images: 2\b', out)


def _break_voc(d):
    """One bad input of each kind; returns {file name: expected message}."""
    j, a = os.path.join(d, 'JPEGImages'), os.path.join(d, 'Annotations')
    data = open(os.path.join(j, '000000.jpg'), 'rb').read()
    open(os.path.join(j, '000000.jpg'), 'wb').write(data[:len(data) // 2])
    open(os.path.join(a, '000001.xml'), 'w').write('<annotation><object>')
    x = open(os.path.join(a, '000002.xml')).read()
    x = re.sub(r'<xmax>\d+</xmax>', '<xmax>5000</xmax>', x, count=1)
    open(os.path.join(a, '000002.xml'), 'w').write(x)
    open(os.path.join(a, '000003.xml'), 'w').write(
        '<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaa">'
        '<!ENTITY b "&a;&a;&a;">]><annotation>&b;</annotation>')
    x = open(os.path.join(a, '000004.xml')).read()
    open(os.path.join(a, '000004.xml'), 'w').write(
        re.sub(r'<name>\w+</name>', '<name>unicorn</name>', x, count=1))
    x = open(os.path.join(a, '000005.xml')).read()
    open(os.path.join(a, '000005.xml'), 'w').write(
        re.sub(r'<bndbox>.*?</bndbox>', '', x, count=1, flags=re.S))
    os.remove(os.path.join(j, '000006.jpg'))
    b = bytearray(open(os.path.join(j, '000007.jpg'), 'rb').read())
    b[len(b) // 2:len(b) // 2 + 50] = b'\xff\xd0' * 25   # corrupt the scan
    open(os.path.join(j, '000007.jpg'), 'wb').write(bytes(b))
    open(os.path.join(j, '000008.jpg'), 'wb').write(b'GIF89a, not a JPEG')
    with open(os.path.join(d, 'ImageSets', 'Main', 'train.txt'), 'a') as f:
        f.write('../../../etc/passwd\n')
    return {'000000.jpg': 'truncated JPEG', '000001.xml': 'malformed XML',
            '000003.xml': 'entity expansion refused',
            '000004.xml': "unknown class 'unicorn'",
            '000005.xml': 'has no <bndbox>', '000006.jpg': 'missing image',
            '000007.jpg': 'corrupt image data', '000008.jpg': 'unreadable image',
            'train.txt': 'leaves the dataset root'}


def test_every_bad_input_is_named(tmp_path, capsys):
    d = write_dataset(str(tmp_path / 'VOCdevkit' / 'VOC2007'), 'voc', num=10,
                      seed=5)
    expected = _break_voc(d)
    rc, out = _run([str(tmp_path / 'VOCdevkit'), '--format', 'voc', '--json',
                    str(tmp_path / 'r.json')], capsys)
    assert rc == 1
    problems = [ln for ln in out.splitlines() if ln.startswith('PROBLEM ')]
    for name, msg in expected.items():
        assert any(name in ln and msg in ln for ln in problems), (name, out)
    assert len(problems) == len(expected)
    r = json.load(open(tmp_path / 'r.json'))
    assert len(r['problems']) == len(expected)
    assert all(set(p) == {'file', 'message'} for p in r['problems'])
    assert any('000002.xml' in w['file'] and 'outside' in w['message']
               for w in r['warnings'])


def test_command_line_no_traceback(tmp_path):
    d = write_dataset(str(tmp_path / 'VOC2007'), 'voc', num=3, seed=1)
    open(os.path.join(d, 'Annotations', '000000.xml'), 'w').write('<<<')
    p = subprocess.run([sys.executable, '-m', 'data.check', d, '--format',
                        'voc'], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 1 and 'Traceback' not in p.stdout + p.stderr
    assert '000000.xml: malformed XML' in p.stdout


def test_coco_problems(tmp_path, capsys):
    root = write_dataset(str(tmp_path / 'coco'), 'coco', num=5, seed=2)
    ann = os.path.join(root, 'annotations', 'instances_train2017.json')
    d = json.load(open(ann))
    d['annotations'][0]['category_id'] = 77
    d['annotations'][1]['bbox'] = [-10, 0, 20, 20]
    del d['annotations'][2]['bbox']
    os.remove(os.path.join(root, 'train2017', d['images'][1]['file_name']))
    json.dump(d, open(ann, 'w'))
    open(os.path.join(root, 'annotations', 'instances_val2017.json'),
         'w').write('{"images": [}')
    rc, out = _run([root, '--format', 'coco'], capsys)
    assert rc == 1
    assert re.search(r'instances_train2017.json: annotations\[0\]: unknown class', out)
    assert re.search(r'annotations\[2\]: missing or malformed bbox', out)
    assert re.search(r'000000000001.jpg: missing image', out)
    assert re.search(r'instances_val2017.json: malformed JSON', out)
    assert re.search(r'warning .*annotations.*outside', out)


def test_yolo_problems(tmp_path, capsys):
    root = write_dataset(str(tmp_path / 'y'), 'yolo', num=5, seed=2)
    lab = os.path.join(root, 'labels', 'train')
    open(os.path.join(lab, '000000.txt'), 'a').write('9 0.5 0.5 0.1 0.1\n')
    open(os.path.join(lab, '000001.txt'), 'a').write('0 0.5\n')
    open(os.path.join(lab, 'orphan.txt'), 'w').write('0 0.5 0.5 0.1 0.1\n')
    rc, out = _run([root, '--format', 'yolo', '--split', 'train'], capsys)
    assert rc == 1
    assert '000000.txt: line' in out and 'unknown class 9' in out
    assert '000001.txt: line' in out and 'orphan.txt: missing image' in out
    rc, out = _run([root, '--format', 'yolo', '--split', 'val'], capsys)
    assert rc == 0 and re.search(r'images: 1\b', out)
