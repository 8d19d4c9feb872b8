"""Running a trained SSD on images: model loading and :class:`Predictor`.

``load_model`` builds the right network for a weight file (ssd.pytorch's
weights, our weights-only snapshots or our full checkpoints) and loads it;
``Predictor`` turns a list of BGR images into per-image detections in pixels.
Used by eval.py, test.py, demo/live.py, the notebook and ``make demo``.
"""
import contextlib
import os

import numpy as np
import torch

from data.config import MEANS, config_for, shapes as SHAPES_CFG
from utils.checkpoint import CheckpointError, extract_state_dict, load_file

# Caffe-converted weights expect BGR input (ssd.pytorch #321); everything
# trained in PyTorch (ssd.pytorch's own, ours) expects RGB.
BGR_WEIGHT_NAMES = ('ssd_300_VOC0712', 'ssd_512_VOC0712', 'ssd300_VOC0712_caffe')


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
    net.eval()
    if conf_thresh is not None:
        det.conf_thresh = conf_thresh
    if top_k is not None:
        det.top_k = top_k
    try:
        yield net
    finally:
        net.phase, det.conf_thresh, det.top_k = saved[0], saved[2], saved[3]
        net.train(saved[1])


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
    """``Predictor(net, size, mean=MEANS, device='cpu', channel_order='RGB',
    conf_thresh=0.01)``; ``predictor(list_of_bgr_images)`` -> list of
    ``dict(boxes float32 [n, 4] (x1, y1, x2, y2) pixels, scores float32 [n],
    labels int64 [n] 0-based without background)``, sorted by score.

    Preprocessing is ssd.pytorch's: resize to ``size`` x ``size`` (bilinear),
    subtract the BGR ``mean``, then swap to RGB unless ``channel_order`` is
    'BGR' (Caffe-converted weights). The net runs in test phase under
    ``torch.inference_mode``; its phase and mode are restored afterwards."""

    def __init__(self, net, size=None, mean=MEANS, device='cpu', channel_order='RGB',
                 conf_thresh=0.01, batch_size=8):
        from data import BaseTransform
        if channel_order not in ('RGB', 'BGR'):
            raise ValueError(f"channel_order must be 'RGB' or 'BGR', got {channel_order!r}")
        self.net = net
        self.size = int(size or unwrap(net).size)
        self.transform = BaseTransform(self.size, mean)
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

    @torch.inference_mode()
    def __call__(self, images):
        results = []
        for s in range(0, len(images), self.batch_size):
            chunk = [_check_image(im) for im in images[s:s + self.batch_size]]
            x = self.preprocess(chunk).to(self.device)
            with inference_phase(self.net) as net:
                out = net(x)
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


def infer_spec(state):
    """Guess (preset, size, num_classes) from a state dict's shapes: the number
    of heads (5: the shapes preset, 6: SSD300, 7: SSD512) and conf/loc widths.
    Returns None when it does not look like an SSD of ``data/config.py``."""
    try:
        heads = len({k.split('.')[1] for k in state if k.startswith('loc.')})
        c = state['conf.0.weight'].shape[0] * 4 // state['loc.0.weight'].shape[0]
    except (KeyError, IndexError, ZeroDivisionError, AttributeError):
        return None
    return {5: ('shapes', SHAPES_CFG['min_dim'], c), 6: ('ssd', 300, c),
            7: ('ssd', 512, c)}.get(heads)


def checkpoint_info(obj):
    """Metadata a checkpoint may carry: ``args`` (dict) and ``channel_order``."""
    if not isinstance(obj, dict):
        return {}
    args = obj.get('args') if isinstance(obj.get('args'), dict) else {}
    info = {'args': args}
    order = obj.get('channel_order') or args.get('channel_order')
    if order in ('RGB', 'BGR'):
        info['channel_order'] = order
    return info


def read_checkpoint(path):
    """``(state_dict, meta)`` of a weight file; ``meta`` as
    :func:`checkpoint_info`. One-line :class:`CheckpointError` when unreadable."""
    obj = load_file(path)
    return extract_state_dict(obj, path), checkpoint_info(obj)


def model_spec(state, meta, dataset=None, size=None, num_classes=None):
    """Pick (preset, size, num_classes). The preset: 'shapes' when the dataset
    (``dataset``, else the checkpoint's ``args['dataset']``) is shapes, the
    paper's SSD when ``size`` is given, else what the state dict's shapes say
    (5 heads: shapes preset; 6: SSD300; 7: SSD512), else the checkpoint's
    ``args['size']`` or 300. ``num_classes``: given, else the state dict's."""
    args = meta.get('args', {})
    guess = infer_spec(state)
    ds = dataset or args.get('dataset')
    if ds == 'shapes':
        preset, size = 'shapes', SHAPES_CFG['min_dim']
    elif size:
        preset, size = 'ssd', int(size)
    elif guess:
        preset, size = guess[0], guess[1]
    else:
        preset, size = 'ssd', int(args.get('size') or 300)
    num_classes = num_classes or (guess[2] if guess else 21)
    return preset, size, int(num_classes)


def channel_order(path, meta):
    """The input channel order the weights expect: utils.weights' table
    (checkpoint metadata, then known file names such as the Caffe-converted
    ``ssd_300_VOC0712.pth``), else 'RGB'."""
    try:
        from utils.weights import channel_order_for
    except ImportError:
        channel_order_for = None
    if channel_order_for is not None:
        ck = {'args': {'channel_order': meta['channel_order']}} if meta.get('channel_order') else {}
        return channel_order_for(path, None, ck)
    if meta.get('channel_order'):
        return meta['channel_order']
    return 'BGR' if os.path.basename(str(path)).startswith(BGR_WEIGHT_NAMES) else 'RGB'


def build_model(state, meta, path='<weights>', dataset=None, size=None, num_classes=None,
                device='cpu', phase='test', **detect_kwargs):
    """Build the SSD chosen by :func:`model_spec` and load ``state`` into it.
    Returns ``(net, info)``, ``info = dict(channel_order, preset, size,
    num_classes, args)``; a non-fitting file is a one-line CheckpointError."""
    from ssd import build_ssd
    preset, size, num_classes = model_spec(state, meta, dataset, size, num_classes)
    if preset == 'shapes':
        net = build_ssd(phase, cfg=SHAPES_CFG, num_classes=num_classes, **detect_kwargs)
    elif size not in (300, 512):
        raise CheckpointError(f'{path}: size must be 300 or 512, got {size}')
    else:
        net = build_ssd(phase, size, num_classes, **detect_kwargs)
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        first = ' '.join(x.strip() for x in str(e).strip().splitlines()[:2])[:300]
        raise CheckpointError(f'{path}: does not fit the {preset} SSD{size} with '
                              f'{num_classes} classes ({first})') from None
    info = dict(channel_order=channel_order(path, meta), preset=preset, size=net.size,
                num_classes=num_classes, args=meta.get('args', {}))
    return net.to(device), info


def load_model(path, dataset=None, size=None, num_classes=None, device='cpu',
               phase='test', **detect_kwargs):
    """Read ``path`` (ssd.pytorch weights, our snapshots or full checkpoints)
    and build the SSD that fits it; see :func:`model_spec`. Returns
    ``(net, info)``."""
    state, meta = read_checkpoint(path)
    return build_model(state, meta, path, dataset, size, num_classes, device, phase,
                       **detect_kwargs)
