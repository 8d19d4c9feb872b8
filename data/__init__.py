"""Datasets, transforms and batching (ssd.pytorch's ``data`` package).

``from data import *`` gives the configs (voc, coco, voc512, coco512,
shapes, MEANS), the datasets (VOCDetection, COCODetection, ShapesDetection,
CustomDetection, YOLODetection), the transforms (BaseTransform,
SSDAugmentation), detection_collate, make_loader and get_dataset.
See doc/data.md.
"""
import warnings as _warnings

from .config import *  # noqa: F401,F403  (voc, coco, voc512, coco512, shapes, MEANS, HOME)
from .base import DatasetError, DetectionDataset  # noqa: F401
from .augmentations import BaseTransform, SSDAugmentation  # noqa: F401
from .loader import detection_collate, make_loader  # noqa: F401
from .voc0712 import (VOCDetection, VOCAnnotationTransform,  # noqa: F401
                      VOC_CLASSES, VOC_ROOT)
from .coco import (COCODetection, COCOAnnotationTransform,  # noqa: F401
                   COCO_CLASSES, COCO_ROOT, get_label_map)
from .shapes import ShapesDetection, SHAPES_CLASSES  # noqa: F401
from .custom import CustomDetection, YOLODetection  # noqa: F401
from .factory import get_dataset  # noqa: F401

# The submodules data/coco.py and data/shapes.py were bound to the package
# attributes `coco` and `shapes` on import; the contract (and ssd.pytorch)
# wants the config dicts there: `from data import coco, shapes`. (Import the
# modules with `from data.shapes import ...`, never `import data.shapes as m`.)
from .config import coco, shapes  # noqa: F401,E402

# `python -m data.shapes` runs a module this package imports; runpy's
# warning about that is harmless.
_warnings.filterwarnings('ignore', message=".*'data\\..*' found in sys.modules",
                         category=RuntimeWarning)


def base_transform(image, size, mean):
    """ssd.pytorch's helper: resize and subtract the mean (float32)."""
    return BaseTransform(size, mean)(image)[0]
