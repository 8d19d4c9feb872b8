"""Export a trained SSD to ONNX (FP32 or INT8) or OpenVINO, decoding and NMS inside.

    python -m utils.export --trained_model weights/ssd300_mAP_77.43_v2.pth --out ssd300.onnx
    python -m utils.export --trained_model W --int8 --calib_dataset shapes --calib_images 100
    python -m utils.export --trained_model W --format openvino          # W.xml + W.bin
    python -m utils.export --trained_model W --format openvino --int8 --calib_dataset shapes
    python test.py --onnx ssd300.onnx --input photos/       # run it (onnxruntime or OpenVINO)
    python eval.py --onnx ssd300.onnx --dataset VOC         # score it

The exported model takes exactly what ``build_ssd`` takes: float32 ``images
[N, 3, S, S]``, the image resized to S x S, ``(bgr - mean) / std`` per
channel (BaseTransform, the record's mean and std), swapped to the file's
channel order (RGB, or BGR for Caffe conversions). It returns exactly what
``build_ssd('test')`` returns: ``detections [N, C, top_k, 5]``, each row
``(score, x1, y1, x2, y2)`` in [0, 1]; within a class the rows are sorted by
decreasing score, zero after the last detection; class 0 (background) is
zero. N is dynamic. The file's metadata (``ssd``: a JSON object, ONNX
metadata_props or the IR's rt_info) holds the model record
(``utils.weights.model_record``) and Detect's settings; :func:`input_spec`
is the one reader of it.

``torch.onnx`` cannot trace :class:`layers.Detect`, whose shapes depend on the
data (how many scores pass the threshold, how many boxes NMS keeps).
:class:`ExportDetect` computes the same result with fixed shapes:

1. softmax; per image and class, ``TopK`` keeps the ``top_k`` best scores
   (Detect's candidate limit; ties: lower prior index first, in both);
2. decode those priors' offsets (``layers.box_utils.decode``; only the
   candidates when there are fewer than priors);
3. ONNX ``NonMaxSuppression`` with every (image, class) as its own batch
   entry, the score threshold (``score > conf_thresh``, as Detect) and the IoU
   threshold (suppress IoU > nms_thresh, as torchvision's ``nms``);
4. the selected indices become a keep mask (``ScatterND``), and a second
   ``TopK`` on ``rank + top_k * (1 - keep)`` moves the kept rows to the front
   in score order, the others are zeroed.

In PyTorch the same module runs with torchvision's ``batched_nms`` in step 3,
so it is checked against :class:`Detect` without onnxruntime too.

INT8 (``--int8``): the network part (images -> loc, conf logits) is exported
alone and quantized by onnxruntime's static quantization (QDQ, per-channel
int8 weights, uint8 activations), calibrated on training images through
:class:`utils.inference.Predictor`'s preprocessing; the float tail (softmax,
decode, NMS: :class:`ExportDetect`) is appended to it unchanged. With
``--format openvino`` the same QDQ graph becomes an IR, which OpenVINO runs
with its int8 kernels.

:class:`OnnxPredictor` and :class:`OpenVinoPredictor` run an exported file
behind the interface of :class:`utils.inference.Predictor`
(:func:`open_exported` picks one from ``--backend`` or the file's suffix);
used by ``test.py --onnx``, ``eval.py --onnx``, ``demo.live --onnx`` and
``utils.benchmark``.
"""
import argparse
import json
import os
import sys
import tempfile
import warnings
from typing import NamedTuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import batched_nms

from data.config import MEANS, preprocess_of
from layers.box_utils import decode
from utils.checkpoint import CheckpointError
from utils.inference import Predictor

OPSET = 17
META_KEY = 'ssd'                    # the metadata entry (ONNX metadata_props / IR rt_info)
BACKENDS = ('onnxruntime', 'openvino')
CALIBRATION_METHODS = ('MinMax', 'Entropy', 'Percentile')


class BackendMissing(ValueError):
    """onnxruntime / openvino (or onnx) is not installed: one line saying what to install."""


def _need(module):
    """Import ``module`` (onnx, onnxruntime, openvino) or raise BackendMissing."""
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError:
        raise BackendMissing(f'{module} is not installed: pip install {module}') from None


