"""VOCDetection on a fixture laid out exactly as VOCdevkit (2007 + 2012)."""
import os

import cv2
import numpy as np
import pytest
import torch

from data import (VOCDetection, VOCAnnotationTransform, VOC_CLASSES,
                  BaseTransform, DatasetError, get_dataset)
import defusedxml.ElementTree as DET

XML = """<annotation>
  <folder>VOC{year}</folder><filename>{name}.jpg</filename>
  <size><width>100</width><height>50</height><depth>3</depth></size>
  <object><name>dog</name><difficult>0</difficult>
    <bndbox><xmin>11</xmin><ymin>6</ymin><xmax>51</xmax><ymax>26</ymax></bndbox>
  </object>
  <object><name>person</name><difficult>1</difficult>
    <bndbox><xmin>61</xmin><ymin>11</ymin><xmax>91</xmax><ymax>41</ymax></bndbox>
    <part><name>head</name><bndbox><xmin>70</xmin><ymin>12</ymin><xmax>80</xmax>
      <ymax>20</ymax></bndbox></part>
  </object>
</annotation>
"""


def make_voc(root, years=('2007', '2012'), n=2):
    for year in years:
        d = os.path.join(root, f'VOC{year}')
        for sub in ('Annotations', 'JPEGImages', 'ImageSets/Main'):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
        names = [f'{year}_{i:06d}' for i in range(n)]
        for name in names:
            img = np.zeros((50, 100, 3), np.uint8)
            img[5:26, 10:51] = (0, 0, 255)          # the dog is red (BGR)
            cv2.imwrite(os.path.join(d, 'JPEGImages', name + '.jpg'), img)
            with open(os.path.join(d, 'Annotations', name + '.xml'), 'w') as f:
                f.write(XML.format(year=year, name=name))
        for split in ('trainval', 'test'):
            with open(os.path.join(d, 'ImageSets/Main', split + '.txt'),
                      'w') as f:
                f.write(''.join(x + '\n' for x in names))
    return root


@pytest.fixture
def devkit(tmp_path):
    return make_voc(str(tmp_path / 'VOCdevkit'))


def test_items_as_ssd_pytorch(devkit):
    ds = VOCDetection(devkit)              # 2007 + 2012 trainval
    assert len(ds) == 4 and ds.name == 'VOC0712'
    assert ds.ids[0] == (os.path.join(devkit, 'VOC2007'), '2007_000000')
    img, target = ds[0]
    assert isinstance(img, torch.Tensor) and img.shape == (3, 50, 100)
    # the difficult person is left out; ssd.pytorch's minus one
    np.testing.assert_allclose(target, [[10 / 100, 5 / 50, 50 / 100, 25 / 50,
                                         11]], rtol=1e-6)
    assert target.dtype == np.float32
    # RGB by default: the red dog is channel 0 inside its box
    assert img[0, 15, 30] > 200 and img[2, 15, 30] < 50
    bgr = VOCDetection(devkit, channel_order='BGR')[0][0]
    assert bgr[2, 15, 30] > 200


def test_keep_difficult_pull_methods(devkit):
    ds = VOCDetection(devkit, [('2012', 'test')], keep_difficult=True)
    assert len(ds) == 2
    assert ds[1][1].shape == (2, 5)
    assert ds.pull_anno(0) == ['2012_000000', [[10, 5, 50, 25, 11],
                                               [60, 10, 90, 40, 14]]]
    assert ds.pull_image(0).shape == (50, 100, 3)
    assert ds.pull_image(0).dtype == np.uint8
    assert ds.pull_tensor(0).shape == (1, 50, 100, 3)
    im, gt, h, w = ds.pull_item(0)
    assert (h, w) == (50, 100)
    g = VOCDetection(devkit, [('2007', 'test')]).pull_gt(0)
    assert g['image_id'] == '2007_000000' and (g['width'], g['height']) == (100, 50)
    np.testing.assert_array_equal(g['boxes'], [[10, 5, 50, 25], [60, 10, 90, 40]])
    assert g['labels'].tolist() == [11, 14] and g['labels'].dtype == np.int64
    assert g['difficult'].tolist() == [False, True]
    assert g['boxes'].dtype == np.float32


def test_annotation_transform_on_element():
    root = DET.fromstring(XML.format(year=2007, name='x'))
    t = VOCAnnotationTransform()(root, 100, 50)
    np.testing.assert_allclose(t, [[0.1, 0.1, 0.5, 0.5, 11]])
    t = VOCAnnotationTransform(keep_difficult=True)(root, 100, 50)
    assert len(t) == 2


def test_transform_and_get_dataset(devkit):
    ds = get_dataset('VOC', devkit, [('2007', 'trainval')],
                     transform=BaseTransform(32, (104, 117, 123)))
    img, target = ds[0]
    assert img.shape == (3, 32, 32) and target.shape == (1, 5)
    assert len(get_dataset('voc', devkit, 'test')) == 2


@pytest.mark.parametrize('bad', ['../../etc/passwd', '/etc/passwd'])
def test_ids_leaving_the_root_are_refused(devkit, bad):
    split = os.path.join(devkit, 'VOC2007/ImageSets/Main/trainval.txt')
    with open(split, 'a') as f:
        f.write(bad + '\n')
    with pytest.raises(DatasetError, match='leaves the dataset root'):
        VOCDetection(devkit, [('2007', 'trainval')])
    with pytest.warns(UserWarning, match='leaves'):
        ds = VOCDetection(devkit, [('2007', 'trainval')], skip_bad=True)
    assert len(ds) == 2


def test_entity_expansion_and_bad_samples(devkit):
    xml = os.path.join(devkit, 'VOC2007/Annotations/2007_000001.xml')
    with open(xml, 'w') as f:
        f.write('<?xml version="1.0"?><!DOCTYPE a [<!ENTITY b "dog">]>'
                '<annotation><object><name>&b;</name></object></annotation>')
    ds = VOCDetection(devkit, [('2007', 'trainval')])
    with pytest.raises(DatasetError, match='2007_000001.xml: XML entity'):
        ds[1]
    with pytest.warns(UserWarning, match='skipping'):
        ds = VOCDetection(devkit, [('2007', 'trainval')], skip_bad=True)
    assert len(ds) == 1 and ds.num_skipped_at_load == 1
    os.remove(os.path.join(devkit, 'VOC2007/JPEGImages/2007_000000.jpg'))
    with pytest.warns(UserWarning, match='2007_000000.jpg: missing image'), \
            pytest.raises(DatasetError, match='every sample is bad'):
        ds[0]
    with pytest.raises(DatasetError, match='2007_000000.jpg: missing image'):
        VOCDetection(devkit, [('2007', 'trainval')])[0]


def test_classes():
    assert len(VOC_CLASSES) == 20 and VOC_CLASSES[0] == 'aeroplane'
