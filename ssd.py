"""SSD: Single Shot MultiBox Detector (Liu et al., ECCV 2016).

The network is ssd.pytorch's, with the same module lists and state-dict keys
(``vgg.N``, ``L2Norm.weight``, ``extras.N``, ``loc.N``, ``conf.N``), so that
its published weights load unchanged. Layer names of the paper, for SSD300's
``vgg`` list (the ReLU of each conv follows it):

    ========  ==========  =========================================
    paper     vgg index   notes
    ========  ==========  =========================================
    conv1_1   0, 2        conv1_2 at 2; pool1 at 4
    conv2_x   5, 7        pool2 at 9
    conv3_x   10, 12, 14  pool3 at 16 (ceil mode: 75 -> 38)
    conv4_3   21          ReLU at 22 -> L2Norm(512, 20) -> source 1
    pool4     23
    conv5_x   24, 26, 28
    pool5     30          3x3, stride 1, pad 1
    fc6       31          3x3 atrous, dilation 6, 1024 channels
    fc7       33          1x1, 1024 channels; ReLU at 34 -> source 2
    ========  ==========  =========================================

``extras`` holds convs only (ReLU is applied in forward); every odd index is a
source: conv8_2 (extras.1), conv9_2 (3), conv10_2 (5), conv11_2 (7), and for
SSD512 conv12_2 (extras.9, a 4x4 conv as in Caffe).

Other backbones (``build_ssd(..., backbone='mobilenet_v3_large' | 'mobilenet_v2'
| 'resnet50')``, :mod:`layers.backbones`): ``net.backbone`` turns the image
into the list of source maps, and the same heads, priors, loss and Detect
follow; their keys are ``backbone.*``, ``loc.k.*`` and ``conf.k.*``.
"""
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from data.config import config_for
from layers import Detect, L2Norm, PriorBox
from layers.functions import winograd


