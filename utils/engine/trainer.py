"""The SSD training run behind ``train.py``: set-up, then the loop.

It receives one complete :class:`~utils.engine.run_config.RunConfig` (every
default already filled by ``resolve_run_config``) and decides no default
itself. :func:`train` reads top to bottom: distributed set-up and seeds, datasets,
network (basenet or resume), optimiser, DDP / torch.compile, then the
iteration loop (lr, forward/backward, NaN policy, step, logs, snapshots,
evaluation), then the final weights, checkpoint and loss plot.
"""
import errno
import json
import math
import os
import sys
import warnings

import torch

from data.config import model_config, preprocess_of
from layers import MultiBoxLoss
from ssd import build_ssd, memory_format
from utils.training import distributed as D
from utils.checkpoint import CheckpointError, SaveError, atomic_save, load_into, remove_stale_temp
from utils.weights import (attach_record, check_backbone, load_weights, model_record,
                           read_weights)
from utils.training.lock import SaveFolderLock
from utils.training.logger import MLflowWriter, TrainLogger, VisdomPlotter, plot_loss_curves
from data.loader import make_loader, seed_all
from utils.training.schedule import init_weights, lr_at, make_optimizer, set_lr
from utils.training.state import (full_state, get_rng_state, is_full_checkpoint,
                                  restore_full_state, set_rng_state)
from utils.training.step import (AMP_DTYPES, BadSamples, NonFinitePolicy, NormStats, StopSignal,
                                 forward_backward, forward_backward_accum, optimizer_step)
from utils.training.finetune import freeze, init_from_pretrained

VGG_HELP = ('download https://s3.amazonaws.com/amdegroot-models/vgg16_reducedfc.pth '
            'into weights/ (see weights/README.md), or convert torchvision\'s ImageNet '
            'VGG16 with `python -m utils.convert_vgg`; --basenet none trains from scratch')
BASENET_HELP = ('convert torchvision\'s ImageNet {b} with `python -m utils.convert_imagenet '
                '--arch {b}` (weights/README.md); --basenet none trains from scratch')


# ------------------------------------------------------------------ set-up

def build_datasets(c):
    """Training set (with the ``--augment`` transform), validation set (the first of
    ``c.val_splits`` on disk, or None) and the model's config dict, for the
    :class:`~utils.engine.run_config.RunConfig` ``c``: the backbone's at
    ``c.size`` (the shapes preset for shapes), with ``--priors`` merged in;
    the transforms normalise as that config says (``data.config.preprocess_of``)."""
    from data import BaseTransform, get_dataset
    from data.augmentations import train_transform
    train_ds = get_dataset(c.dataset, c.dataset_root, c.train_sets,
                           **_dataset_kw(c, c.train_images))
    cfg = model_config(c.dataset, len(train_ds.classes) + 1, c.size, c.backbone)
    if getattr(c, 'priors', None):
        from data.priors import load_priors
        cfg = load_priors(c.priors, cfg)
    mean, std = preprocess_of(cfg)
    train_ds.transform = train_transform(c.augment, c.size, mean, std)
    val_ds, err = None, None
    for split in c.val_splits:
        try:
            val_ds = get_dataset(c.dataset, c.dataset_root, split,
                                 transform=BaseTransform(c.size, mean, std),
                                 **_dataset_kw(c, c.val_images))
            break
        except (ValueError, OSError) as e:   # this split is not on disk
            err = e
    if c.val_splits and val_ds is None:
        warnings.warn(f'no validation split found ({err}); evaluation during '
                      'training is off', RuntimeWarning)
    return train_ds, val_ds, cfg


def _dataset_kw(c, num_images):
    kw = dict(channel_order=c.channel_order)
    if c.dataset == 'shapes':
        kw['num_images'] = num_images
    return kw


def load_basenet(net, args):
    """Load ``--basenet`` (the ImageNet VGG16 reduced-fc, or another backbone's
    converted ImageNet trunk) into ``net.trunk()``; train from scratch with
    ``--basenet none`` (the shapes preset's default)."""
    if str(args.basenet).lower() in ('', 'none'):
        init_weights(net, from_scratch=True, head_std=net.cfg.get('head_std'))
        return None
    init_weights(net, from_scratch=False)
    candidates = [args.basenet, os.path.join('weights', args.basenet),
                  os.path.join(args.save_folder, args.basenet)]
    path = next((p for p in candidates if os.path.isfile(p)), None)
    if path is None:
        raise CheckpointError(f'basenet {args.basenet} not found (looked in '
                              f'{", ".join(dict.fromkeys(candidates))}): '
                              + (VGG_HELP if net.backbone_name == 'vgg16' else
                                 BASENET_HELP.format(b=net.backbone_name)))
    load_into(net.trunk(), path)
    return path


