"""Which model and which preprocessing a weight file needs.

All weights here take the image read as BGR with ``MEANS = (104, 117, 123)``
subtracted. They differ in the channel order fed to the network afterwards:

=============================  =====  ==========================================
file                           order  why
=============================  =====  ==========================================
``ssd300_mAP_77.43_v2.pth``    RGB    trained by ssd.pytorch, whose datasets swap
                                      BGR -> RGB after the mean subtraction
our snapshots / checkpoints    RGB    same pipeline (``channel_order`` in the
                                      checkpoint's args overrides)
``ssd_300_VOC0712.pth``        BGR    converted from the original Caffe model
                                      (``VGG_VOC0712_SSD_300x300_iter_120000``),
                                      which was trained on BGR input
=============================  =====  ==========================================

Fed RGB, the Caffe-converted file loses about 5 points of VOC07 mAP
(ssd.pytorch #31 and #321 report 0.7247 RGB against 0.7718 BGR).
:func:`channel_order_for` applies this table; ``--channel_order`` overrides.

:func:`build_from_weights` is the one path from a weight file to a ready
network: it reads the file once (:func:`read_weights`: ``weights_only=True``,
ssd.pytorch files, our snapshots and full checkpoints, ``module.`` /
``_orig_mod.`` prefixes removed), infers the model (SSD300, SSD512, the
shapes preset; the number of classes) from the state-dict shapes, and
returns the network with its class names and channel order. ``eval.py``,
``test.py``, ``demo/live.py``, the notebook and ``train.py --resume`` use it,
so that they need only the file.

The record. Every file this codebase writes describes its model in one
JSON-able dict (:func:`model_record`)::

    {'version': 1,
     'cfg': {...},            # the complete config: backbone, min_dim (size),
                              # num_classes, priors (feature_maps, steps,
                              # min/max_sizes, aspect_ratios, variance, clip),
                              # the layers, and the input 'mean'/'std'
                              # (BGR order, pixel units; data.config.preprocess_of)
     'classes': [...],        # names without background
     'dataset': 'VOC',        # or COCO, shapes, custom, None
     'channel_order': 'RGB'}  # fed after (bgr - mean) / std: RGB or BGR

A plain state-dict snapshot (``ssd300_VOC_5000.pth``) carries it in the
state dict's own metadata, ``state_dict._metadata['']['ssd']``, so that
``net.load_state_dict(torch.load(f, weights_only=True))`` works as in
ssd.pytorch; full checkpoints and converted files also hold it as the key
``'record'``; an exported ONNX file in its metadata. :func:`build_from_weights`
builds exactly the recorded network; a file without a record (ssd.pytorch's
weights, Caffe conversions) is recognised from its shapes as before.
"""
import json
import os
import re
from typing import NamedTuple

import torch

from data.config import BACKBONES, CONFIGS, DATASETS, config_for, dataset_name
from utils.checkpoint import CheckpointError, check_finite, extract_state_dict, load_file

CHANNEL_ORDERS = ('RGB', 'BGR')
# file-name patterns (lower case, on the base name) -> channel order
_NAME_ORDERS = (
    (re.compile(r'^ssd_(300|512)_voc0712'), 'BGR'),     # ssd.pytorch's Caffe conversions
    (re.compile(r'^vgg_voc0712_ssd_'), 'BGR'),          # Caffe's own naming
    (re.compile(r'caffe'), 'BGR'),
    (re.compile(r'^ssd300_map_77\.43'), 'RGB'),         # ssd.pytorch, trained in PyTorch
)


def _check_order(order, what):
    if order is None:
        return None
    o = str(order).upper()
    if o not in CHANNEL_ORDERS:
        raise ValueError(f'{what}: channel order must be RGB or BGR, got {order!r}')
    return o


def _metadata(obj):
    """Top-level metadata of one of our checkpoints: its keys plus its 'args'
    (a dict, or an object with ``__dict__``). Empty for plain state dicts."""
    if not isinstance(obj, dict) or all(torch.is_tensor(v) for v in obj.values()):
        return {}
    meta = {k: v for k, v in obj.items() if not isinstance(v, dict) or k == 'args'}
    args = obj.get('args')
    if args is not None and not isinstance(args, dict):
        args = getattr(args, '__dict__', {})
    meta.update(args or {})
    return meta


