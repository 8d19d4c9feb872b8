"""SSDlite on MobileNetV3-Large and MobileNetV2 (torchvision's layers).

MobileNetV3-Large is torchvision's ``ssdlite320_mobilenet_v3_large`` module
for module (section 6.3 of the MobileNetV3 paper, 6.2 of MobileNetV2's):

- the trunk is ``torchvision.models.mobilenet_v3_large(...).features``
  (BatchNorm eps 0.001, momentum 0.03; ``cfg['reduced_tail']``: True
  halves C4's output and the tail, 480 channels at the end, as torchvision
  builds it without ImageNet weights; False keeps ImageNet's 960), cut at
  the expansion 1x1 conv of the last stride-2 block (C4): ``features.0``
  runs the stem to that expansion (stride 16, 672 channels: source 0),
  ``features.1`` the rest (stride 32: source 1);
- four extra blocks (``extra.j``: 1x1 to half, 3x3 depthwise stride 2,
  1x1; ReLU6) of 512, 256, 256, 128 channels (``cfg['extras_channels']``):
  sources 2 ... 5;
- per source a depthwise-separable head (3x3 depthwise + BN + ReLU6, then a
  1x1 conv) for loc (``A * 4`` channels) and conf (``A * C``), channel
  ``anchor * K + k`` as in torchvision;
- torchvision's initialisation: every conv normal(0, 0.03), biases 0.

MobileNetV2 (``cfg['backbone'] == 'mobilenet_v2'``): the MobileNetV2
paper's SSDLite (as mmdetection's ssdlite_mobilenetv2 and qfgaohao's
mb2-ssd-lite): torchvision's ``mobilenet_v2().features`` cut the same way,
at the expansion of its last stride-2 block (``features[14]``, the 13th
inverted residual counted from 0: stride 16, 576 channels), the second
source the final 1280-channel conv; then the same extras and heads.

``cfg['width_mult']`` scales the trunk (torchvision's ``width_mult``) and the
extras (``max(16, int(c * width_mult))``, torchvision's rule).

State-dict keys (relative to ``net.backbone``): ``features.*`` and
``extra.*`` are torchvision's ``backbone.features.*`` / ``backbone.extra.*``;
the heads ``loc.k.*`` / ``conf.k.*`` are its
``head.regression_head.module_list.k.*`` / ``head.classification_head
.module_list.k.*``. ``backbone.trunk`` (``features``) is the ImageNet part;
:func:`imagenet_key_map` maps torchvision's classification keys onto it.
"""
from functools import partial

import torch
import torch.nn as nn
from torchvision.models import mobilenet_v2, mobilenet_v3_large
from torchvision.models.detection.ssdlite import (SSDLiteClassificationHead,
                                                  SSDLiteRegressionHead)
from torchvision.ops.misc import Conv2dNormActivation

#: torchvision's SSDlite BatchNorm
NORM = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)
EXTRAS = (512, 256, 256, 128)
INIT_STD = 0.03


