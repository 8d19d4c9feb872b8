"""Export a trained SSD to ONNX, with decoding and per-class NMS inside.

    python -m utils.export --trained_model weights/ssd300_mAP_77.43_v2.pth --out ssd300.onnx
    python test.py --onnx ssd300.onnx --input photos/       # run it with onnxruntime

The ONNX model takes exactly what ``build_ssd`` takes: float32 ``images
[N, 3, S, S]`` (S = 300 or 512, or the preset's size), the image resized to
S x S, minus ``MEANS`` (BaseTransform), swapped to the file's channel order
(RGB, or BGR for Caffe conversions). It returns exactly what
``build_ssd('test')`` returns: ``detections [N, C, top_k, 5]``, each row
``(score, x1, y1, x2, y2)`` in [0, 1]; within a class the rows are sorted by
decreasing score, zero after the last detection; class 0 (background) is
zero. N is dynamic.

``torch.onnx`` cannot trace :class:`layers.Detect`, whose shapes depend on the
data (how many scores pass the threshold, how many boxes NMS keeps).
:class:`ExportDetect` computes the same result with fixed shapes:

1. softmax; per image and class, ``TopK`` keeps the ``top_k`` best scores
   (Detect's candidate limit; ties: lower prior index first, in both);
2. decode those priors' offsets (``layers.box_utils.decode``);
3. ONNX ``NonMaxSuppression`` with every (image, class) as its own batch
   entry, the score threshold (``score > conf_thresh``, as Detect) and the IoU
   threshold (suppress IoU > nms_thresh, as torchvision's ``nms``);
4. the selected indices become a keep mask (``ScatterND``), and a second
   ``TopK`` on ``rank + top_k * (1 - keep)`` moves the kept rows to the front
   in score order, the others are zeroed.

In PyTorch the same module runs with torchvision's ``batched_nms`` in step 3,
so it is checked against :class:`Detect` without onnxruntime too.
:class:`OnnxPredictor` runs an exported file with onnxruntime behind the
interface of :class:`utils.inference.Predictor` (used by ``test.py --onnx``).
"""
import argparse
import json
import os
import sys
import warnings

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import batched_nms

from data.config import MEANS
from layers.box_utils import decode
from utils.checkpoint import CheckpointError
from utils.inference import Predictor

OPSET = 17


class _NMSKeep(torch.autograd.Function):
    """``keep [G, K]`` float (1 = kept by NMS) for ``boxes [G, K, 4]`` (x1, y1,
    x2, y2) and ``scores [G, K]`` sorted by decreasing score per group; boxes
    of one group suppress only each other. In ONNX: ``NonMaxSuppression``."""

    @staticmethod
    def forward(ctx, boxes, scores, iou_thresh, score_thresh, K):
        g, k = (scores > score_thresh).nonzero(as_tuple=True)
        kept = batched_nms(boxes[g, k], scores[g, k], g, iou_thresh)
        keep = torch.zeros_like(scores)
        keep[g[kept], k[kept]] = 1.0
        return keep

    @staticmethod
    def symbolic(g, boxes, scores, iou_thresh, score_thresh, K):
        def const(v, dtype):
            return g.op('Constant', value_t=torch.tensor(v, dtype=dtype))
        sel = g.op('NonMaxSuppression', boxes,
                   g.op('Unsqueeze', scores, const([1], torch.int64)),
                   const([K], torch.int64), const([iou_thresh], torch.float32),
                   const([score_thresh], torch.float32))                  # [M, 3]
        where = g.op('Gather', sel, const([0, 2], torch.int64), axis_i=1)  # (group, k)
        ones = g.op('ConstantOfShape', g.op('Gather', g.op('Shape', sel),
                                             const([0], torch.int64), axis_i=0),
                    value_t=torch.tensor([1.0]))
        zeros = g.op('ConstantOfShape', g.op('Shape', scores), value_t=torch.tensor([0.0]))
        return g.op('ScatterND', zeros, where, ones)


