"""PASCAL VOC 2007 + 2012 (and VOC-style folders), ssd.pytorch's interface.

Layout (one VOCdevkit root holds both years)::

    VOCdevkit/VOC2007/Annotations/000001.xml
                     /JPEGImages/000001.jpg
                     /ImageSets/Main/{trainval,test}.txt
    VOCdevkit/VOC2012/...

Annotations and split files are read by ``data.annotations`` (the reader
the evaluator and ``python -m data.check`` use too): XML through defusedxml,
class names matched exactly, else ignoring case, ``difficult`` as 0/1,
false/true or no/yes, image ids that would leave the root refused. Every
problem is a ``DatasetError`` whose one-line message names the file.
"""
import os.path as osp
import warnings

import numpy as np

from .config import HOME
from .base import DetectionDataset, DatasetError, make_gt, read_image, \
    clip_boxes, find_image
from .annotations import load_xml, read_split, read_voc_xml, voc_objects

__all__ = ['VOC_CLASSES', 'VOC_ROOT', 'VOCAnnotationTransform',
           'VOCDetection']

VOC_CLASSES = (  # always index 0
    'aeroplane', 'bicycle', 'bird', 'boat',
    'bottle', 'bus', 'car', 'cat', 'chair',
    'cow', 'diningtable', 'dog', 'horse',
    'motorbike', 'person', 'pottedplant',
    'sheep', 'sofa', 'train', 'tvmonitor')

VOC_ROOT = osp.join(HOME, "data/VOCdevkit/")


class VOCAnnotationTransform:
    """ssd.pytorch's target transform: a VOC annotation Element to a list of
    ``[x1, y1, x2, y2, label]`` normalised by (width, height).

    Args:
        class_to_ind: dict class name -> index (default VOC's, alphabetic).
        keep_difficult: keep objects marked difficult.
    Boxes are clipped to the image and zero-area ones dropped.
    """

    def __init__(self, class_to_ind=None, keep_difficult=False):
        self.class_to_ind = class_to_ind or dict(
            zip(VOC_CLASSES, range(len(VOC_CLASSES))))
        self.keep_difficult = keep_difficult

    def __call__(self, target, width, height, path='annotation'):
        boxes, labels, difficult = voc_objects(target, self.class_to_ind, path)
        boxes = (boxes - 1).astype(np.float32)     # ssd.pytorch's minus one
        if width == 1 and height == 1:          # pull_anno: pixels, unclipped
            ok = np.ones(len(labels), bool)
        else:
            boxes, ok, _ = clip_boxes(boxes, width, height)
        if not self.keep_difficult:
            ok &= ~difficult
        scale = np.float32([width, height, width, height])
        return np.hstack([boxes[ok] / scale, labels[ok, None]]).tolist()


_DEFAULT_TT = VOCAnnotationTransform()


