"""Predictor, split_detections, model loading, inference_phase, draw_detections."""
import numpy as np
import pytest
import torch

from data import BaseTransform, MEANS, ShapesDetection
from data.config import shapes as shapes_cfg
from ssd import build_ssd
from utils.checkpoint import CheckpointError, atomic_save
from utils.draw import draw_detections
from utils.inference import Predictor, split_detections, inference_phase


@pytest.fixture(scope='module')
def net():
    torch.manual_seed(0)
    return build_ssd('train', cfg=shapes_cfg, num_classes=6, top_k=5)


def test_split_detections_literal():
    out = torch.zeros(2, 3, 2, 5)
    out[0, 1, 0] = torch.tensor([.9, .1, .2, .5, .5])
    out[0, 2, 0] = torch.tensor([.8, 0., 0., 1., 1.])
    out[0, 2, 1] = torch.tensor([.005, 0., 0., 1., 1.])        # below conf_thresh
    out[1, 1, 1] = torch.tensor([.7, .5, .5, 1., 1.])
    res = split_detections(out, [(100, 200), (10, 20)], conf_thresh=0.01)
    boxes, scores, labels = res[0]
    np.testing.assert_allclose(boxes, [[20, 20, 100, 50], [0, 0, 200, 100]], rtol=1e-6)
    np.testing.assert_allclose(scores, [.9, .8], rtol=1e-6)
    assert labels.tolist() == [0, 1] and labels.dtype == np.int64
    np.testing.assert_allclose(res[1][0], [[10, 5, 20, 10]], rtol=1e-6)
    assert res[1][2].tolist() == [0]


def test_predictor_matches_manual_forward_and_restores_phase(net):
    imgs = [ShapesDetection('val', num_images=2).pull_image(i) for i in range(2)]
    pred = Predictor(net, shapes_cfg['min_dim'], conf_thresh=0.05)
    res = pred(imgs)
    assert net.phase == 'train' and net.training
    assert len(res) == 2
    x = torch.stack([torch.from_numpy(np.ascontiguousarray(
        BaseTransform(shapes_cfg['min_dim'], MEANS)(im)[0][:, :, ::-1])).permute(2, 0, 1) for im in imgs])
    with inference_phase(net, conf_thresh=0.05), torch.no_grad():
        ref = net(x)
    for k, r in enumerate(res):
        assert r['boxes'].dtype == np.float32 and r['boxes'].shape == (len(r['scores']), 4)
        assert np.all(np.diff(r['scores']) <= 0)
        h, w = imgs[k].shape[:2]
        s = ref[k, 1:, :, 0]
        assert len(r['scores']) == int((s > 0.05).sum())
        c, j = divmod(int(torch.argmax(s)), s.shape[1])
        np.testing.assert_allclose(r['boxes'][0], (ref[k, c + 1, j, 1:] *
                                   torch.tensor([w, h, w, h])).numpy(), rtol=1e-5, atol=1e-4)
        assert r['labels'][0] == c
    # BGR weights get the channels unswapped
    bgr = Predictor(net, shapes_cfg['min_dim'], conf_thresh=0.05, channel_order='BGR').preprocess(imgs[:1])
    assert torch.equal(bgr.flip(1), pred.preprocess(imgs[:1]))


def test_inference_phase_restores_detect_settings(net):
    det = net.detect
    before = (net.phase, net.training, det.conf_thresh, det.top_k)
    with inference_phase(net, conf_thresh=0.5, top_k=3):
        assert (net.phase, net.training, det.conf_thresh, det.top_k) == ('test', False, 0.5, 3)
    assert (net.phase, net.training, det.conf_thresh, det.top_k) == before


def test_draw_detections():
    img = np.full((60, 80, 3), 50, np.uint8)
    out = draw_detections(img, [[10, 10, 40, 40], [50, 5, 70, 20]], [0, 1], [.9, .1],
                          ('cat', 'dog'), thresh=0.5)
    assert out.dtype == np.uint8 and out.shape == img.shape
    assert (img == 50).all()                              # input untouched
    assert (out[25, 10] != 50).any()                      # left edge of the kept box
    assert (out[12:20, 52:68] == 50).all()                # the box under thresh is not drawn
