"""Augmentation speed: ``python -m utils.bench.augment [--images N]
[--repeats R] [--size 300]``.

Augmented images per second on ONE core (``torch.set_num_threads(1)``,
``cv2.setNumThreads(1)``, one process) for the SSD300 training pipeline on
VOC-sized 500x375 JPEGs, decoding included, three contenders side by side in
one process on the same files (warm-up, interleaved repeats, median):

* ours: ``data.augmentations.SSDAugmentation`` (uint8 look-up tables, the
  expanded canvas never materialised, one warpAffine/resize);
* ssd.pytorch: its algorithm re-implemented below (float32 image through
  every step, HSV in float, the expanded canvas allocated and filled, crop
  by slicing, resize), with numpy-2 fixes only (the crop mode is picked by
  index, as ``random.choice`` on its ragged tuple fails on current numpy);
* torchvision.transforms.v2: torchvision's SSD reference preset
  (RandomPhotometricDistort, RandomZoomOut, RandomIoUCrop, flip, resize) on
  uint8 tensors decoded by torchvision.io, plus float conversion and mean
  subtraction. This is how the choice of OpenCV was measured.

Also prints the rate without decoding (augmentation only) and what 16 such
cores feed.
"""
import argparse
import os
import tempfile

import cv2
import numpy as np
import torch

from data.augmentations import SSDAugmentation
from utils.bench import timeit
from data.config import MEANS
from data.shapes import generate


# ---------------------------------------------------------------------------
# ssd.pytorch's augmentation algorithm (amdegroot/ssd.pytorch,
# utils/augmentations.py), re-implemented step for step.
def _jaccard(boxes, rect):
    lt = np.maximum(boxes[:, :2], rect[:2])
    rb = np.minimum(boxes[:, 2:], rect[2:])
    inter = np.clip(rb - lt, 0, None).prod(1)
    area_a = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    area_b = (rect[2] - rect[0]) * (rect[3] - rect[1])
    return inter / (area_a + area_b - inter)


def _photometric(im):
    r = np.random
    if r.randint(2):
        im += r.uniform(-32, 32)                              # brightness
    contrast_first = r.randint(2)
    if contrast_first and r.randint(2):
        im *= r.uniform(0.5, 1.5)                             # contrast
    im = cv2.cvtColor(im, cv2.COLOR_BGR2HSV)
    if r.randint(2):
        im[:, :, 1] *= r.uniform(0.5, 1.5)                    # saturation
    if r.randint(2):
        im[:, :, 0] += r.uniform(-18, 18)                     # hue
        im[:, :, 0][im[:, :, 0] > 360.0] -= 360.0
        im[:, :, 0][im[:, :, 0] < 0.0] += 360.0
    im = cv2.cvtColor(im, cv2.COLOR_HSV2BGR)
    if not contrast_first and r.randint(2):
        im *= r.uniform(0.5, 1.5)
    if r.randint(2):                                          # lighting noise
        perms = ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1),
                 (2, 1, 0))
        im = im[:, :, perms[r.randint(len(perms))]]
    return im


def _expand(image, boxes, mean):
    if np.random.randint(2):
        return image, boxes
    h, w, c = image.shape
    ratio = np.random.uniform(1, 4)
    left = np.random.uniform(0, w * ratio - w)
    top = np.random.uniform(0, h * ratio - h)
    out = np.zeros((int(h * ratio), int(w * ratio), c), dtype=image.dtype)
    out[:, :, :] = mean
    out[int(top):int(top + h), int(left):int(left + w)] = image
    boxes = boxes.copy()
    boxes[:, :2] += (int(left), int(top))
    boxes[:, 2:] += (int(left), int(top))
    return out, boxes


_MODES = (None, (0.1, None), (0.3, None), (0.7, None), (0.9, None),
          (None, None))


def _crop(image, boxes, labels):
    h, w, _ = image.shape
    while True:
        mode = _MODES[np.random.randint(len(_MODES))]
        if mode is None:
            return image, boxes, labels
        min_iou = float('-inf') if mode[0] is None else mode[0]
        max_iou = float('inf') if mode[1] is None else mode[1]
        for _ in range(50):
            cw = np.random.uniform(0.3 * w, w)
            ch = np.random.uniform(0.3 * h, h)
            if ch / cw < 0.5 or ch / cw > 2:
                continue
            left = np.random.uniform(w - cw)
            top = np.random.uniform(h - ch)
            rect = np.array([int(left), int(top), int(left + cw),
                             int(top + ch)])
            overlap = _jaccard(boxes, rect)
            if overlap.min() < min_iou and max_iou < overlap.max():
                continue                      # (the original's no-op test)
            cur = image[rect[1]:rect[3], rect[0]:rect[2], :]
            c = (boxes[:, :2] + boxes[:, 2:]) / 2.0
            mask = ((rect[0] < c[:, 0]) * (rect[1] < c[:, 1])
                    * (rect[2] > c[:, 0]) * (rect[3] > c[:, 1]))
            if not mask.any():
                continue
            b = boxes[mask].copy()
            b[:, :2] = np.maximum(b[:, :2], rect[:2]) - rect[:2]
            b[:, 2:] = np.minimum(b[:, 2:], rect[2:]) - rect[:2]
            return cur, b, labels[mask]


