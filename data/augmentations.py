"""The SSD training augmentation with the paper's and Caffe's semantics, and
the evaluation transform.

Both are called as ssd.pytorch calls them::

    img, boxes, labels = transform(img, boxes, labels)

``img`` is an ``H x W x 3`` BGR image (uint8; float input is clipped to
[0, 255]), ``boxes`` a float ``[n, 4]`` array of ``(x1, y1, x2, y2)``
normalised to [0, 1] and ``labels`` an ``[n]`` array. The returned image is
``size x size x 3`` float32, still BGR, with ``mean`` (BGR) subtracted; the
datasets swap it to RGB afterwards (what ssd.pytorch's published weights
expect: read BGR, subtract MEANS, then swap to RGB).

SSDAugmentation follows Caffe SSD's data layer (``ssd_pascal.py``):

1. photometric distortion on uint8 with saturation, in one of Caffe's two
   orders (brightness, contrast, saturation, hue | brightness, saturation,
   hue, contrast), each applied with probability 0.5: brightness +-32,
   contrast and saturation x[0.5, 1.5], hue +-18 in OpenCV's 8-bit hue units
   (wrapped around the hue circle); channel shuffling is off as in Caffe
   (``channel_shuffle_prob``);
2. expand (zoom out) with probability 0.5 to a canvas 1-4x the image size,
   filled with the mean, the image at a random offset;
3. IoU crop: the candidates are the whole canvas, one patch per min-IoU
   bound (0.1, 0.3, 0.5, 0.7, 0.9) and one unconstrained patch ("any"),
   each found within 50 trials with scale in [0.3, 1] and aspect in
   [0.5, 2] (Caffe's sampler: the aspect range is also limited to
   [scale^2, 1/scale^2]); a patch is accepted when any box meets its IoU
   bound and at least one box centre lies in it (so that a crop never
   loses every object); one candidate is then chosen uniformly; boxes
   whose centre lies in the patch are kept and clipped to it;
4. horizontal mirror with probability 0.5, resize to ``size x size``
   (bilinear), mean subtraction.

The expanded canvas is never materialised: only the image region inside the
chosen patch is distorted, and one ``cv2.warpAffine`` (or ``cv2.resize``
when the patch lies inside the image) maps it straight to the output, with
the mean as border value. This is pixel-for-pixel the same algorithm as
distorting, expanding, cropping and resizing step by step, several times
faster (``python -m utils.bench.augment``). OpenCV measured faster than
torchvision.transforms.v2 for this pipeline on numpy BGR images, see
doc/data.md.

Randomness comes from ``rng`` (default: the global ``numpy.random``, which
PyTorch seeds per DataLoader worker and which training checkpoints save).
"""
import math

import cv2
import numpy as np

__all__ = ['BaseTransform', 'SSDAugmentation', 'train_transform', 'AUGMENTS',
           'photometric_distort',
           'sample_patch', 'crop_boxes', 'MIN_IOUS']

MIN_IOUS = (0.1, 0.3, 0.5, 0.7, 0.9)
_IDENTITY = np.arange(256, dtype=np.float32)


def _as_uint8(img):
    img = np.asarray(img)
    if img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(img)


def _boxes_labels(boxes, labels):
    boxes = (np.zeros((0, 4), np.float32) if boxes is None
             else np.asarray(boxes, np.float32).reshape(-1, 4))
    if labels is None:
        labels = np.zeros((len(boxes),), np.float32)
    return boxes, np.asarray(labels)


def _subtract_mean(img, mean, scale=None):
    """uint8 HxWx3 -> float32 (img - mean) * scale, the subtraction in one
    OpenCV pass (``scale``: per channel, 1 / std; None: 1)."""
    x = cv2.subtract(img, tuple(float(m) for m in mean) + (0.0,), dtype=cv2.CV_32F)
    if scale is not None:
        x *= scale
    return x


def _inverse_std(std):
    """float32 [3] 1 / std, or None when std is None or all ones (VGG16)."""
    if std is None:
        return None
    std = np.asarray(std, np.float32).reshape(3)
    if np.any(std <= 0):
        raise ValueError(f'std must be positive, got {std.tolist()}')
    return None if np.all(std == 1) else (1.0 / std).astype(np.float32)