def make_amp(args, device):
    """``(amp_dtype or None, GradScaler)``: autocast only on CUDA."""
    amp = args.amp
    if amp != 'off' and device.type != 'cuda':
        warnings.warn(f'--amp {amp} is for CUDA; training in float32 on {device}',
                      RuntimeWarning)
        amp = 'off'
    if amp == 'bf16' and not torch.cuda.is_bf16_supported():
        warnings.warn('this GPU has no bf16; using --amp fp16', RuntimeWarning)
        amp = 'fp16'
    scaler = torch.amp.GradScaler('cuda', enabled=amp == 'fp16')
    return AMP_DTYPES[amp], scaler


def snapshot_name(args, cfg, tag):
    """ssd.pytorch's snapshot name: ``ssd300_VOC_5000.pth`` (another backbone:
    ``ssd320_mobilenet_v3_large_VOC_5000.pth``)."""
    net = '' if cfg.get('backbone', 'vgg16') == 'vgg16' else f"_{cfg['backbone']}"
    return os.path.join(args.save_folder, f"ssd{cfg['min_dim']}{net}_{args.dataset}_{tag}.pth")


# -------------------------------------------------------------------- loop

class Run:
    """The state one training run carries between the helpers below."""

    def __init__(self, args, info):
        self.args, self.info = args, info
        self.best_map = None
        self.start_iter = 0
        self.status = 'running'


def setup(args, info):
    """Everything before the loop; returns a :class:`Run`."""
    r = Run(args, info)
    seed_all(D.rank_seed(args.seed, info.rank))
    r.train_ds, r.val_ds, r.cfg = build_datasets(args)
    r.batch = D.per_rank_batch(args.batch_size, info.world_size)
    net = build_ssd('train', r.cfg['min_dim'], r.cfg['num_classes'], cfg=r.cfg)
    r.record = model_record(net, r.train_ds.classes, args.dataset, args.channel_order)
    ckpt = read_weights(args.resume) if args.resume else None
    r.notes = []
    if ckpt is None and args.pretrained:     # a trained detector, iteration 0
        r.basenet = None
        r.notes.append(init_from_pretrained(net, args.pretrained)[1])
    elif ckpt is None:
        r.basenet = load_basenet(net, args)
    if ckpt is not None and args.pretrained:
        r.notes.append(f'--pretrained {args.pretrained} not used: continuing from --resume')
    if args.freeze:
        n = freeze(net, args.freeze)
        r.notes.append(f'frozen: {", ".join(args.freeze)} ({n} parameters)')
    if args.sync_bn and info.distributed:
        net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
    fmt = (memory_format(net) if args.channels_last is None      # build_ssd's fastest
           else torch.channels_last if args.channels_last else torch.contiguous_format)
    net.to(info.device, memory_format=fmt)
    if info.device.type == 'cuda':
        torch.backends.cudnn.benchmark = True     # fixed input size: autotuned convolutions
    r.net, r.fmt = net, fmt
    r.optimizer = make_optimizer(net, args.lr, args.momentum, args.weight_decay,
                                 args.optimizer, caffe_bias=args.caffe_bias)
    r.amp_dtype, r.scaler = make_amp(args, info.device)
    r.schedule = dict(name='multistep' if args.lr_schedule == 'step' else args.lr_schedule,
                      base_lr=args.lr, lr_steps=list(args.lr_steps),
                      gamma=args.gamma, warmup=args.warmup, max_iter=args.max_iter)
    r.policy = NonFinitePolicy(args.nan_policy, args.nan_max_skips)
    r.norm_stats = NormStats(net) if args.nan_policy == 'skip' else None
    if ckpt is not None:
        _resume(r, ckpt)
    model = net
    if info.distributed:
        ids = [info.device] if info.device.type == 'cuda' else None
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    r.ddp = model if info.distributed else None
    r.model = torch.compile(model) if args.compile else model
    r.criterion = MultiBoxLoss(r.cfg['num_classes'], 0.5, True, 0, True, 3, 0.5, False,
                               info.device.type == 'cuda', variance=r.cfg['variance'],
                               divide_by_n=not args.no_divide_by_n, mining=args.mining)
    return r


