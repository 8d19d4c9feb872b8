"""Detections and ground truth for evaluation, and the devkit's files.

Both containers hold flat arrays (one row per box) in the PASCAL devkit's
1-based inclusive pixel coordinates, the frame ``det_<set>_<class>.txt`` files
and VOC XML use. A network's 0-based pixel boxes get ``+1`` (as ssd.pytorch's
``write_voc_results_file`` does); ``GroundTruth.from_arrays`` gets ``+1`` too.
"""
import glob
import os
from dataclasses import dataclass, field

import numpy as np

SCORE_FMT, BOX_FMT = '%.3f', '%.1f'   # the devkit / ssd.pytorch file format


class EvalInputError(ValueError):
    """Bad detection file, annotation or image set; one line naming the file."""


@dataclass
class Detections:
    """All detections of a set. ``img`` int64 [D] index into ``image_ids``;
    ``labels`` int64 [D] 0-based (no background); ``scores`` float64 [D];
    ``boxes`` float64 [D, 4] (x1, y1, x2, y2) in 1-based devkit pixels."""
    image_ids: list
    img: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray

    def __len__(self):
        return int(self.scores.size)

    @classmethod
    def empty(cls, image_ids):
        return cls(list(image_ids), np.zeros(0, np.int64), np.zeros(0, np.int64),
                   np.zeros(0), np.zeros((0, 4)))

    def quantized(self):
        """The values as the devkit files hold them (score to 3, boxes to 1
        decimal, correctly rounded as by ``'%.3f'``), so that evaluating in
        memory equals evaluating the written files."""
        s = np.char.mod(SCORE_FMT, self.scores).astype(np.float64) if len(self) else self.scores
        b = np.char.mod(BOX_FMT, self.boxes).astype(np.float64) if len(self) else self.boxes
        return Detections(self.image_ids, self.img, self.labels, s, b.reshape(-1, 4))


@dataclass
class GroundTruth:
    """All objects of a set, difficult ones included. ``img`` int64 [G];
    ``labels`` int64 [G] 0-based; ``boxes`` float64 [G, 4] 1-based devkit
    pixels; ``difficult`` bool [G]; ``sizes`` int64 [I, 2] (width, height),
    0 where unknown; ``source`` the file or set named in errors (split file,
    instances JSON)."""
    image_ids: list
    class_names: tuple
    img: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray
    difficult: np.ndarray
    sizes: np.ndarray = field(default=None)
    source: str = 'ground truth'

    @classmethod
    def from_records(cls, image_ids, class_names, records, source='ground truth'):
        """``records[i]`` = dict(boxes [n, 4] devkit coords, labels [n],
        difficult [n], width, height) for image ``image_ids[i]``."""
        n = [len(r['labels']) for r in records]
        return cls(list(image_ids), tuple(class_names),
                   np.repeat(np.arange(len(records), dtype=np.int64), n),
                   _cat(records, 'labels', np.int64), _cat(records, 'boxes', np.float64, 4),
                   _cat(records, 'difficult', bool),
                   np.array([[r.get('width', 0), r.get('height', 0)] for r in records],
                            np.int64).reshape(-1, 2), str(source))

    def require_scorable(self):
        """The metric stage's check: an evaluation set without images, or
        without one object to score (none, or every one difficult / crowd),
        is an EvalInputError naming ``source``, never a silent mAP of 0."""
        if not self.image_ids:
            raise EvalInputError(f'{self.source}: no images to evaluate (empty set)')
        if not (~self.difficult).any():
            raise EvalInputError(
                f'{self.source}: no objects to score in {len(self.image_ids)} images '
                f'({int(self.difficult.sum())} difficult/crowd, which no metric counts)')
        return self


def _cat(records, key, dtype, width=None):
    shape = (-1, width) if width else (-1,)
    arrs = [np.asarray(r[key], dtype).reshape(shape) for r in records]
    return np.concatenate(arrs) if arrs else np.zeros((0, width) if width else 0, dtype)


def result_path(folder, set_type, cls_name, prefix=''):
    """``<folder>/<prefix>det_<set>_<class>.txt`` (ssd.pytorch's name)."""
    return os.path.join(folder, f'{prefix}det_{set_type}_{cls_name}.txt')


def write_devkit(dets, class_names, folder, set_type='test', prefix=''):
    """Write one ``det_<set>_<class>.txt`` per class (empty files included):
    lines ``<image_id> <score %.3f> <x1> <y1> <x2> <y2>`` (``%.1f``, 1-based),
    in image order. Returns the list of paths."""
    os.makedirs(folder, exist_ok=True)
    q = dets.quantized()
    ids = np.asarray([str(i) for i in dets.image_ids] or [''], dtype=object)
    paths = []
    for c, name in enumerate(class_names):
        m = np.flatnonzero(q.labels == c)
        path = result_path(folder, set_type, name, prefix)
        with open(path, 'wt') as f:
            for i, s, b in zip(ids[q.img[m]], q.scores[m], q.boxes[m]):
                f.write(f'{i} {s:.3f} {b[0]:.1f} {b[1]:.1f} {b[2]:.1f} {b[3]:.1f}\n')
        paths.append(path)
    return paths