class _KeepSignalStack:
    """Keep the calling thread's alternate signal stack (``sigaltstack``)
    across an OpenVINO call. Compiling a model on OpenVINO's CPU plugin
    installs a small stack of its own (11.5 kB) on the calling thread,
    replacing Python's (faulthandler's); with it in place, a signal arriving
    later on that thread (a SIGCHLD from a finished child process) killed the
    process with SIGSEGV (si_code SI_KERNEL: the kernel could not deliver the
    signal there). Seen running the tests: an in-process benchmark, then a
    test that starts a subprocess. Putting the previous stack back after the
    call keeps Python's. No-op where libc has no ``sigaltstack`` (Windows)."""

    def __enter__(self):
        import ctypes
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            self._call = libc.sigaltstack
        except (OSError, AttributeError, TypeError):
            self._call = None
            return self

        class Stack(ctypes.Structure):
            _fields_ = [('ss_sp', ctypes.c_void_p), ('ss_flags', ctypes.c_int),
                        ('ss_size', ctypes.c_size_t)]
        self._saved = Stack()
        if self._call(None, ctypes.byref(self._saved)) != 0:
            self._call = None
        self._ref = ctypes.byref
        return self

    def __exit__(self, *exc):
        if self._call is not None:
            self._saved.ss_flags &= 2            # SS_DISABLE or 0 (SS_ONSTACK is read-only)
            self._call(self._ref(self._saved), None)
        return False


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
        # the class slice on a middle axis (contiguous runs; on the last axis of
        # size C it was the tail's slowest op in onnxruntime)
        scores = F.softmax(conf.float(), -1).transpose(1, 2)[:, 1:]            # [B, C-1, P]
        top, idx = scores.topk(K, dim=2)                                       # [B, C-1, K]
        B = loc.shape[0]
        flat = idx.flatten(1)                                                  # [B, (C-1)K]
        rows = (torch.arange(B, device=flat.device)[:, None] * P + flat).flatten()
        # plain Gathers of whole rows (expanded indices for GatherElements cost 30% more)
        if (C - 1) * K < P:     # decode only the candidates (elementwise: the same numbers)
            boxes = decode(loc.float().reshape(-1, 4)[rows].reshape(B, -1, 4),
                           priors.float()[flat], self.variance)
        else:
            boxes = decode(loc.float(), priors.float(), self.variance)
            boxes = boxes.reshape(-1, 4)[rows].reshape(B, -1, 4)
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