class BaseTransform:
    """Evaluation transform: resize to ``size x size`` (bilinear), subtract
    ``mean`` and divide by ``std`` (per channel, BGR order, pixel units;
    None: 1, as ssd.pytorch). Returns (float32 HxWx3 BGR image, boxes,
    labels); boxes are normalised so they are unchanged."""

    def __init__(self, size, mean, std=None):
        self.size = int(size)
        self.mean = np.array(mean, dtype=np.float32)
        self.inv_std = _inverse_std(std)

    def __call__(self, image, boxes=None, labels=None):
        x = cv2.resize(np.asarray(image), (self.size, self.size))
        if x.dtype == np.uint8:
            return _subtract_mean(x, self.mean, self.inv_std), boxes, labels
        x = x.astype(np.float32)
        x -= self.mean
        if self.inv_std is not None:
            x *= self.inv_std
        return x, boxes, labels


def _lut(fn):
    return np.clip(np.rint(fn(_IDENTITY)), 0, 255).astype(np.uint8)


def photometric_distort(img, rng=np.random, brightness=32.0,
                        contrast=(0.5, 1.5), saturation=(0.5, 1.5),
                        hue=18.0, prob=0.5, channel_shuffle_prob=0.0):
    """Caffe SSD's ApplyDistort on a uint8 BGR image (returns a new one).

    Each step saturates to [0, 255] like ``cv::Mat::convertTo``. Brightness
    and contrast are applied as 256-entry look-up tables; saturation and hue
    share one round trip through 8-bit HSV (H in [0, 180))."""
    def maybe(lo, hi):
        return rng.uniform(lo, hi) if rng.random() < prob else None

    contrast_first = rng.random() > 0.5
    b = maybe(-brightness, brightness)
    c = maybe(*contrast) if contrast_first else None
    s = maybe(*saturation)
    h = maybe(-hue, hue)
    c2 = None if contrast_first else maybe(*contrast)
    lut = _IDENTITY
    if b is not None:
        lut = np.clip(np.rint(lut + b), 0, 255)
    if c is not None:
        lut = np.clip(np.rint(lut * c), 0, 255)
    if b is not None or c is not None:
        img = cv2.LUT(img, lut.astype(np.uint8))
    if s is not None or h is not None:
        hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
        hl = (np.rint(_IDENTITY + (h or 0.0)) % 180).astype(np.uint8)
        sl = _lut(lambda x: x * (s if s is not None else 1.0))
        table = np.stack([hl, sl, _IDENTITY.astype(np.uint8)], -1)
        hsv = cv2.LUT(hsv, table.reshape(1, 256, 3))
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    if c2 is not None:
        img = cv2.LUT(img, _lut(lambda x: x * c2))
    if channel_shuffle_prob and rng.random() < channel_shuffle_prob:
        img = np.ascontiguousarray(img[:, :, rng.permutation(3)])
    return img