RECORD_VERSION = 1
RECORD_KEY = 'ssd'          # in state_dict._metadata['']
#: cfg keys a record must have (besides the layers of its backbone)
RECORD_CFG_KEYS = ('min_dim', 'num_classes', 'feature_maps', 'steps', 'min_sizes',
                   'max_sizes', 'aspect_ratios', 'variance', 'clip', 'mbox')


def _jsonable(v):
    """Tuples to lists, numbers and strings as they are: what JSON keeps."""
    return json.loads(json.dumps(v))


def model_record(net, classes=None, dataset=None, channel_order='RGB'):
    """The record (module docstring) of the SSD ``net`` (wrappers allowed):
    its complete config, the class names without background, the dataset
    and the channel order. JSON-able; :func:`build_from_weights` rebuilds
    ``net`` from it."""
    from utils.inference import unwrap
    net = unwrap(net)
    cfg = dict(net.cfg, num_classes=net.num_classes, min_dim=net.size)
    cfg.setdefault('backbone', 'vgg16')
    return {'version': RECORD_VERSION, 'cfg': _jsonable(cfg),
            'classes': None if classes is None else [str(c) for c in classes],
            'dataset': None if dataset is None else dataset_name(dataset),
            'channel_order': _check_order(channel_order, 'channel_order') or 'RGB'}


def attach_record(state_dict, record):
    """Put ``record`` into a plain state dict's own metadata (``torch.save``
    and ``torch.load(weights_only=True)`` keep it; ``load_state_dict`` ignores
    it). Returns the state dict."""
    from collections import OrderedDict
    meta = getattr(state_dict, '_metadata', None)
    if meta is None:
        meta = OrderedDict()
        state_dict._metadata = meta
    meta[''] = dict(meta.get('', {}), **{RECORD_KEY: record})
    return state_dict


def record_of(obj, path='<weights>'):
    """The record a loaded weight file holds (a checkpoint's ``'record'``, or
    its state dict's metadata), checked (:func:`check_record`); None when it
    has none."""
    rec = obj.get('record') if isinstance(obj, dict) else None
    if rec is None:
        sd = obj.get('model') if isinstance(obj, dict) and isinstance(obj.get('model'), dict) \
            else obj
        rec = (getattr(sd, '_metadata', None) or {}).get('', {}).get(RECORD_KEY)
    return None if rec is None else check_record(rec, path)


def check_record(rec, path='<weights>'):
    """``rec`` when it is a usable record; one-line CheckpointError naming
    the file and the key otherwise."""
    if not isinstance(rec, dict) or not isinstance(rec.get('cfg'), dict):
        raise CheckpointError(f'{path}: its model record is not a dict with a cfg')
    if int(rec.get('version', 0)) > RECORD_VERSION:
        raise CheckpointError(f'{path}: model record version {rec["version"]} is newer than '
                              f'this code reads ({RECORD_VERSION})')
    cfg = rec['cfg']
    missing = [k for k in RECORD_CFG_KEYS if k not in cfg]
    if missing:
        raise CheckpointError(f'{path}: its model record lacks cfg key(s) {", ".join(missing)}')
    if cfg.get('backbone', 'vgg16') not in BACKBONES:
        raise CheckpointError(f'{path}: its model record names an unknown backbone '
                              f'{cfg.get("backbone")!r} (known: {", ".join(BACKBONES)})')
    names = rec.get('classes')
    if names is not None and len(names) != int(cfg['num_classes']) - 1:
        raise CheckpointError(f'{path}: its model record has {len(names)} class names for '
                              f'{cfg["num_classes"]} classes with background')
    _check_order(rec.get('channel_order'), str(path))
    return rec


def channel_order_for(path, override=None, checkpoint=None):
    """The channel order ('RGB' or 'BGR') that the weights ``path`` expect.

    Order of precedence: ``override`` (a ``--channel_order`` flag); the
    ``channel_order`` a checkpoint records (``checkpoint`` is the loaded
    object; when it is not given, the file is read only if its name is not in
    this module's table); the file-name table; then 'RGB'.
    """
    o = _check_order(override, '--channel_order')
    if o:
        return o
    if checkpoint is not None:
        rec = record_of(checkpoint, path)
        o = _check_order((rec or {}).get('channel_order') or
                         _metadata(checkpoint).get('channel_order'), str(path))
        if o:
            return o
    name = os.path.basename(os.fspath(path)).lower()
    for pattern, order in _NAME_ORDERS:
        if pattern.search(name):
            return order
    if checkpoint is None and os.path.isfile(path):
        checkpoint = load_file(path)
        return _check_order(_metadata(checkpoint).get('channel_order'), str(path)) or 'RGB'
    return 'RGB'


