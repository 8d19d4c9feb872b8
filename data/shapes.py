"""Shapes: a procedural detection dataset that needs no download.

Every image is a pure function of ``(seed, index)``:

* a size drawn from 128..256 pixels per side (varied aspect ratios);
* a cluttered, textured background: a smooth random colour field, random
  lines and arcs, and pixel noise;
* 1 to 6 filled objects of 5 classes (``SHAPES_CLASSES``) with random
  colours, rotations and an optional dark outline; sizes are log-uniform
  from 8% to 60% of the shorter image side; objects may overlap, later ones
  occlude earlier ones.

Annotation rule for occlusion (what a VOC annotator would do): the box is
the bounding box of the object's *visible* pixels. An object with less than
40% of its area visible is not annotated at all; one with 40-65% visible
is marked ``difficult`` (left out of training targets and ignored by the
VOC metric, as in VOC). The last object drawn is never occluded, so every
image has at least one annotated object.

Command line (writes the same images to disk for the real loaders)::

    python -m data.shapes --out DIR --format voc|coco|yolo --num N --seed S
"""
import numpy as np
import cv2

from .base import DetectionDataset, make_gt

__all__ = ['SHAPES_CLASSES', 'ShapesDetection', 'generate', 'DEFAULT_SEEDS']

SHAPES_CLASSES = ('circle', 'square', 'triangle', 'star', 'cross')
DEFAULT_SEEDS = {'train': 0, 'trainval': 0, 'val': 1, 'test': 2}
DEFAULT_SIZES = {'train': 2000, 'trainval': 2000, 'val': 200, 'test': 200}
MIN_SIDE, MAX_SIDE = 128, 256
MIN_FRAC, MAX_FRAC = 0.08, 0.6
DROP_BELOW, DIFFICULT_BELOW = 0.4, 0.65
_SHIFT = 4                      # sub-pixel bits for cv2.fillPoly


def _unit_polygon(cls, rng):
    """Vertices [k, 2] of a class's shape inside the unit circle."""
    if cls == 0:                                   # circle (mild ellipse)
        t = np.linspace(0, 2 * np.pi, 32, endpoint=False)
        r = rng.uniform(0.85, 1.0)
        return np.stack([np.cos(t), r * np.sin(t)], 1)
    if cls == 1:                                   # square
        return np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * 0.75
    if cls == 2:                                   # triangle
        t = np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        return np.stack([np.cos(t), np.sin(t)], 1)
    if cls == 3:                                   # five-pointed star
        t = np.pi / 2 + np.arange(10) * np.pi / 5
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.42)
        return np.stack([r * np.cos(t), r * np.sin(t)], 1)
    a = 0.3                                        # cross (plus sign)
    return np.array([[-a, -1], [a, -1], [a, -a], [1, -a], [1, a], [a, a],
                     [a, 1], [-a, 1], [-a, a], [-1, a], [-1, -a], [-a, -a]])