def _iou(patches, boxes):
    """IoU of patches [..., 4] with boxes [n, 4], both (x1, y1, x2, y2);
    returns [..., n]."""
    p = patches[..., None, :]
    iw = np.minimum(p[..., 2], boxes[:, 2]) - np.maximum(p[..., 0], boxes[:, 0])
    ih = np.minimum(p[..., 3], boxes[:, 3]) - np.maximum(p[..., 1], boxes[:, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    area_p = (p[..., 2] - p[..., 0]) * (p[..., 3] - p[..., 1])
    area_b = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area_p + area_b - inter, 1e-12)


def _centres_inside(patches, boxes):
    """[..., n] bool: box centre strictly inside the patch."""
    c = (boxes[:, :2] + boxes[:, 2:]) / 2
    p = patches[..., None, :]
    return ((c[:, 0] > p[..., 0]) & (c[:, 1] > p[..., 1])
            & (c[:, 0] < p[..., 2]) & (c[:, 1] < p[..., 3]))


def sample_patch(boxes, rng=np.random, min_ious=MIN_IOUS, trials=50,
                 scale=(0.3, 1.0), aspect=(0.5, 2.0), any_patch=True):
    """Choose a crop patch as Caffe's batch sampler does.

    Args:
        boxes: float [n, 4] (x1, y1, x2, y2) normalised to the canvas.
        min_ious: one sampler per bound; any_patch adds the unconstrained
            sampler (Caffe's max_jaccard_overlap 1.0).
    Returns:
        float64 [4] patch (x1, y1, x2, y2) normalised to the canvas; the
        whole canvas (0, 0, 1, 1) is always a candidate.
    """
    bounds = list(min_ious) + ([-np.inf] if any_patch else [])
    k = len(bounds)
    s = rng.uniform(scale[0], scale[1], (k, trials))
    lo = np.maximum(aspect[0], s ** 2)
    hi = np.minimum(aspect[1], 1.0 / s ** 2)
    a = lo + (hi - lo) * rng.random((k, trials))
    w, h = s * np.sqrt(a), s / np.sqrt(a)
    x1 = (1 - w) * rng.random((k, trials))
    y1 = (1 - h) * rng.random((k, trials))
    patches = np.stack([x1, y1, x1 + w, y1 + h], -1)
    candidates = [np.array([0.0, 0.0, 1.0, 1.0])]
    if len(boxes) and k:
        boxes = np.asarray(boxes, np.float64)
        bounds = np.array(bounds)[:, None, None]
        ok = ((_iou(patches, boxes) >= bounds).any(-1)
              & _centres_inside(patches, boxes).any(-1))
        for i in range(k):
            if ok[i].any():
                candidates.append(patches[i, int(ok[i].argmax())])
    return candidates[int(rng.random() * len(candidates)) % len(candidates)]


def crop_boxes(boxes, labels, patch):
    """Keep the boxes whose centre lies in ``patch``, clip them to it and
    express them in its coordinates. boxes [n, 4] and patch [4] share one
    coordinate frame; returns (boxes [m, 4] relative to the patch's top
    left corner, labels [m])."""
    keep = _centres_inside(np.asarray(patch, np.float64), boxes)
    b = boxes[keep].copy()
    b[:, :2] = np.maximum(b[:, :2], patch[:2])
    b[:, 2:] = np.minimum(b[:, 2:], patch[2:])
    b -= np.concatenate([patch[:2], patch[:2]])
    return b, labels[keep]


class SSDAugmentation:
    """SSD training augmentation (see the module docstring).

    Args:
        size: output side in pixels (300 or 512; 160 for the shapes preset).
        mean: BGR mean subtracted at the end and used to fill the expansion.
        std: BGR std the result is divided by (None: 1, as for VGG16).
    Call with (img uint8 HxWx3 BGR, boxes [n,4] normalised (x1,y1,x2,y2),
    labels [n]); returns (float32 size x size x 3 BGR minus mean, boxes
    float32 [m,4] normalised, labels [m]). m may be smaller than n (crop).
    """

    def __init__(self, size=300, mean=(104, 117, 123), expand_prob=0.5,
                 max_expand=4.0, min_ious=MIN_IOUS, trials=50,
                 scale=(0.3, 1.0), aspect=(0.5, 2.0), mirror_prob=0.5,
                 distort=True, channel_shuffle_prob=0.0, any_patch=True,
                 rng=None, std=None):
        self.size = int(size)
        self.mean = np.array(mean, dtype=np.float32)
        self.inv_std = _inverse_std(std)
        self.expand_prob, self.max_expand = expand_prob, max_expand
        self.min_ious, self.trials = tuple(min_ious), trials
        self.scale, self.aspect = scale, aspect
        self.mirror_prob, self.distort = mirror_prob, distort
        self.channel_shuffle_prob = channel_shuffle_prob
        self.any_patch = any_patch
        self.rng = rng

    def _expand(self, rng, w, h):
        """Caffe's ExpandImage geometry: (canvas_w, canvas_h, left, top)."""
        if self.max_expand <= 1 or rng.random() >= self.expand_prob:
            return w, h, 0, 0
        r = rng.uniform(1, self.max_expand)
        cw, ch = int(w * r), int(h * r)
        return (cw, ch, int(math.floor(rng.uniform(0, cw - w))),
                int(math.floor(rng.uniform(0, ch - h))))

    def __call__(self, img, boxes=None, labels=None):
        rng = self.rng if self.rng is not None else np.random
        img = _as_uint8(img)
        h, w = img.shape[:2]
        boxes, labels = _boxes_labels(boxes, labels)
        cw, ch, left, top = self._expand(rng, w, h)
        scale_c = np.array([cw, ch, cw, ch], np.float64)
        px = boxes.astype(np.float64) * [w, h, w, h] + [left, top, left, top]
        patch = sample_patch(px / scale_c, rng, self.min_ious, self.trials,
                             self.scale, self.aspect, self.any_patch)
        patch = np.round(patch * scale_c)               # integer canvas pixels
        patch[2:] = np.maximum(patch[2:], patch[:2] + 1)
        px, labels = crop_boxes(px, labels, patch)
        pw, ph = patch[2] - patch[0], patch[3] - patch[1]
        out = self._render(img, patch - [left, top, left, top], rng)
        boxes = (px / [pw, ph, pw, ph]).astype(np.float32)
        if rng.random() < self.mirror_prob:
            out = cv2.flip(out, 1)
            boxes[:, [0, 2]] = 1.0 - boxes[:, [2, 0]]
        return _subtract_mean(out, self.mean, self.inv_std), boxes, labels

    def _render(self, img, patch, rng):
        """Distort the image pixels inside ``patch`` (x1, y1, x2, y2 integer
        pixels in image coordinates, possibly beyond the image where the
        expansion's mean fill lies) and resize the patch to size x size
        uint8. The mean fill itself is never distorted, as in Caffe."""
        h, w = img.shape[:2]
        x1, y1, x2, y2 = (int(v) for v in patch)
        S = self.size
        rx1, ry1, rx2, ry2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
        if rx2 <= rx1 or ry2 <= ry1:
            return np.full((S, S, 3), np.round(self.mean), np.uint8)
        roi = img[ry1:ry2, rx1:rx2]
        if self.distort:
            roi = photometric_distort(
                roi, rng, channel_shuffle_prob=self.channel_shuffle_prob)
        if (rx1, ry1, rx2, ry2) == (x1, y1, x2, y2):
            return cv2.resize(roi, (S, S))
        fill = tuple(float(m) for m in self.mean)
        sx, sy = S / (x2 - x1), S / (y2 - y1)
        # cv2.resize's pixel-centre convention: dst = (src + .5) * s - .5
        M = np.array([[sx, 0, (rx1 - x1 + 0.5) * sx - 0.5],
                      [0, sy, (ry1 - y1 + 0.5) * sy - 0.5]])
        return cv2.warpAffine(roi, M, (S, S),
                              flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT,
                              borderValue=fill)


#: ``train.py --augment`` values (see :func:`train_transform`).
AUGMENTS = ('ssd', 'shapes', 'none')


def train_transform(kind, size, mean, std=None):
    """The training transform that ``train.py --augment KIND`` names:

    ``ssd``    the paper's full :class:`SSDAugmentation` (VOC, COCO, custom);
    ``shapes`` the shapes preset's milder one (``data.config.shapes['augment']``:
               mirror only);
    ``none``   ssd.pytorch's :class:`BaseTransform` (resize to ``size x size``,
               minus ``mean``; the datasets then swap BGR to RGB), for
               ablations and the recipe check (doc/reproduction.md).

    Each ends with ``(image - mean) / std`` (``std`` None: 1).
    """
    if kind == 'none':
        return BaseTransform(size, mean, std)
    if kind == 'shapes':
        from .config import shapes
        return SSDAugmentation(size, mean, std=std, **shapes.get('augment', {}))
    if kind == 'ssd':
        return SSDAugmentation(size, mean, std=std)
    raise ValueError(f"--augment must be one of {', '.join(AUGMENTS)}, got {kind!r}")