def find_devkit_files(folder, class_names, set_type=None):
    """Map class -> the single ``*det_<set>_<class>.txt`` in ``folder`` (any
    prefix, e.g. ``comp4_``); ``set_type`` None accepts any set name."""
    if not os.path.isdir(folder):
        raise EvalInputError(f'{folder}: not a directory of det_<set>_<class>.txt files')
    found = {}
    for name in class_names:
        pattern = f'*det_{glob.escape(set_type)}_{name}.txt' if set_type else f'*det_*_{name}.txt'
        hits = sorted(glob.glob(os.path.join(glob.escape(folder), pattern)))
        if len(hits) > 1:
            raise EvalInputError(f'{folder}: several result files for class {name!r}: '
                                 + ', '.join(os.path.basename(h) for h in hits))
        if hits:
            found[name] = hits[0]
    if not found:
        raise EvalInputError(f'{folder}: no *det_{set_type or "<set>"}_<class>.txt file '
                             f'for any of the {len(class_names)} classes')
    return found


def read_devkit(folder, class_names, image_ids, set_type=None):
    """Read per-class devkit files (from any tool) into :class:`Detections`,
    keeping each file's line order. A class without a file has no detections.
    Unknown image ids, malformed lines, a score or coordinate that is not a
    finite number (NaN, inf) and a binary file are one-line errors naming the
    file (and line)."""
    files = find_devkit_files(folder, class_names, set_type)
    index = {k: i for i, k in enumerate(image_ids)}
    parts = []
    for c, name in enumerate(class_names):
        if name in files:
            parts.append(_read_one(files[name], c, index))
    if not parts:
        return Detections.empty(image_ids)
    img, lab, sc, bx = (np.concatenate(x) for x in zip(*parts))
    return Detections(list(image_ids), img, lab, sc, bx.reshape(-1, 4))


FIELDS = ('score', 'x1', 'y1', 'x2', 'y2')


def _text_lines(path):
    """The lines of a text detection file; a binary or non-UTF-8 file is a
    one-line error naming it."""
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except OSError as e:
        raise EvalInputError(f'{path}: unreadable detection file ({e.strerror or e})') from None
    try:
        if b'\x00' in data:
            raise UnicodeError
        return data.decode('utf-8').split('\n')
    except UnicodeError:
        raise EvalInputError(f'{path}: not a text detection file (binary data)') from None


def _read_one(path, label, index):
    img, rows, line_no = [], [], []
    for n, line in enumerate(_text_lines(path), 1):
        tok = line.split()
        if not tok:
            continue
        if len(tok) != 6:
            raise EvalInputError(f'{path}:{n}: expected "<image_id> <score> <x1> <y1> '
                                 f'<x2> <y2>", got {line.strip()[:80]!r}')
        if tok[0] not in index:
            raise EvalInputError(f'{path}:{n}: image {tok[0]!r} is not in the image set')
        img.append(index[tok[0]])
        rows.append(tok[1:])
        line_no.append(n)
    try:
        v = np.asarray(rows, dtype=np.float64).reshape(-1, 5)
        bad = np.flatnonzero(~np.isfinite(v).all(1))
    except ValueError:
        v, bad = None, range(len(rows))
    for k in bad:          # the first bad line: not a number, NaN or infinite
        for name, t in zip(FIELDS, rows[k]):
            try:
                ok = np.isfinite(float(t))
                why = 'is not a finite number'
            except ValueError:
                ok, why = False, 'is not a number'
            if not ok:
                raise EvalInputError(f'{path}:{line_no[k]}: {name} {t[:40]!r} {why}')
    if v is None:
        raise EvalInputError(f'{path}: a score or coordinate is not a number')
    return (np.asarray(img, np.int64), np.full(len(img), label, np.int64), v[:, 0], v[:, 1:])


def voc_record(ann):
    """A :meth:`GroundTruth.from_records` record of a
    ``data.annotations.VocAnnotation``: the XML's numbers as the devkit port
    reads them (1-based, float64), difficult objects flagged, ``<size>`` or
    0 where it is missing."""
    w, h = ann.size or (0, 0)
    return dict(boxes=ann.boxes, labels=ann.labels, difficult=ann.difficult,
                width=w, height=h)


def load_voc_gt(voc_root, year, set_type, class_names, image_ids=None):
    """Ground truth of ``VOC<year>/ImageSets/Main/<set_type>.txt`` from its
    XML files, read by the loaders' reader (``data.annotations``): 1-based
    boxes as written, difficult objects kept and flagged; an unknown class,
    a bad ``difficult`` or an id leaving the root is a ``DatasetError``."""
    from data.annotations import read_split, read_voc_xml
    base = os.path.join(os.path.expanduser(str(voc_root)), f'VOC{year}')
    if image_ids is None:
        image_ids = read_split(os.path.join(base, 'ImageSets', 'Main', f'{set_type}.txt'), base)
    class_index = {n: i for i, n in enumerate(class_names)}
    records = [voc_record(read_voc_xml(os.path.join(base, 'Annotations', f'{i}.xml'), class_index))
               for i in image_ids]
    return GroundTruth.from_records(image_ids, class_names, records,
                                    os.path.join(base, 'ImageSets', 'Main', f'{set_type}.txt'))