def _shapes(sd):
    return {k: tuple(v.shape) for k, v in sd.items()}


def _meta_state_shapes(cfg, num_classes):
    from ssd import build_ssd
    with torch.device('meta'):
        net = build_ssd('train', cfg['min_dim'], num_classes, cfg=cfg)
    return _shapes(net.state_dict())


def num_classes_of(sd, path='<weights>'):
    """Classes including background, from the first loc/conf heads' shapes."""
    try:
        per_loc = sd['loc.0.weight'].shape[0] // 4
        return sd['conf.0.weight'].shape[0] // per_loc
    except (KeyError, ZeroDivisionError):
        raise CheckpointError(f'{path}: not SSD weights (no loc.0/conf.0 heads)') from None


def _candidates(num_classes, size=None, dataset=None):
    """Configs to try, most likely first."""
    dataset = None if dataset is None else dataset_name(dataset)
    if dataset == 'shapes':
        return [dict(CONFIGS['shapes'], num_classes=num_classes)]
    sizes = [size] if size else [300, 512]
    if dataset == 'COCO':
        return [dict(CONFIGS['coco' if s == 300 else 'coco512'], num_classes=num_classes)
                for s in sizes]
    out = [config_for(num_classes, s) for s in sizes]
    if dataset is None and size is None:
        out.append(dict(CONFIGS['shapes'], num_classes=num_classes))
    return out


def infer_config(sd, size=None, dataset=None, hint=None, path='<weights>', suggest=True):
    """The config dict whose network has exactly the shapes of ``sd``.

    ``size`` and ``dataset`` are the user's overrides (``suggest``: when
    ``size`` does not fit and the other size does, say so); ``hint`` (a
    checkpoint's args) may give 'dataset' and 'size', used first when the
    user gave none."""
    hint = hint or {}
    num_classes = num_classes_of(sd, path)
    want = _shapes(sd)
    tries = [(size or hint.get('size'), dataset or hint.get('dataset')), (size, dataset)]
    tried = []
    for s, d in tries:
        for cfg in _candidates(num_classes, int(s) if s else None, d):
            if _meta_state_shapes(cfg, num_classes) == want:
                return cfg
            tried.append(f"{cfg['name']} at {cfg['min_dim']}")
    other = other_size(sd, size, dataset, path) if suggest else None
    if other:
        raise CheckpointError(f'{path}: these are SSD{other} weights, not SSD{size}: '
                              f'pass --size {other}')
    raise CheckpointError(f'{path}: its shapes fit none of the models tried '
                          f'({", ".join(dict.fromkeys(tried))}; {num_classes} classes); '
                          f'pass --size/--dataset')


def other_size(sd, size, dataset=None, path='<weights>'):
    """The input size (300 or 512) that ``sd`` fits when it does not fit
    ``size``; None when neither does or no size was asked for."""
    if not size or dataset == 'shapes':
        return None
    other = 512 if int(size) == 300 else 300
    try:
        infer_config(sd, other, dataset, path=path, suggest=False)
    except CheckpointError:
        return None
    return other


def dataset_classes(name, dataset_root=None):
    """Class names (no background) of a named dataset: VOC, COCO, shapes, or
    a custom folder's (read from ``dataset_root``); None when unknown."""
    import data
    name = dataset_name(name)
    if name == 'custom':
        if not dataset_root:
            return None
        return tuple(data.get_dataset('custom', dataset_root).classes)
    return tuple({'VOC': data.VOC_CLASSES, 'COCO': data.COCO_CLASSES,
                  'shapes': data.SHAPES_CLASSES}[name])


def class_names(cfg, num_classes, meta=None, dataset=None, dataset_root=None):
    """Names without background, the first of these that has ``num_classes -
    1`` names: the checkpoint's 'classes'; the classes of ``dataset`` (else of
    the checkpoint's dataset; see :func:`dataset_classes`); the shapes classes
    for the shapes preset, VOC's for 21 classes, COCO's for 81; else
    class1, class2, ..."""
    meta = meta or {}
    want = num_classes - 1
    names = meta.get('classes')
    if names is not None and len(names) == want:
        return tuple(str(n) for n in names)
    name = dataset or meta.get('dataset')
    if name is not None and str(name).lower() in {d.lower() for d in DATASETS}:
        try:
            names = dataset_classes(name, dataset_root or meta.get('dataset_root'))
        except (ValueError, OSError):   # a recorded custom root that is not here
            names = None
        if names is not None and len(names) == want:
            return names
    for cond, named in ((cfg.get('name') == 'shapes', 'shapes'),
                        (num_classes == 21, 'VOC'), (num_classes == 81, 'COCO')):
        if cond and len(dataset_classes(named)) == want:
            return dataset_classes(named)
    return tuple(f'class{i}' for i in range(1, num_classes))


