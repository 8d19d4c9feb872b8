"""SSDAugmentation / BaseTransform: boxes stay consistent with the pixels,
the crop honours its IoU bound, images without boxes pass."""
import numpy as np
import pytest

from data import BaseTransform, SSDAugmentation, MEANS
from data.augmentations import (crop_boxes, photometric_distort, sample_patch,
                                _iou, _centres_inside)
from utils.augmentations import SSDAugmentation as OldPath

MEAN = np.float32(MEANS)


class ScriptedRng:
    """random() / uniform() return scripted values (hand-checked cases)."""

    def __init__(self, randoms, uniforms):
        self.r, self.u = list(randoms), list(uniforms)

    def random(self, size=None):
        return self.r.pop(0)

    def uniform(self, lo, hi, size=None):
        return self.u.pop(0)


def test_old_import_path():
    assert OldPath is SSDAugmentation


def test_base_transform_resizes_and_subtracts_mean():
    img = np.full((30, 40, 3), (110, 120, 130), np.uint8)
    out, boxes, labels = BaseTransform(16, MEANS)(img, None, None)
    assert out.shape == (16, 16, 3) and out.dtype == np.float32
    np.testing.assert_array_equal(out[0, 0], [6, 3, 7])
    assert boxes is None and labels is None


def test_crop_boxes_hand_checked():
    boxes = np.array([[10, 10, 50, 50], [60, 60, 100, 100]], np.float64)
    labels = np.array([3, 7])
    b, l = crop_boxes(boxes, labels, np.array([20., 20., 70., 70.]))
    np.testing.assert_array_equal(b, [[0, 0, 30, 30]])
    np.testing.assert_array_equal(l, [3])
    b, l = crop_boxes(boxes, labels, np.array([0., 0., 100., 100.]))
    np.testing.assert_array_equal(b, boxes)
    np.testing.assert_array_equal(l, labels)


def test_iou_hand_checked():
    p = np.array([[0., 0., 2., 2.]])
    b = np.array([[1., 1., 3., 3.], [0., 0., 2., 2.], [5., 5., 6., 6.]])
    np.testing.assert_allclose(_iou(p, b), [[1 / 7, 1.0, 0.0]])
    assert _centres_inside(p, b).tolist() == [[False, True, False]]


@pytest.mark.parametrize('bound', [0.1, 0.3, 0.5, 0.7, 0.9])
def test_crop_honours_its_iou_bound(bound):
    rng = np.random.RandomState(1)
    boxes = np.array([[0.1, 0.2, 0.4, 0.6], [0.05, 0.05, 0.95, 0.95]])
    cropped = 0
    for _ in range(100):
        p = sample_patch(boxes, rng, min_ious=(bound,), any_patch=False)
        if np.array_equal(p, [0, 0, 1, 1]):
            continue
        cropped += 1
        assert _iou(p, boxes).max() >= bound
        assert _centres_inside(p, boxes).any()
        w, h = p[2] - p[0], p[3] - p[1]
        assert 0.3 - 1e-9 <= np.sqrt(w * h) <= 1 + 1e-9
        assert 0.5 - 1e-9 <= w / h <= 2 + 1e-9
    assert cropped >= 10


def test_photometric_hand_checked_saturates():
    img = np.array([[[250, 10, 100]]], np.uint8)
    # contrast-first order (0.9 > 0.5); brightness +10 applied; contrast x2
    # applied; saturation, hue skipped (0.7, 0.8 >= 0.5)
    rng = ScriptedRng([0.9, 0.1, 0.2, 0.7, 0.8], [10.0, 2.0])
    out = photometric_distort(img, rng)
    np.testing.assert_array_equal(out, [[[255, 40, 220]]])


def _white_box_image():
    img = np.zeros((100, 200, 3), np.uint8)
    img[20:60, 50:150] = 255
    box = np.array([[50 / 200, 20 / 100, 150 / 200, 60 / 100]], np.float32)
    return img, box


