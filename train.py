"""Train SSD: ``python train.py --dataset VOC --dataset_root ~/data/VOCdevkit/``.

ssd.pytorch's flags work as before; the schedule defaults are the paper's for
each dataset (see doc/training.md). Several GPUs or machines:
``torchrun --nproc_per_node=N train.py ...`` (``--batch_size`` is global).
"""
import argparse
import sys

import torch


def str2bool(v):
    if isinstance(v, bool):
        return v
    if v.lower() in ('yes', 'true', 't', '1', 'y'):
        return True
    if v.lower() in ('no', 'false', 'f', '0', 'n'):
        return False
    raise argparse.ArgumentTypeError(f'expected True or False, got {v!r}')


def int_list(v):
    return tuple(int(x) for x in v.replace(' ', '').split(',') if x)


def build_parser():
    p = argparse.ArgumentParser(
        description='Single Shot MultiBox Detector training with PyTorch',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    a = p.add_argument
    # ssd.pytorch's flags
    a('--dataset', default='VOC', choices=['VOC', 'COCO', 'shapes', 'custom'],
      help='VOC, COCO, the synthetic shapes (offline demo), or a custom folder')
    a('--dataset_root', default=None,
      help='dataset root (default: data.VOC_ROOT / data.COCO_ROOT)')
    a('--basenet', default='vgg16_reducedfc.pth',
      help='ImageNet VGG16 reduced-fc weights for net.vgg (in weights/); none: from scratch')
    a('--batch_size', default=None, type=int,
      help='GLOBAL batch size (split over torchrun processes); the default follows the dataset schedule: 32, or 16 for shapes')
    a('--resume', default=None, type=str,
      help='checkpoint.pth (continues exactly) or weights-only .pth (with --start_iter)')
    a('--start_iter', default=0, type=int,
      help='first iteration when --resume is a weights-only file')
    a('--num_workers', default=None, type=int, help='DataLoader workers per process')
    a('--cuda', default=None, type=str2bool,
      help='use CUDA (default: when available)')
    a('--lr', '--learning-rate', default=None, type=float, help='initial learning rate')
    a('--momentum', default=None, type=float, help='SGD momentum')
    a('--weight_decay', default=None, type=float, help='weight decay')
    a('--gamma', default=None, type=float, help='lr factor at each step')
    a('--visdom', default=False, type=str2bool, help='plot losses on a visdom server')
    a('--save_folder', default='weights/', help='where weights, logs and checkpoint.pth go')
    # new flags
    a('--size', default=300, type=int, choices=[300, 512],
      help='SSD300 or SSD512 (the shapes preset has its own size)')
    a('--max_iter', default=None, type=int, help='iterations (default: the config\'s)')
    a('--lr_steps', default=None, type=int_list,
      help='comma-separated iterations where lr *= gamma')
    a('--warmup', default=None, type=int, help='linear lr warm-up iterations')
    a('--optimizer', default=None, choices=['sgd', 'adamw'],
      help='sgd (the paper; default) or adamw (the shapes preset\'s short schedule)')
    a('--save_every', default=None, type=int,
      help='iterations between snapshots and checkpoint.pth (default 5000)')
    a('--eval_every', default=None, type=int,
      help='iterations between validation VOC07 mAP runs (0: never)')
    a('--eval_batch_size', default=16, type=int)
    a('--amp', default='off', nargs='?', const='bf16', choices=['off', 'bf16', 'fp16'],
      help='mixed precision on CUDA (--amp alone means bf16)')
    a('--seed', default=0, type=int, help='seed of weights, data order and augmentation')
    a('--channels_last', action='store_true', help='NHWC memory format')
    a('--compile', action='store_true', help='torch.compile the network')
    a('--sync_bn', action='store_true', help='SyncBatchNorm under DDP (BN models)')
    a('--no_divide_by_n', action='store_true',
      help='ablation: do not divide loss_l and loss_c by N (doc/loss_normalization.md)')
    a('--nan_policy', default='stop', choices=['stop', 'skip'],
      help='on a NaN/Inf loss: stop with a message, or skip the update and count')
    a('--nan_max_skips', default=20, type=int,
      help='with --nan_policy skip: stop after this many non-finite steps in a row')
    a('--log_every', default=10, type=int, help='iterations per metrics.csv row')
    a('--quiet', action='store_true', help='no progress bar')
    a('--threads', default=None, type=int,
      help='torch CPU threads (default: torch\'s choice, the number of cores)')
    a('--channel_order', default='RGB', choices=['RGB', 'BGR'],
      help='BGR for Caffe-converted basenets')
    a('--train_images', default=None, type=int, help='shapes: training images')
    a('--val_images', default=None, type=int, help='shapes: validation images')
    a('--visdom_server', default='http://localhost')
    a('--visdom_port', default=8097, type=int)
    a('--visdom_env', default='SSD')
    return p


def parse_args(argv=None):
    args = build_parser().parse_args(argv)
    if args.num_workers is None:
        args.num_workers = 0 if args.dataset == 'shapes' else 4   # shapes: cached, cheap; a worker would contend with the 2 torch threads
    return args


def main(argv=None):
    args = parse_args(argv)
    from utils.checkpoint import CheckpointError
    from utils.engine.trainer import train
    from utils.training.step import NonFiniteLoss
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        run = train(args)
    except (NonFiniteLoss, CheckpointError, ValueError, FileNotFoundError) as e:
        print(f'train.py: error: {e}', file=sys.stderr)
        return 1
    finally:
        torch.set_num_threads(threads)
    return 130 if run.status == 'interrupted' else 0


if __name__ == '__main__':
    sys.exit(main())
