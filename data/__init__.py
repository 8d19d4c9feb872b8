from .config import *  # noqa: F401,F403  (voc, coco, voc512, coco512, shapes, MEANS, HOME)
