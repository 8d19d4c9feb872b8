"""Per-format checks behind ``python -m data.check`` (see data/check.py).

Each ``check_<format>(report, root, year, split, decode, classes)`` fills a
``data.check.Report``; none raises for a bad file."""
import glob
import os
import os.path as osp
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .base import DatasetError, IMAGE_EXTS, check_image, find_image, \
    read_image
from .annotations import (bbox_problem, coco_image_path, is_number,
                          load_coco_json, load_xml, parse_yolo_labels,
                          read_split, validate_coco, voc_object, voc_size)
from .custom import find_classes_file, read_classes
from .voc0712 import VOC_CLASSES

__all__ = ['check_voc', 'check_coco', 'check_yolo', 'image_problem']


def image_problem(path, decode=True, report=None):
    """(problem or None, (width, height) or None) for an image file: the
    loaders' reader (``data.base.read_image``, its decoding policy
    included), or without ``decode`` only whether the file is complete.
    The decoder's warnings go to ``report`` (each naming the file)."""
    if not decode:
        return check_image(path), None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        try:
            img = read_image(path)
        except DatasetError as e:
            msg, img = str(e), None
    if report is not None:
        for w in caught:
            report.warning(path, str(w.message).replace(f'{path}: ', '', 1))
    if img is None:
        return (msg[len(str(path)) + 2:] if msg.startswith(f'{path}: ')
                else msg), None
    return None, (img.shape[1], img.shape[0])


def _images(paths, decode, report=None):
    """image_problem over many files, with a progress bar on stderr (count,
    rate, ETA). Decoding runs in this thread, one image at a time (the
    decoder's messages are read from fd 2, see ``data.base.decode_image``;
    the bar is drawn only between images: ``miniters=1`` keeps tqdm's
    monitor thread from redrawing it); checks without decoding run in threads."""
    from tqdm import tqdm
    bar = dict(total=len(paths), desc='checking images', unit='img', miniters=1,
               file=sys.stderr, dynamic_ncols=True)
    if decode:
        return [image_problem(p, True, report) for p in tqdm(paths, **bar)]
    with ThreadPoolExecutor(max(1, min(8, os.cpu_count() or 1))) as ex:
        return list(tqdm(ex.map(lambda p: image_problem(p, False), paths), **bar))


def _box_warnings(report, file, k, name, box, w, h, tol=0.0):
    """Warn about a pixel box (x1, y1, x2, y2) outside (w, h) or empty."""
    x1, y1, x2, y2 = box
    if x2 <= x1 or y2 <= y1:
        report.warning(file, f'object {k} ({name}): zero-area box '
                       f'{[round(float(v), 2) for v in box]} (dropped)')
    elif w and h and (min(x1, y1) < -tol or x2 > w + tol or y2 > h + tol):
        report.warning(file, f'object {k} ({name}): box '
                       f'{[round(float(v), 2) for v in box]} outside the '
                       f'{w}x{h} image (clipped)')


# ----------------------------------------------------------------- VOC
def _voc_dirs(root, year):
    if osp.isdir(osp.join(root, 'Annotations')):
        return [root]
    if year:
        return [osp.join(root, f'VOC{y.strip()}') for y in str(year).split(',')]
    dirs = sorted(glob.glob(osp.join(glob.escape(root), 'VOC20*')))
    if not dirs:
        raise DatasetError(f'{root}: no Annotations/ and no VOC20XX/ folder')
    return dirs


def _voc_ids(report, d, split):
    """Image ids to check in one VOC folder (bad lines become problems)."""
    main = osp.join(d, 'ImageSets', 'Main')
    if split:
        files = [osp.join(main, s + '.txt') for s in split.split(',')]
    elif osp.isdir(main):
        files = sorted(f for f in glob.glob(osp.join(glob.escape(main), '*.txt'))
                       if '_' not in osp.basename(f))
    else:
        return sorted(osp.splitext(osp.basename(p))[0] for p in
                      glob.glob(osp.join(glob.escape(d), 'Annotations', '*.xml')))
    ids, seen = [], set()
    for f in files:
        try:
            names = read_split(f, d, on_bad=lambda m: report.error(m, f))
        except DatasetError as e:
            report.error(e, f)
            continue
        for name in names:
            if name not in seen:
                seen.add(name)
                ids.append(name)
    return ids


def _voc_objects(report, xml, root, class_to_ind, classes, wh):
    for k, obj in enumerate(root.findall('object')):
        try:
            label, b, difficult = voc_object(obj, k, class_to_ind, xml)
        except DatasetError as e:
            report.error(e, xml)
            continue
        b = np.asarray(b) - 1          # 0-based pixels, as the loaders
        name = classes[label]
        c = np.clip(b, 0, [wh[0], wh[1]] * 2) if wh else b
        report.add_object(name, difficult, c[2] - c[0], c[3] - c[1],
                          *(wh or (0, 0)), box=c)
        if wh:   # the XML's 1-based numbers; inside when x <= width
            _box_warnings(report, xml, k, name, b + 1, *wh)


