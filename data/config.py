"""Configurations: one dict per model/dataset, with the paper's numbers.

The keys are ssd.pytorch's (``feature_maps``, ``min_dim``, ``steps``,
``min_sizes``, ``max_sizes``, ``aspect_ratios``, ``variance``, ``clip``,
``num_classes``, ``lr_steps``, ``max_iter``, ``name``). Optional keys describe
the network when it differs from the paper's VGG16 SSD300:

``base``      the VGG layer list ('M' max-pool, 'C' ceil-mode max-pool, int conv)
``fc``        channels of fc6/fc7 (1024 in the paper)
``extras``    the extra-layer list ('S' makes the next conv stride 2 pad 1,
              'K' makes the next conv a 4x4 pad 1 conv, as SSD512's conv12_2)
``mbox``      priors per location for each source
``batch_norm`` BatchNorm after every VGG conv (off for the paper's models)
``backbone``  'vgg16' (the default when absent), 'mobilenet_v3_large',
              'mobilenet_v2' or 'resnet50' (:mod:`layers.backbones`)
``mean``, ``std`` the input normalisation, per channel in BGR order and in
              pixel units: the network takes ``(bgr - mean) / std`` (then
              the file's channel order); absent: ``MEANS`` and 1 (VGG16)
``head_layout`` 'nvidia' for NVIDIA's SSD300 v1.1 head order (ssd.SSD.forward)

``feature_maps`` and ``steps`` may be None: :func:`ssd.complete_config` then
takes the source sizes from the network itself (``steps`` = size / map).
"""
import os.path

HOME = os.path.expanduser("~")

# BGR means of ImageNet, subtracted from BGR images (ssd.pytorch / Caffe).
MEANS = (104, 117, 123)

# colours for drawing, one per class (BGR)
COLORS = ((255, 0, 0, 128), (0, 255, 0, 128), (0, 0, 255, 128),
          (0, 255, 255, 128), (255, 0, 255, 128), (255, 255, 0, 128))

# The paper's VGG16 and extra layers (ssd.pytorch's lists).
BASE_VGG16 = [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'C',
              512, 512, 512, 'M', 512, 512, 512]
EXTRAS_300 = [256, 'S', 512, 128, 'S', 256, 128, 256, 128, 256]
EXTRAS_512 = [256, 'S', 512, 128, 'S', 256, 128, 'S', 256, 128, 'S', 256,
              128, 'K', 256]

# SSD300 on VOC (paper Table 1 setting: 8732 priors)
voc = {
    'num_classes': 21,
    'lr_steps': (80000, 100000, 120000),
    'max_iter': 120000,
    'feature_maps': [38, 19, 10, 5, 3, 1],
    'min_dim': 300,
    'steps': [8, 16, 32, 64, 100, 300],
    'min_sizes': [30, 60, 111, 162, 213, 264],
    'max_sizes': [60, 111, 162, 213, 264, 315],
    'aspect_ratios': [[2], [2, 3], [2, 3], [2, 3], [2], [2]],
    'variance': [0.1, 0.2],
    'clip': True,
    'name': 'VOC',
    'base': BASE_VGG16, 'fc': 1024, 'extras': EXTRAS_300,
    'mbox': [4, 6, 6, 6, 4, 4], 'batch_norm': False,
}

# SSD300 on COCO: 80 classes + background (ssd.pytorch said 201 by mistake)
coco = dict(voc, **{
    'num_classes': 81,
    'lr_steps': (280000, 360000, 400000),
    'max_iter': 400000,
    'min_sizes': [21, 45, 99, 153, 207, 261],
    'max_sizes': [45, 99, 153, 207, 261, 315],
    'name': 'COCO',
})

# SSD512 on VOC (Caffe ssd_pascal_512: 24564 priors, conv12_2 is 4x4)
voc512 = dict(voc, **{
    'feature_maps': [64, 32, 16, 8, 4, 2, 1],
    'min_dim': 512,
    'steps': [8, 16, 32, 64, 128, 256, 512],
    'min_sizes': [35.84, 76.8, 153.6, 230.4, 307.2, 384.0, 460.8],
    'max_sizes': [76.8, 153.6, 230.4, 307.2, 384.0, 460.8, 537.6],
    'aspect_ratios': [[2], [2, 3], [2, 3], [2, 3], [2, 3], [2], [2]],
    'extras': EXTRAS_512,
    'mbox': [4, 6, 6, 6, 6, 4, 4],
    'name': 'VOC512',
})

