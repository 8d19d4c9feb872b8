"""Custom data: a VOC-style folder with a classes file, and YOLO txt."""
import os

import cv2
import numpy as np
import pytest

from data import CustomDetection, YOLODetection, DatasetError, get_dataset


def _img(path, w=100, h=50):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    cv2.imwrite(path, np.full((h, w, 3), 90, np.uint8))


def make_yolo(root, flat=False):
    with open(os.path.join(root, 'classes.txt'), 'w') as f:
        f.write('cat\nkite\n')
    sub = '' if flat else 'train'
    _img(os.path.join(root, 'images', sub, 'a.jpg'))
    _img(os.path.join(root, 'images', sub, 'b.png'))   # no label: background
    os.makedirs(os.path.join(root, 'labels', sub), exist_ok=True)
    with open(os.path.join(root, 'labels', sub, 'a.txt'), 'w') as f:
        f.write('1 0.5 0.5 0.2 0.4\n\n0 0.1 0.2 0.2 0.2\n')
    return root


@pytest.mark.parametrize('flat', [False, True])
def test_yolo_layout(tmp_path, flat):
    root = make_yolo(str(tmp_path), flat)
    ds = get_dataset('custom', root, 'train')
    assert isinstance(ds, YOLODetection) and ds.classes == ('cat', 'kite')
    assert ds.ids == ['a.jpg', 'b.png']
    img, t = ds[0]
    assert img.shape == (3, 50, 100)
    np.testing.assert_allclose(t, [[0.4, 0.3, 0.6, 0.7, 1], [0, 0.1, 0.2, 0.3, 0]],
                               atol=1e-6)
    gt = ds.pull_gt(0)
    np.testing.assert_allclose(gt['boxes'], [[40, 15, 60, 35], [0, 5, 20, 15]],
                               atol=1e-4)
    assert gt['image_id'] == 'a' and (gt['width'], gt['height']) == (100, 50)
    assert ds[1][1].shape == (0, 5)


@pytest.mark.parametrize('line,msg', [('7 0.5 0.5 0.1 0.1', 'unknown class 7'),
                                      ('0 0.5 0.5', 'expected "class cx cy w h"'),
                                      ('x 0.5 0.5 0.1 0.1', 'expected')])
def test_yolo_bad_lines_name_the_file(tmp_path, line, msg):
    root = make_yolo(str(tmp_path))
    with open(os.path.join(root, 'labels', 'train', 'a.txt'), 'a') as f:
        f.write(line + '\n')
    ds = YOLODetection(root)
    with pytest.raises(DatasetError, match=f'a.txt: line 4: {msg}'):
        ds[0]


XML = """<annotation><size><width>100</width><height>50</height></size>
<object><name>{name}</name><bndbox><xmin>11</xmin><ymin>6</ymin>
<xmax>{xmax}</xmax><ymax>26</ymax></bndbox></object></annotation>"""


def make_custom_voc(root, with_imagesets=True):
    with open(os.path.join(root, 'labels.txt'), 'w') as f:
        f.write('widget\ngadget\n')
    os.makedirs(os.path.join(root, 'Annotations'))
    for i, (name, xmax) in enumerate([('gadget', 51), ('widget', 500)]):
        _img(os.path.join(root, 'JPEGImages', f'{i}.png'))
        with open(os.path.join(root, 'Annotations', f'{i}.xml'), 'w') as f:
            f.write(XML.format(name=name, xmax=xmax))
    if with_imagesets:
        os.makedirs(os.path.join(root, 'ImageSets', 'Main'))
        with open(os.path.join(root, 'ImageSets', 'Main', 'val.txt'), 'w') as f:
            f.write('1\n')
    return root


def test_custom_voc_folder(tmp_path):
    root = make_custom_voc(str(tmp_path))
    ds = get_dataset('custom', root, 'val')
    assert isinstance(ds, CustomDetection) and ds.classes == ('widget', 'gadget')
    assert len(ds) == 1
    img, t = ds[0]                   # the box beyond the image is clipped
    np.testing.assert_allclose(t, [[0.1, 0.1, 1.0, 0.5, 0]])


def test_custom_voc_without_imagesets_uses_every_annotation(tmp_path):
    root = make_custom_voc(str(tmp_path), with_imagesets=False)
    ds = CustomDetection(root)
    assert [i[1] for i in ds.ids] == ['0', '1']
    np.testing.assert_allclose(ds[0][1], [[0.1, 0.1, 0.5, 0.5, 1]])


def test_unknown_layout_and_missing_classes(tmp_path):
    with pytest.raises(DatasetError, match='not a custom dataset'):
        get_dataset('custom', str(tmp_path))
    os.makedirs(tmp_path / 'images')
    with pytest.raises(DatasetError, match='no classes file'):
        get_dataset('custom', str(tmp_path))


def test_yolo_missing_split_is_an_error(tmp_path):
    root = make_yolo(str(tmp_path))
    with pytest.raises(DatasetError, match='no images in images/val/'):
        get_dataset('custom', root, 'val')
