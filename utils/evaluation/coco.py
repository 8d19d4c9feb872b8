"""The COCO detection metric through pycocotools, and COCO results JSON.

Results JSON is the list COCO's evaluation server takes: ``[{"image_id": int,
"category_id": int, "bbox": [x, y, w, h], "score": float}, ...]`` with the box
in 0-based pixels (``x = x1``, ``w = x2 - x1``).

For datasets that are not COCO (VOC, shapes, custom), :func:`coco_from_gt`
builds the COCO ground truth in memory from a :class:`GroundTruth`; difficult
objects become ``iscrowd`` regions, which COCOeval ignores as it ignores
crowds (a detection on one is neither a true nor a false positive).
"""
import contextlib
import io
import json
import os

import numpy as np

from utils.evaluation.detections import EvalInputError

STAT_NAMES = ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl',
              'AR1', 'AR10', 'AR100', 'ARs', 'ARm', 'ARl')


@contextlib.contextmanager
def _quiet(enabled=True):
    """Silence pycocotools' prints ("loading annotations...", "DONE")."""
    if not enabled:
        yield
        return
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def coco_from_gt(gt):
    """A pycocotools ``COCO`` built from a :class:`GroundTruth` (devkit
    coordinates, converted to 0-based). Image ids are ``1..I`` in
    ``gt.image_ids`` order, category ids ``1..K`` in class order."""
    from pycocotools.coco import COCO
    b = gt.boxes - np.array([1., 1., 1., 1.])
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    sizes = gt.sizes if gt.sizes is not None else np.zeros((len(gt.image_ids), 2), np.int64)
    anns = [dict(id=k + 1, image_id=int(gt.img[k]) + 1, category_id=int(gt.labels[k]) + 1,
                 bbox=[float(b[k, 0]), float(b[k, 1]), float(w[k]), float(h[k])],
                 area=float(w[k] * h[k]), iscrowd=int(gt.difficult[k]))
            for k in range(gt.img.size)]
    coco = COCO()
    coco.dataset = dict(
        images=[dict(id=i + 1, file_name=str(n), width=int(sizes[i, 0]), height=int(sizes[i, 1]))
                for i, n in enumerate(gt.image_ids)],
        categories=[dict(id=c + 1, name=n) for c, n in enumerate(gt.class_names)],
        annotations=anns)
    with _quiet():
        coco.createIndex()
    return coco


def coco_results(dets, img_ids, cat_ids):
    """COCO results list from :class:`Detections` (devkit coordinates).

    ``img_ids[i]``: COCO image id of ``dets.image_ids[i]``; ``cat_ids[c]``:
    category id of 0-based class ``c``."""
    img_ids = np.asarray(img_ids)
    cat_ids = np.asarray(cat_ids)
    b = dets.boxes - 1.0
    return [dict(image_id=int(img_ids[dets.img[k]]), category_id=int(cat_ids[dets.labels[k]]),
                 bbox=[round(float(b[k, 0]), 2), round(float(b[k, 1]), 2),
                       round(float(b[k, 2] - b[k, 0]), 2), round(float(b[k, 3] - b[k, 1]), 2)],
                 score=round(float(dets.scores[k]), 5))
            for k in range(len(dets))]