# SSD512 on COCO (Caffe ssd_coco_512)
coco512 = dict(voc512, **{
    'num_classes': 81,
    'lr_steps': (280000, 360000, 400000),
    'max_iter': 400000,
    'min_sizes': [20.48, 51.2, 133.12, 215.04, 296.96, 378.88, 460.8],
    'max_sizes': [51.2, 133.12, 215.04, 296.96, 378.88, 460.8, 542.72],
    'name': 'COCO512',
})

# A small SSD for CPU demos on the synthetic shapes dataset: the paper's
# architecture (VGG-style base with L2Norm on its conv4_3 source, pool5 3x3/1,
# atrous fc6/fc7, extra layers, multibox heads) at 1/8 of the width, with
# BatchNorm (not on the first conv: 'N', see ssd.vgg), 160x160 input, and one
# pool fewer, so that conv4_3 is a stride-4 source (40x40) for the small
# objects: 5 sources (40, 20, 10, 5, 3), 9536 priors, 0.35 M parameters.
# doc/training.md has the measurements behind each choice.
shapes = {
    'num_classes': 6,
    'lr_steps': (),             # none: a cosine decay (lr_schedule below)
    'max_iter': 2400,
    'feature_maps': [40, 20, 10, 5, 3],
    'min_dim': 160,
    'steps': [4, 8, 16, 32, 160 / 3],
    # priors fitted to the objects (8-60% of the shorter side, 0.06-0.54 of
    # the resized image in sqrt-area): every training object has a prior at
    # IoU >= 0.5 and matches 8.6 on average (stride 8 first: 7% and 3.0)
    'min_sizes': [12, 28, 46, 68, 92],
    'max_sizes': [28, 46, 68, 92, 125],
    'aspect_ratios': [[2], [2, 3], [2, 3], [2], [2]],
    'variance': [0.1, 0.2],
    'clip': True,
    'name': 'shapes',
    # two convs at 80x80 and three at 40x40 (VGG16's depth there), fc 96:
    # the small objects' class mix-ups were most of the lost points; the
    # deeper stride-4 source gained +0.03 for 9% more time per step
    'base': ['N', 8, 'M', 16, 16, 'M', 32, 32, 32, 'M', 64, 64],
    'fc': 96,
    'extras': [32, 'S', 64, 32, 'S', 64, 32, 'S', 64],
    'mbox': [4, 6, 6, 4, 4],
    'batch_norm': True,
    # the preset's own training schedule (train.py defaults for --dataset
    # shapes): AdamW, warm-up, then a cosine decay to 0 at max_iter. Batch 8:
    # at the same number of images, twice the updates of batch 16 gave VOC07
    # mAP 0.86 against 0.81 (doc/training.md). Weight decay 0.1 (AdamW's
    # decoupled decay, lr x 0.1 per step; 1e-4 before): +0.02-0.03 at the end
    'batch_size': 8, 'optimizer': 'adamw', 'lr': 5e-3, 'warmup': 100, 'gamma': 0.5,
    'lr_schedule': 'cosine',
    'weight_decay': 0.1, 'save_every': 800, 'eval_every': 800,
    # distinct training images (each generated once, ~2 ms) instead of a
    # small set seen many times: better on the validation images
    'train_images': 32000,
    # Mirror only: on a 5-minute schedule the paper's photometric distortion,
    # zoom-out and IoU crop (a regulariser for 120k iterations) slow learning
    # down: VOC07 mAP after 120 s of training was 0.06 with them (expand 0.3
    # up to 2x), 0.22 with the crop alone and 0.45 with mirror only
    # (doc/training.md). SSD300/512 keep the full augmentation.
    'augment': {'expand_prob': 0.0, 'distort': False, 'min_ious': (),
                'any_patch': False},
    'head_std': 0.01,       # small loc/conf head weights: a uniform first guess
}