def _resume(r, weights):
    """Continue from ``--resume`` (a :class:`~utils.weights.WeightFile`): a
    full checkpoint exactly, a weights-only file at ``--start_iter``."""
    args, ckpt = r.args, weights.obj
    check_backbone(r.net, weights)      # one line naming both backbones
    if is_full_checkpoint(ckpt):
        if args.start_iter:
            warnings.warn('--start_iter is ignored: the full checkpoint '
                          f'{args.resume} continues at iteration {ckpt["iteration"]}')
        old = ckpt.get('scheduler') or {}
        if old.get('base_lr') not in (None, args.lr) or \
                list(old.get('lr_steps', args.lr_steps)) != list(args.lr_steps):
            warnings.warn(f'{args.resume} was trained with lr {old.get("base_lr")} and '
                          f'steps {old.get("lr_steps")}; continuing with lr {args.lr} and '
                          f'steps {list(args.lr_steps)}', RuntimeWarning)
        try:
            it, r.best_map, r.policy.skipped = restore_full_state(
                ckpt, r.net, r.optimizer, r.scaler, restore_rng=r.info.is_main)
            if (ckpt.get('args') or {}).get('eval_metric', 'voc07') != args.eval_metric:
                r.best_map = None       # the best so far was judged by another metric
        except (RuntimeError, ValueError, KeyError) as e:
            from utils.weights import other_size
            other = other_size(weights.state, args.size) if args.dataset != 'shapes' else None
            if other:
                raise CheckpointError(f'{args.resume}: these are SSD{other} weights, not '
                                      f'SSD{args.size}: pass --size {other}') from None
            raise CheckpointError(f'{args.resume}: does not fit this model or optimiser '
                                  f'({str(e).splitlines()[0][:200]})') from None
        if not r.info.is_main:   # other ranks: their own seed, moved by the iteration
            seed_all(D.rank_seed(args.seed, r.info.rank) + it)
        r.start_iter = it
    else:                         # ssd.pytorch: weights only, with --start_iter
        load_weights(r.net, weights)
        r.start_iter = args.start_iter


def save_checkpoint(r, it):
    """``checkpoint.pth`` (full state), written atomically, rank 0 only."""
    if r.info.is_main:
        state = full_state(r.net, r.optimizer, r.scaler, it, r.schedule, r.args,
                           r.best_map, r.policy.skipped)
        state['record'] = r.record
        attach_record(state['model'], r.record)
        atomic_save(state, os.path.join(r.args.save_folder, 'checkpoint.pth'))


def save_on_error(r, e):
    """A run stopping on the error ``e`` saves ``checkpoint.pth`` at the last
    completed iteration first (rank 0), when its state is sound: not in the
    middle of an optimiser step, not a failed save (the disk is full or the
    folder unwritable: the previous checkpoint stays), and past the
    iteration it started at. The error's one-line message then says so."""
    it = getattr(r, 'iteration', r.start_iter)
    if not r.info.is_main or not getattr(r, 'sound', False) or isinstance(e, SaveError) \
            or it <= r.start_iter:
        return
    try:
        save_checkpoint(r, it)
    except CheckpointError:
        return
    if len(e.args) == 1 and isinstance(e.args[0], str):
        e.args = (f'{e.args[0]} [{os.path.join(r.args.save_folder, "checkpoint.pth")} '
                  f'saved at iteration {it}: --resume it to continue]',)


def save_weights(r, path):
    """A weights-only snapshot (a plain state dict, as ssd.pytorch's) that
    carries the model record in its metadata (``utils.weights``)."""
    if r.info.is_main:
        atomic_save(attach_record(r.net.state_dict(), r.record), path)


def evaluate(r, it, log):
    """``--eval_metric`` (VOC07 mAP, VOC2010+ mAP or COCO AP) on the
    validation split (rank 0); keeps the best weights by it. The evaluation
    at the last iteration also writes the error analysis into
    ``<save_folder>/analysis/`` (eval.py --analysis's files)."""
    if r.val_ds is None:
        return None
    value = None
    if r.info.is_main:
        from utils.evaluation import evaluate as E
        metric = r.args.eval_metric
        state = get_rng_state()
        last = it >= r.args.max_iter
        res = E.evaluate_model(r.net, r.val_ds, device=r.info.device,
                               batch_size=r.args.eval_batch_size,
                               num_workers=min(r.args.num_workers, 2), metrics=(metric,),
                               progress=not r.args.quiet,
                               analysis=os.path.join(r.args.save_folder, 'analysis') if last
                               else None)
        set_rng_state(state)
        value = E.headline(res, metric)
        log.evaluation(it, value, metric)
        if r.best_map is None or value > r.best_map:
            r.best_map = value
            save_weights(r, snapshot_name(r.args, r.cfg, 'best'))
    D.barrier()
    return value


