"""``train.py``'s settings, resolved once: the flags (:func:`build_parser`),
then every default filled in (:func:`resolve_run_config`), giving one
complete :class:`RunConfig` that the loop (:mod:`utils.engine.trainer`) reads
and never completes itself.

To add a flag: add it to :func:`build_parser`; when its default depends on
the dataset or on another flag, give it ``default=None`` and fill it in
:func:`resolve_run_config` (the one place where defaults are decided).
The schedule defaults come from ``data.config`` (``PAPER``,
``schedule_defaults``, ``schedule_config``).
"""
import argparse
import os
import warnings

import torch

from data.config import (BACKBONES, DEFAULT_BASENETS, DEFAULT_SIZES, eval_splits, scaled_schedule,
                         schedule_config, schedule_defaults, shapes_preset,
                         shapes as SHAPES_CFG)
from data.augmentations import AUGMENTS
from utils.engine.cli import (add_cuda_flag, add_dataset_flag, backbone_flag,  # noqa: F401
                              cuda_request, size_flag, str2bool)
from layers.modules.multibox_loss import MINING
from utils.training.finetune import parse_freeze

#: Flags whose defaults come from the dataset's schedule.
SCHEDULE_FLAGS = ('batch_size', 'lr', 'momentum', 'weight_decay', 'gamma', 'warmup',
                  'save_every', 'eval_every', 'max_iter', 'optimizer', 'lr_schedule')


class RunConfig(argparse.Namespace):
    """Every setting of one training run, complete: the flags of
    :func:`build_parser` with no default left at None (except the shapes-only
    ``train_images`` / ``val_images`` on other datasets, ``pretrained``, ``resume``
    and ``val_set`` when not given), plus ``val_splits``:
    the validation splits tried in order (empty when ``eval_every`` is 0 or
    ``--val_set none``); ``train_sets`` is a tuple of image-set names.
    Build it with :func:`resolve_run_config` or :func:`parse_run_config`."""


def int_list(v):
    return tuple(int(x) for x in v.replace(' ', '').split(',') if x)


def positive_int(v):
    """argparse type: an integer > 0 (a bad value is an argparse error)."""
    n = int(v)
    if n <= 0:
        raise argparse.ArgumentTypeError(f'must be a positive integer, got {v}')
    return n


def non_negative_int(v):
    """argparse type: an integer >= 0."""
    n = int(v)
    if n < 0:
        raise argparse.ArgumentTypeError(f'must be 0 or a positive integer, got {v}')
    return n


