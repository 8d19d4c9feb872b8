"""The one reader for each annotation format.

The loaders (``data.voc0712``, ``data.custom``, ``data.coco``), ``python -m
data.check`` and the evaluator (``utils.evaluation``) all read annotations
through these functions, so they agree on every object and name the same
file in their errors. Every problem is a ``DatasetError`` whose one-line
message starts with the file.

* VOC XML (``read_voc_xml``, ``voc_object``), parsed with defusedxml. Boxes
  are the XML's numbers as written (1-based pixels, float64), exactly what
  the devkit scores against; the loaders subtract one (ssd.pytorch).
  - class names: an exact match in the class list, else the one class that
    matches ignoring case (``Circle`` finds ``circle``); anything else is an
    error naming the file and the object, never a silent skip;
  - ``<difficult>``: ``1``/``true``/``yes`` (any case) is difficult,
    ``0``/``false``/``no``, empty or absent is not; anything else is an error.
* Split files (``read_split``): ``ImageSets/Main/<set>.txt``, the first
  column of each line; an id that would leave the dataset root is refused,
  and a split without ids is an error.
* YOLO txt (``parse_yolo_labels``): ``class cx cy w h`` lines, normalised.
* COCO JSON (``read_coco_json``: ``load_coco_json`` + ``validate_coco``;
  an annotation of an unknown category is an error, not dropped) and the
  one rule that turns an image's ``file_name`` into a path
  (``coco_image_path``).

A box coordinate that is NaN or infinite (``<xmin>nan</xmin>``, a YOLO
``inf``, a COCO ``bbox`` with ``NaN``) is an error in every format, as is a
COCO file without images.
"""
import json
import math
import os.path as osp
import warnings
from typing import NamedTuple, Optional, Tuple

import numpy as np
import defusedxml.ElementTree as DET
from defusedxml import DefusedXmlException

from .base import DatasetError, DatasetNotFound, safe_join

__all__ = ['class_label', 'parse_difficult', 'load_xml', 'voc_object',
           'voc_objects', 'voc_size', 'read_voc_xml', 'VocAnnotation',
           'read_split', 'parse_yolo_labels', 'load_coco_json',
           'validate_coco', 'read_coco_json', 'coco_image_path', 'bbox_problem',
           'is_number']

DIFFICULT_TRUE = ('1', 'true', 'yes')
DIFFICULT_FALSE = ('0', 'false', 'no', '')


# ----------------------------------------------------------------- VOC XML
def class_label(name, class_to_ind, path, k):
    """Index of class ``name``: an exact match in ``class_to_ind`` (dict
    name -> index), else the single class equal to it ignoring case.
    Raises DatasetError naming ``path`` and object ``k`` otherwise."""
    if name in class_to_ind:
        return class_to_ind[name]
    folded = name.casefold()
    hits = [i for c, i in class_to_ind.items() if c.casefold() == folded]
    if len(hits) == 1:
        return hits[0]
    why = ' (several classes match ignoring case)' if hits else ''
    raise DatasetError(f'{path}: unknown class {name!r} (object {k}){why}')


def parse_difficult(text, where):
    """``<difficult>`` text -> bool: 1/true/yes (any case) True; 0/false/no,
    empty or absent (None) False; anything else a DatasetError that starts
    with ``where`` ('file: object k')."""
    t = (text or '').strip().lower()
    if t in DIFFICULT_TRUE:
        return True
    if t in DIFFICULT_FALSE:
        return False
    raise DatasetError(f'{where}: <difficult> must be 0/1, false/true or '
                       f'no/yes, got {text.strip()!r}')


def load_xml(path):
    """Parse an annotation file safely (defusedxml); return its root."""
    try:
        return DET.parse(path).getroot()
    except FileNotFoundError:
        raise DatasetError(f'{path}: missing annotation file') from None
    except DefusedXmlException as e:
        raise DatasetError(f'{path}: XML entity expansion refused '
                           f'({type(e).__name__})') from None
    except DET.ParseError as e:
        raise DatasetError(f'{path}: malformed XML ({e})') from None
    except OSError as e:
        raise DatasetError(f'{path}: unreadable annotation ({e})') from None


def _number(node, tag, path, what):
    el = node.find(tag)
    if el is None or el.text is None or not el.text.strip():
        raise DatasetError(f'{path}: missing <{tag}> in {what}')
    try:
        v = float(el.text)
    except ValueError:
        raise DatasetError(f'{path}: <{tag}> in {what} is not a number: '
                           f'{el.text.strip()!r}') from None
    if not math.isfinite(v):
        raise DatasetError(f'{path}: <{tag}> in {what} is not a finite '
                           f'number: {el.text.strip()!r}')
    return v