def write_results(results, path):
    """Write a COCO results JSON list; returns ``path``."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, 'wt') as f:
        json.dump(results, f)
    return path


def read_results(path):
    """Read and check a COCO results JSON (one-line errors naming the file,
    and the entry for a bad detection: a missing key, a score or box number
    that is not a finite number, NaN and Infinity included)."""
    from data.annotations import bbox_problem, is_number
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except OSError as e:
        raise EvalInputError(f'{path}: unreadable COCO results JSON ({e.strerror or e})') \
            from None
    try:
        res = json.loads(data.decode('utf-8'))
    except UnicodeError:
        raise EvalInputError(f'{path}: not a COCO results JSON (binary data)') from None
    except ValueError as e:
        raise EvalInputError(f'{path}: not a readable COCO results JSON ({e})') from None
    if not isinstance(res, list):
        raise EvalInputError(f'{path}: a COCO results JSON is a list of detections')
    for k, r in enumerate(res):
        if not (isinstance(r, dict) and {'image_id', 'category_id', 'bbox', 'score'} <= set(r)
                and isinstance(r['bbox'], list) and len(r['bbox']) == 4):
            raise EvalInputError(f'{path}: entry {k} is not '
                                 '{"image_id", "category_id", "bbox": [x, y, w, h], "score"}')
        if not is_number(r['score']):
            why = 'finite number' if isinstance(r['score'], float) else 'number'
            raise EvalInputError(f'{path}: entry {k}: score {r["score"]!r} is not a {why}')
        if bbox_problem(r['bbox']):
            raise EvalInputError(f'{path}: entry {k}: {bbox_problem(r["bbox"])}')
    return res


def evaluate_coco(coco_gt, results, img_ids=None, class_names=None, verbose=True):
    """Run COCOeval (bbox). Returns ``dict(stats={AP, AP50, AP75, APs, APm,
    APl, AR1, AR10, AR100, ARs, ARm, ARl}, ap={class: AP@[.5:.95], None for a
    class without ground truth}, summary=str)``; ``img_ids`` restricts the evaluation (default: all
    images of ``coco_gt``). With no detection at all every number is 0."""
    from pycocotools.cocoeval import COCOeval
    img_ids = sorted(coco_gt.getImgIds()) if img_ids is None else sorted(int(i) for i in img_ids)
    cat_ids = sorted(coco_gt.getCatIds())
    names = list(class_names) if class_names else [coco_gt.cats[c]['name'] for c in cat_ids]
    if not results:
        return dict(stats={k: 0.0 for k in STAT_NAMES}, ap={n: 0.0 for n in names},
                    summary='(no detections)')
    known = set(coco_gt.getImgIds())
    bad = next((r['image_id'] for r in results if r['image_id'] not in known), None)
    if bad is not None:
        raise EvalInputError(f'results: image_id {bad} is not in the ground truth')
    with _quiet():
        coco_dt = coco_gt.loadRes(results)
    ev = COCOeval(coco_gt, coco_dt, 'bbox')
    ev.params.imgIds = img_ids
    buf = io.StringIO()
    with _quiet():
        ev.evaluate()
        ev.accumulate()
    with contextlib.redirect_stdout(buf):
        ev.summarize()
    summary = buf.getvalue()
    if verbose:
        print(summary, end='')
    stats = {k: float(v) for k, v in zip(STAT_NAMES, ev.stats)}
    prec = ev.eval['precision'][:, :, :, 0, -1]          # [T, R, K] at area all, 100 dets
    ap = {}
    for k, n in enumerate(names[:prec.shape[2]]):
        p = prec[:, :, k]
        p = p[p > -1]
        ap[n] = float(p.mean()) if p.size else None     # no ground truth: n/a
    return dict(stats=stats, ap=ap, summary=summary)


def load_coco_gt(ann_file):
    """pycocotools ``COCO`` of an instances JSON, read and checked by the
    loader's reader (``data.annotations.read_coco_json``): a malformed file
    or an annotation of an unknown category is a one-line ``DatasetError``
    naming the file, as in ``COCODetection`` and ``python -m data.check``."""
    from pycocotools.coco import COCO
    from data.annotations import read_coco_json
    d, _ = read_coco_json(ann_file)
    coco = COCO()
    coco.dataset = d
    coco.ann_file = str(ann_file)       # named by gt_from_coco's errors
    with _quiet():
        coco.createIndex()
    return coco


def gt_from_coco(coco):
    """:class:`GroundTruth` (devkit coordinates: 0-based + 1, crowd objects
    as difficult) of every image of a pycocotools ``COCO``, images by
    ascending id, classes by ascending category id. Returns ``(gt, img_ids,
    cat_ids)``."""
    from utils.evaluation.detections import GroundTruth
    img_ids, cat_ids = sorted(coco.getImgIds()), sorted(coco.getCatIds())
    label = {c: k for k, c in enumerate(cat_ids)}
    records = []
    for i in img_ids:
        anns = [a for a in coco.imgToAnns.get(i, []) if a['category_id'] in label]
        b = np.array([a['bbox'] for a in anns], np.float64).reshape(-1, 4)
        info = coco.imgs[i]
        records.append(dict(boxes=np.c_[b[:, :2], b[:, :2] + b[:, 2:]] + 1.0,
                            labels=[label[a['category_id']] for a in anns],
                            difficult=[bool(a.get('iscrowd', 0)) for a in anns],
                            width=info.get('width', 0), height=info.get('height', 0)))
    names = tuple(coco.cats[c].get('name', str(c)) for c in cat_ids)
    return GroundTruth.from_records([str(i) for i in img_ids], names, records,
                                    getattr(coco, 'ann_file', 'COCO ground truth')), \
        img_ids, cat_ids


def dets_from_results(results, img_ids, cat_ids, path='results'):
    """:class:`Detections` (devkit coordinates) from a COCO results list, in
    the list's order; ``img_ids`` / ``cat_ids`` as :func:`gt_from_coco`."""
    from utils.evaluation.detections import Detections
    img_index = {int(i): k for k, i in enumerate(img_ids)}
    cat_index = {int(c): k for k, c in enumerate(cat_ids)}
    img, lab = [], []
    for k, r in enumerate(results):
        for key, index, out in (('image_id', img_index, img), ('category_id', cat_index, lab)):
            try:
                out.append(index[int(r[key])])
            except (KeyError, TypeError, ValueError, OverflowError):
                raise EvalInputError(f'{path}: entry {k}: {key} {r[key]!r} is not in the '
                                     'ground truth') from None
    img, lab = np.array(img, np.int64), np.array(lab, np.int64)
    b = np.array([r['bbox'] for r in results], np.float64).reshape(-1, 4)
    return Detections([str(i) for i in img_ids], img, lab,
                      np.array([r['score'] for r in results], np.float64),
                      np.c_[b[:, :2], b[:, :2] + b[:, 2:]] + 1.0)
