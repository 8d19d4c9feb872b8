"""``get_dataset``: one entry point for train.py and eval.py."""
import os

__all__ = ['get_dataset']

_TRAIN_SETS = {'train', 'trainval'}


def _voc_sets(image_set):
    if image_set is None or image_set == 'train':
        return [('2007', 'trainval'), ('2012', 'trainval')]
    if image_set in ('test', 'val', 'eval'):
        return [('2007', 'test')]
    if isinstance(image_set, str):         # '2007_trainval+2012_trainval'
        return [tuple(s.split('_', 1)) for s in image_set.split('+')]
    return [tuple(s) for s in image_set]


def get_dataset(name, root=None, image_set=None, transform=None, **kw):
    """Build a dataset by name.

    Args:
        name: 'VOC', 'COCO', 'shapes' or 'custom' (case-insensitive).
        root: dataset root (VOCdevkit, COCO folder, custom folder); default
            data.VOC_ROOT / data.COCO_ROOT; unused for shapes.
        image_set: VOC: list of (year, set) like [('2007', 'trainval'),
            ('2012', 'trainval')] (default) or [('2007', 'test')]; the
            strings 'train' and 'test' select those two. COCO: 'train2017',
            'val2017', 'trainval35k', ... (default 'train2017' or
            'train2014', whichever exists). shapes: 'train' | 'val' | 'test'.
            custom: the split name ('train', 'val', ...; default 'train').
        transform: SSDAugmentation / BaseTransform / None.
        **kw: passed to the dataset class (channel_order, keep_difficult,
            skip_bad, num_images, seed, ...).
    """
    key = str(name).lower()
    if key == 'voc':
        from .voc0712 import VOCDetection, VOC_ROOT
        return VOCDetection(root or VOC_ROOT, _voc_sets(image_set),
                            transform=transform, **kw)
    if key == 'coco':
        from .coco import COCODetection, COCO_ROOT
        return COCODetection(root or COCO_ROOT, image_set,
                             transform=transform, **kw)
    if key == 'shapes':
        from .shapes import ShapesDetection
        return ShapesDetection(image_set or 'train', transform=transform, **kw)
    if key == 'custom':
        from .custom import open_custom
        if root is None:
            raise ValueError("--dataset custom needs --dataset_root")
        return open_custom(os.path.expanduser(root), image_set or 'train',
                           transform=transform, **kw)
    raise ValueError(f"unknown dataset {name!r}: choose VOC, COCO, shapes "
                     "or custom")