def normal_init(module, std=INIT_STD):
    """torchvision's SSDlite initialisation: every conv weight normal(0,
    ``std``), every conv bias 0 (BatchNorm keeps 1 and 0)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, mean=0.0, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def classifier(cfg):
    """torchvision's ImageNet classifier whose ``features`` the trunk of
    ``cfg`` is made of (random weights, no download): mobilenet_v3_large
    or mobilenet_v2, with SSDlite's BatchNorm and ``cfg['width_mult']``
    (and, for V3, ``cfg['reduced_tail']``)."""
    name = cfg['backbone']
    width = float(cfg.get('width_mult', 1.0))
    if name == 'mobilenet_v3_large':
        return mobilenet_v3_large(weights=None, norm_layer=NORM, width_mult=width,
                                  reduced_tail=bool(cfg.get('reduced_tail', True)))
    if name == 'mobilenet_v2':
        return mobilenet_v2(weights=None, norm_layer=NORM, width_mult=width)
    raise ValueError(f'{name!r} is not a MobileNet backbone')


def extra_block(cin, cout, norm=NORM):
    """SSDlite's extra block: 1x1 to ``cout // 2``, 3x3 depthwise stride 2,
    1x1 to ``cout``; BatchNorm and ReLU6 after each. ``[N, cin, f, f] ->
    [N, cout, ceil(f / 2), ceil(f / 2)]``."""
    mid = cout // 2
    return nn.Sequential(
        Conv2dNormActivation(cin, mid, kernel_size=1, norm_layer=norm, activation_layer=nn.ReLU6),
        Conv2dNormActivation(mid, mid, kernel_size=3, stride=2, groups=mid, norm_layer=norm,
                             activation_layer=nn.ReLU6),
        Conv2dNormActivation(mid, cout, kernel_size=1, norm_layer=norm, activation_layer=nn.ReLU6))


def _body(block):
    """The Sequential inside a torchvision inverted residual (V3: ``block``,
    V2: ``conv``); its first module is the 1x1 expansion."""
    return block.block if hasattr(block, 'block') else block.conv


class SSDliteMobileNet(nn.Module):
    """The sources of SSDlite: ``forward(x [N, 3, S, S])`` -> six maps
    ``[N, C_k, f_k, f_k]`` (320: 20, 10, 5, 3, 2, 1).

    ``features`` (the trunk, two Sequentials built of ``classifier.features``'
    own modules) then ``extra`` (a ModuleList of :func:`extra_block`)."""

    def __init__(self, features, extras=EXTRAS, width_mult=1.0, norm=NORM):
        super().__init__()
        c4 = [i for i, b in enumerate(features) if getattr(b, '_is_cn', False)][-1]
        if features[c4].use_res_connect:
            raise ValueError('the C4 block of the trunk has a residual connection')
        body = _body(features[c4])
        self.features = nn.Sequential(
            nn.Sequential(*features[:c4], body[0]),        # stem ... C4's expansion
            nn.Sequential(body[1:], *features[c4 + 1:]))   # C4's depthwise ... last conv
        depth = [max(16, int(c * width_mult)) for c in extras]
        cin = [features[-1].out_channels] + depth[:-1]
        self.extra = nn.ModuleList([extra_block(a, b, norm) for a, b in zip(cin, depth)])
        normal_init(self.extra)

    @property
    def trunk(self):
        """The ImageNet-pretrainable part (``--basenet``, ``--freeze trunk``)."""
        return self.features

    def out_channels(self):
        """Channels of each source map."""
        c0 = self.features[0][-1].out_channels
        return [c0, self.features[1][-1].out_channels] + \
            [b[-1].out_channels for b in self.extra]

    def forward(self, x):
        out = []
        for block in self.features:
            x = block(x)
            out.append(x)
        for block in self.extra:
            x = block(x)
            out.append(x)
        return out


def backbone(cfg):
    """The :class:`SSDliteMobileNet` of ``cfg`` (torchvision's init: the
    whole trunk and the extras normal(0, 0.03))."""
    net = classifier(cfg)
    normal_init(net)            # torchvision's scheme without ImageNet weights
    return SSDliteMobileNet(net.features, cfg.get('extras_channels', EXTRAS),
                            float(cfg.get('width_mult', 1.0)))


def heads(channels, mbox, num_classes, norm=NORM):
    """``(loc, conf)`` ModuleLists of torchvision's SSDlite heads (3x3
    depthwise + BN + ReLU6, 1x1 conv; normal(0, 0.03) init): source k
    ``[N, channels[k], f, f] -> [N, mbox[k] * 4 | mbox[k] * num_classes, f, f]``."""
    loc = SSDLiteRegressionHead(list(channels), list(mbox), norm).module_list
    conf = SSDLiteClassificationHead(list(channels), list(mbox), num_classes, norm).module_list
    return loc, conf


def build(cfg, num_classes):
    """``(backbone, loc, conf)`` of the SSDlite that ``cfg`` describes
    (``cfg['backbone']`` 'mobilenet_v3_large' or 'mobilenet_v2';
    ``cfg['mbox']``: default boxes per location of each source)."""
    body = backbone(cfg)
    channels = body.out_channels()
    if len(channels) != len(cfg['mbox']):
        raise ValueError(f'{len(channels)} SSDlite sources but {len(cfg["mbox"])} mbox entries')
    loc, conf = heads(channels, cfg['mbox'], num_classes)
    return body, loc, conf


def imagenet_key_map(cfg):
    """``{trunk key: torchvision classifier key}`` for every tensor of the
    trunk of ``cfg``: ``features.N.*`` of torchvision's ImageNet
    mobilenet_v3_large / mobilenet_v2 file, found by building both from the
    same modules (so the map is exact whatever the layer layout)."""
    net = classifier(cfg)
    theirs = {id(t): k for k, t in net.state_dict(keep_vars=True).items()}
    body = SSDliteMobileNet(net.features, cfg.get('extras_channels', EXTRAS),
                            float(cfg.get('width_mult', 1.0)))
    return {k: theirs[id(t)] for k, t in body.trunk.state_dict(keep_vars=True).items()}


def channels_of(cfg):
    """Channels of each source map of ``cfg``'s network (meta tensors)."""
    with torch.device('meta'):
        return backbone(cfg).out_channels()


#: torchvision's SSDlite postprocess as :class:`layers.Detect` keywords
#: (score > 0.001, the 300 best per class, NMS at 0.55, 300 per image;
#: boxes clipped to the image, log-sizes capped at log(1000 / 16))
TORCHVISION_DETECT = {'conf_thresh': 0.001, 'nms_thresh': 0.55, 'top_k': 300,
                      'keep_top_k': 300, 'clip_boxes': True,
                      'max_log_wh': 4.135166556742356}