class ExportDetect(nn.Module):
    """:class:`layers.Detect` with fixed shapes (see the module docstring).

    ``forward(loc [B, P, 4], conf [B, P, C] logits, priors [P, 4])`` ->
    ``[B, C, top_k, 5]``, the same as ``Detect(loc, softmax(conf), priors)``
    (two rows of exactly equal score may come in the other order: torch's
    ``topk`` does not order ties, Detect puts the lower prior first).
    """

    def __init__(self, num_classes, top_k=200, conf_thresh=0.01, nms_thresh=0.45,
                 variance=(0.1, 0.2)):
        super().__init__()
        self.num_classes, self.top_k = num_classes, top_k
        self.conf_thresh, self.nms_thresh = float(conf_thresh), float(nms_thresh)
        self.variance = tuple(variance)

    def forward(self, loc, conf, priors):
        P, C = conf.shape[1:]               # static; the batch size stays symbolic
        K = min(self.top_k, int(P))
        scores = F.softmax(conf.float(), -1)[..., 1:].transpose(1, 2)          # [B, C-1, P]
        top, idx = scores.topk(K, dim=2)                                       # [B, C-1, K]
        boxes = decode(loc.float(), priors.float(), self.variance)             # [B, P, 4]
        boxes = boxes.gather(1, idx.flatten(1)[..., None].expand(-1, -1, 4))  # [B, (C-1)K, 4]
        boxes = boxes.reshape(-1, K, 4)                                        # [G, K, 4]
        top = top.reshape(-1, K)                                               # [G, K]
        keep = _NMSKeep.apply(boxes, top, self.nms_thresh, self.conf_thresh, K)
        rank = torch.arange(K, dtype=torch.float32, device=top.device)
        order = (rank + K * (1.0 - keep)).topk(K, dim=1, largest=False).indices
        rows = torch.cat([top[..., None], boxes], -1) * keep[..., None]        # [G, K, 5]
        rows = rows.gather(1, order[..., None].expand(-1, -1, 5))
        if K < self.top_k:
            rows = F.pad(rows, (0, 0, 0, self.top_k - K))
        rows = rows.reshape(-1, C - 1, self.top_k, 5)
        return torch.cat([torch.zeros_like(rows[:, :1]), rows], 1)


class ExportableSSD(nn.Module):
    """An SSD whose ``forward(images [N, 3, S, S]) -> [N, C, top_k, 5]`` is
    its test phase with :class:`ExportDetect` in place of Detect."""

    def __init__(self, net, top_k=None):
        super().__init__()
        self.net = net
        det = net.detect
        if getattr(det, 'keep_top_k', None) is not None:
            raise ValueError('keep_top_k (a cap per image across classes) is not exported; '
                             'build the net without it')
        self.detect = ExportDetect(net.num_classes, top_k or det.top_k, det.conf_thresh,
                                   det.nms_thresh, det.variance)

    def forward(self, images):
        phase = self.net.phase
        self.net.phase = 'train'            # raw heads: loc, conf logits, priors
        try:
            loc, conf, priors = self.net(images)
        finally:
            self.net.phase = phase
        return self.detect(loc, conf, priors)