class _Heads(nn.Module):
    """The network part: ``images [N, 3, S, S] -> (loc [N, P, 4], conf [N, P, C]
    logits)``; what INT8 quantizes."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, images):
        phase = self.net.phase
        self.net.phase = 'train'
        try:
            loc, conf, _ = self.net(images)
        finally:
            self.net.phase = phase
        return loc, conf


class _Tail(nn.Module):
    """The float tail: ``(loc, conf) -> detections [N, C, top_k, 5]`` (the
    priors are a constant)."""

    def __init__(self, detect, priors):
        super().__init__()
        self.detect = detect
        self.register_buffer('priors', priors.detach().float().clone())

    def forward(self, loc, conf):
        return self.detect(loc, conf, self.priors)


def _trace(module, inputs, path, input_names, output_names, opset):
    """torch.onnx.export of ``module`` with a dynamic batch on every input and output."""
    axes = {n: {0: 'N'} for n in (*input_names, *output_names)}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore')     # TracerWarnings on the static P, C
        torch.onnx.export(module, tuple(inputs), path, dynamo=False, opset_version=opset,
                          input_names=list(input_names), output_names=list(output_names),
                          dynamic_axes=axes)


def file_metadata(net, top_k, classes=None, channel_order='RGB', dataset=None, **extra):
    """The ``ssd`` metadata of an exported file: the model record
    (``utils.weights.model_record``: complete cfg, classes, dataset, channel
    order) under 'record', Detect's settings, and the flat keys older readers
    use (size, num_classes, mean, std, channel_order, dataset, classes);
    ``extra`` (e.g. ``precision``, ``calibration``) is added as given."""
    from utils.weights import model_record
    record = model_record(net, classes, dataset, channel_order)
    mean, std = preprocess_of(record['cfg'])
    det = net.detect
    return dict(size=net.size, num_classes=net.num_classes, top_k=int(top_k or det.top_k),
                conf_thresh=float(det.conf_thresh), nms_thresh=float(det.nms_thresh),
                channel_order=record['channel_order'], mean=list(mean), std=list(std),
                dataset=record['dataset'], classes=record['classes'], record=record,
                **dict({'precision': 'fp32'}, **extra))


class InputSpec(NamedTuple):
    """What an exported file expects and describes (:func:`input_spec`):
    ``size`` S, BGR ``mean`` and ``std`` in pixels, ``channel_order``,
    ``num_classes`` (with background), ``classes`` (names without
    background), ``dataset`` (or None)."""
    size: int
    mean: tuple
    std: tuple
    channel_order: str
    num_classes: int
    classes: tuple
    dataset: str


def input_spec(meta, path='<exported>'):
    """The one reader of an exported file's ``ssd`` metadata: the record's
    cfg (size, mean/std) and channel order when it has one, else the flat
    keys of files written before the record (mean MEANS, std 1). One-line
    CheckpointError naming what is missing."""
    from utils.weights import check_record
    if not isinstance(meta, dict):
        raise CheckpointError(f'{path}: its ssd metadata is not a JSON object')
    rec = meta.get('record')
    if rec is not None:
        rec = check_record(rec, path)
        cfg = rec['cfg']
        size, n = int(cfg['min_dim']), int(cfg['num_classes'])
        mean, std = preprocess_of(cfg)
        order, names, dataset = rec.get('channel_order') or 'RGB', rec.get('classes'), \
            rec.get('dataset')
    else:
        missing = [k for k in ('size', 'num_classes') if k not in meta]
        if missing:
            raise CheckpointError(f'{path}: its ssd metadata lacks {", ".join(missing)} '
                                  '(export it again with python -m utils.export)')
        size, n = int(meta['size']), int(meta['num_classes'])
        mean = tuple(float(v) for v in meta.get('mean', MEANS))
        std = tuple(float(v) for v in meta.get('std', (1.0, 1.0, 1.0)))
        order, names, dataset = meta.get('channel_order') or 'RGB', meta.get('classes'), \
            meta.get('dataset')
    names = tuple(names) if names else tuple(f'class{k}' for k in range(1, n))
    return InputSpec(size, tuple(mean), tuple(std), order, n, names, dataset)


# ---------------------------------------------------------------- calibration
class Calibration(NamedTuple):
    """INT8 calibration data: ``batches`` (float32 ``[1, 3, S, S]`` arrays,
    preprocessed as the network expects), ``method`` (one of
    :data:`CALIBRATION_METHODS`) and ``source`` (what they are, for the
    metadata)."""
    batches: list
    method: str
    source: str


def calibration_images(source, n, dataset_root=None):
    """``n`` BGR images for calibration: from a folder of images, or evenly
    spread over a dataset's training split (``data.get_dataset(name, root)``;
    shapes: its first ``n`` generated training images). Returns
    ``(images, description)``; ValueError naming the folder when none is
    readable."""
    import cv2
    from utils.engine.tester import IMAGE_EXT
    if n < 1:
        raise ValueError(f'--calib_images must be >= 1 (got {n})')
    if os.path.isdir(source):
        files = sorted(f for f in os.listdir(source) if f.lower().endswith(IMAGE_EXT))
        images = []
        for f in files:
            im = cv2.imread(os.path.join(source, f))
            if im is not None:
                images.append(im)
            if len(images) == n:
                break
        if not images:
            raise ValueError(f'{source}: no readable image to calibrate on')
        return images, f'{len(images)} images of {source}'
    from data import get_dataset
    from data.config import dataset_name
    name = dataset_name(source)
    kw = {'num_images': n} if name == 'shapes' else {}
    ds = get_dataset(name, dataset_root, None, **kw)
    if len(ds) == 0:
        raise ValueError(f'{dataset_root or source}: no readable image to calibrate on')
    idx = np.unique(np.linspace(0, len(ds) - 1, min(n, len(ds))).round().astype(int))
    return [ds.pull_image(int(i)) for i in idx], f'{len(idx)} {name} training images'


def calibration(net, source, n, channel_order='RGB', method='MinMax', dataset_root=None):
    """:class:`Calibration` of ``n`` images from ``source`` (see
    :func:`calibration_images`) through :class:`Predictor`'s preprocessing
    (the net's mean, std, size; ``channel_order``)."""
    if method not in CALIBRATION_METHODS:
        raise ValueError(f'unknown calibration method {method!r}: choose '
                         f'{", ".join(CALIBRATION_METHODS)}')
    images, what = calibration_images(source, n, dataset_root)
    prep = Predictor(net, net.size, channel_order=channel_order).preprocess
    return Calibration([prep([im]).numpy() for im in images], method, what)


def _quantized_heads(net, tmp, calib, opset):
    """The network part as an INT8 QDQ ONNX model (ModelProto)."""
    _need('onnx')
    q = _need('onnxruntime.quantization')
    fp32, int8 = os.path.join(tmp, 'heads.onnx'), os.path.join(tmp, 'heads_int8.onnx')
    x = torch.zeros(2, 3, net.size, net.size)
    _trace(_Heads(net).eval(), (x,), fp32, ['images'], ['loc', 'conf'], opset)

    class Reader(q.CalibrationDataReader):      # the calibration batches, one at a time
        def __init__(self):
            self.it = iter(calib.batches)

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {'images': x}

    reader = Reader()
    q.quantize_static(fp32, int8, reader, quant_format=q.QuantFormat.QDQ, per_channel=True,
                      activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
                      calibrate_method=getattr(q.CalibrationMethod, calib.method),
                      extra_options={'ActivationSymmetric': False, 'WeightSymmetric': True})
    import onnx
    return onnx.load(int8)


def _append_tail(onnx, heads, net, top_k, tmp, opset):
    """``heads`` (images -> loc, conf) followed by the float tail (ExportDetect)."""
    det = ExportableSSD(net, top_k).detect
    P = net.priors.shape[0]
    loc, conf = torch.zeros(2, P, 4), torch.zeros(2, P, net.num_classes)
    path = os.path.join(tmp, 'tail.onnx')
    _trace(_Tail(det, net.priors).eval(), (loc, conf), path, ['loc', 'conf'],
           ['detections'], opset)
    tail = onnx.compose.add_prefix(onnx.load(path), 'tail/', rename_inputs=False,
                                   rename_outputs=False)
    tail.ir_version = heads.ir_version
    have = {o.domain: o.version for o in heads.opset_import}
    for o in tail.opset_import:
        if o.domain not in have:
            heads.opset_import.append(o)
    del tail.opset_import[:]
    tail.opset_import.extend(heads.opset_import)
    return onnx.compose.merge_models(heads, tail, io_map=[('loc', 'loc'), ('conf', 'conf')])


# ---------------------------------------------------------------- export
def export(net, path, top_k=None, classes=None, channel_order='RGB', opset=OPSET,
           dataset=None, calibration=None, fmt='onnx'):
    """Write ``net`` (an SSD) to ``path`` (atomically); the batch dimension
    is dynamic. ``fmt`` 'onnx' (one .onnx file) or 'openvino' (``path`` .xml
    and its .bin). ``calibration`` (a :class:`Calibration`): INT8, the
    network part quantized (QDQ), the decode + NMS tail in float.
    ``classes`` (names without background), ``channel_order`` and
    ``dataset`` go into the metadata (:func:`file_metadata`).
    Returns the path."""
    onnx = _need('onnx')
    if fmt not in ('onnx', 'openvino'):
        raise ValueError(f"format must be 'onnx' or 'openvino', got {fmt!r}")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    extra = {}
    if calibration is not None:
        extra = dict(precision='int8', quantization='onnxruntime quantize_static QDQ, '
                     'per-channel int8 weights, uint8 activations; float decode + NMS',
                     calibration={'method': calibration.method,
                                  'images': len(calibration.batches),
                                  'source': calibration.source})
    meta = file_metadata(net, top_k, classes, channel_order, dataset, **extra)
    with tempfile.TemporaryDirectory(dir=folder, prefix='.export-') as tmp:
        if calibration is None:
            full = os.path.join(tmp, 'model.onnx')
            _trace(ExportableSSD(net, top_k).eval(), (torch.zeros(2, 3, net.size, net.size),),
                   full, ['images'], ['detections'], opset)
            proto = onnx.load(full)
        else:
            proto = _append_tail(onnx, _quantized_heads(net, tmp, calibration, opset), net,
                                 top_k, tmp, opset)
        onnx.helper.set_model_props(proto, {META_KEY: json.dumps(meta)})
        onnx.checker.check_model(proto)
        out = os.path.join(tmp, 'out.onnx')
        onnx.save(proto, out)
        if fmt == 'openvino':
            _save_openvino(out, path, meta, tmp)
        else:
            os.replace(out, path)
    return path


def _save_openvino(onnx_path, xml_path, meta, tmp):
    """The ONNX file as an OpenVINO IR (``xml_path`` + its .bin, FP32
    weights), the metadata in its rt_info under 'ssd'."""
    ov = _need('openvino')
    if not xml_path.endswith('.xml'):
        raise ValueError(f'{xml_path}: an OpenVINO IR is named .xml')
    model = ov.convert_model(onnx_path)
    model.set_rt_info(json.dumps(meta), [META_KEY])
    t = os.path.join(tmp, 'ir.xml')
    ov.save_model(model, t, compress_to_fp16=False)
    os.replace(t[:-4] + '.bin', xml_path[:-4] + '.bin')
    os.replace(t, xml_path)


# ---------------------------------------------------------------- running a file
def read_metadata(session, path='<onnx>'):
    """The ``ssd`` metadata an onnxruntime session's file carries (see :func:`export`)."""
    props = session.get_modelmeta().custom_metadata_map
    return _parse_meta(props.get(META_KEY), path)


def _parse_meta(text, path):
    if text is None:
        raise CheckpointError(f'{path}: not exported by utils.export (no ssd metadata: '
                              'size, classes, mean/std, channel order)')
    try:
        return json.loads(text)
    except ValueError:
        raise CheckpointError(f'{path}: its ssd metadata is not JSON') from None


def _first_line(e):
    msg = str(e).strip()
    return (msg.splitlines()[0] if msg else type(e).__name__)[:200]


def backend_for(path, backend=None):
    """'onnxruntime' or 'openvino': ``backend`` if given, else from the suffix
    (.xml: OpenVINO IR; anything else: onnxruntime)."""
    if backend is not None:
        if backend not in BACKENDS:
            raise ValueError(f'unknown backend {backend!r}: choose {", ".join(BACKENDS)}')
        if backend == 'onnxruntime' and str(path).endswith('.xml'):
            raise ValueError(f'{path}: an OpenVINO IR; onnxruntime runs .onnx files '
                             '(--backend openvino)')
        return backend
    return 'openvino' if str(path).endswith('.xml') else 'onnxruntime'


def open_exported(path, backend=None, device='cpu', channel_order=None, conf_thresh=0.01,
                  batch_size=8, threads=None):
    """The runner (a :class:`Predictor`) of an exported file:
    :class:`OnnxPredictor` or :class:`OpenVinoPredictor` (:func:`backend_for`)."""
    cls = OpenVinoPredictor if backend_for(path, backend) == 'openvino' else OnnxPredictor
    return cls(path, device, channel_order, conf_thresh, batch_size, threads)


class ExportedPredictor(Predictor):
    """What both runners share: the input spec from the file's metadata
    (:func:`input_spec`), ``num_classes``, ``classes``, ``dataset``,
    ``meta`` (the whole ``ssd`` entry) and ``path``."""

    def _setup(self, path, meta, channel_order, conf_thresh, batch_size):
        self.path, self.meta = path, meta
        spec = input_spec(meta, path)
        Predictor.__init__(self, None, spec.size, spec.mean, 'cpu',
                           channel_order or spec.channel_order, conf_thresh, batch_size,
                           std=spec.std)
        self.num_classes, self.classes, self.dataset = spec.num_classes, spec.classes, \
            spec.dataset

    @staticmethod
    def _check_file(path):
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise CheckpointError(f'{path}: no such file')
        return path


class OnnxPredictor(ExportedPredictor):
    """:class:`utils.inference.Predictor` running an exported ONNX file with
    onnxruntime (CPU, or CUDA when ``device`` is a CUDA device and
    onnxruntime-gpu is installed). ``OnnxPredictor(path, device='cpu',
    channel_order=None, conf_thresh=0.01, batch_size=8, threads=None)``; the
    size, mean/std, class names and channel order come from the file.
    ``predictor(images)`` returns what Predictor returns."""

    backend = 'onnxruntime'

    def __init__(self, path, device='cpu', channel_order=None, conf_thresh=0.01,
                 batch_size=8, threads=None):
        ort = _need('onnxruntime')
        path = self._check_file(path)
        if path.endswith('.xml'):
            raise ValueError(f'{path}: an OpenVINO IR; onnxruntime runs .onnx files '
                             '(--backend openvino)')
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        providers = (['CUDAExecutionProvider'] if str(device).startswith('cuda') else []) + [
            'CPUExecutionProvider']
        try:
            self.session = ort.InferenceSession(path, opts, providers=[
                p for p in providers if p in ort.get_available_providers()])
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types
            raise CheckpointError(f'{path}: not a readable ONNX model ({_first_line(e)})') \
                from None
        self._setup(path, read_metadata(self.session, path), channel_order, conf_thresh,
                    batch_size)

    def forward(self, x):
        """``images [B, 3, S, S]`` (tensor) -> ``detections [B, C, top_k, 5]``;
        :meth:`Predictor.__call__` does the rest (batches, boxes in pixels)."""
        out = self.session.run(['detections'], {'images': np.ascontiguousarray(x.numpy())})[0]
        return torch.from_numpy(out)


class OpenVinoPredictor(ExportedPredictor):
    """:class:`utils.inference.Predictor` running an exported file with
    OpenVINO on the CPU: an IR (.xml + .bin, metadata in its rt_info) or the
    .onnx file itself (metadata from the ONNX props). FP32 inference
    (``INFERENCE_PRECISION_HINT`` f32: OpenVINO would otherwise pick bf16 on
    CPUs that have it); same arguments as :class:`OnnxPredictor`."""

    backend = 'openvino'

    def __init__(self, path, device='cpu', channel_order=None, conf_thresh=0.01,
                 batch_size=8, threads=None):
        ov = _need('openvino')
        path = self._check_file(path)
        core = ov.Core()
        try:
            model = core.read_model(path)
        except Exception as e:  # noqa: BLE001 - OpenVINO raises RuntimeError subclasses
            what = 'OpenVINO IR' if path.endswith('.xml') else 'model for OpenVINO'
            raise CheckpointError(f'{path}: not a readable {what} ({_first_line(e)})') \
                from None
        if path.endswith('.xml'):
            text = model.get_rt_info([META_KEY]).astype(str) \
                if model.has_rt_info([META_KEY]) else None
        else:
            onnx = _need('onnx')
            props = {p.key: p.value for p in onnx.load(path, load_external_data=False)
                     .metadata_props}
            text = props.get(META_KEY)
        meta = _parse_meta(text, path)
        config = {'INFERENCE_PRECISION_HINT': 'f32'}
        if threads:
            config['INFERENCE_NUM_THREADS'] = int(threads)
        try:
            with _KeepSignalStack():
                self.compiled = core.compile_model(model, 'CPU', config)
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f'{path}: OpenVINO cannot compile it ({_first_line(e)})') \
                from None
        self.request = self.compiled.create_infer_request()
        self._setup(path, meta, channel_order, conf_thresh, batch_size)

    def forward(self, x):
        """``images [B, 3, S, S]`` -> ``detections [B, C, top_k, 5]``."""
        res = self.request.infer({0: np.ascontiguousarray(x.numpy())})
        return torch.from_numpy(np.array(res[self.compiled.output(0)]))


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
    from utils.engine.cli import add_dataset_flag, add_detect_flags, add_weights_flag, size_flag
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_weights_flag(p, '--trained_model', help='weight file (any that eval.py reads)',
                     required=True)
    p.add_argument('--out', default=None,
                   help="output file (default: the weight file's name, .onnx; --int8 "
                        "_int8.onnx; --format openvino .xml, with its .bin)")
    p.add_argument('--format', default='onnx', choices=['onnx', 'openvino'],
                   help='onnx (default) or openvino (an IR: .xml + .bin; pip install openvino)')
    p.add_argument('--size', default=None, type=size_flag,
                   help='model size (default: inferred from the file)')
    add_dataset_flag(p, help='what the model was trained on (default: inferred from the file)')
    add_detect_flags(p, '--conf_thresh', 0.01, 'score threshold',
                     top_k_help='detections kept per class')
    p.add_argument('--channel_order', default=None, choices=['RGB', 'BGR'],
                   help='input channel order recorded in the file (default: the weights\')')
    p.add_argument('--opset', default=OPSET, type=int, help=f'ONNX opset (>= 13; default {OPSET})')
    q = p.add_argument_group('INT8 (onnxruntime static quantization of the network part)')
    q.add_argument('--int8', action='store_true',
                   help='quantize: QDQ, per-channel int8 weights, uint8 activations; the '
                        'decode + NMS tail stays float (needs --calib_dataset)')
    q.add_argument('--calib_dataset', default=None,
                   help='calibration images: a dataset name (its training split: VOC, COCO, '
                        'shapes, custom with --dataset_root) or a folder of images')
    q.add_argument('--calib_images', default=100, type=int,
                   help='number of calibration images (default 100)')
    q.add_argument('--calib_method', default='MinMax', choices=CALIBRATION_METHODS,
                   help='onnxruntime calibration method (default MinMax)')
    q.add_argument('--dataset_root', default=None, help='root of --calib_dataset')
    args = p.parse_args(argv)
    if args.int8 and not args.calib_dataset:
        p.error('--int8 needs calibration data: --calib_dataset DATASET_OR_FOLDER '
                '[--calib_images N]')
    if args.calib_dataset and not args.int8:
        p.error('--calib_dataset is for --int8')
    from utils.engine.cli import run_script
    return run_script('utils.export', _run, args)


