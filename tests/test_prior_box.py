"""Priors: counts, and values at chosen indices computed by hand from the
paper's formula (s_k = min_size / 300, s'_k = sqrt(s_k * max_size / 300),
centres ((j + .5) / f_k, (i + .5) / f_k), f_k = 300 / step)."""
import math

import pytest
import torch

from data.config import coco, coco512, shapes, voc, voc512
from layers import PriorBox


@pytest.mark.parametrize('cfg,count', [(voc, 8732), (coco, 8732), (voc512, 24564),
                                       (coco512, 24564), (shapes, 9536)])
def test_counts(cfg, count):
    p = PriorBox(cfg).forward()
    assert p.shape == (count, 4) and p.dtype == torch.float32
    assert p.min() >= 0 and p.max() <= 1


@pytest.mark.parametrize('index,expected', [
    (0, (0.5 / 37.5, 0.5 / 37.5, 0.1, 0.1)),                     # conv4_3, min size
    (1, (0.5 / 37.5, 0.5 / 37.5, math.sqrt(0.1 * 0.2), math.sqrt(0.1 * 0.2))),
    (2, (0.5 / 37.5, 0.5 / 37.5, 0.1 * math.sqrt(2), 0.1 / math.sqrt(2))),
    (3, (0.5 / 37.5, 0.5 / 37.5, 0.1 / math.sqrt(2), 0.1 * math.sqrt(2))),
    (4, (1.5 / 37.5, 0.5 / 37.5, 0.1, 0.1)),                     # next column
    (152, (0.5 / 37.5, 1.5 / 37.5, 0.1, 0.1)),                   # next row
    (5776, (0.5 / 18.75, 0.5 / 18.75, 0.2, 0.2)),                # fc7 starts
    (5777, (0.5 / 18.75, 0.5 / 18.75, math.sqrt(0.2 * 111 / 300), math.sqrt(0.2 * 111 / 300))),
    (5780, (0.5 / 18.75, 0.5 / 18.75, 0.2 * math.sqrt(3), 0.2 / math.sqrt(3))),
    (8728, (0.5, 0.5, 0.88, 0.88)),                              # conv11_2, 1x1
    (8729, (0.5, 0.5, math.sqrt(0.88 * 315 / 300), math.sqrt(0.88 * 315 / 300))),
    (8731, (0.5, 0.5, 0.88 / math.sqrt(2), 1.0)),                # 1.2445 clipped to 1
])
def test_ssd300_values(index, expected):
    p = PriorBox(voc).forward()
    torch.testing.assert_close(p[index], torch.tensor(expected, dtype=torch.float32),
                               rtol=0, atol=1e-6)


def test_ssd512_first_and_last():
    p = PriorBox(voc512).forward()
    torch.testing.assert_close(p[0], torch.tensor([0.5 / 64, 0.5 / 64, 0.07, 0.07]),
                               rtol=0, atol=1e-6)
    torch.testing.assert_close(p[-4], torch.tensor([0.5, 0.5, 0.9, 0.9]), rtol=0, atol=1e-6)


def test_no_clip_keeps_large_boxes():
    p = PriorBox(dict(voc, clip=False)).forward()
    assert p[8731, 3].item() == pytest.approx(0.88 * math.sqrt(2), abs=1e-6)