def export(net, path, top_k=None, classes=None, channel_order='RGB', opset=OPSET,
           dataset=None):
    """Write ``net`` (an SSD) as ONNX to ``path`` (atomically); the batch
    dimension is dynamic. ``classes`` (names without background),
    ``channel_order`` and ``dataset`` are stored as metadata for
    :class:`OnnxPredictor`.
    Returns the path."""
    import onnx
    model = ExportableSSD(net, top_k).eval()
    x = torch.zeros(2, 3, net.size, net.size)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f'.tmp-{os.getpid()}-{os.path.basename(path)}')
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter('ignore')     # TracerWarnings on the static P, C
            torch.onnx.export(model, (x,), tmp, dynamo=False, opset_version=opset,
                              input_names=['images'], output_names=['detections'],
                              dynamic_axes={'images': {0: 'N'}, 'detections': {0: 'N'}})
        proto = onnx.load(tmp)
        meta = dict(size=net.size, num_classes=net.num_classes, top_k=model.detect.top_k,
                    conf_thresh=model.detect.conf_thresh, nms_thresh=model.detect.nms_thresh,
                    channel_order=channel_order, mean=list(MEANS), dataset=dataset,
                    classes=list(classes) if classes is not None else None)
        onnx.helper.set_model_props(proto, {'ssd': json.dumps(meta)})
        onnx.checker.check_model(proto)
        onnx.save(proto, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_metadata(session, path='<onnx>'):
    """The ``ssd`` metadata an exported file carries (see :func:`export`)."""
    props = session.get_modelmeta().custom_metadata_map
    if 'ssd' not in props:
        raise CheckpointError(f'{path}: not exported by utils.export (no ssd metadata)')
    return json.loads(props['ssd'])


class OnnxPredictor(Predictor):
    """:class:`utils.inference.Predictor` running an exported ONNX file with
    onnxruntime (CPU, or CUDA when ``device`` is a CUDA device and
    onnxruntime-gpu is installed). ``OnnxPredictor(path, device='cpu',
    channel_order=None, conf_thresh=0.01, batch_size=8)``; the size, class
    names and channel order come from the file. ``predictor(images)`` returns
    what Predictor returns."""

    def __init__(self, path, device='cpu', channel_order=None, conf_thresh=0.01,
                 batch_size=8, threads=None):
        import onnxruntime as ort
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise CheckpointError(f'{path}: no such file')
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        providers = (['CUDAExecutionProvider'] if str(device).startswith('cuda') else []) + [
            'CPUExecutionProvider']
        try:
            self.session = ort.InferenceSession(path, opts, providers=[
                p for p in providers if p in ort.get_available_providers()])
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(f'{path}: not a readable ONNX model ({msg[:200]})') from None
        self.meta = read_metadata(self.session, path)
        super().__init__(None, self.meta['size'], self.meta.get('mean', MEANS), 'cpu',
                         channel_order or self.meta.get('channel_order', 'RGB'),
                         conf_thresh, batch_size)
        self.num_classes = self.meta['num_classes']
        self.classes = tuple(self.meta.get('classes') or (
            f'class{k}' for k in range(1, self.num_classes)))
        self.dataset = self.meta.get('dataset')

    def forward(self, x):
        """``images [B, 3, S, S]`` (tensor) -> ``detections [B, C, top_k, 5]``;
        :meth:`Predictor.__call__` does the rest (batches, boxes in pixels)."""
        out = self.session.run(['detections'], {'images': x.numpy()})[0]
        return torch.from_numpy(out)


def same_detections(a, b, tol=1e-4):
    """Whether two ``[B, C, K, 5]`` detection tensors hold the same detections
    class by class: per image and class the same number of rows with score >
    0, each row of ``a`` matched to a row of ``b`` within ``tol`` (scores and
    coordinates). Rows whose scores differ by float rounding (~1e-7) may swap
    places between frameworks, so rows are matched, not compared slot by
    slot. Returns ``(ok, message)``."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return False, f'shapes differ: {a.shape} vs {b.shape}'
    worst, total = 0.0, 0
    for i, c in np.ndindex(*a.shape[:2]):
        ra, rb = a[i, c][a[i, c, :, 0] > 0], b[i, c][b[i, c, :, 0] > 0]
        if len(ra) != len(rb):
            return False, f'image {i} class {c}: {len(ra)} vs {len(rb)} detections'
        free = np.ones(len(rb), bool)
        for r in ra:
            d = np.where(free, np.abs(rb - r).max(1), np.inf)
            j = int(d.argmin())
            if d[j] > tol:
                return False, f'image {i} class {c}: row {r.round(5).tolist()} unmatched ({d[j]:.1e})'
            free[j] = False
            worst = max(worst, d[j])
        total += len(ra)
    return True, f'{total} detections, max |diff| {worst:.1e}'


def main(argv=None):
    from utils.engine.cli import add_dataset_flag, size_flag
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--trained_model', required=True, help='weight file (any that eval.py reads)')
    p.add_argument('--out', default=None, help='ONNX file (default: the weight file\'s name, .onnx)')
    p.add_argument('--size', default=None, type=size_flag,
                   help='model size (default: inferred from the file)')
    add_dataset_flag(p, help='what the model was trained on (default: inferred from the file)')
    p.add_argument('--top_k', default=200, type=int, help='detections kept per class (default 200)')
    p.add_argument('--conf_thresh', default=0.01, type=float, help='score threshold (default 0.01)')
    p.add_argument('--nms_thresh', default=0.45, type=float, help='NMS IoU threshold (default 0.45)')
    p.add_argument('--channel_order', default=None, choices=['RGB', 'BGR'],
                   help='input channel order recorded in the file (default: the weights\')')
    p.add_argument('--opset', default=OPSET, type=int, help=f'ONNX opset (>= 13; default {OPSET})')
    args = p.parse_args(argv)
    from utils.engine.cli import run_script
    return run_script('utils.export', _run, args)


def _run(args):
    """utils.export's body: the network from the weight file (the one path,
    ``utils.weights.build_from_weights``), then :func:`export`."""
    from utils.weights import build_from_weights, dataset_of, read_weights
    if args.opset < 13 or args.top_k < 1:
        raise ValueError(f'--opset must be >= 13 and --top_k >= 1 (got {args.opset}, {args.top_k})')
    out = args.out or os.path.splitext(args.trained_model)[0] + '.onnx'
    weights = read_weights(args.trained_model)
    net, classes, order = build_from_weights(
        weights, 'test', size=args.size, dataset=args.dataset, channel_order=args.channel_order,
        top_k=args.top_k, conf_thresh=args.conf_thresh, nms_thresh=args.nms_thresh)
    export(net, out, args.top_k, classes, order, args.opset,
           dataset=args.dataset or dataset_of(weights))
    print(f'{args.trained_model} -> {out}: images [N, 3, {net.size}, {net.size}] '
          f'({order}, minus MEANS) -> detections [N, {net.num_classes}, {args.top_k}, 5]')
    return 0


if __name__ == '__main__':
    sys.exit(main())