def test_boxes_follow_the_pixels():
    img, box = _white_box_image()
    aug = SSDAugmentation(64, MEANS, distort=False,
                          rng=np.random.RandomState(0))
    for _ in range(60):
        out, b, l = aug(img, box, np.array([5.0]))
        assert out.shape == (64, 64, 3) and out.dtype == np.float32
        assert b.dtype == np.float32 and len(b) == len(l) <= 1
        for x1, y1, x2, y2 in np.round(b * 64).astype(int):
            assert 0 <= x1 < x2 <= 64 and 0 <= y1 < y2 <= 64
            inner = out[y1 + 2:y2 - 2, x1 + 2:x2 - 2] + MEAN
            if inner.size:
                assert inner.min() > 250
            ring = out[max(y1 - 3, 0):y2 + 3, max(x1 - 3, 0):x2 + 3] + MEAN
            assert (ring < 5).any() or (x2 - x1 > 60 and y2 - y1 > 60)


def test_expand_fills_with_the_mean_and_mirror_flips_boxes():
    img = np.full((40, 60, 3), 255, np.uint8)
    box = np.array([[0.0, 0.0, 0.5, 1.0]], np.float32)   # left half
    aug = SSDAugmentation(64, MEANS, expand_prob=1.0, min_ious=(),
                          any_patch=False, mirror_prob=1.0, distort=False,
                          rng=np.random.RandomState(3))
    out, b, l = aug(img, box, np.array([1.0]))
    x1, y1, x2, y2 = np.round(b[0] * 64).astype(int)
    # mirrored: the image's left half is now right of its right half
    img_out = out + MEAN
    assert (img_out[y1 + 2:y2 - 2, x1 + 2:x2 - 2] > 250).all()
    assert np.abs(out[0, 0]).max() < 1e-6 or np.abs(out[-1, -1]).max() < 1e-6
    assert (np.abs(out) < 1e-6).mean() > 0.4     # most of a >=2x canvas


def test_expand_hand_checked_geometry():
    img = np.full((10, 20, 3), 200, np.uint8)
    # expand: random() 0.0 < 0.5; ratio uniform -> 2.0; left -> 5.0, top 3.0
    # crop candidates: only the whole canvas; choose: random() 0.0; mirror:
    # random() 0.99 (no)
    class R(ScriptedRng):
        def random(self, size=None):
            return np.zeros(size) if size is not None else self.r.pop(0)

        def uniform(self, lo, hi, size=None):
            return np.full(size, lo) if size is not None else self.u.pop(0)
    rng = R([0.0, 0.0, 0.99], [2.0, 5.0, 3.0])
    aug = SSDAugmentation(40, (0, 0, 0), distort=False, min_ious=(),
                          any_patch=False, rng=rng)
    out, b, l = aug(img, np.array([[0, 0, 1, 1]], np.float32), np.array([0]))
    np.testing.assert_allclose(b, [[5 / 40, 3 / 20, 25 / 40, 13 / 20]])
    assert out[10, 20, 0] == 200 and out[0, 0, 0] == 0 and out[19, 39, 0] == 0


@pytest.mark.parametrize('boxes', [None, np.zeros((0, 4), np.float32)])
def test_images_without_boxes_pass(boxes):
    img = np.random.RandomState(0).randint(0, 255, (50, 70, 3), np.uint8)
    aug = SSDAugmentation(32, MEANS, rng=np.random.RandomState(0))
    for _ in range(10):
        out, b, l = aug(img, boxes, None if boxes is None else np.zeros(0))
        assert out.shape == (32, 32, 3) and b.shape == (0, 4) and len(l) == 0


def test_float_input_and_determinism():
    img, box = _white_box_image()
    a = SSDAugmentation(48, MEANS, rng=np.random.RandomState(5))
    b = SSDAugmentation(48, MEANS, rng=np.random.RandomState(5))
    o1, b1, _ = a(img, box, np.array([2.0]))
    o2, b2, _ = b(img.astype(np.float32), box, np.array([2.0]))
    np.testing.assert_array_equal(o1, o2)
    np.testing.assert_array_equal(b1, b2)
