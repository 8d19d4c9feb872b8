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

CONFIGS = {'voc': voc, 'coco': coco, 'voc512': voc512, 'coco512': coco512,
           'shapes': shapes}


def config_for(num_classes=21, size=300):
    """Pick the prior geometry for a dataset with ``num_classes`` and input
    ``size``: COCO's when num_classes is 81, VOC's otherwise (custom data)."""
    if size not in (300, 512):
        raise ValueError(f"size must be 300 or 512, got {size!r}")
    if num_classes == 81:
        cfg = coco if size == 300 else coco512
    else:
        cfg = voc if size == 300 else voc512
    return dict(cfg, num_classes=num_classes)


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


def scaled_schedule(num_images, batch_size, max_iter=None):
    """The schedule of custom data, scaled to its size: as many epochs as
    the paper's VOC schedule (120k iterations at batch 32 over the 16551
    images of VOC07+12, 232 epochs), rounded up to a multiple of 100 and at
    most 120k; lr steps at 2/3 and 5/6 of it (VOC's 80k and 100k of 120k),
    evaluation every 1/12 (10k) and snapshots every 1/24 (5k), at the end
    only when that is under one iteration. ``max_iter``
    (a ``--max_iter`` given) keeps the iterations and scales the rest.
    Returns a dict with ``max_iter``, ``lr_steps``, ``eval_every`` and
    ``save_every``: 500 images at batch 32 give 3700 iterations, steps 2466
    and 3083, evaluation every 308, snapshots every 154."""
    if max_iter is None:
        epochs = voc['max_iter'] * PAPER['batch_size'] / VOC0712_TRAINVAL_IMAGES
        its = -(-epochs * max(int(num_images), 1) // max(int(batch_size), 1))
        max_iter = int(min(voc['max_iter'], max(100, -(-its // 100) * 100)))
    frac = [s / voc['max_iter'] for s in voc['lr_steps'] if s < voc['max_iter']]
    return dict(max_iter=int(max_iter),
                lr_steps=tuple(dict.fromkeys(int(max_iter * f) for f in frac
                                             if int(max_iter * f) > 0)),
                eval_every=max_iter * PAPER['eval_every'] // voc['max_iter'] or max_iter,
                save_every=max_iter * PAPER['save_every'] // voc['max_iter'] or max_iter)


def schedule_config(name, size=300):
    """The config dict whose schedule a dataset trains with: VOC's for VOC
    and custom data, COCO's for COCO, the preset's for shapes (the schedule
    of SSD512 is that of SSD300)."""
    name = dataset_name(name)
    if name == 'shapes':
        return shapes
    if name == 'COCO':
        return coco if size == 300 else coco512
    return voc if size == 300 else voc512