# SSDlite320 on MobileNetV3-Large, as torchvision's ssdlite320_mobilenet_v3_large:
# six sources (the C4 expansion layer at stride 16, the last conv, four extra
# blocks), six default boxes each (DefaultBoxGenerator([[2, 3]] * 6,
# min_ratio=0.2, max_ratio=0.95): scales 0.2 ... 0.95 and 1.0 of the input),
# depthwise-separable heads, input (rgb / 255 - 0.5) / 0.5.
ssdlite320 = {
    'num_classes': 91,
    'backbone': 'mobilenet_v3_large',
    'name': 'SSDlite320',
    'min_dim': 320,
    'feature_maps': [20, 10, 5, 3, 2, 1],
    'steps': [16, 32, 64, 320 / 3, 160, 320],
    'min_sizes': [64, 112, 160, 208, 256, 304],
    'max_sizes': [112, 160, 208, 256, 304, 320],
    'aspect_ratios': [[2, 3]] * 6,
    'mbox': [6] * 6,
    'variance': [0.1, 0.2],
    'clip': True,
    'mean': (127.5, 127.5, 127.5), 'std': (127.5, 127.5, 127.5),
    'width_mult': 1.0, 'reduced_tail': True,
    'extras_channels': [512, 256, 256, 128],
    # a VOC or custom schedule: torchvision's SSDlite recipe (SGD, cosine,
    # weight decay 4e-5; lr 0.15 at batch 192, scaled to batch 32)
    'lr': 0.025, 'weight_decay': 4e-5, 'lr_schedule': 'cosine', 'warmup': 1000,
    'lr_steps': (), 'max_iter': 120000,
}

# SSDlite320 on MobileNetV2 (the MobileNetV2 paper's SSDLite, as mmdetection's
# ssdlite_mobilenetv2): the first source from block 13's expansion layer
# (stride 16, 576 channels), the second from the final 1280-channel conv.
ssdlite320_v2 = dict(ssdlite320, backbone='mobilenet_v2', name='SSDlite320-V2',
                     reduced_tail=False)

# SSD300 v1.1 on ResNet-50 (NVIDIA DeepLearningExamples): the trunk to conv4
# (layer3) with its stride set to 1 (38x38, 1024 channels), five extra
# blocks with BatchNorm, COCO's SSD300 default boxes, ImageNet mean/std,
# NVIDIA's head order ('head_layout').
resnet300 = dict(coco, **{
    'backbone': 'resnet50', 'name': 'SSD300-ResNet50',
    'mean': (103.53, 116.28, 123.675), 'std': (57.375, 57.12, 58.395),
    'head_layout': 'nvidia',
    'extras_channels': [1024, 512, 512, 256, 256, 256],
    'extras_mid': [256, 256, 128, 128, 128],
})
for _k in ('base', 'fc', 'extras', 'batch_norm'):
    resnet300.pop(_k)

# The shapes demo on SSDlite-MobileNetV3 (``train.py --dataset shapes
# --backbone mobilenet_v3_large``): half the width, 224 input, priors from a
# tenth of the input up, and the VGG shapes preset's short schedule.
shapes_lite = dict(ssdlite320, **{
    'num_classes': 6, 'name': 'shapes-SSDlite', 'min_dim': 224,
    'feature_maps': None, 'steps': None, 'width_mult': 0.5,
    # torchvision's scales (0.2 ... 0.95 and 1.0 of the input) at 224: with
    # priors from a tenth of the input up instead (22.4 px), VOC07 mAP was
    # 0.0015 at iteration 800 (loss_l stayed at 2.5; doc/training.md)
    'min_sizes': [44.8, 78.4, 112.0, 145.6, 179.2, 212.8],
    'max_sizes': [78.4, 112.0, 145.6, 179.2, 212.8, 224.0],
    **{k: shapes[k] for k in ('lr_steps', 'max_iter', 'batch_size', 'optimizer', 'lr',
                              'warmup', 'gamma', 'lr_schedule', 'weight_decay', 'save_every',
                              'eval_every', 'train_images', 'augment')},
})

#: The shapes preset of each backbone (``--dataset shapes``).
SHAPES_PRESETS = {'vgg16': shapes, 'mobilenet_v3_large': shapes_lite}

