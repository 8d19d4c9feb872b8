"""``get_dataset``: one entry point for train.py and eval.py, and the image
sets they name (``train.py --train_sets/--val_set``, ``eval.py --set``).

Image-set names, one spelling for every script:

=========  ===============================================  ==================
dataset    names                                            training default
=========  ===============================================  ==================
VOC        ``<year>_<split>``: 2007_trainval, 2012_trainval,  2007_trainval +
           2007_test, 2012_val, ...; ``test`` = 2007_test     2012_trainval
COCO       train2017, val2017, train2014, val2014,           train2017, else
           valminusminival2014, minival2014, ...             train2014
custom     the split names: trainval, train, val, test, ...  train, else
                                                             trainval
shapes     train, val, test                                  train
=========  ===============================================  ==================

Several names separated by commas (or a list) make one training set, the
union of them in that order (``2007_trainval,2012_trainval``;
``train2014,valminusminival2014``, COCO's trainval35k). A custom folder may
be VOC-style, YOLO, or COCO JSON (``ROOT/annotations/instances_<split>.json``
plus the images in ``ROOT/<split>/``, ``ROOT/images/<split>/`` or
``ROOT/images/``); see ``data/custom.py``.
"""
import os
import os.path as osp

from torch.utils.data import ConcatDataset

from .base import DatasetError

__all__ = ['get_dataset', 'parse_sets', 'default_train_sets', 'has_split',
           'ConcatDetection']

#: The default training sets of VOC (the paper's 07+12).
VOC_TRAIN_SETS = ('2007_trainval', '2012_trainval')