def voc_object(obj, k, class_to_ind, path):
    """Object ``k`` (an ``<object>`` Element) of annotation file ``path``:
    (label int, box [x1, y1, x2, y2] floats as written (1-based),
    difficult bool). Raises DatasetError naming the file and object."""
    name = (obj.findtext('name') or '').strip()
    if not name:
        raise DatasetError(f'{path}: object {k} has no <name>')
    label = class_label(name, class_to_ind, path, k)
    bb = obj.find('bndbox')
    if bb is None:
        raise DatasetError(f'{path}: object {k} ({name}) has no <bndbox>')
    what = f'object {k} ({name}) <bndbox>'
    box = [_number(bb, t, path, what) for t in ('xmin', 'ymin', 'xmax', 'ymax')]
    difficult = parse_difficult(obj.findtext('difficult'),
                                f'{path}: object {k} ({name})')
    return label, box, difficult


def voc_objects(root, class_to_ind, path='annotation'):
    """Every object of an annotation Element (``<object>`` children, as the
    devkit's ``findall('object')``): (boxes float64 [n, 4] 1-based as
    written, labels int64 [n], difficult bool [n])."""
    objs = [voc_object(o, k, class_to_ind, path)
            for k, o in enumerate(root.findall('object'))]
    return (np.asarray([o[1] for o in objs], np.float64).reshape(-1, 4),
            np.asarray([o[0] for o in objs], np.int64).reshape(-1),
            np.asarray([o[2] for o in objs], bool).reshape(-1))


def voc_size(root):
    """(width, height) from ``<size>``, or None when missing or zero."""
    size = root.find('size')
    if size is None:
        return None
    try:
        w = int(float(size.find('width').text))
        h = int(float(size.find('height').text))
    except (AttributeError, TypeError, ValueError, OverflowError):
        return None             # nan, inf, text: as missing
    return (w, h) if w > 0 and h > 0 else None


class VocAnnotation(NamedTuple):
    """One VOC XML file. ``boxes`` float64 [n, 4] (x1, y1, x2, y2) as
    written (1-based devkit pixels); ``labels`` int64 [n] 0-based;
    ``difficult`` bool [n]; ``size`` (width, height) or None."""
    path: str
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray
    size: Optional[Tuple[int, int]]


def read_voc_xml(path, class_to_ind):
    """Read one VOC annotation file into a :class:`VocAnnotation`."""
    root = load_xml(path)
    boxes, labels, difficult = voc_objects(root, class_to_ind, path)
    return VocAnnotation(str(path), boxes, labels, difficult, voc_size(root))


# ------------------------------------------------------------- split files
def read_split(path, root, skip_bad=False, on_bad=None):
    """Image ids of a split file (``ImageSets/Main/<set>.txt``: the first
    column of each non-empty line). An id whose annotation path would leave
    ``root`` is refused: a DatasetError naming the file and line, or, with
    ``on_bad(message)``, passed to it and dropped; ``skip_bad`` drops it
    with a warning. A split without any id is a DatasetError: nothing to
    train on, check or score."""
    try:
        with open(path, encoding='utf-8') as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise DatasetNotFound(f'{path}: split file not found') from None
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f'{path}: unreadable split file ({e})') from None
    ids = []
    for n, line in enumerate(lines, 1):
        name = line.split()[0] if line.strip() else ''
        if not name:
            continue
        try:
            safe_join(root, 'Annotations', name + '.xml')
        except DatasetError:
            msg = (f'{path}: line {n}: image id {name!r} leaves the dataset '
                   'root (refused)')
            if on_bad is not None:
                on_bad(msg)
            elif skip_bad:
                warnings.warn(f'skipping bad sample: {msg}', stacklevel=3)
            else:
                raise DatasetError(msg) from None
            continue
        ids.append(name)
    if not ids:
        raise DatasetError(f'{path}: empty split (no image ids)')
    return ids


# ---------------------------------------------------------------- YOLO txt
def parse_yolo_labels(path, num_classes):
    """(labels int64 [n], boxes float32 [n, 4] normalised (x1, y1, x2, y2))
    from a YOLO label file; a missing file means no objects."""
    try:
        with open(path, encoding='utf-8') as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        lines = []
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f'{path}: unreadable label file ({e})') from None
    labels, boxes = [], []
    for n, line in enumerate(lines, 1):
        f = line.split()
        if not f:
            continue
        try:
            if len(f) != 5:
                raise ValueError
            c, v = float(f[0]), [float(x) for x in f[1:]]
        except ValueError:
            raise DatasetError(f'{path}: line {n}: expected "class cx cy w h",'
                               f' got {line.strip()!r}') from None
        if not all(map(math.isfinite, v + [c])):
            raise DatasetError(f'{path}: line {n}: not a finite number in '
                               f'{line.strip()!r}')
        if c != int(c) or not 0 <= c < num_classes:
            raise DatasetError(f'{path}: line {n}: unknown class {f[0]} '
                               f'({num_classes} classes)')
        labels.append(int(c))
        boxes.append([v[0] - v[2] / 2, v[1] - v[3] / 2,
                      v[0] + v[2] / 2, v[1] + v[3] / 2])
    return (np.asarray(labels, np.int64),
            np.asarray(boxes, np.float32).reshape(-1, 4))