#: The default config of each backbone other than VGG16 (:func:`config_for`).
BACKBONE_CONFIGS = {'mobilenet_v3_large': ssdlite320, 'mobilenet_v2': ssdlite320_v2,
                    'resnet50': resnet300}

CONFIGS = {'voc': voc, 'coco': coco, 'voc512': voc512, 'coco512': coco512,
           'shapes': shapes, 'ssdlite320': ssdlite320, 'ssdlite320_v2': ssdlite320_v2,
           'resnet300': resnet300, 'shapes_lite': shapes_lite}


#: ``--size``: 300 (the paper's SSD300), or a multiple of SIZE_STEP from
#: SIZE_MIN to SIZE_MAX (512 is the paper's SSD512; SSDlite's 320 is one).
SIZE_MIN, SIZE_MAX, SIZE_STEP = 256, 1024, 32

#: The backbones ``build_ssd`` knows (``--backbone``); VGG16 is the paper's.
BACKBONES = ('vgg16', 'mobilenet_v3_large', 'mobilenet_v2', 'resnet50')

#: Each backbone's default input size (``--size`` when not given).
DEFAULT_SIZES = {'vgg16': 300, 'mobilenet_v3_large': 320, 'mobilenet_v2': 320,
                 'resnet50': 300}


#: Each backbone's ImageNet base (``train.py --basenet`` when not given), in
#: weights/: ssd.pytorch's VGG16 reduced-fc, or what ``python -m
#: utils.convert_imagenet`` makes of torchvision's ImageNet classifiers.
DEFAULT_BASENETS = {'vgg16': 'vgg16_reducedfc.pth',
                    'mobilenet_v3_large': 'mobilenet_v3_large_basenet.pth',
                    'mobilenet_v2': 'mobilenet_v2_basenet.pth',
                    'resnet50': 'resnet50_basenet.pth'}


def check_size(size):
    """``size`` as an int when it is 300 or a multiple of :data:`SIZE_STEP`
    in [:data:`SIZE_MIN`, :data:`SIZE_MAX`]; ValueError otherwise."""
    n = int(size)
    if n != 300 and not (SIZE_MIN <= n <= SIZE_MAX and n % SIZE_STEP == 0):
        raise ValueError(f'size must be 300 or a multiple of {SIZE_STEP} from {SIZE_MIN} '
                         f'to {SIZE_MAX}, got {size!r}')
    return n


def _scaled(cfg, size, name):
    """The paper's config ``cfg`` (SSD300's or SSD512's layout) at another
    input ``size``: the same layers, prior sizes at the same fractions of
    the input, feature maps and steps from the network."""
    f = size / cfg['min_dim']
    return dict(cfg, min_dim=size, name=name, feature_maps=None, steps=None,
                min_sizes=[round(v * f, 4) for v in cfg['min_sizes']],
                max_sizes=[round(v * f, 4) for v in cfg['max_sizes']])


def config_for(num_classes=21, size=300, backbone='vgg16'):
    """The complete config of a ``backbone`` at input ``size`` for
    ``num_classes`` (with background).

    VGG16: the paper's at 300 and 512 (COCO's priors when num_classes is
    81, VOC's otherwise); at any other size (:func:`check_size`) SSD300's
    layers below 512 and SSD512's from 512 on, with the prior sizes at the
    same fractions of the input and the feature maps measured on the
    network. Other backbones: their preset (:data:`BACKBONE_CONFIGS`) at
    ``size``. Raises ValueError for an unknown backbone or size."""
    backbone = backbone_name(backbone)
    size = check_size(size)
    if backbone == 'vgg16':
        coco_like = num_classes == 81
        if size in (300, 512):
            cfg = {(300, False): voc, (300, True): coco, (512, False): voc512,
                   (512, True): coco512}[size, coco_like]
            return dict(cfg, num_classes=num_classes)
        base = (coco if coco_like else voc) if size < 512 else (coco512 if coco_like else voc512)
        cfg = _scaled(base, size, f"{'COCO' if coco_like else 'VOC'}{size}")
    else:
        cfg = BACKBONE_CONFIGS[backbone]
        if size != cfg['min_dim']:
            cfg = dict(cfg, min_dim=size, feature_maps=None, steps=None,
                       min_sizes=[round(v * size / cfg['min_dim'], 4) for v in cfg['min_sizes']],
                       max_sizes=[round(v * size / cfg['min_dim'], 4) for v in cfg['max_sizes']])
    from ssd import complete_config      # the network measures its own maps
    return complete_config(dict(cfg, num_classes=num_classes))