def parse_sets(value):
    """``'a,b'`` or ``['a', 'b']`` -> ``('a', 'b')`` (None stays None)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = value.replace('+', ',').split(',')
    out = tuple(str(v).strip() for v in value if str(v).strip())
    return out or None


def _voc_pair(name, default_year='2007'):
    """'2007_trainval' -> ('2007', 'trainval'); 'test' -> ('2007', 'test');
    a (year, split) pair stays as it is."""
    if isinstance(name, (tuple, list)):
        return tuple(str(x) for x in name)
    year, sep, split = str(name).partition('_')
    if sep and year.isdigit():
        return year, split
    if name in ('val', 'eval'):        # ssd.pytorch's habit: evaluate on 2007 test
        name = 'test'
    return default_year, str(name)


def _voc_sets(image_set):
    if image_set is None or image_set == 'train':
        return [_voc_pair(s) for s in VOC_TRAIN_SETS]
    if isinstance(image_set, str):
        image_set = parse_sets(image_set)
    return [_voc_pair(s) for s in image_set]


def _coco_ann(root, split):
    return osp.join(root, 'annotations', f'instances_{split}.json')


def is_coco_json_folder(root):
    """True when ``root`` holds ``annotations/instances_*.json`` (COCO JSON
    layout) and neither VOC-style ``Annotations/`` nor YOLO ``images/`` +
    ``labels/``."""
    ann = osp.join(root, 'annotations')
    if not osp.isdir(ann) or osp.isdir(osp.join(root, 'Annotations')):
        return False
    return any(n.startswith('instances_') and n.endswith('.json')
               for n in os.listdir(ann))


def has_split(name, root, split):
    """Whether the split ``split`` of dataset ``name`` is on disk (without
    reading it). VOC: ``VOC<year>/ImageSets/Main/<split>.txt``; COCO and
    COCO-JSON custom folders: ``annotations/instances_<split>.json``; custom
    VOC-style: ``ImageSets/Main/<split>.txt`` (a folder without ImageSets/
    uses every XML for any split); YOLO: ``images/<split>/`` (or flat
    ``images/``). shapes: always."""
    from .config import dataset_name
    name = dataset_name(name)
    if name == 'shapes':
        return True
    root = osp.expanduser(str(root))
    if name == 'VOC':
        year, s = _voc_pair(split)
        return osp.isfile(osp.join(root, 'VOC' + year, 'ImageSets', 'Main', s + '.txt'))
    if name == 'COCO' or is_coco_json_folder(root):
        return osp.isfile(_coco_ann(root, split))
    if osp.isdir(osp.join(root, 'Annotations')):
        sets = osp.join(root, 'ImageSets')
        return not osp.isdir(sets) or osp.isfile(osp.join(sets, 'Main', split + '.txt'))
    if osp.isdir(osp.join(root, 'images', split)):
        return True
    return osp.isdir(osp.join(root, 'images')) and not any(
        osp.isdir(osp.join(root, 'images', d)) for d in os.listdir(osp.join(root, 'images')))


#: Training sets tried in order when ``--train_sets`` is not given (the
#: first one on disk); VOC's is one union.
TRAIN_SET_CHOICES = {'VOC': (VOC_TRAIN_SETS,), 'COCO': (('train2017',), ('train2014',)),
                     'shapes': (('train',),),
                     'custom': (('train',), ('trainval',))}


def default_train_sets(name, root=None):
    """The training sets of ``name`` when none is named: VOC
    ``('2007_trainval', '2012_trainval')``; COCO ``train2017``, else
    ``train2014``; custom ``train``, else ``trainval``; shapes ``train``.
    When no choice is on disk, the first (whose error then names the file)."""
    from .config import dataset_name
    name = dataset_name(name)
    choices = TRAIN_SET_CHOICES[name]
    if name in ('COCO', 'custom') and root:
        for sets in choices:
            if all(has_split(name, root, s) for s in sets):
                return sets
    return choices[0]


class ConcatDetection(ConcatDataset):
    """The union of detection datasets with the same classes (several
    ``--train_sets``): ``classes``, ``name`` and ``source`` of the parts."""

    def __init__(self, datasets):
        datasets = list(datasets)
        classes = tuple(datasets[0].classes)
        for d in datasets[1:]:
            if tuple(d.classes) != classes:
                raise DatasetError(f'{getattr(d, "source", d)}: its classes differ from '
                                   f'those of {getattr(datasets[0], "source", datasets[0])}')
        super().__init__(datasets)
        self.classes = classes
        self.name = ' + '.join(str(getattr(d, 'name', '')) for d in datasets)
        self.source = ' + '.join(str(getattr(d, 'source', '')) for d in datasets)


def _union(open_one, sets):
    parts = [open_one(s) for s in sets]
    return parts[0] if len(parts) == 1 else ConcatDetection(parts)


def get_dataset(name, root=None, image_set=None, transform=None, **kw):
    """Build a dataset by name.

    Args:
        name: 'VOC', 'COCO', 'shapes' or 'custom' (case-insensitive).
        root: dataset root (VOCdevkit, COCO folder, custom folder); default
            data.VOC_ROOT / data.COCO_ROOT; unused for shapes.
        image_set: the image set(s), spelled as in the module docstring: a
            name, comma-separated names or a list of names (their union; VOC
            also takes ``(year, split)`` pairs, ssd.pytorch's form). None:
            the training default (:func:`default_train_sets`). For VOC the
            bare names 'train' and 'test' mean 07+12 trainval and 2007 test.
        transform: SSDAugmentation / BaseTransform / None.
        **kw: passed to the dataset class (channel_order, keep_difficult,
            skip_bad, num_images, seed, ann_file (COCO), ...).
    """
    from .config import dataset_name
    try:
        key = dataset_name(name)
    except ValueError:
        raise ValueError(f"unknown dataset {name!r}: choose VOC, COCO, shapes "
                         "or custom") from None
    if key == 'VOC':
        from .base import DatasetNotFound
        from .voc0712 import VOCDetection, VOC_ROOT
        sets = _voc_sets(image_set)
        try:
            return VOCDetection(root or VOC_ROOT, sets, transform=transform, **kw)
        except DatasetNotFound as e:        # e.g. a VOCdevkit holding only VOC2007
            have = [f'{y}_{s}' for y, s in sets
                    if has_split('VOC', root or VOC_ROOT, f'{y}_{s}')]
            raise DatasetNotFound(f'{e}; name the image sets on disk with --train_sets '
                                  f'(eval.py --set), e.g. {",".join(have) or "2007_trainval"}') \
                from None
    if key == 'shapes':
        from .shapes import ShapesDetection
        sets = parse_sets(image_set) or ('train',)
        return _union(lambda s: ShapesDetection(s, transform=transform, **kw), sets)
    if key == 'COCO':
        from .coco import COCODetection, COCO_ROOT
        root = root or COCO_ROOT
        if image_set is None and kw.get('ann_file'):
            return COCODetection(root, None, transform=transform, **kw)
        sets = parse_sets(image_set) or default_train_sets('COCO', root)
        return _union(lambda s: COCODetection(root, s, transform=transform, **kw), sets)
    if root is None:
        raise ValueError("--dataset custom needs --dataset_root")
    from .custom import open_custom
    root = os.path.expanduser(root)
    sets = parse_sets(image_set) or default_train_sets('custom', root)
    return _union(lambda s: open_custom(root, s, transform=transform, **kw), sets)