class VOCDetection(DetectionDataset):
    """VOC detection dataset (ssd.pytorch's signature, plus keywords).

    Args:
        root: VOCdevkit folder holding VOC2007/ and VOC2012/.
        image_sets: list of (year, split); year None or '' means ``root``
            itself is the VOC-style folder (custom data).
        transform: (img, boxes, labels) -> (img, boxes, labels).
        target_transform: VOCAnnotationTransform() (Element, w, h) -> list.
        dataset_name: 'VOC0712'.
        keep_difficult: keep difficult objects in training targets.
        classes: class names (default VOC_CLASSES).
        channel_order, skip_bad: see data.base.DetectionDataset.
    ``ids`` are (year folder, image id) tuples as in ssd.pytorch.
    """

    def __init__(self, root, image_sets=(('2007', 'trainval'),
                                         ('2012', 'trainval')),
                 transform=None, target_transform=_DEFAULT_TT,
                 dataset_name='VOC0712', keep_difficult=False, classes=None,
                 channel_order='RGB', skip_bad=False):
        self.root = osp.expanduser(str(root))
        self.classes = tuple(classes or VOC_CLASSES)
        self.class_to_ind = {c: i for i, c in enumerate(self.classes)}
        if target_transform is _DEFAULT_TT:
            target_transform = VOCAnnotationTransform(self.class_to_ind,
                                                      keep_difficult)
        keep_difficult = getattr(target_transform, 'keep_difficult',
                                 keep_difficult)
        super().__init__(transform, target_transform, channel_order,
                         keep_difficult, skip_bad)
        self.image_set = image_sets
        self.name = dataset_name
        self._annopath = osp.join('%s', 'Annotations', '%s.xml')
        self._imgpath = osp.join('%s', 'JPEGImages', '%s.jpg')
        self.ids, split_files = [], []
        for year, split in image_sets:
            rootpath = osp.join(self.root, 'VOC' + str(year)) if year \
                else self.root
            split_file = osp.join(rootpath, 'ImageSets', 'Main', split + '.txt')
            self.ids += [(rootpath, i) for i in read_split(
                split_file, rootpath, skip_bad)]
            split_files.append(split_file)
        self.source = ' + '.join(split_files) or osp.join(self.root,
                                                         'Annotations')
        if skip_bad:
            self._prescan()

    def _prescan(self):
        """skip_bad: drop ids whose annotation is bad, once, up front."""
        good = []
        for i, img_id in enumerate(self.ids):
            try:
                self.pull_gt(i)
                good.append(img_id)
            except DatasetError as e:
                warnings.warn(f'skipping bad sample: {e}', stacklevel=3)
        self.num_skipped_at_load = len(self.ids) - len(good)
        if self.num_skipped_at_load:
            print(f'{self.name}: skipped {self.num_skipped_at_load} of '
                  f'{len(self.ids)} samples with bad annotations')
        self.ids = good

    def _file(self, index):
        return self._annopath % self.ids[index]

    def image_path(self, index):
        """``JPEGImages/<id>.jpg`` (or the .jpeg/.png/.bmp that exists)."""
        rootpath, img_id = self.ids[index]
        return find_image(osp.join(rootpath, 'JPEGImages'), img_id)

    def pull_image(self, index):
        """BGR uint8 image (raises DatasetError naming a bad file)."""
        return read_image(self.image_path(index))

    def load_target(self, index, width, height):
        path = self._annopath % self.ids[index]
        if self.target_transform is None:
            return np.zeros((0, 5), np.float32)
        root = load_xml(path)
        try:
            if isinstance(self.target_transform, VOCAnnotationTransform):
                t = self.target_transform(root, width, height, path)
            else:
                t = self.target_transform(root, width, height)
        except DatasetError as e:
            msg = str(e)
            raise DatasetError(msg if msg.startswith(path) else
                               f'{path}: {msg}') from None
        return np.asarray(t, np.float32).reshape(-1, 5)

    def read_annotation(self, index):
        """The annotation file of image ``index`` as written: a
        ``data.annotations.VocAnnotation`` (1-based float64 boxes), what
        the evaluator scores against."""
        return read_voc_xml(self._annopath % self.ids[index],
                            self.class_to_ind)

    def pull_gt(self, index):
        """Every object (difficult included) in 0-based pixels; see
        data.base. Width/height come from <size>, else from the image."""
        a = self.read_annotation(index)
        wh = a.size
        if wh is None:
            h, w = self.pull_image(index).shape[:2]
            wh = (w, h)
        return make_gt(self.ids[index][1], wh[0], wh[1], a.boxes - 1,
                       a.labels, a.difficult)

    def pull_anno(self, index):
        """[img_id, [[x1, y1, x2, y2, label], ...]] in pixels (minus one, as
        ssd.pytorch), difficult objects as the target transform decides."""
        path = self._annopath % self.ids[index]
        gt = self.target_transform(load_xml(path), 1, 1, path) if \
            isinstance(self.target_transform, VOCAnnotationTransform) else \
            self.target_transform(load_xml(path), 1, 1)
        return [self.ids[index][1], gt]