def shapes_preset(backbone='vgg16'):
    """The shapes preset of ``backbone`` (:data:`SHAPES_PRESETS`); a backbone
    without one gets its own config with the VGG preset's schedule."""
    backbone = backbone_name(backbone)
    if backbone in SHAPES_PRESETS:
        return SHAPES_PRESETS[backbone]
    keep = SCHEDULE_KEYS + ('train_images', 'augment')
    return dict(BACKBONE_CONFIGS[backbone], num_classes=shapes['num_classes'],
                name=f'shapes-{backbone}', **{k: shapes[k] for k in keep if k in shapes})


def model_config(dataset, num_classes, size=None, backbone='vgg16'):
    """The complete config a run trains: the shapes preset of ``backbone``
    for ``dataset`` 'shapes', else :func:`config_for`; ``size`` None is the
    preset's or the backbone's default size (:data:`DEFAULT_SIZES`), another
    size scales the prior sizes with the input (the same fractions)."""
    backbone = backbone_name(backbone)
    if dataset_name(dataset) != 'shapes':
        return config_for(num_classes, size or DEFAULT_SIZES[backbone], backbone)
    cfg = dict(shapes_preset(backbone), num_classes=num_classes)
    if size is not None and int(size) != cfg['min_dim']:
        cfg = _scaled(cfg, check_size(size), cfg['name'])
    from ssd import complete_config
    return complete_config(cfg)


def backbone_name(name):
    """The one spelling of a backbone name (any case); ValueError listing
    :data:`BACKBONES` otherwise."""
    canon = {b.lower(): b for b in BACKBONES}.get(str(name or 'vgg16').lower())
    if canon is None:
        raise ValueError(f'unknown backbone {name!r}: choose {", ".join(BACKBONES)}')
    return canon


def preprocess_of(cfg):
    """``(mean, std)`` of a config: per channel, BGR order, pixel units (the
    network takes ``(bgr - mean) / std``); VGG16's ``MEANS`` and 1 when the
    config does not say."""
    mean = tuple(float(v) for v in cfg.get('mean', MEANS))
    std = tuple(float(v) for v in cfg.get('std', (1.0, 1.0, 1.0)))
    return mean, std


# ------------------------------------------------------------ dataset names

#: The dataset names the scripts accept, spelled as ssd.pytorch spells them.
DATASETS = ('VOC', 'COCO', 'shapes', 'custom')


def dataset_name(name):
    """The one spelling of a dataset name: 'voc' -> 'VOC', 'Shapes' ->
    'shapes'. Raises ValueError for a name that is not in :data:`DATASETS`."""
    canon = {d.lower(): d for d in DATASETS}.get(str(name).lower())
    if canon is None:
        raise ValueError(f'unknown dataset {name!r}: choose {", ".join(DATASETS)}')
    return canon


#: The held-out split that evaluation uses when none is named (``eval.py``,
#: ``test.py`` and evaluation during training): the first one present.
EVAL_SPLITS = {'VOC': ('test',), 'COCO': ('val2017', 'val2014'),
               'shapes': ('val',), 'custom': ('val', 'test')}


def eval_splits(name):
    """The default evaluation splits of a dataset, the preferred one first."""
    return EVAL_SPLITS[dataset_name(name)]


# ---------------------------------------------------------------- schedule

#: The paper's / Caffe's optimiser settings (SSD300 and SSD512, VOC and COCO):
#: SGD, batch 32, lr 1e-3, momentum 0.9, weight decay 5e-4, gamma 0.1;
#: snapshots every 5k and a validation VOC07 mAP every 10k iterations. The
#: iteration counts and lr steps come from each config dict (``max_iter``,
#: ``lr_steps``): VOC 120k (80k, 100k), COCO 400k (280k, 360k).
PAPER = dict(batch_size=32, lr=1e-3, momentum=0.9, weight_decay=5e-4,
             gamma=0.1, warmup=0, save_every=5000, eval_every=10000,
             optimizer='sgd', lr_schedule='step')

