"""Running a trained SSD on images: :class:`Predictor` turns a list of BGR
images into per-image detections in pixels (:func:`split_detections`).
Used by eval.py, test.py, demo/live.py, the notebook and ``make demo``; the
network comes from a weight file through ``utils.weights.build_from_weights``.
"""
import contextlib

import numpy as np
import torch

from data.config import preprocess_of


def unwrap(net):
    """The plain SSD inside DDP / DataParallel / torch.compile wrappers."""
    while True:
        inner = getattr(net, 'module', None) or getattr(net, '_orig_mod', None)
        if inner is None:
            return net
        net = inner


@contextlib.contextmanager
def inference_phase(net, conf_thresh=None, top_k=None):
    """Temporarily put ``net`` in 'test' phase and eval mode (and optionally
    set its Detect's ``conf_thresh`` / ``top_k``); restore everything after."""
    net = unwrap(net)
    det = net.detect
    saved = (net.phase, net.training, det.conf_thresh, det.top_k)
    net.phase = 'test'
    if saved[1]:              # eval() walks every module (1.2 ms for SSDlite): only when needed
        net.eval()
    if conf_thresh is not None:
        det.conf_thresh = conf_thresh
    if top_k is not None:
        det.top_k = top_k
    try:
        yield net
    finally:
        net.phase, det.conf_thresh, det.top_k = saved[0], saved[2], saved[3]
        if saved[1]:
            net.train(True)


def split_detections(out, sizes, conf_thresh=0.0):
    """Detect's output ``[B, C, K, 5]`` (score, x1, y1, x2, y2 in [0, 1]) ->
    per image (boxes float32 [n, 4] pixels, scores float32 [n], labels int64
    [n] 0-based without background), in Detect's order (class, then score).

    ``sizes``: ``[B, 2]`` (height, width) of the original images. One
    device-to-host copy for the whole batch."""
    score = out[..., 0]
    b, c, k = torch.nonzero(score > max(conf_thresh, 0.0), as_tuple=True)
    hw = torch.as_tensor(np.asarray(sizes, np.float32).reshape(-1, 2), device=out.device)
    scale = hw[:, [1, 0, 1, 0]]
    boxes = out[b, c, k, 1:] * scale[b]
    b, c, s, boxes = (t.cpu().numpy() for t in (b, c, score[b, c, k], boxes))
    ends = np.cumsum(np.bincount(b, minlength=out.shape[0]))
    starts = np.concatenate(([0], ends[:-1]))
    return [(boxes[i:j].astype(np.float32), s[i:j].astype(np.float32),
             (c[i:j] - 1).astype(np.int64)) for i, j in zip(starts, ends)]


class Predictor:
    """``Predictor(net, size, mean=None, device='cpu', channel_order='RGB',
    conf_thresh=0.01, batch_size=8, std=None)``; ``predictor(list_of_bgr_images)`` -> list of
    ``dict(boxes float32 [n, 4] (x1, y1, x2, y2) pixels, scores float32 [n],
    labels int64 [n] 0-based without background)``, sorted by score.

    Preprocessing is ssd.pytorch's: resize to ``size`` x ``size`` (bilinear),
    subtract the BGR ``mean`` (and divide by ``std``), then swap to RGB unless
    ``channel_order`` is 'BGR' (Caffe-converted weights). ``mean`` and
    ``std`` None: the network's (``data.config.preprocess_of(net.cfg)``:
    ``MEANS`` and 1 for VGG16). The net runs in test phase under
    ``torch.inference_mode``; its phase and mode are restored afterwards."""

    def __init__(self, net, size=None, mean=None, device='cpu', channel_order='RGB',
                 conf_thresh=0.01, batch_size=8, std=None):
        from data import BaseTransform
        if channel_order not in ('RGB', 'BGR'):
            raise ValueError(f"channel_order must be 'RGB' or 'BGR', got {channel_order!r}")
        self.net = net
        self.size = int(size or unwrap(net).size)
        cfg_mean, cfg_std = preprocess_of(getattr(unwrap(net), 'cfg', None) or {})
        self.mean = cfg_mean if mean is None else tuple(mean)
        self.std = cfg_std if std is None else tuple(std)
        self.transform = BaseTransform(self.size, self.mean, self.std)
        self.device = torch.device(device)
        self.channel_order = channel_order
        self.conf_thresh = conf_thresh
        self.batch_size = batch_size

    def preprocess(self, images):
        """list of BGR uint8 ``[H, W, 3]`` -> float tensor ``[B, 3, size, size]``."""
        x = np.stack([self.transform(im)[0] for im in images])
        if self.channel_order == 'RGB':
            x = x[..., ::-1]
        return torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2)

    def forward(self, x):
        """``[B, 3, size, size]`` -> Detect's ``[B, C, top_k, 5]``: the net in
        test phase (``utils.export.OnnxPredictor`` runs onnxruntime instead)."""
        with inference_phase(self.net) as net:
            return net(x)

    @torch.inference_mode()
    def __call__(self, images):
        results = []
        for s in range(0, len(images), self.batch_size):
            chunk = [_check_image(im) for im in images[s:s + self.batch_size]]
            out = self.forward(self.preprocess(chunk).to(self.device))
            sizes = [im.shape[:2] for im in chunk]
            for boxes, scores, labels in split_detections(out, sizes, self.conf_thresh):
                order = np.argsort(-scores, kind='stable')
                results.append(dict(boxes=boxes[order], scores=scores[order],
                                    labels=labels[order]))
        return results


def _check_image(im):
    im = np.asarray(im)
    if im.ndim == 2:
        im = np.repeat(im[:, :, None], 3, axis=2)
    if im.ndim != 3 or im.shape[2] not in (3, 4):
        raise ValueError(f'expected a BGR image [H, W, 3], got shape {im.shape}')
    return im[:, :, :3]
