"""SSD300 on ResNet-50, as NVIDIA DeepLearningExamples' SSD300 v1.1.

The network, module for module (``PyTorch/Detection/SSD/ssd/model.py``):

- the trunk is torchvision's ``resnet50`` from the stem to ``layer3``
  (conv4_x), with the first bottleneck of ``layer3`` at stride 1 (its
  ``conv1``, ``conv2`` and ``downsample`` convs): stride 8, 1024 channels,
  38x38 at 300 (source 0);
- five extra blocks (``extra.j``): a 1x1 conv to ``cfg['extras_mid'][j]``
  (256, 256, 128, 128, 128), BatchNorm, ReLU, a 3x3 conv to
  ``cfg['extras_channels'][j + 1]`` (512, 512, 256, 256, 256), BatchNorm,
  ReLU; no conv bias. The first three have stride 2 and padding 1
  (38 -> 19 -> 10 -> 5), the last two no padding (5 -> 3 -> 1): sources
  1 ... 5;
- per source a 3x3 conv (with bias) for loc (``A * 4`` channels) and conf
  (``A * C``), ``A`` = ``cfg['mbox']`` = 4, 6, 6, 6, 4, 4;
- NVIDIA's initialisation: the trunk as torchvision builds it (NVIDIA then
  loads ImageNet weights: ``--basenet``), every conv weight of the extras
  and heads Xavier-uniform, the heads' biases as PyTorch leaves them.

Head layout (``cfg['head_layout'] == 'nvidia'``, :meth:`ssd.SSD.forward`):
NVIDIA reads each head's ``[N, A * 4, f, f]`` map as ``[N, 4, A * f * f]``
(channel ``coord * A + anchor``; conf ``class * A + anchor``), so that within
each map the priors are anchor-major: all locations of box shape 0, then of
shape 1, ... :class:`layers.PriorBox` orders its priors so for this layout,
as NVIDIA's ``DefaultBoxes`` does (ssd.pytorch's order is location-major).

State-dict keys (relative to ``net.backbone``): ``features.N.*`` are NVIDIA's
``feature_extractor.feature_extractor.N.*`` (N = 0 conv1, 1 bn1, 4 layer1,
5 layer2, 6 layer3), ``extra.j.*`` its ``additional_blocks.j.*``; ``loc.k``
and ``conf.k`` are its own names. ``backbone.trunk`` (``features``) is the
ImageNet part; :func:`imagenet_key_map` maps torchvision's classifier keys
onto it. Input: ImageNet's mean and std on RGB in [0, 1] (the preset's
``mean`` / ``std`` in BGR pixel units).
"""
import torch
import torch.nn as nn
from torchvision.models import resnet50

#: NVIDIA's ResNet-50 source channels, and the 1x1 widths of its extra blocks
EXTRAS = (1024, 512, 512, 256, 256, 256)
EXTRAS_MID = (256, 256, 128, 128, 128)
#: extra blocks with stride 2 and padding 1 (the rest: stride 1, no padding)
STRIDED = 3


def classifier():
    """torchvision's ImageNet ResNet-50 (random weights, no download), whose
    layers the trunk is made of."""
    return resnet50(weights=None)


def trunk_of(net):
    """``net``'s (a torchvision ResNet) stem ... ``layer3`` as a Sequential
    (its own modules, indices 0 ... 6 as ``net.children()``), with
    ``layer3``'s first block at stride 1."""
    features = nn.Sequential(*list(net.children())[:7])
    block = features[-1][0]
    block.conv1.stride = (1, 1)
    block.conv2.stride = (1, 1)
    block.downsample[0].stride = (1, 1)
    return features


def extra_block(cin, mid, cout, strided):
    """1x1 conv ``cin -> mid``, BN, ReLU, 3x3 conv ``mid -> cout`` (stride 2
    pad 1 when ``strided``: ``f -> ceil(f / 2)``; else no padding:
    ``f -> f - 2``), BN, ReLU; no conv bias."""
    return nn.Sequential(
        nn.Conv2d(cin, mid, kernel_size=1, bias=False), nn.BatchNorm2d(mid),
        nn.ReLU(inplace=True),
        nn.Conv2d(mid, cout, kernel_size=3, stride=2 if strided else 1,
                  padding=1 if strided else 0, bias=False),
        nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def xavier_init(*modules):
    """NVIDIA's initialisation of the extras and heads: every weight with
    more than one dimension Xavier-uniform (biases and BatchNorm unchanged)."""
    for module in modules:
        for p in module.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)


