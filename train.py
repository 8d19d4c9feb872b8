"""Train SSD: ``python train.py --dataset VOC --dataset_root ~/data/VOCdevkit/``.

ssd.pytorch's flags work as before; the schedule defaults are the paper's for
each dataset (see doc/training.md). Several GPUs or machines:
``torchrun --nproc_per_node=N train.py ...`` (``--batch_size`` is global).

The flags and their defaults are resolved once, here, into one
``RunConfig`` (``utils.engine.run_config``); ``utils.engine.trainer`` runs it.
"""
import sys

from utils.engine.cli import run_script
from utils.engine.run_config import build_parser, parse_run_config  # noqa: F401 (build_parser: --help, tests)


def main(argv=None):
    """``python train.py ARGV``; returns the exit code (0 finished, 1 error,
    130 interrupted)."""
    from utils.engine import trainer
    return run_script('train.py', lambda: trainer.run(parse_run_config(argv)))


if __name__ == '__main__':
    sys.exit(main())