def run(config):
    """``train.py``'s body: :func:`train` with ``config.threads`` torch
    threads; returns the exit code (0 finished, 130 interrupted)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        return 130 if train(config).status == 'interrupted' else 0
    finally:
        torch.set_num_threads(threads)


def train(args):
    """Run training as the complete :class:`~utils.engine.run_config.RunConfig`
    ``args`` says (build it with ``resolve_run_config``); return the
    :class:`Run` (status 'finished' or 'interrupted'). Raises NonFiniteLoss /
    CheckpointError / ValueError with one-line messages."""
    from utils.engine.cli import device_index
    info = D.init_distributed(args.cuda, device_index(getattr(args, 'device', None)),
                              getattr(args, 'dist_timeout', D.DIST_TIMEOUT))
    lock, finished = None, False
    try:
        if info.is_main:          # one run per save folder (utils.training.lock)
            lock = SaveFolderLock(args.save_folder).acquire()
            remove_stale_temp(args.save_folder)
        r = setup(args, info)
        if info.is_main:          # the run's settings, replayable (utils.engine.replay)
            write_run_config(r)
        _loop(r)
        finished = True
        return r
    finally:
        if lock is not None:
            lock.release()
        D.cleanup(barrier_first=finished)


def write_run_config(r):
    """``<save_folder>/config.json``: every resolved setting, the model config,
    the schedule, versions, git commit and command line (``utils.engine.replay``);
    a model config other than the replayed record's is said in one line."""
    from utils.engine import replay
    from utils.engine.run_config import build_parser
    old = getattr(r.args, 'replayed_from', None)
    if old and os.path.isfile(old):
        with open(old) as f:
            was = json.load(f).get('model')
        now = replay._plain(r.cfg)
        diff = sorted(k for k in set(was or {}) | set(now) if (was or {}).get(k) != now.get(k))
        if was is not None and diff:
            r.notes.append(f'the model config differs from {old} in: {", ".join(diff)}')
    replay.write(r.args, build_parser(), r.cfg, r.schedule)


def _mlflow(r):
    """The :class:`MLflowWriter` of ``--mlflow`` (rank 0), the settings as
    parameters, or None."""
    args = r.args
    if not getattr(args, 'mlflow', None) or not r.info.is_main:
        return None
    from utils.engine import replay
    from utils.engine.run_config import build_parser
    rec = replay.record(args, build_parser(), r.cfg, r.schedule)
    params = {k: json.dumps(v) if isinstance(v, (list, dict)) else v
              for k, v in rec['settings'].items()}
    tags = dict(rec['versions'], git_commit=rec['git_commit'], start_iter=r.start_iter,
                save_folder=os.path.abspath(args.save_folder))
    return MLflowWriter(args.mlflow, params, {f'ssd.{k}': v for k, v in tags.items()},
                        run_name=os.path.basename(os.path.abspath(args.save_folder)))


def _loop(r):
    args, info = r.args, r.info
    vis = VisdomPlotter(args.visdom_server, args.visdom_port, args.visdom_env) \
        if args.visdom and info.is_main else None
    log = TrainLogger(args.save_folder, r.start_iter, args.max_iter, args.log_every,
                      vis, enabled=info.is_main, progress=not args.quiet,
                      tensorboard=args.tensorboard if info.is_main else None,
                      mlflow=_mlflow(r))
    _describe(r, log)
    D.check_same(r.start_iter, 'the iteration to start at', info.device)
    say = log.write if info.is_main else \
        (lambda m: print(f'rank {info.rank}: {m}', file=sys.stderr))
    r.bad = BadSamples(args.max_bad, say)
    loader = make_loader(r.train_ds, r.batch, args.seed, r.start_iter,
                         args.max_iter, info.rank, info.world_size, args.num_workers,
                         pin_memory=info.device.type == 'cuda',
                         skip_bad=args.skip_bad, on_skip=r.bad, shuffle=args.shuffle)
    it = r.iteration = r.start_iter
    r.sound = True
    try:
        with StopSignal() as stop:
            it = _iterate(r, loader, log, stop)
        if r.status != 'interrupted':
            r.status = 'finished'
            if args.eval_every and it % args.eval_every:
                evaluate(r, it, log)
            save_weights(r, os.path.join(args.save_folder, f'{args.dataset}.pth'))
        save_checkpoint(r, it)
    except Exception as e:
        save_on_error(r, e)
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise SaveError(f'{args.save_folder}: no space left on device while writing '
                            f'the logs ({e.strerror or e})') from None
        raise
    finally:
        if r.bad.summary():
            say(r.bad.summary())
        log.close(r.status)
    if info.is_main and log.enabled:
        plot_loss_curves(log.csv_path, os.path.join(args.save_folder, 'loss.png'),
                         f"SSD{r.cfg['min_dim']} on {args.dataset}")
        print(f'{r.status} at iteration {it}; training time {log.train_time:.1f} s; '
              f'weights and logs in {args.save_folder}', file=sys.stderr)
    r.iteration, r.train_time = it, log.train_time


