"""The shapes dataset: determinism, content, the item contract, and the
VOC/COCO/YOLO writers read back through the real loaders."""
import numpy as np
import pytest
import torch

from data import (ShapesDetection, SHAPES_CLASSES, SSDAugmentation,
                  BaseTransform, COCODetection, CustomDetection,
                  YOLODetection, MEANS, shapes as shapes_cfg, get_dataset)
from data.shapes import generate, MIN_FRAC
from data.shapes_io import main as shapes_main


def test_classes_match_the_preset():
    assert len(SHAPES_CLASSES) == 5 == shapes_cfg['num_classes'] - 1


def test_deterministic_per_seed_and_index():
    a, ga = generate(3, 7)
    b, gb = generate(3, 7)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ga['boxes'], gb['boxes'])
    c, _ = generate(3, 8)
    d, _ = generate(4, 7)
    assert a.shape != c.shape or (a != c).any()
    assert a.shape != d.shape or (a != d).any()
    assert ShapesDetection('train').seed != ShapesDetection('val').seed


def test_content_statistics():
    sizes, counts, rel, labels = set(), [], [], set()
    for i in range(60):
        img, gt = generate(0, i)
        h, w = img.shape[:2]
        sizes.add((w, h))
        assert (gt['width'], gt['height']) == (w, h)
        counts.append(len(gt['labels']))
        b = gt['boxes']
        assert (b[:, 0] >= 0).all() and (b[:, 2] <= w).all()
        assert (b[:, 1] >= 0).all() and (b[:, 3] <= h).all()
        assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
        rel += list(np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
                    / min(w, h))
        labels |= set(gt['labels'].tolist())
        assert img.std() > 20                     # textured, not flat
    assert min(counts) >= 1 and max(counts) <= 6 and len(set(counts)) >= 4
    assert len(sizes) > 30 and labels == set(range(5))
    assert min(rel) < 0.15 and max(rel) > 0.4 and min(rel) > MIN_FRAC * 0.5


def test_item_contract():
    ds = ShapesDetection('val', num_images=4,
                         transform=SSDAugmentation(160, MEANS))
    assert len(ds) == 4 and ds.classes == SHAPES_CLASSES and ds.name == 'shapes'
    img, target = ds[0]
    assert img.dtype == torch.float32 and img.shape == (3, 160, 160)
    assert target.dtype == np.float32 and target.shape[1] == 5
    assert (target[:, :4] >= 0).all() and (target[:, :4] <= 1).all()
    gt = ds.pull_gt(1)
    assert gt['boxes'].dtype == np.float32 and gt['labels'].dtype == np.int64
    assert gt['difficult'].dtype == np.bool_
    assert ds.pull_image(1).dtype == np.uint8
    assert ds.pull_anno(1)[0] == ds.ids[1] == '1_000001'
    rgb = ShapesDetection('val', num_images=1,
                          transform=BaseTransform(64, MEANS))[0][0]
    bgr = ShapesDetection('val', num_images=1, channel_order='BGR',
                          transform=BaseTransform(64, MEANS))[0][0]
    torch.testing.assert_close(rgb, bgr.flip(0))
    assert len(get_dataset('shapes', image_set='val', num_images=3)) == 3


def _same_gt(a, b):
    np.testing.assert_allclose(a['boxes'], b['boxes'], atol=1e-3)
    assert a['labels'].tolist() == b['labels'].tolist()
    assert (a['width'], a['height']) == (b['width'], b['height'])


@pytest.mark.parametrize('fmt', ['voc', 'coco', 'yolo'])
def test_writers_round_trip_through_loaders(tmp_path, fmt):
    out = str(tmp_path / fmt)
    shapes_main(['--out', out, '--format', fmt, '--num', '5', '--seed', '9'])
    if fmt == 'voc':
        ds = CustomDetection(out, 'val')
    elif fmt == 'coco':
        ds = COCODetection(out, 'val2017')
    else:
        ds = YOLODetection(out, 'val')
    assert len(ds) == 1 and tuple(ds.classes) == SHAPES_CLASSES
    img, gt = generate(9, 4)
    got = ds.pull_gt(0)
    if fmt == 'yolo':                 # YOLO has no difficult flag
        keep = ~gt['difficult']
        gt = dict(gt, boxes=gt['boxes'][keep], labels=gt['labels'][keep])
    _same_gt(got, gt)
    assert np.abs(ds.pull_image(0).astype(int) - img).mean() < 8   # JPEG
    assert ds[0][0].shape == (3,) + img.shape[:2]
    train = get_dataset('custom', out, 'train') if fmt != 'coco' else \
        get_dataset('COCO', out, 'train2017')
    assert len(train) == 4
