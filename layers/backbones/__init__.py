"""Backbones other than VGG16 (which stays in ``ssd.py``, with ssd.pytorch's
module lists): each module turns an image tensor into SSD's list of source
feature maps, and comes with its heads. The priors, the loss and Detect are
the same code for every backbone.

``build(cfg, num_classes) -> (backbone, loc, conf)``: ``backbone.forward(x
[N, 3, S, S])`` returns the source maps ``[N, C_k, f_k, f_k]``;
``backbone.trunk`` is its ImageNet-pretrainable part; ``loc`` / ``conf`` are
``nn.ModuleList``s mapping source k to ``[N, A_k * 4, f_k, f_k]`` /
``[N, A_k * C, f_k, f_k]``.
"""
import importlib

#: backbone name -> the module of this package that builds it
MODULES = {
    'mobilenet_v3_large': 'mobilenet',
    'mobilenet_v2': 'mobilenet',
    'resnet50': 'resnet',
}


def build(cfg, num_classes):
    """The backbone module and heads that ``cfg['backbone']`` names."""
    name = cfg['backbone']
    if name not in MODULES:
        raise ValueError(f'unknown backbone {name!r}: choose vgg16, {", ".join(MODULES)}')
    module = importlib.import_module(f'{__name__}.{MODULES[name]}')
    return module.build(cfg, num_classes)