def check_voc(report, root, year=None, split=None, decode=True, classes=None):
    for d in _voc_dirs(root, year):
        cls_file = classes or find_classes_file(d) or find_classes_file(root)
        names = read_classes(d, cls_file) if cls_file else VOC_CLASSES
        class_to_ind = {c: i for i, c in enumerate(names)}
        ids = _voc_ids(report, d, split)
        report.images += len(ids)
        paths = [find_image(osp.join(d, 'JPEGImages'), i) for i in ids]
        if osp.isdir(osp.join(d, 'JPEGImages')):
            results = _images(paths, decode, report)
        else:       # annotations only (e.g. the devkit's annotation tarball)
            report.warning(d, 'no JPEGImages/ folder: images not checked')
            results = [(None, None)] * len(ids)
        for name, img_path, (prob, size) in zip(ids, paths, results):
            if prob:
                report.problem(img_path, prob)
            xml = osp.join(d, 'Annotations', name + '.xml')
            try:
                root_el = load_xml(xml)
            except DatasetError as e:
                report.error(e, xml)
                continue
            wh = voc_size(root_el) or size
            if size and wh != size:
                report.warning(xml, f'<size> {wh[0]}x{wh[1]} differs from '
                               f'the image ({size[0]}x{size[1]})')
                wh = size
            _voc_objects(report, xml, root_el, class_to_ind, names, wh)


# ---------------------------------------------------------------- COCO
def _coco_files(root, split):
    if split:
        return [osp.join(root, 'annotations', f'instances_{s}.json')
                for s in split.split(',')]
    files = sorted(glob.glob(osp.join(glob.escape(root), 'annotations',
                                      'instances_*.json')))
    if not files:
        raise DatasetError(f'{root}: no annotations/instances_*.json')
    return files


def check_coco(report, root, year=None, split=None, decode=True,
               classes=None):
    for ann in _coco_files(root, split):
        try:
            d = load_coco_json(ann)
            problems, _ = validate_coco(d, ann)
        except DatasetError as e:
            report.error(e, ann)
            continue
        for f, m in problems:
            report.problem(f, m)
        s = osp.basename(ann)[len('instances_'):-len('.json')]
        cats = {c.get('id'): c.get('name', str(c.get('id')))
                for c in d['categories'] if isinstance(c, dict)}
        imgs = [im for im in d['images'] if isinstance(im, dict)
                and 'id' in im and 'file_name' in im]
        report.images += len(imgs)
        paths = []
        for im in imgs:
            try:
                paths.append(coco_image_path(root, s, im['file_name']))
            except DatasetError as e:
                report.error(e)
                paths.append(None)
        sizes = {}
        ok = [p for p in paths if p]
        for p, (prob, size) in zip(ok, _images(ok, decode, report)):
            if prob:
                report.problem(p, prob)
        for im in imgs:       # a non-finite size is a problem already
            sizes[im['id']] = tuple(v if is_number(v) else None for v in
                                    (im.get('width'), im.get('height')))
        _coco_objects(report, ann, d['annotations'], cats, sizes)


def _coco_objects(report, ann, anns, cats, sizes):
    for k, a in enumerate(anns):
        if not isinstance(a, dict) or a.get('category_id') not in cats \
                or a.get('image_id') not in sizes:
            continue
        b = a.get('bbox')
        if bbox_problem(b):       # a problem already (validate_coco)
            continue
        w, h = sizes[a['image_id']]
        name = cats[a['category_id']]
        report.add_object(name, a.get('iscrowd', 0), b[2], b[3], w, h,
                          box=np.clip([b[0], b[1], b[0] + b[2], b[1] + b[3]], 0, [w, h] * 2)
                          if w and h else None)
        _box_warnings(report, ann, k, name,
                      [b[0], b[1], b[0] + b[2], b[1] + b[3]], w, h)


# ---------------------------------------------------------------- YOLO
def check_yolo(report, root, year=None, split=None, decode=True,
               classes=None):
    try:
        names = read_classes(root, classes)
    except DatasetError as e:
        report.error(e)
        names = None
    img_root, lab_root = osp.join(root, 'images'), osp.join(root, 'labels')
    if not osp.isdir(img_root):
        raise DatasetError(f'{root}: no images/ folder (YOLO layout)')
    if split:
        splits = split.split(',')
    else:
        splits = sorted(s for s in os.listdir(img_root)
                        if osp.isdir(osp.join(img_root, s))) or ['']
    for s in splits:
        _check_yolo_split(report, osp.join(img_root, s),
                          osp.join(lab_root, s), names, decode)


def _check_yolo_split(report, img_dir, lab_dir, names, decode):
    if not osp.isdir(img_dir):
        report.problem(img_dir, 'missing image folder')
        return
    imgs = sorted(n for n in os.listdir(img_dir)
                  if n.lower().endswith(IMAGE_EXTS))
    if not imgs:
        report.problem(img_dir, 'no images (empty split)')
    stems = {osp.splitext(n)[0] for n in imgs}
    if osp.isdir(lab_dir):
        for lab in sorted(os.listdir(lab_dir)):
            if lab.endswith('.txt') and osp.splitext(lab)[0] not in stems:
                report.problem(osp.join(lab_dir, lab), 'missing image '
                               '(label file without an image)')
    report.images += len(imgs)
    paths = [osp.join(img_dir, n) for n in imgs]
    for n, p, (prob, size) in zip(imgs, paths, _images(paths, decode, report)):
        if prob:
            report.problem(p, prob)
        if names is None:
            continue
        lab = osp.join(lab_dir, osp.splitext(n)[0] + '.txt')
        try:
            labels, boxes = parse_yolo_labels(lab, len(names))
        except DatasetError as e:
            report.error(e, lab)
            continue
        w, h = size or (1, 1)
        for k, (c, b) in enumerate(zip(labels, boxes)):
            px = b * np.float32([w, h, w, h])
            report.add_object(names[c], False, px[2] - px[0], px[3] - px[1],
                              *(size or (0, 0)), box=np.clip(px, 0, [w, h] * 2))
            _box_warnings(report, lab, k, names[c], b, 1.0, 1.0, 1e-4)