def _background(rng, w, h):
    """Textured, cluttered uint8 BGR background."""
    g = rng.integers(0, 256, (rng.integers(2, 7), rng.integers(2, 7), 3))
    img = cv2.resize(g.astype(np.uint8), (w, h), interpolation=cv2.INTER_CUBIC)
    for _ in range(rng.integers(3, 12)):
        col = tuple(int(c) for c in rng.integers(0, 256, 3))
        p = rng.integers(0, [w, h, w, h])
        if rng.random() < 0.6:
            cv2.line(img, (int(p[0]), int(p[1])), (int(p[2]), int(p[3])),
                     col, int(rng.integers(1, 3)), cv2.LINE_AA)
        else:
            ax = (int(rng.integers(5, w // 2)), int(rng.integers(5, h // 2)))
            cv2.ellipse(img, (int(p[0]), int(p[1])), ax, 0, 0,
                        float(rng.uniform(60, 200)), col, 1, cv2.LINE_AA)
    return img


def _place(rng, w, h, boxes):
    """Centre, radius of a new object not covering any box too much."""
    side = min(w, h)
    for _ in range(10):
        size = side * np.exp(rng.uniform(np.log(MIN_FRAC), np.log(MAX_FRAC)))
        r = size / 2
        c = rng.uniform([r, r], [w - r, h - r])
        b = np.array([c[0] - r, c[1] - r, c[0] + r, c[1] + r])
        if not boxes:
            return c, r
        o = np.array(boxes)
        iw = np.minimum(o[:, 2], b[2]) - np.maximum(o[:, 0], b[0])
        ih = np.minimum(o[:, 3], b[3]) - np.maximum(o[:, 1], b[1])
        inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
        area = (o[:, 2] - o[:, 0]) * (o[:, 3] - o[:, 1])
        if (inter / area).max() < 0.5:
            return c, r
    return c, r


def generate(seed, index):
    """Make one image: (BGR uint8 [H, W, 3], pull_gt-style dict)."""
    rng = np.random.default_rng([int(seed), int(index)])
    w, h = (int(v) for v in rng.integers(MIN_SIDE, MAX_SIDE + 1, 2))
    img = _background(rng, w, h)
    owner = np.zeros((h, w), np.uint8)
    n = int(rng.integers(1, 7))
    polys, classes, full = [], [], []
    for k in range(n):
        cls = int(rng.integers(0, len(SHAPES_CLASSES)))
        c, r = _place(rng, w, h, [p[1] for p in full])
        t = rng.uniform(0, 2 * np.pi)
        rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
        pts = _unit_polygon(cls, rng) @ rot.T * r + c
        pts = np.clip(pts, 0, [w - 1e-3, h - 1e-3])
        ipts = np.round(pts * (1 << _SHIFT)).astype(np.int32)
        col = tuple(int(v) for v in rng.integers(0, 256, 3))
        cv2.fillPoly(img, [ipts], col, cv2.LINE_AA, _SHIFT)
        if rng.random() < 0.5:
            dark = tuple(int(v * 0.4) for v in col)
            cv2.polylines(img, [ipts], True, dark, 1, cv2.LINE_AA, _SHIFT)
        cv2.fillPoly(owner, [ipts], k + 1, cv2.LINE_8, _SHIFT)
        x0, y0 = np.floor(pts.min(0)).astype(int)
        x1, y1 = np.ceil(pts.max(0)).astype(int) + 1
        polys.append(ipts)
        classes.append(cls)
        full.append((int((owner[y0:y1, x0:x1] == k + 1).sum()),
                     (x0, y0, x1, y1)))
    noise = rng.integers(-12, 13, img.shape, dtype=np.int16)
    img = np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    boxes, labels, difficult = [], [], []
    for k, (area, (x0, y0, x1, y1)) in enumerate(full):
        m = owner[y0:y1, x0:x1] == k + 1
        vis = m.sum() / max(area, 1)
        if vis < DROP_BELOW:
            continue
        ys, xs = np.nonzero(m.any(1))[0], np.nonzero(m.any(0))[0]
        boxes.append([x0 + xs[0], y0 + ys[0], x0 + xs[-1] + 1, y0 + ys[-1] + 1])
        labels.append(classes[k])
        difficult.append(vis < DIFFICULT_BELOW)
    return img, make_gt(f'{int(seed)}_{int(index):06d}', w, h, boxes,
                        labels, difficult)


class ShapesDetection(DetectionDataset):
    """The shapes dataset in memory (see the module docstring).

    Args:
        image_set: 'train' (default 2000 images, seed 0) or 'val' (200
            images, seed 1); 'test' (200, seed 2).
        num_images: number of images (default per split, above).
        seed: generator seed (default per split, above).
        cache: keep generated images in memory (about 100 KB each; default
            True for up to 5000 images). Generation is ~1 ms an image.
    Items follow data.base's contract; ``ids`` are '<seed>_<index>'.
    """
    name = 'shapes'
    classes = SHAPES_CLASSES

    def __init__(self, image_set='train', num_images=None, seed=None,
                 transform=None, target_transform=None, channel_order='RGB',
                 keep_difficult=False, cache=None, **kw):
        super().__init__(transform, target_transform, channel_order,
                         keep_difficult, **kw)
        self.image_set = image_set
        self.seed = DEFAULT_SEEDS.get(image_set, 0) if seed is None else seed
        n = DEFAULT_SIZES.get(image_set, 200) if num_images is None \
            else num_images
        self.ids = [f'{self.seed}_{i:06d}' for i in range(int(n))]
        self.cache = (n <= 5000) if cache is None else cache
        self._cache = {}
        self._last = None                 # (index, item) when not caching

    def _get(self, index):
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f'shapes index {index} out of range')
        item = self._cache.get(index)
        if item is None:
            if self._last is not None and self._last[0] == index:
                return self._last[1]      # pull_image then pull_gt: one generation
            item = generate(self.seed, index)
            if self.cache:
                self._cache[index] = item
            else:
                self._last = (index, item)
        return item

    def pull_image(self, index):
        return self._get(index)[0].copy()

    def pull_gt(self, index):
        gt = self._get(index)[1]
        return {k: (v.copy() if isinstance(v, np.ndarray) else v)
                for k, v in gt.items()}


if __name__ == '__main__':
    from .shapes_io import main
    main()