#: Keys of a config dict that override :data:`PAPER` (the shapes preset has
#: its own short schedule).
SCHEDULE_KEYS = ('batch_size', 'lr', 'momentum', 'weight_decay', 'gamma',
                 'warmup', 'save_every', 'eval_every', 'max_iter', 'lr_steps',
                 'optimizer', 'lr_schedule')


def schedule_defaults(cfg):
    """The default schedule for a config dict: :data:`PAPER`, the config's
    ``max_iter`` and ``lr_steps``, and any of :data:`SCHEDULE_KEYS` the config
    sets (the shapes preset sets them all). ``lr_steps`` at or past
    ``max_iter`` are dropped."""
    out = dict(PAPER)
    out.update({k: cfg[k] for k in SCHEDULE_KEYS if k in cfg})
    out['lr_steps'] = tuple(s for s in out['lr_steps'] if s < out['max_iter'])
    return out


#: Images of VOC07+12 trainval (5011 + 11540): the paper's 120k iterations
#: at batch 32 are 232 epochs of it.
VOC0712_TRAINVAL_IMAGES = 16551


#: The fewest iterations between two snapshots or evaluations of a scaled
#: schedule (``scaled_schedule``).
MIN_INTERVAL = 100


def scaled_schedule(num_images, batch_size, max_iter=None):
    """The schedule of custom data, scaled to its size: as many epochs as
    the paper's VOC schedule (120k iterations at batch 32 over the 16551
    images of VOC07+12, 232 epochs), rounded up to a multiple of 100 and at
    most 120k; lr steps at 2/3 and 5/6 of it (VOC's 80k and 100k of 120k),
    evaluation every 1/12 (10k) and snapshots every 1/24 (5k), but no more
    often than every :data:`MIN_INTERVAL` iterations (a short run evaluates
    and saves at its end only, not 24 snapshots of 100 MB). ``max_iter``
    (a ``--max_iter`` given) keeps the iterations and scales the rest.
    Returns a dict with ``max_iter``, ``lr_steps``, ``eval_every`` and
    ``save_every``: 500 images at batch 32 give 3700 iterations, steps 2466
    and 3083, evaluation every 308, snapshots every 154."""
    if max_iter is None:
        epochs = voc['max_iter'] * PAPER['batch_size'] / VOC0712_TRAINVAL_IMAGES
        its = -(-epochs * max(int(num_images), 1) // max(int(batch_size), 1))
        max_iter = int(min(voc['max_iter'], max(100, -(-its // 100) * 100)))
    frac = [s / voc['max_iter'] for s in voc['lr_steps'] if s < voc['max_iter']]
    floor = min(MIN_INTERVAL, int(max_iter))
    return dict(max_iter=int(max_iter),
                lr_steps=tuple(dict.fromkeys(int(max_iter * f) for f in frac
                                             if int(max_iter * f) > 0)),
                eval_every=max(max_iter * PAPER['eval_every'] // voc['max_iter'], floor),
                save_every=max(max_iter * PAPER['save_every'] // voc['max_iter'], floor))


def schedule_config(name, size=300, backbone='vgg16'):
    """The config dict whose schedule a dataset trains with: VOC's for VOC
    and custom data, COCO's for COCO, the preset's for shapes (the schedule
    of SSD512 is that of SSD300). Another backbone keeps the dataset's
    iterations and takes its preset's optimiser settings (SSDlite:
    torchvision's recipe, cosine; ResNet-50: the paper's)."""
    name = dataset_name(name)
    backbone = backbone_name(backbone)
    if name == 'shapes':
        return shapes_preset(backbone)
    if name == 'COCO':
        cfg = coco if size == 300 else coco512
    else:
        cfg = voc if size == 300 else voc512
    if backbone == 'vgg16':
        return cfg
    own = BACKBONE_CONFIGS[backbone]
    return dict(cfg, **{k: own[k] for k in SCHEDULE_KEYS
                        if k in own and k not in ('max_iter', 'lr_steps')},
                **({'lr_steps': ()} if own.get('lr_schedule') == 'cosine' else {}))