class WeightFile(NamedTuple):
    """A weight file read once: ``obj`` as loaded, ``state`` the model state
    dict (prefixes removed), ``meta`` the checkpoint's metadata and args
    (empty for plain state dicts), ``record`` the model record (module
    docstring; None for files without one)."""
    path: str
    obj: object
    state: dict
    meta: dict
    record: dict = None


def read_weights(path):
    """Read a weight file once (``weights_only=True``): ssd.pytorch weights,
    our weights-only snapshots or our full checkpoints. One-line
    :class:`CheckpointError` when it is unreadable or holds no state dict."""
    path = os.fspath(path)
    obj = load_file(path)
    state = check_finite(extract_state_dict(obj, path), path)
    return WeightFile(path, obj, state, _metadata(obj), record_of(obj, path))


def dataset_of(weights, default='VOC'):
    """The dataset a weight file (:class:`WeightFile`) was trained on: the
    checkpoint's ``dataset``; else 'shapes' when only the shapes preset fits
    its shapes, 'COCO' for 81 classes, ``default`` otherwise."""
    name = (weights.record or {}).get('dataset') or weights.meta.get('dataset')
    if name:
        return dataset_name(name)
    try:
        cfg = infer_config(weights.state, path=weights.path)
    except CheckpointError:
        return default
    if cfg['name'] == 'shapes':
        return 'shapes'
    return 'COCO' if cfg['num_classes'] == 81 else default


class LoadedModel(NamedTuple):
    """What :func:`build_from_weights` returns: ``net`` (an SSD in eval mode;
    ``net.cfg``, ``net.size``, ``net.num_classes`` describe it), ``classes``
    (names without background) and ``channel_order`` ('RGB' or 'BGR')."""
    net: torch.nn.Module
    classes: tuple
    channel_order: str


def build_from_weights(path, phase='test', size=None, dataset=None, channel_order=None,
                       device='cpu', num_classes=None, dataset_root=None, **detect_kwargs):
    """Build the network that ``path`` was trained as, and load it.

    ``path`` is a file name or a :class:`WeightFile` already read. Returns a
    :class:`LoadedModel` ``(net, classes, channel_order)``: the SSD in
    ``phase`` and eval mode on ``device``; the class names (tuple, no
    background; :func:`class_names`); 'RGB' or 'BGR' (see
    :func:`channel_order_for`). ``size`` (300/512) and ``dataset`` ('VOC',
    'COCO', 'shapes', 'custom', any case) override the inference;
    ``num_classes`` (with background) or a named ``dataset`` whose classes
    are known must agree with the file. ``detect_kwargs`` go to ``Detect``
    (``top_k``, ``conf_thresh``, ...).
    Raises :class:`CheckpointError` with a one-line message.
    """
    from ssd import build_ssd
    wf = path if isinstance(path, WeightFile) else read_weights(path)
    dataset = None if dataset is None else dataset_name(dataset)
    if wf.record is not None:
        cfg = recorded_config(wf, size)
    else:
        cfg = infer_config(wf.state, size, dataset, hint=wf.meta, path=wf.path)
    n = cfg['num_classes']
    known = dataset_classes(dataset, dataset_root) if dataset else None
    for want, what in ((num_classes, f'{num_classes} classes'),
                       (len(known) + 1 if known else None, f'the {dataset} classes')):
        if want is not None and int(want) != n:
            raise CheckpointError(f'{wf.path}: does not fit the {cfg["name"]} SSD'
                                  f'{cfg["min_dim"]} with {what} ({int(want)} with background; '
                                  f'the file has {n})')
    net = build_ssd(phase, cfg['min_dim'], n, cfg=cfg, **detect_kwargs)
    _load_state(net, wf)
    net.to(device).eval()
    order = channel_order_for(wf.path, channel_order, checkpoint=wf.obj)
    meta = dict(wf.meta, classes=wf.record['classes']) \
        if wf.record is not None and wf.record.get('classes') else wf.meta
    return LoadedModel(net, class_names(cfg, n, meta, dataset, dataset_root), order)


