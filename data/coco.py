"""MS COCO on pycocotools, 2014 and 2017 layouts::

    COCO_ROOT/annotations/instances_train2017.json   (or train2014, val2014,
    COCO_ROOT/train2017/000000000009.jpg               valminusminival2014,
    COCO_ROOT/val2017/...                              minival2014, ...)

Image folders may also sit under ``COCO_ROOT/images/``. Images of 2014
subsets such as ``valminusminival2014`` are found through their file names
(``COCO_val2014_...`` lies in ``val2014/``).

Labels: the annotation file's categories sorted by id map to contiguous
0-based labels (``cat_id_to_label``; ``label_to_cat_id`` maps back for the
COCO results JSON). ``get_label_map`` gives ssd.pytorch's 1-based map.
Crowd annotations are left out of training targets; ``pull_gt`` returns
them flagged ``difficult`` (ignored by the VOC metric, as COCOeval ignores
crowd regions).
"""
import contextlib
import io
import os.path as osp

import numpy as np

from .config import HOME
from .base import DetectionDataset, make_gt, read_image
from .annotations import (coco_image_path, load_coco_json,  # noqa: F401
                          read_coco_json, validate_coco)

__all__ = ['COCO_ROOT', 'COCO_CLASSES', 'COCO_CAT_IDS', 'COCODetection',
           'COCOAnnotationTransform', 'get_label_map', 'load_coco_json',
           'validate_coco']

COCO_ROOT = osp.join(HOME, 'data/coco/')
COCO_CLASSES = (
    'person', 'bicycle', 'car', 'motorcycle', 'airplane', 'bus', 'train',
    'truck', 'boat', 'traffic light', 'fire hydrant', 'stop sign',
    'parking meter', 'bench', 'bird', 'cat', 'dog', 'horse', 'sheep', 'cow',
    'elephant', 'bear', 'zebra', 'giraffe', 'backpack', 'umbrella', 'handbag',
    'tie', 'suitcase', 'frisbee', 'skis', 'snowboard', 'sports ball', 'kite',
    'baseball bat', 'baseball glove', 'skateboard', 'surfboard',
    'tennis racket', 'bottle', 'wine glass', 'cup', 'fork', 'knife', 'spoon',
    'bowl', 'banana', 'apple', 'sandwich', 'orange', 'broccoli', 'carrot',
    'hot dog', 'pizza', 'donut', 'cake', 'chair', 'couch', 'potted plant',
    'bed', 'dining table', 'toilet', 'tv', 'laptop', 'mouse', 'remote',
    'keyboard', 'cell phone', 'microwave', 'oven', 'toaster', 'sink',
    'refrigerator', 'book', 'clock', 'vase', 'scissors', 'teddy bear',
    'hair drier', 'toothbrush')
COCO_CAT_IDS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18,
                19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32, 33, 34, 35, 36,
                37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52,
                53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70,
                72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87,
                88, 89, 90)


def get_label_map(label_file=None):
    """{COCO category id: 1-based contiguous label} (ssd.pytorch's map).

    Without ``label_file`` (lines ``cat_id,label,name``) the 80 standard
    categories are used."""
    if label_file is None:
        return {c: i + 1 for i, c in enumerate(COCO_CAT_IDS)}
    label_map = {}
    with open(label_file) as f:
        for line in f:
            ids = line.split(',')
            if len(ids) >= 2:
                label_map[int(ids[0])] = int(ids[1])
    return label_map


class COCOAnnotationTransform:
    """ssd.pytorch's target transform: a list of COCO annotations to
    ``[[x1, y1, x2, y2, label], ...]`` normalised, crowd left out."""

    def __init__(self, label_map=None):
        self.label_map = label_map or {c: i for i, c in enumerate(COCO_CAT_IDS)}

    def __call__(self, target, width, height):
        res = []
        scale = np.array([width, height, width, height], np.float32)
        for obj in target:
            if 'bbox' not in obj or obj.get('iscrowd', 0):
                continue
            x, y, w, h = obj['bbox']
            box = np.array([x, y, x + w, y + h], np.float32) / scale
            res.append(list(box) + [self.label_map[obj['category_id']]])
        return res


