"""COCODetection on fixtures laid out as COCO 2017 and COCO 2014."""
import json
import os

import cv2
import numpy as np
import pytest

from data import COCODetection, COCO_CLASSES, DatasetError, get_dataset, \
    get_label_map
from data.coco import COCO_CAT_IDS, COCOAnnotationTransform

CATS = [{'id': 90, 'name': 'toothbrush'}, {'id': 1, 'name': 'person'},
        {'id': 18, 'name': 'dog'}]


def make_coco(root, split='val2017', names=('000000000001.jpg',
                                            '000000000002.jpg'),
              folder=None):
    os.makedirs(os.path.join(root, 'annotations'), exist_ok=True)
    folder = os.path.join(root, folder or split)
    os.makedirs(folder, exist_ok=True)
    images, anns = [], []
    for k, name in enumerate(names):
        cv2.imwrite(os.path.join(folder, name), np.zeros((40, 80, 3), np.uint8))
        images.append({'id': 10 + k, 'file_name': name, 'width': 80,
                       'height': 40})
    anns = [
        {'id': 1, 'image_id': 10, 'category_id': 18, 'bbox': [8, 4, 40, 20],
         'area': 800, 'iscrowd': 0},
        {'id': 2, 'image_id': 10, 'category_id': 1, 'bbox': [0, 0, 80, 40],
         'area': 3200, 'iscrowd': 1},
        {'id': 3, 'image_id': 10, 'category_id': 90, 'bbox': [60, 20, 20, 20],
         'area': 400, 'iscrowd': 0},
    ]
    with open(os.path.join(root, 'annotations', f'instances_{split}.json'),
              'w') as f:
        json.dump({'images': images, 'annotations': anns,
                   'categories': CATS}, f)
    return root


def test_2017_layout_label_map_and_crowd(tmp_path):
    root = make_coco(str(tmp_path))
    ds = COCODetection(root, 'val2017')
    assert ds.ids == [10, 11]
    assert ds.classes == ('person', 'dog', 'toothbrush')
    assert ds.label_to_cat_id == (1, 18, 90)
    assert ds.cat_id_to_label == {1: 0, 18: 1, 90: 2}
    assert ds.get_label_map() == {1: 1, 18: 2, 90: 3}
    img, target = ds[0]
    assert img.shape == (3, 40, 80)
    np.testing.assert_allclose(target, [[0.1, 0.1, 0.6, 0.6, 1],
                                        [0.75, 0.5, 1.0, 1.0, 2]])
    assert ds[1][1].shape == (0, 5)             # an image without objects
    gt = ds.pull_gt(0)
    assert gt['image_id'] == '10'
    np.testing.assert_array_equal(gt['boxes'], [[8, 4, 48, 24], [0, 0, 80, 40],
                                                [60, 20, 80, 40]])
    assert gt['labels'].tolist() == [1, 0, 2]
    assert gt['difficult'].tolist() == [False, True, False]
    assert ds.pull_anno(0)[1] == [[8, 4, 48, 24, 1], [60, 20, 80, 40, 2]]
    assert ds.coco.getImgIds() == [10, 11]
    assert len(COCODetection(root, 'val2017', skip_empty=True)) == 1


def test_2014_layout_subset_finds_images_by_name(tmp_path):
    root = make_coco(str(tmp_path), 'valminusminival2014',
                     names=('COCO_val2014_000000000010.jpg',), folder='val2014')
    ds = get_dataset('COCO', root, 'valminusminival2014')
    assert ds.pull_image(0).shape == (40, 80, 3)
    assert ds.image_path(0).endswith(os.path.join('val2014',
                                                  'COCO_val2014_000000000010.jpg'))


def test_default_split_and_errors(tmp_path):
    root = make_coco(str(tmp_path), 'train2017')
    assert COCODetection(root).image_set == 'train2017'
    ann = os.path.join(root, 'annotations', 'instances_train2017.json')
    d = json.load(open(ann))
    d['annotations'][0]['category_id'] = 5
    json.dump(d, open(ann, 'w'))
    with pytest.raises(DatasetError, match='unknown class'):
        COCODetection(root)
    ds = COCODetection(root, skip_bad=True)
    assert ds.ids == [11] and ds.num_skipped_at_load == 1
    open(ann, 'w').write('{"images": [')
    with pytest.raises(DatasetError, match='instances_train2017.json: malformed'):
        COCODetection(root)


def test_standard_label_map():
    m = get_label_map()
    assert len(COCO_CLASSES) == 80 and len(m) == 80
    assert m[1] == 1 and m[90] == 80 and 12 not in m
    t = COCOAnnotationTransform()([{'bbox': [0, 0, 10, 10], 'category_id': 90},
                                   {'bbox': [0, 0, 5, 5], 'category_id': 1,
                                    'iscrowd': 1}], 10, 20)
    assert t == [[0.0, 0.0, 1.0, 0.5, 79]]
    assert COCO_CAT_IDS[-1] == 90
