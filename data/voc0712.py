"""PASCAL VOC 2007 + 2012 (and VOC-style folders), ssd.pytorch's interface.

Layout (one VOCdevkit root holds both years)::

    VOCdevkit/VOC2007/Annotations/000001.xml
                     /JPEGImages/000001.jpg
                     /ImageSets/Main/{trainval,test}.txt
    VOCdevkit/VOC2012/...

XML is parsed with defusedxml (entity expansion refused). Image ids that
would leave the root (``../``, absolute paths) are refused. Every problem
is a ``DatasetError`` whose one-line message names the file.
"""
import os.path as osp
import warnings

import numpy as np
import defusedxml.ElementTree as DET
from defusedxml import DefusedXmlException

from .config import HOME
from .base import DetectionDataset, DatasetError, make_gt, read_image, \
    safe_join, clip_boxes

__all__ = ['VOC_CLASSES', 'VOC_ROOT', 'VOCAnnotationTransform',
           'VOCDetection', 'parse_voc_xml', 'read_split']

VOC_CLASSES = (  # always index 0
    'aeroplane', 'bicycle', 'bird', 'boat',
    'bottle', 'bus', 'car', 'cat', 'chair',
    'cow', 'diningtable', 'dog', 'horse',
    'motorbike', 'person', 'pottedplant',
    'sheep', 'sofa', 'train', 'tvmonitor')

VOC_ROOT = osp.join(HOME, "data/VOCdevkit/")


def load_xml(path):
    """Parse an annotation file safely; return its root Element."""
    try:
        return DET.parse(path).getroot()
    except FileNotFoundError:
        raise DatasetError(f'{path}: missing annotation file') from None
    except DefusedXmlException as e:
        raise DatasetError(f'{path}: XML entity expansion refused '
                           f'({type(e).__name__})') from None
    except DET.ParseError as e:
        raise DatasetError(f'{path}: malformed XML ({e})') from None
    except OSError as e:
        raise DatasetError(f'{path}: unreadable annotation ({e})') from None


def _number(node, tag, path, what):
    el = node.find(tag)
    if el is None or el.text is None or not el.text.strip():
        raise DatasetError(f'{path}: missing <{tag}> in {what}')
    try:
        return float(el.text)
    except ValueError:
        raise DatasetError(f'{path}: <{tag}> in {what} is not a number: '
                           f'{el.text.strip()!r}') from None


def parse_objects(root, class_to_ind, path='annotation'):
    """Objects of a VOC annotation Element.

    Returns (boxes float32 [n, 4] 0-based pixels (XML numbers minus one,
    as ssd.pytorch), labels int64 [n], difficult bool [n]). Raises
    DatasetError for an unknown class, a missing name/bndbox/coordinate."""
    boxes, labels, difficult = [], [], []
    for k, obj in enumerate(root.findall('object')):
        name_el = obj.find('name')
        if name_el is None or not (name_el.text or '').strip():
            raise DatasetError(f'{path}: object {k} has no <name>')
        name = name_el.text.strip()
        if name not in class_to_ind:
            name = name.lower()
        if name not in class_to_ind:
            raise DatasetError(f'{path}: unknown class {name_el.text.strip()!r}'
                               f' (object {k})')
        bb = obj.find('bndbox')
        if bb is None:
            raise DatasetError(f'{path}: object {k} ({name}) has no <bndbox>')
        what = f'object {k} ({name}) <bndbox>'
        boxes.append([_number(bb, t, path, what) - 1
                      for t in ('xmin', 'ymin', 'xmax', 'ymax')])
        d = obj.find('difficult')
        difficult.append(d is not None and (d.text or '0').strip() not in
                         ('0', '', 'false', 'False'))
        labels.append(class_to_ind[name])
    return (np.asarray(boxes, np.float32).reshape(-1, 4),
            np.asarray(labels, np.int64), np.asarray(difficult, bool))


def image_size(root, path):
    """(width, height) from <size>, or None when missing/zero."""
    size = root.find('size')
    if size is None:
        return None
    try:
        w = int(float(size.find('width').text))
        h = int(float(size.find('height').text))
    except (AttributeError, TypeError, ValueError):
        return None
    return (w, h) if w > 0 and h > 0 else None


def parse_voc_xml(path, class_to_ind):
    """Read one annotation file: (root Element, boxes, labels, difficult)."""
    root = load_xml(path)
    return (root,) + parse_objects(root, class_to_ind, path)


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
        boxes, labels, difficult = parse_objects(target, self.class_to_ind,
                                                 path)
        if width == 1 and height == 1:          # pull_anno: pixels, unclipped
            ok = np.ones(len(labels), bool)
        else:
            boxes, ok, _ = clip_boxes(boxes, width, height)
        if not self.keep_difficult:
            ok &= ~difficult
        scale = np.float32([width, height, width, height])
        return np.hstack([boxes[ok] / scale, labels[ok, None]]).tolist()


_DEFAULT_TT = VOCAnnotationTransform()


def read_split(path, root, skip_bad=False):
    """Image ids of a split file, each checked to stay inside ``root``
    (with ``skip_bad`` an id that leaves it is dropped with a warning)."""
    try:
        with open(path, encoding='utf-8') as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise DatasetError(f'{path}: split file not found') from None
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f'{path}: unreadable split file ({e})') from None
    ids = []
    for n, line in enumerate(lines, 1):
        name = line.strip().split()[0] if line.strip() else ''
        if name:
            try:
                safe_join(root, 'Annotations', name + '.xml')
            except DatasetError:
                msg = (f'{path}: line {n}: image id {name!r} leaves the '
                       'dataset root (refused)')
                if not skip_bad:
                    raise DatasetError(msg) from None
                warnings.warn(f'skipping bad sample: {msg}', stacklevel=3)
                continue
            ids.append(name)
    return ids


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
        self.ids = []
        for year, split in image_sets:
            rootpath = osp.join(self.root, 'VOC' + str(year)) if year \
                else self.root
            split_file = osp.join(rootpath, 'ImageSets', 'Main', split + '.txt')
            self.ids += [(rootpath, i) for i in read_split(
                split_file, rootpath, skip_bad)]
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

    def pull_image(self, index):
        """BGR uint8 image (raises DatasetError naming a bad file)."""
        return read_image(self._imgpath % self.ids[index])

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

    def pull_gt(self, index):
        """Every object (difficult included) in 0-based pixels; see
        data.base. Width/height come from <size>, else from the image."""
        path = self._annopath % self.ids[index]
        root, boxes, labels, difficult = parse_voc_xml(path,
                                                       self.class_to_ind)
        wh = image_size(root, path)
        if wh is None:
            h, w = self.pull_image(index).shape[:2]
            wh = (w, h)
        return make_gt(self.ids[index][1], wh[0], wh[1], boxes, labels,
                       difficult)

    def pull_anno(self, index):
        """[img_id, [[x1, y1, x2, y2, label], ...]] in pixels (minus one, as
        ssd.pytorch), difficult objects as the target transform decides."""
        path = self._annopath % self.ids[index]
        gt = self.target_transform(load_xml(path), 1, 1, path) if \
            isinstance(self.target_transform, VOCAnnotationTransform) else \
            self.target_transform(load_xml(path), 1, 1)
        return [self.ids[index][1], gt]