class SSD(nn.Module):
    """Single Shot MultiBox Detector.

    Args:
        phase: 'train' or 'test'.
        size: input side (300, 512, or the preset's ``min_dim``).
        base, extras, head: the module lists from :func:`vgg`,
            :func:`add_extras` and :func:`multibox`.
        num_classes: classes including background.
        cfg: the config dict (priors and network description).

    ``base`` may instead be a backbone module (:mod:`layers.backbones`) whose
    ``forward(x)`` returns the list of source maps; ``extras`` is then None
    and ``net.backbone`` holds it (no ``vgg``, ``L2Norm`` or ``extras``).

    ``forward(x)`` takes ``[N, 3, size, size]`` float images. In 'train' phase
    it returns ``(loc [N, P, 4], conf [N, P, C] logits, priors [P, 4])``; in
    'test' phase it returns ``[N, C, top_k, 5]`` detections, each row
    ``(score, x1, y1, x2, y2)`` in [0, 1].

    ``winograd`` (default True): where no gradient is needed, on float32 CPU
    tensors, the wide 3x3 convolutions run by Winograd's F(4x4, 3x3)
    (:mod:`layers.functions.winograd`; same outputs up to float rounding,
    about 1e-5 relative). Set ``net.winograd = False`` for oneDNN's direct
    convolutions everywhere.
    """

    def __init__(self, phase, size, base, extras, head, num_classes, cfg=None,
                 top_k=200, conf_thresh=0.01, nms_thresh=0.45, winograd=True):
        super().__init__()
        self.phase = phase
        self.winograd = winograd
        self.num_classes = num_classes
        self.cfg = cfg if cfg is not None else config_for(num_classes, size)
        self.size = size
        self.priorbox = PriorBox(self.cfg)
        self.register_buffer('priors', self.priorbox.forward(), persistent=False)
        if isinstance(base, nn.Module) and not isinstance(base, nn.ModuleList):
            self.backbone = base              # image -> the list of source maps
        else:
            self.vgg = nn.ModuleList(base)
            self.conv4_3_end = _conv4_3_end(self.vgg)
            self.L2Norm = L2Norm(_source_channels(self.vgg[:self.conv4_3_end]), 20)
            self.extras = nn.ModuleList(extras)
        self.loc = nn.ModuleList(head[0])
        self.conf = nn.ModuleList(head[1])
        self.softmax = nn.Softmax(dim=-1)
        self.detect = Detect(num_classes, 0, top_k, conf_thresh, nms_thresh,
                             variance=self.cfg['variance'])

    @property
    def backbone_name(self):
        """The backbone's name: 'vgg16' or one of :data:`layers.backbones.BACKBONES`."""
        return self.cfg.get('backbone', 'vgg16')

    def trunk(self):
        """The ImageNet-pretrainable part (``--basenet`` loads into it, ``--freeze
        trunk`` fixes it): ``net.vgg`` for VGG16, else ``net.backbone.trunk``."""
        return self.vgg if hasattr(self, 'vgg') else self.backbone.trunk

    def _run(self, m, x):
        """``m(x)``, by Winograd's algorithm where it applies (class docstring)."""
        if self.winograd and winograd.eligible(m, x) and winograd.applies(m, x):
            return winograd.conv(m, x)
        return m(x)

    def sources(self, x):
        """The source feature maps ``[N, C_k, f_k, f_k]`` of images ``x`` (VGG:
        conv4_3 after L2Norm, fc7 and every second extra layer)."""
        if not hasattr(self, 'vgg'):
            return self.backbone(x)
        run = self._run
        sources = []
        for k in range(self.conv4_3_end):             # up to conv4_3's ReLU
            x = run(self.vgg[k], x)
        sources.append(self.L2Norm(x))
        for k in range(self.conv4_3_end, len(self.vgg)):  # pool4 ... fc7
            x = run(self.vgg[k], x)
        sources.append(x)
        for k, v in enumerate(self.extras):
            x = F.relu(run(v, x), inplace=True)
            if k % 2 == 1:
                sources.append(x)
        return sources

    def forward(self, x):
        if memory_format(self) == torch.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)   # net in NHWC

        run = self._run
        sources = self.sources(x)
        n = x.shape[0]
        if self.cfg.get('head_layout', 'ssd') == 'nvidia':
            # NVIDIA's SSD300 v1.1: channels coordinate-major, priors
            # anchor-major within each map (its checkpoints were trained so)
            loc = torch.cat([run(l, s).reshape(n, 4, -1) for s, l in zip(sources, self.loc)],
                            2).transpose(1, 2)
            conf = torch.cat([run(c, s).reshape(n, self.num_classes, -1)
                              for s, c in zip(sources, self.conf)], 2).transpose(1, 2)
        else:
            loc = torch.cat([run(l, s).permute(0, 2, 3, 1).reshape(n, -1)
                             for s, l in zip(sources, self.loc)], 1).view(n, -1, 4)
            conf = torch.cat([run(c, s).permute(0, 2, 3, 1).reshape(n, -1)
                              for s, c in zip(sources, self.conf)], 1)
            conf = conf.view(n, -1, self.num_classes)
        if self.phase == 'test':
            return self.detect(loc, self.softmax(conf.float()), self.priors)
        return loc, conf, self.priors

    def load_weights(self, base_file):
        """Load ssd.pytorch weights, our snapshots or full checkpoints, with or
        without DataParallel/DDP's ``module.`` prefix. Returns the path."""
        from utils.checkpoint import load_model_state
        other, ext = os.path.splitext(base_file)
        if ext not in ('.pkl', '.pth', '.pt'):
            raise ValueError(f'{base_file}: only .pth, .pt and .pkl files are supported')
        print('Loading weights into state dict...')
        self.load_state_dict(load_model_state(base_file))
        print('Finished!')
        return base_file


def _conv4_3_end(layers):
    """Index just after conv4_3's ReLU: the position of the base's last
    stride-2 max-pool (VGG16's 4th; pool5 has stride 1)."""
    return [i for i, m in enumerate(layers)
            if isinstance(m, nn.MaxPool2d) and m.stride == 2][-1]


def _source_channels(layers):
    return [m.out_channels for m in layers if isinstance(m, nn.Conv2d)][-1]


