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

:func:`build_from_weights` also infers the model (SSD300, SSD512, the shapes
preset; the number of classes) from the state-dict shapes, so that
``demo/live.py``, ``test.py`` and ``eval.py`` need only the file.
"""
import os
import re

import torch

from data.config import CONFIGS, config_for
from utils.checkpoint import CheckpointError, extract_state_dict, load_file

CHANNEL_ORDERS = ('RGB', 'BGR')
# file-name patterns (lower case, on the base name) -> channel order
_NAME_ORDERS = (
    (re.compile(r'^ssd_(300|512)_voc0712'), 'BGR'),     # ssd.pytorch's Caffe conversions
    (re.compile(r'^vgg_voc0712_ssd_'), 'BGR'),          # Caffe's own naming
    (re.compile(r'caffe'), 'BGR'),
    (re.compile(r'^ssd300_map_77\.43'), 'RGB'),         # ssd.pytorch, trained in PyTorch
)
_DATASETS = ('VOC', 'COCO', 'shapes', 'custom')


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
        o = _check_order(_metadata(checkpoint).get('channel_order'), str(path))
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
    if dataset is not None and dataset not in _DATASETS:
        raise ValueError(f'--dataset must be one of {", ".join(_DATASETS)}, got {dataset!r}')
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


def _norm_dataset(dataset):
    if dataset is None:
        return None
    return {'voc': 'VOC', 'coco': 'COCO', 'shapes': 'shapes',
            'custom': 'custom'}.get(str(dataset).lower(), dataset)


def infer_config(sd, size=None, dataset=None, hint=None, path='<weights>'):
    """The config dict whose network has exactly the shapes of ``sd``.

    ``size`` and ``dataset`` are the user's overrides; ``hint`` (a
    checkpoint's args) may give 'dataset' and 'size', used first when the
    user gave none."""
    hint = hint or {}
    num_classes = num_classes_of(sd, path)
    want = _shapes(sd)
    tries = [(size or hint.get('size'), dataset or hint.get('dataset')), (size, dataset)]
    tried = []
    for s, d in tries:
        for cfg in _candidates(num_classes, int(s) if s else None, _norm_dataset(d)):
            if _meta_state_shapes(cfg, num_classes) == want:
                return cfg
            tried.append(f"{cfg['name']} at {cfg['min_dim']}")
    raise CheckpointError(f'{path}: its shapes fit none of the models tried '
                          f'({", ".join(dict.fromkeys(tried))}; {num_classes} classes); '
                          f'pass --size/--dataset')


def class_names(cfg, num_classes, meta=None):
    """Names without background: the checkpoint's 'classes', else the
    dataset's (shapes, VOC for 21 classes, COCO for 81), else class1..."""
    meta = meta or {}
    names = meta.get('classes')
    if names is not None and len(names) == num_classes - 1:
        return tuple(str(n) for n in names)
    import data
    for cond, attr in ((cfg.get('name') == 'shapes', 'SHAPES_CLASSES'),
                       (num_classes == 21, 'VOC_CLASSES'), (num_classes == 81, 'COCO_CLASSES')):
        names = getattr(data, attr, None)
        if cond and names is not None and len(names) == num_classes - 1:
            return tuple(names)
    return tuple(f'class{i}' for i in range(1, num_classes))


def build_from_weights(path, phase='test', size=None, dataset=None, channel_order=None,
                       device='cpu', **detect_kwargs):
    """Build the network that ``path`` was trained as, and load it.

    Returns ``(net, classes, channel_order)``: the SSD in ``phase`` and eval
    mode on ``device``; the class names (tuple, no background); 'RGB' or
    'BGR' (see :func:`channel_order_for`). ``size`` (300/512) and ``dataset``
    ('VOC', 'COCO', 'shapes', 'custom') override the inference.
    Raises :class:`CheckpointError` with a one-line message.
    """
    from ssd import build_ssd
    obj = load_file(path)
    sd = extract_state_dict(obj, path)
    meta = _metadata(obj)
    cfg = infer_config(sd, size, dataset, hint=meta, path=path)
    num_classes = cfg['num_classes']
    net = build_ssd(phase, cfg['min_dim'], num_classes, cfg=cfg, **detect_kwargs)
    net.load_state_dict(sd)
    net.to(device).eval()
    order = channel_order_for(path, channel_order, checkpoint=obj)
    return net, class_names(cfg, num_classes, meta), order
