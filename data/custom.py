"""Custom datasets: a VOC-style folder with its own class list, or YOLO txt.

VOC-style (``CustomDetection``)::

    ROOT/classes.txt                  one class name per line (labels.txt too)
    ROOT/Annotations/<id>.xml         VOC XML (<object><name>, <bndbox>, ...)
    ROOT/JPEGImages/<id>.jpg          (.jpg, .jpeg, .png or .bmp)
    ROOT/ImageSets/Main/<split>.txt   ids, one a line (without ImageSets:
                                      every XML in Annotations/)

COCO JSON (``data.coco.COCODetection``)::

    ROOT/annotations/instances_<split>.json   one file per split (train, val, ...)
    ROOT/<split>/<file_name>                  or ROOT/images/<split>/, ROOT/images/

YOLO (``YOLODetection``)::

    ROOT/classes.txt                  (or obj.names, <name>.names)
    ROOT/images/<split>/<name>.jpg    (or flat ROOT/images/<name>.jpg)
    ROOT/labels/<split>/<name>.txt    lines "class cx cy w h", normalised;
                                      no label file: an image without objects
"""
import glob
import os
import os.path as osp

import numpy as np

from .base import DetectionDataset, DatasetError, DatasetNotFound, \
    make_gt, read_image, IMAGE_EXTS
from .annotations import parse_yolo_labels
from .voc0712 import VOCDetection

__all__ = ['CustomDetection', 'YOLODetection', 'open_custom', 'read_classes',
           'parse_yolo_labels', 'IMAGE_EXTS']

CLASS_FILES = ('classes.txt', 'labels.txt', 'obj.names', 'classes.names')


def find_classes_file(root):
    for name in CLASS_FILES:
        if osp.isfile(osp.join(root, name)):
            return osp.join(root, name)
    names = sorted(glob.glob(osp.join(glob.escape(root), '*.names')))
    return names[0] if names else None


def read_classes(root, path=None):
    """Class names (tuple) from the classes file of ``root``."""
    path = path or find_classes_file(root)
    if path is None:
        raise DatasetError(f'{root}: no classes file (expected one of '
                           f'{", ".join(CLASS_FILES)} or *.names)')
    try:
        with open(path, encoding='utf-8') as f:
            names = [ln.strip() for ln in f if ln.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f'{path}: unreadable classes file ({e})') from None
    if not names or len(set(names)) != len(names):
        raise DatasetError(f'{path}: classes file is empty or has duplicates')
    return tuple(names)


class CustomDetection(VOCDetection):
    """A VOC-style folder with its own classes file (layout above).

    Args: root, image_set (split name, default 'train'), classes (default:
    read from the classes file), plus VOCDetection's keywords."""

    def __init__(self, root, image_set='train', transform=None,
                 classes=None, dataset_name=None, **kw):
        root = osp.expanduser(str(root))
        classes = classes or read_classes(root)
        split = osp.join(root, 'ImageSets', 'Main', image_set + '.txt')
        if osp.isdir(osp.join(root, 'ImageSets')) or osp.exists(split):
            sets = [(None, image_set)]
        else:
            sets = []
        super().__init__(root, sets, transform, classes=classes,
                         dataset_name=dataset_name or osp.basename(
                             osp.normpath(root)), **kw)
        if not sets:
            xmls = sorted(glob.glob(osp.join(glob.escape(root), 'Annotations',
                                             '*.xml')))
            self.ids = [(root, osp.splitext(osp.basename(p))[0]) for p in xmls]
            if not self.ids:
                raise DatasetError(f'{osp.join(root, "Annotations")}: no '
                                   'annotation files (*.xml)')
        self.image_set = image_set


def yolo_files(root, image_set):
    """(image dir, label dir, sorted image names) of a YOLO tree."""
    img_dir = osp.join(root, 'images', image_set)
    lab_dir = osp.join(root, 'labels', image_set)
    split = osp.isdir(img_dir)
    if not split:
        img_dir, lab_dir = osp.join(root, 'images'), osp.join(root, 'labels')
    names = sorted(n for n in os.listdir(img_dir)
                   if n.lower().endswith(IMAGE_EXTS)) \
        if osp.isdir(img_dir) else []
    if not names and split:
        raise DatasetError(f'{img_dir}: no images (empty split)')
    if not names:
        raise DatasetNotFound(f'{root}: no images in images/{image_set}/ or '
                              'images/ (YOLO layout)')
    return img_dir, lab_dir, names


class YOLODetection(DetectionDataset):
    """YOLO txt layout (module docstring). ``ids`` are image file names."""

    def __init__(self, root, image_set='train', transform=None,
                 target_transform=None, classes=None, dataset_name=None,
                 channel_order='RGB', keep_difficult=False, skip_bad=False):
        super().__init__(transform, target_transform, channel_order,
                         keep_difficult, skip_bad)
        self.root = osp.expanduser(str(root))
        self.classes = tuple(classes or read_classes(self.root))
        self.image_set = image_set
        self.name = dataset_name or osp.basename(osp.normpath(self.root))
        self.img_dir, self.lab_dir, self.ids = yolo_files(self.root,
                                                          image_set)
        self.source = self.img_dir
        self._sizes = {}

    def _file(self, index):
        return osp.join(self.img_dir, self.ids[index])

    def label_path(self, index):
        return osp.join(self.lab_dir, osp.splitext(self.ids[index])[0]
                        + '.txt')

    def pull_image(self, index):
        img = read_image(osp.join(self.img_dir, self.ids[index]))
        self._sizes[index] = img.shape[1], img.shape[0]
        return img

    def pull_gt(self, index):
        """Objects in 0-based pixels (needs the image size: read once)."""
        labels, boxes = parse_yolo_labels(self.label_path(index),
                                          len(self.classes))
        if index not in self._sizes:
            self.pull_image(index)
        w, h = self._sizes[index]
        boxes = boxes * np.float32([w, h, w, h])
        return make_gt(osp.splitext(self.ids[index])[0], w, h, boxes, labels,
                       np.zeros(len(labels), bool))


def open_custom(root, image_set='train', **kw):
    """CustomDetection, YOLODetection or, for a COCO JSON folder
    (``ROOT/annotations/instances_<split>.json``, the images in
    ``ROOT/<split>/``, ``ROOT/images/<split>/`` or ``ROOT/images/``; the
    classes are the JSON's categories), COCODetection: whichever layout
    ``root`` has."""
    from .factory import is_coco_json_folder
    if osp.isdir(osp.join(root, 'Annotations')):
        return CustomDetection(root, image_set, **kw)
    if is_coco_json_folder(root):
        from .coco import COCODetection
        kw.setdefault('dataset_name', osp.basename(osp.normpath(root)))
        return COCODetection(root, image_set, **kw)
    if osp.isdir(osp.join(root, 'images')):
        return YOLODetection(root, image_set, **kw)
    raise DatasetError(f'{root}: not a custom dataset: expected Annotations/ '
                       '+ JPEGImages/ + classes.txt (VOC style), images/ + '
                       'labels/ + classes.txt (YOLO) or annotations/instances_<split>.json '
                       '(COCO JSON)')