class SSDResNet(nn.Module):
    """The sources of SSD300 v1.1: ``forward(x [N, 3, S, S])`` -> six maps
    ``[N, C_k, f_k, f_k]`` (300: 38, 19, 10, 5, 3, 1; channels
    ``extras_channels``).

    ``features`` (the trunk: :func:`trunk_of`) then ``extra`` (a ModuleList
    of :func:`extra_block`)."""

    def __init__(self, features, channels=EXTRAS, mid=EXTRAS_MID):
        super().__init__()
        if len(mid) != len(channels) - 1:
            raise ValueError(f'{len(channels)} source channels need {len(channels) - 1} '
                             f'extras_mid widths, got {len(mid)}')
        self.features = features
        self.extra = nn.ModuleList([
            extra_block(a, m, b, j < STRIDED)
            for j, (a, m, b) in enumerate(zip(channels[:-1], mid, channels[1:]))])

    @property
    def trunk(self):
        """The ImageNet-pretrainable part (``--basenet``, ``--freeze trunk``)."""
        return self.features

    @property
    def extras(self):
        """The extra blocks (``--freeze extras``)."""
        return self.extra

    def out_channels(self):
        """Channels of each source map."""
        return [self.features[-1][-1].conv3.out_channels] + \
            [b[3].out_channels for b in self.extra]

    def forward(self, x):
        x = self.features(x)
        out = [x]
        for block in self.extra:
            x = block(x)
            out.append(x)
        return out


def backbone(cfg):
    """The :class:`SSDResNet` of ``cfg`` (``extras_channels``, ``extras_mid``)."""
    channels = tuple(cfg.get('extras_channels', EXTRAS))
    body = SSDResNet(trunk_of(classifier()), channels, tuple(cfg.get('extras_mid', EXTRAS_MID)))
    if body.out_channels()[0] != channels[0]:
        raise ValueError(f'ResNet-50 conv4_x has {body.out_channels()[0]} channels, '
                         f'extras_channels[0] is {channels[0]}')
    return body


def heads(channels, mbox, num_classes):
    """``(loc, conf)`` ModuleLists of 3x3 convs (padding 1, with bias):
    source k ``[N, channels[k], f, f] -> [N, mbox[k] * 4 | mbox[k] *
    num_classes, f, f]``."""
    loc = nn.ModuleList([nn.Conv2d(c, a * 4, kernel_size=3, padding=1)
                         for c, a in zip(channels, mbox)])
    conf = nn.ModuleList([nn.Conv2d(c, a * num_classes, kernel_size=3, padding=1)
                          for c, a in zip(channels, mbox)])
    return loc, conf


def build(cfg, num_classes):
    """``(backbone, loc, conf)`` of the SSD300 v1.1 that ``cfg`` describes
    (``cfg['mbox']``: default boxes per location of each source)."""
    body = backbone(cfg)
    channels = body.out_channels()
    if len(channels) != len(cfg['mbox']):
        raise ValueError(f'{len(channels)} ResNet SSD sources but {len(cfg["mbox"])} mbox entries')
    loc, conf = heads(channels, cfg['mbox'], num_classes)
    xavier_init(body.extra, loc, conf)
    return body, loc, conf


def imagenet_key_map(cfg=None):
    """``{trunk key: torchvision classifier key}`` for every tensor of the
    trunk (``0.* -> conv1.*``, ``1.* -> bn1.*``, ``4.* -> layer1.*``,
    ``5.* -> layer2.*``, ``6.* -> layer3.*``), found by building both from
    the same modules. ``cfg`` is accepted for the backbones' common call
    (the trunk does not depend on it)."""
    net = classifier()
    theirs = {id(t): k for k, t in net.state_dict(keep_vars=True).items()}
    return {k: theirs[id(t)] for k, t in trunk_of(net).state_dict(keep_vars=True).items()}


def channels_of(cfg):
    """Channels of each source map of ``cfg``'s network (meta tensors)."""
    with torch.device('meta'):
        return backbone(cfg).out_channels()