def ssd_pytorch_augment(image, boxes, labels, size=300, mean=MEANS):
    """ssd.pytorch's SSDAugmentation: same inputs and outputs as ours."""
    image = image.astype(np.float32)                     # ConvertFromInts
    h, w, _ = image.shape
    boxes = boxes * [w, h, w, h]                         # ToAbsoluteCoords
    image = _photometric(image.copy())
    image, boxes = _expand(image, boxes, mean)
    image, boxes, labels = _crop(image, boxes, labels)
    if np.random.randint(2):                             # RandomMirror
        width = image.shape[1]
        image = image[:, ::-1]
        boxes = boxes.copy()
        boxes[:, 0::2] = width - boxes[:, 2::-2]
    h, w, _ = image.shape
    boxes = boxes / [w, h, w, h]                         # ToPercentCoords
    image = cv2.resize(image, (size, size))
    image = image.astype(np.float32) - np.array(mean, np.float32)
    return image, boxes.astype(np.float32), labels


# ---------------------------------------------------------------------------
def torchvision_pipeline(size, mean):
    from torchvision import tv_tensors
    from torchvision.transforms import v2
    mean = [float(m) for m in mean[::-1]]      # decode_jpeg gives RGB
    return v2.Compose([
        v2.RandomPhotometricDistort(p=0.5),
        v2.RandomZoomOut(fill={tv_tensors.Image: mean, 'others': 0},
                         side_range=(1.0, 4.0), p=0.5),
        v2.RandomIoUCrop(),
        v2.RandomHorizontalFlip(p=0.5),
        v2.Resize((size, size), antialias=False),
        v2.SanitizeBoundingBoxes(),
        v2.ToDtype(torch.float32),
        v2.Normalize(mean=mean, std=[1.0, 1.0, 1.0]),
    ])


def make_jpegs(folder, n):
    """n VOC-sized (500x375) JPEGs from shapes, with 2-6 boxes each."""
    items = []
    for i in range(n):
        img, gt = generate(7, i)
        h, w = img.shape[:2]
        img = cv2.resize(img, (500, 375), interpolation=cv2.INTER_CUBIC)
        noise = np.random.default_rng(i).integers(-20, 21, img.shape)
        img = np.clip(img + noise, 0, 255).astype(np.uint8)
        p = os.path.join(folder, f'{i:06d}.jpg')
        cv2.imwrite(p, img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        boxes = gt['boxes'] / np.float32([w, h, w, h])
        items.append((p, boxes, gt['labels'].astype(np.float32)))
    return items


def contenders(items, size, decode):
    from torchvision import tv_tensors
    from torchvision.io import decode_jpeg, read_file
    ours = SSDAugmentation(size, MEANS)
    tv = torchvision_pipeline(size, MEANS)
    cache = {p: cv2.imread(p) for p, _, _ in items}
    read = (lambda p: cv2.imread(p)) if decode else (lambda p: cache[p])

    def run_ours():
        for p, b, l in items:
            ours(read(p), b, l)

    def run_ref():
        for p, b, l in items:
            ssd_pytorch_augment(read(p), b, l, size)

    tcache = {p: decode_jpeg(read_file(p)) for p, _, _ in items}

    def run_tv():
        for p, b, l in items:
            img = decode_jpeg(read_file(p)) if decode else tcache[p]
            h, w = img.shape[1:]
            boxes = tv_tensors.BoundingBoxes(torch.from_numpy(b * [w, h, w, h]),
                                             format='XYXY', canvas_size=(h, w))
            tv(tv_tensors.Image(img), {'boxes': boxes,
                                       'labels': torch.from_numpy(l)})
    return {'ours (OpenCV, uint8)': run_ours, 'ssd.pytorch': run_ref,
            'torchvision.transforms.v2': run_tv}


def measure(fns, repeats, n_images):
    """Images per second of each pipeline (median of ``repeats`` rounds)."""
    return {n: n_images / med for n, (med, _) in timeit(fns, repeats).items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--images', type=int, default=48)
    ap.add_argument('--repeats', type=int, default=5)
    ap.add_argument('--size', type=int, default=300)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    np.random.seed(0)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as d:
        items = make_jpegs(d, a.images)
        for decode in (True, False):
            rates = measure(contenders(items, a.size, decode), a.repeats,
                            len(items))
            ours = rates['ours (OpenCV, uint8)']
            print(f"SSD{a.size} augmentation, 500x375 JPEGs, 1 core, "
                  f"{'with' if decode else 'without'} JPEG decoding:")
            for n, r in rates.items():
                extra = '' if r == ours else f'   ours is {ours / r:.2f}x'
                print(f'  {n:<28s} {r:8.1f} img/s{extra}')
            if decode:
                print(f'  16 cores feed about {16 * ours:.0f} img/s with ours')


if __name__ == '__main__':
    main()