def _iterate(r, loader, log, stop):
    """The iteration loop; returns the number of finished iterations."""
    args, info = r.args, r.info
    it = r.start_iter
    batches = iter(loader)
    while it < args.max_iter:
        failed = None
        try:
            images, targets = next(batches)
        except Exception as e:
            if stop.requested:           # a worker died of the same Ctrl-C
                r.status = 'interrupted'
                return it
            failed = e
        if D.env_world_size() > 1:       # all stop together, before the step's collectives
            who = D.first_failed(failed is not None, info.device)
            if who is not None and failed is None:
                raise D.PeerStopped(f'process {who} stopped on an error at iteration {it} '
                                    '(its message above); stopping too')
        if failed is not None:
            raise failed
        lr = lr_at(it, args.lr, args.lr_steps, args.gamma, args.warmup,
                   args.lr_schedule, args.max_iter)
        set_lr(r.optimizer, lr)
        images = images.to(info.device, non_blocking=True, memory_format=r.fmt)
        targets = [t.to(info.device, non_blocking=True) for t in targets]
        if r.norm_stats is not None:    # a skipped step must not keep its BN statistics
            r.norm_stats.keep()
        if args.accum_steps > 1:        # K micro-batches, N summed over them
            loss_l, loss_c = forward_backward_accum(
                r.model, r.criterion, images, targets, args.accum_steps, r.net.priors,
                r.amp_dtype, r.scaler, r.ddp)
        else:
            loss_l, loss_c = forward_backward(r.model, r.criterion, images, targets,
                                              r.amp_dtype, r.scaler)
        vals = torch.stack([loss_l, loss_c]).tolist()   # the one host sync per step
        bad = not all(math.isfinite(v) for v in vals)
        bad, stopping = _agree(bad, stop.requested, info.device)
        if r.policy.check(it, vals[0], vals[1], bad):
            r.sound = False              # a failure inside the update leaves no sound state
            optimizer_step(r.optimizer, r.scaler)
            r.sound = True
        else:
            r.optimizer.zero_grad(set_to_none=True)
            if r.norm_stats is not None:
                r.norm_stats.restore()
            log.write(f'iteration {it}: non-finite loss {vals}, update skipped '
                      f'({r.policy.skipped} so far)')
        log.step(it, vals[0], vals[1], lr, images.shape[0] * info.world_size,
                 r.policy.skipped)
        it += 1
        r.iteration = it
        _periodic(r, it, log)
        if stopping:
            r.status = 'interrupted'
            log.write(f'signal received: saving {args.save_folder}/checkpoint.pth '
                      f'at iteration {it} and stopping')
            return it
    return it


def _agree(bad, stop, device):
    """Make every process take the same decision (skip / stop)."""
    if not D.env_world_size() > 1:
        return bad, bool(stop)
    t = torch.tensor([float(bad), float(bool(stop))], device=device)
    D.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return bool(t[0] > 0), bool(t[1] > 0)


def _periodic(r, it, log):
    args = r.args
    if it % args.save_every == 0 or (args.eval_every and it % args.eval_every == 0):
        log.pause()
        if it % args.save_every == 0:
            save_weights(r, snapshot_name(args, r.cfg, it))
            save_checkpoint(r, it)
        if args.eval_every and it % args.eval_every == 0:
            evaluate(r, it, log)
        log.resume()


def _describe(r, log):
    a = r.args
    log.write(f"SSD{r.cfg['min_dim']} on {a.dataset} ({len(r.train_ds)} images, "
              f"{r.cfg['num_classes'] - 1} classes) on {r.info.device} x{r.info.world_size}; "
              f"batch {a.batch_size} (global), {a.optimizer} lr {a.lr:g}, "
              + (f"steps {list(a.lr_steps)}" if a.lr_schedule == 'step' else a.lr_schedule + ' decay')
              + f", warm-up {a.warmup}, iterations {r.start_iter}..{a.max_iter}"
              + ('' if a.no_divide_by_n is False else '; loss NOT divided by N')
              + (f'; {a.accum_steps} micro-batches of {a.batch_size // r.info.world_size // a.accum_steps} '
                 'per step' if a.accum_steps > 1 else ''))
    for note in getattr(r, 'notes', ()):
        log.write(note)
