"""Validate a dataset before training.

``python -m data.check ROOT --format voc|coco|yolo [--year Y] [--split S]
[--json FILE]``

Prints a summary (images, objects, difficult, objects per class, box-size
statistics), then every problem on its own line naming the file, then the
warnings. Problems: an unreadable or truncated image, malformed XML or JSON
or missing fields, a missing image or annotation, an unknown class, a
``<difficult>`` other than 0/1, false/true, no/yes, a path that leaves the
root, XML entity expansion, a box coordinate that is NaN or infinite, an
empty split (or a COCO file without images), a dataset with no object to
score (none, or every one difficult/crowd), an image the decoder calls
corrupt (``data.base.decode_image``; its other messages are warnings). Annotations are read by ``data.annotations``,
the reader the loaders and the evaluator use. Warnings (counted; the loaders
clip the box or drop it): a box outside the image, a box of zero area.
Exit status 1 when there is any problem, else 0.
"""
import argparse
import json
import os.path as osp
import sys

import numpy as np

from .base import DatasetError
from .check_formats import check_voc, check_coco, check_yolo

__all__ = ['check_dataset', 'main', 'Report']


class Report:
    """Accumulates counts, problems and warnings."""

    def __init__(self, root, fmt):
        self.root, self.format = root, fmt
        self.images = self.objects = self.difficult = 0
        self.per_class = {}
        self.sizes = []            # (box w, box h, image w, image h)
        self.boxes = []            # (class, difficult, x1, y1, x2, y2, image w, image h), pixels
        self.problems, self.warnings = [], []

    def problem(self, file, message):
        self.problems.append({'file': str(file), 'message': str(message)})

    def warning(self, file, message):
        self.warnings.append({'file': str(file), 'message': str(message)})

    def error(self, e, file=None):
        """Record a DatasetError whose message starts with its file."""
        msg = str(e)
        if file is None:
            file, _, msg = msg.partition(': ')
        elif msg.startswith(str(file) + ': '):
            msg = msg[len(str(file)) + 2:]
        self.problem(file, msg)

    def add_object(self, name, difficult, bw, bh, iw, ih, box=None):
        """One object: its class, difficult/crowd flag, box size and image
        size in pixels; ``box`` (x1, y1, x2, y2 in pixels, clipped as the
        loaders clip it) keeps its position too (``data.priors``)."""
        self.objects += 1
        self.difficult += int(bool(difficult))
        self.per_class[name] = self.per_class.get(name, 0) + 1
        if iw and ih:
            self.sizes.append((bw, bh, iw, ih))
            if box is not None:
                self.boxes.append((name, bool(difficult), *(float(v) for v in box), iw, ih))

    def box_stats(self):
        if not self.sizes:
            return {}
        s = np.asarray(self.sizes, np.float64)
        area = s[:, 0] * s[:, 1]
        rel = np.sqrt(area / (s[:, 2] * s[:, 3]))
        q = lambda v: [round(float(x), 3) for x in np.percentile(v, [0, 50, 100])]
        return {'width_px_min_med_max': q(s[:, 0]),
                'height_px_min_med_max': q(s[:, 1]),
                'rel_side_min_med_max': q(rel),
                'small_lt_32px': int((area < 32 ** 2).sum()),
                'medium': int(((area >= 32 ** 2) & (area < 96 ** 2)).sum()),
                'large_ge_96px': int((area >= 96 ** 2).sum())}

    def as_dict(self):
        return {'root': self.root, 'format': self.format,
                'images': self.images, 'objects': self.objects,
                'difficult': self.difficult, 'per_class': self.per_class,
                'box_stats': self.box_stats(), 'problems': self.problems,
                'warnings': self.warnings}

    def print(self, out=None, max_warnings=50):
        out = out or sys.stdout
        p = lambda *a: print(*a, file=out)
        p(f'{self.format} dataset at {self.root}')
        p(f'images: {self.images}  objects: {self.objects}  '
          f'difficult: {self.difficult}')
        if self.per_class:
            p('per class: ' + ', '.join(f'{k} {v}' for k, v in
                                        sorted(self.per_class.items())))
        for k, v in self.box_stats().items():
            p(f'boxes {k}: {v}')
        p(f'problems: {len(self.problems)}  warnings: {len(self.warnings)}')
        for e in self.problems:
            p(f"PROBLEM {e['file']}: {e['message']}")
        for e in self.warnings[:max_warnings]:
            p(f"warning {e['file']}: {e['message']}")
        if len(self.warnings) > max_warnings:
            p(f'... and {len(self.warnings) - max_warnings} more warnings '
              '(see --json)')


def check_dataset(root, fmt, year=None, split=None, decode=True,
                  classes=None):
    """Check a dataset; returns a Report (see ``Report.as_dict``)."""
    report = Report(root, fmt)
    fn = {'voc': check_voc, 'coco': check_coco, 'yolo': check_yolo}[fmt]
    try:
        fn(report, root, year=year, split=split, decode=decode,
           classes=classes)
    except DatasetError as e:
        report.error(e)
    except Exception as e:      # a case no check foresaw: still one line
        report.problem(root, f'unexpected {type(e).__name__} while checking: '
                       f'{e}')
    if not report.problems:     # nothing else explains an empty result
        if not report.images:
            report.problem(root, 'no images (every split is empty)')
        elif report.objects == report.difficult:
            report.problem(root, f'no objects to score in {report.images} '
                           f'images ({report.difficult} difficult/crowd)')
    return report


def main(argv=None):
    p = argparse.ArgumentParser(prog='python -m data.check',
                                description=__doc__.split('\n\n')[0])
    p.add_argument('root', help='VOCdevkit (or one VOC20XX / VOC-style '
                   'folder), COCO root, or YOLO root')
    p.add_argument('--format', required=True, choices=('voc', 'coco', 'yolo'))
    p.add_argument('--year', help='VOC: 2007, 2012 or 2007,2012 (default: '
                   'every VOC20XX folder)')
    p.add_argument('--split', help='VOC: trainval, test, ... (default: every '
                   'split file); COCO: train2017, val2014, ... (default: every '
                   'instances_*.json); YOLO: train, val (default: all)')
    p.add_argument('--classes', help='classes file (default: the one in ROOT, '
                   'else VOC\'s 20 classes for --format voc)')
    p.add_argument('--json', help='write the report as JSON to this file')
    p.add_argument('--no-decode', action='store_true',
                   help='check image files exist and are complete, '
                   'without decoding them (faster)')
    p.add_argument('--max-warnings', type=int, default=50)
    a = p.parse_args(argv)
    if not osp.isdir(a.root):
        print(f'PROBLEM {a.root}: dataset root is not a folder')
        report = Report(a.root, a.format)
        report.problem(a.root, 'dataset root is not a folder')
    else:
        report = check_dataset(a.root, a.format, a.year, a.split,
                               not a.no_decode, a.classes)
        report.print(max_warnings=a.max_warnings)
    if a.json:
        with open(a.json, 'w') as f:
            json.dump(report.as_dict(), f, indent=1)
    return 1 if report.problems else 0


if __name__ == '__main__':
    sys.exit(main())