# --------------------------------------------------------------- COCO JSON
def load_coco_json(path):
    """json.load with one-line errors."""
    try:
        with open(path, encoding='utf-8') as f:
            return json.load(f)
    except FileNotFoundError:
        raise DatasetNotFound(f'{path}: annotation file not found') from None
    except (ValueError, UnicodeDecodeError) as e:
        raise DatasetError(f'{path}: malformed JSON ({e})') from None
    except OSError as e:
        raise DatasetError(f'{path}: unreadable annotation file ({e})') \
            from None


def is_number(v):
    """A JSON number that is finite (not a bool, not NaN or Infinity)."""
    return (isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(v))


def bbox_problem(b):
    """Why a COCO ``bbox`` is unusable, or None: it must be a list of four
    finite numbers."""
    if not (isinstance(b, (list, tuple)) and len(b) == 4
            and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                    for v in b)):
        return 'missing or malformed bbox'
    if not all(map(math.isfinite, b)):
        return f'bbox has a non-finite number {list(b)}'
    return None


def validate_coco(d, path):
    """Structural checks of a COCO instances dict.

    Returns (problems: list of (file, message), bad image ids: set). Raises
    DatasetError when the file cannot be used at all (missing sections)."""
    if not isinstance(d, dict):
        raise DatasetError(f'{path}: top level is not a JSON object')
    for key in ('images', 'annotations', 'categories'):
        if not isinstance(d.get(key), list):
            raise DatasetError(f'{path}: missing or invalid "{key}" list')
    if not d['images']:
        raise DatasetError(f'{path}: no images (the "images" list is empty)')
    problems, bad = [], set()
    img_ids = set()
    for k, im in enumerate(d['images']):
        if not isinstance(im, dict) or 'id' not in im or 'file_name' not in im:
            problems.append((path, f'images[{k}] lacks id or file_name'))
            continue
        img_ids.add(im['id'])
        for key in ('width', 'height'):
            if im.get(key) is not None and not is_number(im[key]):
                problems.append((path, f'images[{k}]: {key} is not a finite '
                                 f'number: {im[key]!r}'))
                bad.add(im['id'])
    cat_ids = {c.get('id') for c in d['categories'] if isinstance(c, dict)}
    for k, a in enumerate(d['annotations']):
        where = f'annotations[{k}]'
        if not isinstance(a, dict):
            problems.append((path, f'{where} is not an object'))
            continue
        if a.get('image_id') not in img_ids:
            problems.append((path, f'{where}: unknown image_id '
                             f'{a.get("image_id")!r}'))
            continue
        if a.get('category_id') not in cat_ids:
            msg = f'{where}: unknown class (category_id {a.get("category_id")!r})'
        elif bbox_problem(a.get('bbox')):
            msg = f'{where}: {bbox_problem(a.get("bbox"))}'
        elif a.get('area') is not None and not is_number(a['area']):
            msg = f'{where}: area is not a finite number: {a["area"]!r}'
        else:
            continue
        problems.append((path, msg))
        bad.add(a['image_id'])
    return problems, bad


def read_coco_json(path, skip_bad=False):
    """A COCO instances file, checked: (dict, ids of images with a bad
    annotation). Raises DatasetError for the first problem (with the count)
    unless ``skip_bad``; ``python -m data.check`` lists them all."""
    d = load_coco_json(path)
    problems, bad = validate_coco(d, path)
    if problems and not skip_bad:
        f, m = problems[0]
        raise DatasetError(f'{f}: {m} ({len(problems)} problem(s); '
                           'see python -m data.check)')
    return d, bad


def coco_image_path(root, image_set, file_name):
    """The image file of ``file_name`` in the split ``image_set``: the
    first that exists of ``<part>/``, ``images/<part>/`` (when the name
    says ``_train2014_``, ``_val2014_`` or ``_test2014_``), ``<image_set>/``,
    ``images/<image_set>/``, ``images/`` and ``root`` itself (a custom COCO
    JSON folder with one image folder). When none exists, the first of them (the
    folder the name points to), so every tool names the same missing file.
    A name that would leave ``root`` raises DatasetError."""
    name = str(file_name)
    dirs = [image_set, osp.join('images', image_set), 'images', '']
    for part in ('train2014', 'val2014', 'test2014'):
        if f'_{part}_' in name:
            dirs[:0] = [part, osp.join('images', part)]
    for d in dirs:
        p = safe_join(root, d, name)
        if osp.exists(p):
            return p
    return safe_join(root, dirs[0], name)