class COCODetection(DetectionDataset):
    """MS COCO detection (ssd.pytorch's signature, plus keywords).

    Args:
        root: folder holding annotations/ and the image folders.
        image_set: 'train2017', 'val2017', 'train2014', 'val2014',
            'valminusminival2014', ...; default train2017, else train2014.
        ann_file: explicit instances JSON (overrides the layout).
        skip_empty: leave out images without annotations (training).
    Attributes: ``coco`` (pycocotools.coco.COCO), ``ids`` (COCO image ids),
    ``label_to_cat_id`` (tuple), ``cat_id_to_label`` (dict, 0-based).
    """

    def __init__(self, root=COCO_ROOT, image_set=None, transform=None,
                 target_transform=None, dataset_name='MS COCO',
                 ann_file=None, skip_empty=False, keep_difficult=False,
                 channel_order='RGB', skip_bad=False):
        super().__init__(transform, target_transform, channel_order,
                         keep_difficult, skip_bad)
        from pycocotools.coco import COCO
        self.root = osp.expanduser(str(root))
        if image_set is None:
            image_set = 'train2017' if osp.exists(osp.join(
                self.root, 'annotations', 'instances_train2017.json')) \
                else 'train2014'
        self.image_set, self.name = image_set, dataset_name
        self.ann_file = ann_file or osp.join(
            self.root, 'annotations', f'instances_{image_set}.json')
        d, bad = read_coco_json(self.ann_file, skip_bad)
        self.coco = COCO()
        self.coco.dataset = d
        self.coco.ann_file = self.source = self.ann_file
        with contextlib.redirect_stdout(io.StringIO()):
            self.coco.createIndex()
        cats = sorted(self.coco.cats.values(), key=lambda c: c['id'])
        self.label_to_cat_id = tuple(c['id'] for c in cats)
        self.cat_id_to_label = {c: i for i, c in enumerate(self.label_to_cat_id)}
        self.classes = tuple(c.get('name', str(c['id'])) for c in cats)
        ids = sorted(self.coco.imgs)
        if skip_empty:
            ids = [i for i in ids if self.coco.imgToAnns.get(i)]
        self.ids = [i for i in ids if i not in bad]
        self.num_skipped_at_load = len(ids) - len(self.ids)
        if self.num_skipped_at_load:
            print(f'{self.name}: skipped {self.num_skipped_at_load} images '
                  'with bad annotations')
        if target_transform is None:
            self.target_transform = COCOAnnotationTransform(
                self.cat_id_to_label)

    def get_label_map(self):
        """{category id: 1-based label} as ssd.pytorch's get_label_map."""
        return {c: i + 1 for i, c in enumerate(self.label_to_cat_id)}

    def image_path(self, index):
        """The image file (``data.annotations.coco_image_path``)."""
        return coco_image_path(self.root, self.image_set,
                               self.coco.imgs[self.ids[index]]['file_name'])

    def _file(self, index):
        return self.image_path(index)

    def pull_image(self, index):
        return read_image(self.image_path(index))

    def pull_gt(self, index):
        """Every annotation in 0-based pixels (x, y, x + w, y + h); crowd
        ones flagged difficult. ``image_id`` is the COCO id as a string."""
        img_id = self.ids[index]
        info = self.coco.imgs[img_id]
        anns = self.coco.imgToAnns.get(img_id, [])
        boxes = [[a['bbox'][0], a['bbox'][1], a['bbox'][0] + a['bbox'][2],
                  a['bbox'][1] + a['bbox'][3]] for a in anns]
        labels = [self.cat_id_to_label[a['category_id']] for a in anns]
        crowd = [bool(a.get('iscrowd', 0)) for a in anns]
        w, h = info.get('width'), info.get('height')
        if not w or not h:
            h, w = self.pull_image(index).shape[:2]
        return make_gt(img_id, w, h, boxes, labels, crowd)