def default_workers(cap=4):
    """DataLoader workers per process when --num_workers is not given: 4,
    never more than the CPUs this process may use (torch warns above that)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(0, min(cap, cpus))


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows '(default: X)' except for defaults left to resolve_run_config,
    whose help says what they become."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


def build_parser():
    """train.py's flags. Defaults that depend on the dataset are None here
    and filled by :func:`resolve_run_config`."""
    p = argparse.ArgumentParser(
        description='Single Shot MultiBox Detector training with PyTorch',
        formatter_class=_HelpFormatter)
    a = p.add_argument
    # ssd.pytorch's flags
    add_dataset_flag(p, 'VOC', 'VOC, COCO, the synthetic shapes (offline demo), or a custom '
                     'folder (any case)')
    a('--dataset_root', default=None,
      help='dataset root (default: data.VOC_ROOT / data.COCO_ROOT)')
    a('--basenet', default=None,
      help='ImageNet VGG16 reduced-fc weights for net.vgg (in weights/); none: from scratch '
           '(default: vgg16_reducedfc.pth; none for the shapes preset; --pretrained replaces it)')
    a('--batch_size', default=None, type=positive_int,
      help='GLOBAL batch size (split over torchrun processes); the default follows the dataset schedule: 32, or {} for shapes'.format(SHAPES_CFG['batch_size']))
    a('--resume', default=None, type=str,
      help='checkpoint.pth (continues exactly) or weights-only .pth (with --start_iter); '
           'auto: --save_folder/checkpoint.pth when it exists, else a fresh start')
    a('--start_iter', default=0, type=int,
      help='first iteration when --resume is a weights-only file')
    a('--num_workers', default=None, type=non_negative_int,
      help='DataLoader workers per process (default: 4, at most the CPUs available; '
           '0 for shapes, generated in memory)')
    add_cuda_flag(p)
    a('--lr', '--learning-rate', default=None, type=float, help=f"initial learning rate (default: the schedule's: 1e-3, shapes {SHAPES_CFG['lr']:g})")
    a('--momentum', default=None, type=float, help='SGD momentum (default: the schedule\'s: 0.9)')
    a('--weight_decay', default=None, type=float, help=f"weight decay (default: the schedule's: 5e-4, shapes {SHAPES_CFG['weight_decay']:g})")
    a('--gamma', default=None, type=float, help='lr factor at each step (default: the schedule\'s: 0.1)')
    a('--visdom', default=False, type=str2bool, help='plot losses on a visdom server')
    a('--save_folder', default='weights/', help='where weights, logs and checkpoint.pth go')
    # new flags
    a('--size', default=None, type=size_flag,
      help='input size: 300 or 512 (the paper\'s SSD300 / SSD512), or any multiple of 32 from '
           '256 to 1024 (the priors follow SSD\'s rule at that size; the feature maps come from '
           'the network) (default: the backbone\'s: 300, SSDlite 320; the shapes preset\'s 160)')
    a('--backbone', default=None, type=backbone_flag, metavar='{%s}' % ','.join(BACKBONES),
      help='the network: vgg16 (the paper\'s), mobilenet_v3_large / mobilenet_v2 (SSDlite320), '
           'resnet50 (NVIDIA\'s SSD300 v1.1) (default: the one the --resume or --pretrained file '
           'records, else vgg16)')
    a('--priors', default=None,
      help='a JSON prior config (min/max sizes and aspect ratios per source, as `python -m '
           'data.priors` writes it) instead of the backbone\'s; the weight files record it')
    a('--max_iter', default=None, type=positive_int, help='iterations (default: the config\'s)')
    a('--lr_steps', default=None, type=int_list,
      help='comma-separated iterations where lr *= gamma (default: the config\'s)')
    a('--warmup', default=None, type=int, help=f"linear lr warm-up iterations (default: 0, shapes {SHAPES_CFG['warmup']})")
    a('--lr_schedule', default=None, choices=['step', 'cosine'],
      help='step: lr *= gamma at each of --lr_steps (the paper; default); cosine: after '
           'the warm-up, a cosine decay from --lr to 0 at --max_iter (the shapes preset)')
    a('--optimizer', default=None, choices=['sgd', 'adamw'],
      help='sgd (the paper; default) or adamw (the shapes preset\'s short schedule)')
    a('--save_every', default=None, type=positive_int,
      help=f"iterations between snapshots and checkpoint.pth (default 5000, shapes {SHAPES_CFG['save_every']})")
    a('--eval_every', default=None, type=non_negative_int,
      help='iterations between validation runs (--eval_metric), also run at the end; keeps '
           f"<name>_best.pth (default: the schedule's, 10000, or {SHAPES_CFG['eval_every']} for shapes; 0: never)")
    a('--eval_metric', default=None, choices=['voc07', 'voc12', 'coco'],
      help='the validation metric logged and the best model kept by: VOC07 mAP, VOC2010+ '
           'mAP or COCO AP (default: coco for COCO, else voc07)')
    a('--eval_batch_size', default=16, type=int)
    a('--amp', default='off', nargs='?', const='bf16', choices=['off', 'bf16', 'fp16'],
      help='mixed precision on CUDA (--amp alone means bf16)')
    a('--seed', default=0, type=int, help='seed of weights, data order and augmentation')
    a('--channels_last', default=None, nargs='?', const=True, type=str2bool,
      help='memory format of the network: True (or the flag alone) NHWC, False NCHW: '
           'PyTorch\'s default convolutions, ssd.pytorch\'s numerics bit for bit '
           '(doc/reproduction.md) (default: the fastest here, NHWC with oneDNN on the CPU '
           'and on CUDA)')
    a('--dist_timeout', default=600, type=positive_int, metavar='SECONDS',
      help='under torchrun: how long a process waits for the others (every step, and '
           'while rank 0 evaluates) before it stops with a one-line error naming the '
           'stuck or dead peer; raise it when an evaluation takes longer (default: 600; '
           'PyTorch\'s is 30 minutes)')
    a('--shuffle', default=True, type=str2bool,
      help='a seeded permutation of the training set every epoch; False: dataset order '
           '(a fixed order another trainer can reproduce) (default: True)')
    a('--mining', default='row', choices=MINING,
      help='hard-negative ranking: row (the per-row log-softmax, exact for any logits) or '
           'global_max (ssd.pytorch\'s log_sum_exp with one max over the batch, whose '
           'underflow drops rows when logits spread by more than ~88) (default: row)')
    a('--compile', action='store_true', help='torch.compile the network')
    a('--sync_bn', action='store_true', help='SyncBatchNorm under DDP (BN models)')
    a('--augment', default=None, choices=AUGMENTS,
      help='training augmentation: ssd (the paper\'s; default for VOC, COCO, custom), '
           'shapes (the shapes preset\'s mirror-only; its default) or none (ssd.pytorch\'s '
           'BaseTransform: resize, minus the means; doc/reproduction.md)')
    a('--caffe_bias', action='store_true',
      help='Caffe\'s bias settings: biases at 2x the lr and without weight decay '
           '(doc/reproduction.md)')
    a('--no_divide_by_n', action='store_true',
      help='ablation: do not divide loss_l and loss_c by N (doc/loss_normalization.md)')
    a('--nan_policy', default='stop', choices=['stop', 'skip'],
      help='on a NaN/Inf loss: stop with a message, or skip the update and count')
    a('--nan_max_skips', default=20, type=int,
      help='with --nan_policy skip: stop after this many non-finite steps in a row')
    a('--skip_bad', action='store_true',
      help='skip a bad training sample (unreadable image or annotation), naming it once, '
           'instead of stopping (default: stop with one line naming the file, after '
           'saving checkpoint.pth)')
    a('--max_bad', default=100, type=positive_int,
      help='with --skip_bad: stop when more than this many different samples are bad')
    a('--log_every', default=10, type=int, help='iterations per metrics.csv row')
    a('--quiet', action='store_true', help='no progress bar')
    a('--threads', default=None, type=int,
      help='torch CPU threads (default: torch\'s choice, the number of cores)')
    a('--channel_order', default=None, choices=['RGB', 'BGR'],
      help='network input channel order (default: RGB, or the order the --pretrained file '
           'records or is known by; BGR for Caffe-converted weights)')
    a('--train_images', default=None, type=int, help='shapes: training images (default: the shapes preset\'s train_images)')
    a('--val_images', default=None, type=int, help='shapes: validation images (default: 200)')
    a('--visdom_server', default='http://localhost')
    a('--visdom_port', default=8097, type=int)
    a('--visdom_env', default='SSD')
    a('--tensorboard', default=None,
      help='write TensorBoard scalars (losses, lr, img/s, the validation metric) to this '
           'folder; True: <save_folder>/tensorboard (default: none)')
    a('--mlflow', default=None, nargs='?', const='True',
      help='log the same scalars to MLflow, with the settings as parameters (pip install '
           'mlflow); alone or True: a local store in <save_folder>/mlruns (no server); or a '
           'tracking URI (file:, sqlite:, http:) (default: none)')
    a('--config', default=None,
      help='replay a run: the config.json train.py wrote into its --save_folder; flags '
           'given beside it override it (doc/training.md, "Replaying a run")')
    # fine-tuning, image sets, gradient accumulation (doc/training.md)
    a('--pretrained', default=None,
      help='start from a trained detector (ssd.pytorch\'s, ours, or converted from '
           'torchvision or Caffe): every tensor whose shape fits is loaded, the rest (the conf '
           'heads for other classes) re-initialised and listed in one line; iteration 0, a '
           'fresh optimizer; replaces --basenet')
    a('--freeze', default=None, type=parse_freeze,
      help='comma-separated modules kept fixed (not in the optimizer): vgg, L2Norm, extras, '
           'loc, conf; e.g. --freeze vgg (default: none)')
    a('--accum_steps', default=1, type=int,
      help='gradient accumulation: each step runs K micro-batches of batch_size / '
           '(processes x K) images, N summed over them (one step = one step on the whole batch)')
    a('--train_sets', default=None,
      help='comma-separated training image sets (default: VOC 2007_trainval,2012_trainval; '
           'COCO train2017, else train2014; custom train, else trainval; see data/factory.py)')
    a('--val_set', default=None,
      help='validation image set (default: VOC 2007_test; COCO val2017, else val2014; custom '
           'val, else test: none on disk turns evaluation off with a warning); none: no '
           'evaluation')
    return p


def resolve_run_config(args):
    """Fill every default of the parsed flags ``args`` (argparse.Namespace)
    and return a new :class:`RunConfig`. Raises ValueError (one line) for
    flags that cannot work together."""
    c = RunConfig(**vars(args))
    shapes = c.dataset == 'shapes'
    if c.resume == 'auto':        # elastic restarts: continue when a checkpoint exists
        ckpt = os.path.join(c.save_folder, 'checkpoint.pth')
        c.resume = ckpt if os.path.isfile(ckpt) else None
        if c.resume and getattr(c, 'pretrained', None):
            c.pretrained = None   # the checkpoint continues the run it started
    _model_from_file(c)
    if c.size is None:                      # the preset's or the backbone's own size
        c.size = shapes_preset(c.backbone)['min_dim'] if shapes else DEFAULT_SIZES[c.backbone]
    if c.priors is not None and not os.path.isfile(c.priors):
        raise ValueError(f'--priors {c.priors}: no such file')
    d = schedule_defaults(schedule_config(c.dataset, c.size, c.backbone))
    _resolve_sets(c)
    if c.dataset == 'custom':       # the schedule scaled to the dataset's size
        d.update(_custom_schedule(c, d['batch_size'] if c.batch_size is None
                                  else c.batch_size))
    for k in SCHEDULE_FLAGS:
        if getattr(c, k, None) is None:
            setattr(c, k, d[k])
    c.lr_steps = tuple(int(s) for s in (d['lr_steps'] if c.lr_steps is None else c.lr_steps))
    _resolve_pretrained(c)
    c.freeze = tuple(c.freeze or ())
    if c.basenet is None:
        c.basenet = 'none' if shapes else DEFAULT_BASENETS[c.backbone]
    if c.augment is None:
        c.augment = 'shapes' if shapes else 'ssd'
    if c.num_workers is None:     # shapes: in memory; a worker would contend with torch's threads
        c.num_workers = 0 if shapes else default_workers()
    if c.threads is None:
        c.threads = torch.get_num_threads()
    c.cuda, index = cuda_request(c.cuda, getattr(c, 'device', None))  # --cuda / --device
    if c.cuda is None:            # the device rule (utils.engine.cli.select_device)
        c.cuda = torch.cuda.is_available()
    c.device = 'cpu' if not c.cuda else 'cuda' if index is None else f'cuda:{index}'
    if shapes:
        from data.shapes import DEFAULT_SIZES as SPLIT_SIZES
        preset = shapes_preset(c.backbone)    # the demo's recipe may set it
        c.train_images = c.train_images or preset.get('train_images', SPLIT_SIZES['train'])
        c.val_images = c.val_images or SPLIT_SIZES['val']
    late = [s for s in c.lr_steps if s >= c.max_iter] if args.lr_steps is not None else []
    if late:
        warnings.warn(f'--lr_steps {",".join(map(str, late))} at or beyond --max_iter '
                      f'{c.max_iter}: never reached', RuntimeWarning)
    if c.eval_metric is None:
        from utils.evaluation.evaluate import default_metric
        c.eval_metric = default_metric(c.dataset)
    if c.tensorboard is not None:       # a folder; True: one in --save_folder; False: off
        flag = c.tensorboard.lower()
        if flag in ('true', 'yes', '1'):
            c.tensorboard = os.path.join(c.save_folder, 'tensorboard')
        elif flag in ('false', 'no', '0', 'none', ''):
            c.tensorboard = None
    if c.mlflow is not None:            # a tracking URI; True: <save_folder>/mlruns; False: off
        from utils.training.logger import mlflow_uri
        c.mlflow = mlflow_uri(c.mlflow, c.save_folder)
    if c.val_set is None:
        c.val_splits = tuple(eval_splits(c.dataset)) if c.eval_every else ()
    else:
        c.val_splits = (c.val_set,) if c.eval_every and c.val_set.lower() != 'none' else ()
    _check_accum(c)
    return c


def _resolve_sets(c):
    """--train_sets (a tuple; the dataset's default when not given) and
    --val_set (checked when given). Needs --dataset_root."""
    from data.factory import default_train_sets, has_split, parse_sets
    if c.dataset_root is None and c.dataset in ('VOC', 'COCO'):
        from data import COCO_ROOT, VOC_ROOT
        c.dataset_root = VOC_ROOT if c.dataset == 'VOC' else COCO_ROOT
    if c.dataset == 'custom' and not c.dataset_root:
        raise ValueError('--dataset custom needs --dataset_root')
    c.train_sets = parse_sets(c.train_sets) or default_train_sets(c.dataset, c.dataset_root)
    if c.val_set is not None and c.val_set.lower() != 'none' and \
            not has_split(c.dataset, c.dataset_root, c.val_set):
        raise ValueError(f'--val_set {c.val_set}: not found in {c.dataset_root} '
                         '(--val_set none: no evaluation)')


def _custom_schedule(c, batch_size):
    """Custom data: the VOC schedule scaled to the number of training
    images (``data.config.scaled_schedule``); flags given keep their value."""
    from data import get_dataset
    try:
        n = len(get_dataset('custom', c.dataset_root, c.train_sets))
    except (ValueError, OSError):   # the trainer opens it and says what is wrong, in one line
        return {}
    return scaled_schedule(n, batch_size, c.max_iter)


def _model_from_file(c):
    """--backbone and --size not given: those that the --resume file (else
    the --pretrained one) records, so that a run continues or fine-tunes the
    model it starts from; else vgg16 and the backbone's size."""
    path = c.resume or c.pretrained
    rec = None
    if path and os.path.isfile(path) and (c.backbone is None or c.size is None):
        from utils.checkpoint import CheckpointError
        from utils.weights import read_weights
        try:
            rec = read_weights(path).record
        except CheckpointError:     # unreadable: the trainer's load says so in one line
            rec = None
    cfg = (rec or {}).get('cfg', {})
    if c.backbone is None:
        c.backbone = cfg.get('backbone', 'vgg16')
    if c.size is None and cfg.get('backbone', 'vgg16') == c.backbone and cfg.get('min_dim'):
        c.size = int(cfg['min_dim'])


def _resolve_pretrained(c):
    """--pretrained replaces --basenet; its channel order is the default.
    With --resume too, the run continues from --resume (the same command
    line can start a fine-tuning run and restart it)."""
    if c.pretrained:
        if c.basenet is not None:
            raise ValueError('--pretrained replaces --basenet: give one of them')
        c.basenet = 'none'
    if c.channel_order is None:
        c.channel_order = 'RGB'
        if c.pretrained and os.path.isfile(c.pretrained):
            from utils.weights import channel_order_for
            c.channel_order = channel_order_for(c.pretrained)


def _check_accum(c):
    """--accum_steps K: the global batch splits into processes x K
    micro-batches."""
    from utils.training.distributed import env_world_size
    world = env_world_size()
    if c.accum_steps < 1:
        raise ValueError('--accum_steps must be >= 1')
    if c.batch_size % (world * c.accum_steps):
        raise ValueError(f'--batch_size {c.batch_size} is the global batch and must be '
                         f'divisible by processes x --accum_steps ({world} x {c.accum_steps})')


def parse_run_config(argv=None):
    """Parse ``argv`` (None: sys.argv) and resolve it: the :class:`RunConfig`
    of ``python train.py ARGV``; with ``--config FILE``, the recorded run
    with ``argv``'s flags over it (``utils.engine.replay``). ``argv`` (its
    flags as given) is kept as ``config.argv`` for ``config.json``."""
    import sys
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.config:
        from utils.engine.replay import replay
        return replay(args.config, argv, build_parser, resolve_run_config)
    c = resolve_run_config(args)
    c.argv = argv
    return c