def recorded_config(weights, size=None):
    """The config a :class:`WeightFile` records; ``size`` (a ``--size`` given)
    must be the recorded one (one-line CheckpointError otherwise)."""
    cfg = dict(weights.record['cfg'])
    if size is not None and int(size) != int(cfg['min_dim']):
        raise CheckpointError(f"{weights.path}: records an SSD{cfg['min_dim']} "
                              f"({cfg.get('backbone', 'vgg16')}); --size {size} does not fit it "
                              '(leave --size out: the file says its size)')
    return cfg


def backbone_of(weights):
    """The backbone a :class:`WeightFile` is for: its record's, else 'vgg16'
    for ssd.pytorch's keys (``vgg.N``), else None (not known)."""
    if weights.record is not None:
        return weights.record['cfg'].get('backbone', 'vgg16')
    return 'vgg16' if any(k.startswith('vgg.') for k in weights.state) else None


def check_backbone(net, weights):
    """One-line CheckpointError when the :class:`WeightFile` ``weights`` is
    for another backbone than the SSD ``net``, naming both."""
    have, want = backbone_of(weights), getattr(net, 'backbone_name', 'vgg16')
    if have is not None and have != want:
        raise CheckpointError(f'{weights.path}: holds a {have} SSD, but this model is a '
                              f'{want} SSD (--backbone {have}, or a {want} file)')


def _load_state(net, weights):
    """``net.load_state_dict(weights.state)`` with one-line errors."""
    check_backbone(net, weights)
    try:
        net.load_state_dict(weights.state)
    except RuntimeError as e:
        first = ' '.join(x.strip() for x in str(e).strip().splitlines()[:2])
        raise CheckpointError(f'{weights.path}: does not fit the model it records '
                              f'({first[:300]})') from None


def load_weights(net, weights):
    """Load a weight file (a path or a :class:`WeightFile`) into the network
    ``net`` already built (``train.py --resume`` with a weights-only file).
    Returns the :class:`WeightFile`; a file whose keys or shapes do not fit
    is a one-line :class:`CheckpointError`."""
    wf = weights if isinstance(weights, WeightFile) else read_weights(weights)
    net = getattr(net, 'module', net)
    check_backbone(net, wf)
    try:
        net.load_state_dict(wf.state)
    except RuntimeError as e:
        size = getattr(net, 'size', None)
        other = other_size(wf.state, size, path=wf.path) if size in (300, 512) else None
        if other:
            raise CheckpointError(f'{wf.path}: these are SSD{other} weights, not '
                                  f'SSD{size}: pass --size {other}') from None
        first = ' '.join(x.strip() for x in str(e).strip().splitlines()[:2])
        try:
            n_file, n_net = num_classes_of(wf.state, wf.path), getattr(net, 'num_classes', None)
        except CheckpointError:
            n_file = n_net = None
        hint = (f'; it has {n_file} classes, this model {n_net}: --pretrained loads what '
                'fits and re-initialises the rest' if n_net and n_file != n_net else '')
        raise CheckpointError(f'{wf.path}: does not fit this model ({first[:300]}){hint}') \
            from None
    return wf


def load_matching(net, weights):
    """Load every tensor of a weight file (a path or a :class:`WeightFile`)
    whose name and shape fit ``net`` (``train.py --pretrained``: a VOC or
    COCO detector onto other classes); leave the others as they are.
    Returns ``(WeightFile, loaded, not_loaded, unused)``: the keys of
    ``net`` loaded, the keys of ``net`` not loaded (missing from the file or
    of another shape: normally ``conf.*`` for another number of classes),
    and the file's keys that ``net`` has not. A file without a single
    fitting tensor is a one-line :class:`CheckpointError`."""
    wf = weights if isinstance(weights, WeightFile) else read_weights(weights)
    net = getattr(net, 'module', net)
    check_backbone(net, wf)
    own = net.state_dict()
    fit = {k: v for k, v in wf.state.items()
           if k in own and tuple(v.shape) == tuple(own[k].shape)}
    if not fit:
        raise CheckpointError(f'{wf.path}: no tensor fits this model (not SSD weights, '
                              'or another architecture)')
    net.load_state_dict(fit, strict=False)
    return (wf, [k for k in own if k in fit], [k for k in own if k not in fit],
            [k for k in wf.state if k not in own])