def default_out(weights_path, fmt='onnx', int8=False):
    """The output name next to the weights: W.onnx, W_int8.onnx, W.xml, W_int8.xml."""
    stem = os.path.splitext(weights_path)[0] + ('_int8' if int8 else '')
    return stem + ('.xml' if fmt == 'openvino' else '.onnx')


def _run(args):
    """utils.export's body: the network from the weight file (the one path,
    ``utils.weights.build_from_weights``), the calibration images for
    --int8, then :func:`export`."""
    from utils.weights import build_from_weights, dataset_of, read_weights
    if args.opset < 13 or args.top_k < 1:
        raise ValueError(f'--opset must be >= 13 and --top_k >= 1 (got {args.opset}, {args.top_k})')
    _need('onnx')
    if args.int8:
        _need('onnxruntime')
    if args.format == 'openvino':
        _need('openvino')
    out = args.out or default_out(args.trained_model, args.format, args.int8)
    weights = read_weights(args.trained_model)
    net, classes, order = build_from_weights(
        weights, 'test', size=args.size, dataset=args.dataset, channel_order=args.channel_order,
        top_k=args.top_k, conf_thresh=args.conf_thresh, nms_thresh=args.nms_thresh)
    calib = calibration(net, args.calib_dataset, args.calib_images, order, args.calib_method,
                        args.dataset_root) if args.int8 else None
    export(net, out, args.top_k, classes, order, args.opset,
           dataset=args.dataset or dataset_of(weights), calibration=calib, fmt=args.format)
    mean, std = preprocess_of(net.cfg)
    how = f', INT8 ({calib.method} on {calib.source})' if calib else ''
    print(f'{args.trained_model} -> {out}{how}: images [N, 3, {net.size}, {net.size}] '
          f'({order}, (x - {list(mean)}) / {list(std)}) -> detections '
          f'[N, {net.num_classes}, {args.top_k}, 5]')
    return 0


if __name__ == '__main__':
    sys.exit(main())