def vgg(cfg, i, batch_norm=False, fc=1024):
    """VGG16 reduced-fc: the conv layers of ``cfg``, then pool5 (3x3, stride 1),
    fc6 (3x3 atrous, dilation 6) and fc7 (1x1), each ``fc`` channels.

    ``cfg``: a number is a 3x3 conv of that width (with BatchNorm when
    ``batch_norm``), then ReLU; 'M' a 2x2 max-pool, 'C' the same with
    ceil_mode; 'N' makes the next conv one without BatchNorm (the shapes
    preset's first conv: on the CPU, BatchNorm over its 8 full-resolution
    channels cost as much as the rest of the first stage)."""
    layers = []
    in_channels = i
    norm = batch_norm
    for v in cfg:
        if v == 'M':
            layers += [nn.MaxPool2d(kernel_size=2, stride=2)]
        elif v == 'C':
            layers += [nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True)]
        elif v == 'N':
            norm = False
        else:
            conv2d = nn.Conv2d(in_channels, v, kernel_size=3, padding=1)
            if norm:
                layers += [conv2d, nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
            else:
                layers += [conv2d, nn.ReLU(inplace=True)]
            in_channels = v
            norm = batch_norm
    pool5 = nn.MaxPool2d(kernel_size=3, stride=1, padding=1)
    conv6 = nn.Conv2d(in_channels, fc, kernel_size=3, padding=6, dilation=6)  # FC6 with atrous
    conv7 = nn.Conv2d(fc, fc, kernel_size=1)                                   # FC7
    layers += [pool5, conv6, nn.ReLU(inplace=True), conv7, nn.ReLU(inplace=True)]
    return layers


def add_extras(cfg, i, batch_norm=False):
    """Extra feature layers: alternating 1x1 and 3x3 convs. 'S' makes the next
    conv stride 2 with padding 1; 'K' makes it 4x4 with padding 1 (conv12_2)."""
    layers = []
    in_channels = i
    flag = False
    for k, v in enumerate(cfg):
        if in_channels in ('S', 'K'):
            in_channels = v
            continue
        if v == 'S':
            layers += [nn.Conv2d(in_channels, cfg[k + 1], kernel_size=(1, 3)[flag],
                                 stride=2, padding=1)]
        elif v == 'K':
            layers += [nn.Conv2d(in_channels, cfg[k + 1], kernel_size=4, padding=1)]
        else:
            layers += [nn.Conv2d(in_channels, v, kernel_size=(1, 3)[flag])]
        flag = not flag
        in_channels = v
    return layers


def multibox(vgg_layers, extra_layers, cfg, num_classes, conv4_3_end=None):
    """3x3 loc and conf heads on each source: conv4_3, fc7 and every second
    extra conv. ``cfg`` is the list of priors per location."""
    vgg_layers = list(vgg_layers)
    if conv4_3_end is None:
        conv4_3_end = _conv4_3_end(vgg_layers)
    channels = [_source_channels(vgg_layers[:conv4_3_end]), _source_channels(vgg_layers)]
    channels += [v.out_channels for v in extra_layers[1::2]]
    if len(channels) != len(cfg):
        raise ValueError(f'{len(channels)} sources but {len(cfg)} mbox entries')
    loc_layers = [nn.Conv2d(c, m * 4, kernel_size=3, padding=1)
                  for c, m in zip(channels, cfg)]
    conf_layers = [nn.Conv2d(c, m * num_classes, kernel_size=3, padding=1)
                   for c, m in zip(channels, cfg)]
    return vgg_layers, extra_layers, (loc_layers, conf_layers)


def fast_memory_format():
    """The memory format whose convolutions are fastest here: NHWC
    (``torch.channels_last``) where oneDNN runs them on the CPU (x86 and Arm
    builds of PyTorch) or where CUDA is present (cuDNN's tensor-core kernels
    are NHWC); NCHW otherwise. Measured in doc/benchmarks.md: SSD300 inference
    and training steps are about 1.3-1.5x faster in NHWC on the CPU."""
    if torch.backends.mkldnn.is_available() or torch.cuda.is_available():
        return torch.channels_last
    return torch.contiguous_format


def memory_format(net):
    """The memory format ``net``'s convolution weights are stored in
    (``torch.channels_last`` or ``torch.contiguous_format``); inputs are
    converted to it in :meth:`SSD.forward`."""
    conv = next((m for m in net.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is not None and conv.weight.dim() == 4 and \
            conv.weight.is_contiguous(memory_format=torch.channels_last) and \
            not conv.weight.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def _modules(cfg, num_classes):
    """``(base, extras, (loc, conf))`` of :class:`SSD` for the config ``cfg``:
    VGG16's module lists, or (for another backbone) the backbone module of
    :mod:`layers.backbones`, None and its heads."""
    if cfg.get('backbone', 'vgg16') == 'vgg16':
        base = vgg(cfg['base'], 3, cfg.get('batch_norm', False), cfg.get('fc', 1024))
        extras = add_extras(cfg['extras'], base[-2].out_channels)
        return multibox(base, extras, cfg['mbox'], num_classes)
    from layers import backbones
    body, loc, conf = backbones.build(cfg, num_classes)
    return body, None, (loc, conf)


def source_sizes(cfg):
    """The side of each source map of the network ``cfg`` describes, at its
    input size ``cfg['min_dim']``, measured on the network itself (meta
    tensors: nothing is computed). ValueError when the input is too small
    for the network's layers."""
    n = len(cfg['mbox'])
    probe = dict(cfg, feature_maps=[1] * n, steps=[cfg['min_dim']] * n)
    size = cfg['min_dim']
    with torch.device('meta'):
        base, extras, head = _modules(probe, probe['num_classes'])
        net = SSD('train', size, base, extras, head, probe['num_classes'], probe,
                  winograd=False).eval()          # BatchNorm on 1x1 maps needs eval
        try:
            maps = net.sources(torch.empty(1, 3, size, size))
        except RuntimeError as e:
            raise ValueError(f"input size {size} is too small for {cfg.get('name', 'this')} "
                             f"SSD's layers ({str(e).splitlines()[0][:120]})") from None
    if len(maps) != n:
        raise ValueError(f'{len(maps)} source maps but {n} mbox entries')
    return [int(m.shape[-1]) for m in maps]


def complete_config(cfg):
    """``cfg`` with ``feature_maps`` (and ``steps`` = size / map) taken from
    the network (:func:`source_sizes`) where they are None; a copy."""
    cfg = dict(cfg)
    if cfg.get('feature_maps') is None:
        cfg['feature_maps'] = source_sizes(cfg)
    if cfg.get('steps') is None:
        cfg['steps'] = [cfg['min_dim'] / f for f in cfg['feature_maps']]
    return cfg


def build_ssd(phase, size=300, num_classes=21, cfg=None, channels_last=None,
              backbone=None, **detect_kwargs):
    """Build an SSD. ``size`` 300 or 512 picks the paper's model (COCO priors
    when num_classes is 81, VOC's otherwise); another size (a multiple of
    32 from 256 to 1024, ``data.config.check_size``) the same layers with
    the priors at the same fractions of the input. ``backbone`` ('vgg16',
    the default, 'mobilenet_v3_large', 'mobilenet_v2', 'resnet50') picks
    another network (``data.config.config_for``). Or pass ``cfg`` (a dict of
    ``data/config.py``, e.g. ``data.config.shapes``, or a weight file's
    record) for another model; its ``min_dim`` is the size.
    ``detect_kwargs`` (top_k, conf_thresh, nms_thresh) go to :class:`Detect`;
    ``winograd=False`` turns off the Winograd convolutions of :class:`SSD`.
    ``channels_last`` picks the memory format of the weights: None (the
    default) the fastest here (:func:`fast_memory_format`: NHWC with oneDNN on
    the CPU or with CUDA), True NHWC, False NCHW. Inputs are converted in
    ``forward``; outputs are the same up to float rounding and the state dict
    is the same (keys, shapes, values). ``net.to(memory_format=...)`` changes
    it later."""
    from data.config import backbone_name
    if phase not in ('test', 'train'):
        raise ValueError(f'phase must be "train" or "test", got {phase!r}')
    if cfg is None:
        cfg = config_for(num_classes, size, backbone_name(backbone))
    else:
        have = backbone_name(cfg.get('backbone'))
        if backbone is not None and backbone_name(backbone) != have:
            raise ValueError(f'backbone {backbone!r} asked for, but the config is a {have} SSD')
        cfg = complete_config(dict(cfg, num_classes=num_classes))
        size = cfg['min_dim']
    base_, extras_, head_ = _modules(cfg, num_classes)
    net = SSD(phase, size, base_, extras_, head_, num_classes, cfg, **detect_kwargs)
    if channels_last is None:
        fmt = fast_memory_format()
    else:
        fmt = torch.channels_last if channels_last else torch.contiguous_format
    return net.to(memory_format=fmt)
