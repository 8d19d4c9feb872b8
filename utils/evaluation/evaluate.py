"""Evaluating a detector on a dataset: batched inference, then the VOC07,
VOC2010+ and COCO metrics, the devkit files, PR curves and the printed table.

``evaluate_model(net, dataset, ...)`` is the one call train.py (evaluation
during training), eval.py and ``make demo`` use; it returns the ``eval.py
--json`` dict::

    {"voc07": {"map": float, "ap": {class: float or None}},
     "voc12": {"map": float, "ap": {class: float or None}},
     "coco": {"AP": float, "AP50": ..., "ARl": float},
     "images": int, "detections": int}

holding only the metrics asked for. A class without ground truth in the set
(``npos == 0``) has AP None (``null``, printed ``n/a``) and is left out of
``map``.
"""
import os

import numpy as np
import torch
import torch.utils.data as tud

from data.config import preprocess_of
from utils.evaluation.coco import coco_from_gt, coco_results, evaluate_coco, write_results
from utils.evaluation.detections import Detections, GroundTruth, voc_record, write_devkit
from utils.inference import inference_phase, split_detections, unwrap
from utils.evaluation.voc import evaluate_voc

METRICS = ('voc07', 'voc12', 'coco')


def parse_metrics(text):
    """'voc07,coco' -> ('voc07', 'coco'); unknown names raise ValueError."""
    names = tuple(m.strip().lower() for m in str(text).split(',') if m.strip())
    bad = [m for m in names if m not in METRICS]
    if bad or not names:
        raise ValueError(f'unknown metric(s) {bad or text!r}: choose from {", ".join(METRICS)}')
    return names


def default_metric(dataset):
    """The metric a dataset is judged by: 'coco' for COCO, else 'voc07'
    (eval.py --metric and train.py --eval_metric default to it)."""
    return 'coco' if dataset == 'COCO' else 'voc07'


def headline(results, metric):
    """The one number of ``metric`` in ``evaluate_model``'s result: the mAP
    for 'voc07'/'voc12', AP (IoU .50:.95) for 'coco'."""
    return float(results['coco']['AP'] if metric == 'coco' else results[metric]['map'])


# ---------------------------------------------------------------- inference
class _EvalView(tud.Dataset):
    """Item ``j`` -> (image [3, S, S] float32, dataset index, (h, w)): the
    dataset's ``pull_image`` through ssd.pytorch's BaseTransform, swapped to
    RGB unless ``channel_order`` is 'BGR'. Independent of the dataset's own
    (training) transform."""

    def __init__(self, dataset, indices, size, mean, channel_order, std=None):
        from data import BaseTransform
        self.dataset, self.indices = dataset, list(indices)
        self.transform = BaseTransform(size, mean, std)
        self.rgb = channel_order == 'RGB'

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, j):
        i = self.indices[j]
        img = self.dataset.pull_image(i)
        x = self.transform(img)[0]
        if self.rgb:
            x = x[:, :, ::-1]
        x = torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1)
        return x, i, img.shape[:2]


def _collate(batch):
    x, idx, hw = zip(*batch)
    return torch.stack(x), np.asarray(idx, np.int64), np.asarray(hw, np.float32)


def image_ids(dataset, indices):
    """Devkit image ids (str): the id itself for VOC's (root, id) tuples."""
    ids = dataset.ids
    return [str(ids[i][-1]) if isinstance(ids[i], tuple) else str(ids[i]) for i in indices]


def detect_dataset(net, dataset, device='cpu', batch_size=8, num_workers=0, conf_thresh=0.01,
                   top_k=200, progress=False, mean=None, channel_order=None, indices=None):
    """Run ``net`` over ``dataset`` (batched, under inference_mode, test phase).
    The images are resized and normalised as the network's config says
    (``data.config.preprocess_of``; ``mean`` overrides its mean). ``net``
    may also be a :class:`utils.inference.Predictor` (e.g. an exported
    file's runner, ``utils.export.open_exported``): its size, mean, std,
    channel order and ``forward`` are used (its top_k and thresholds are
    the file's; ``conf_thresh`` still filters).

    Returns :class:`Detections` in devkit coordinates (0-based pixels + 1),
    rounded as the devkit files hold them; ``image_ids`` follow ``indices``
    (default: every image)."""
    from tqdm import tqdm
    import contextlib
    from utils.inference import Predictor
    indices = list(range(len(dataset))) if indices is None else list(indices)
    device = torch.device(device)
    if isinstance(net, Predictor):      # a runner (an exported file: utils.export.open_exported)
        size, cfg_mean, std = net.size, net.mean, net.std
        order = channel_order or net.channel_order
        phase = contextlib.nullcontext(net.forward)
    else:
        order = channel_order or getattr(dataset, 'channel_order', 'RGB')
        plain_net = unwrap(net)
        size = getattr(plain_net, 'size', 300)
        cfg_mean, std = preprocess_of(getattr(plain_net, 'cfg', {}))
        phase = inference_phase(net, conf_thresh, top_k)
    view = _EvalView(dataset, indices, size, cfg_mean if mean is None else mean, order, std)
    loader = tud.DataLoader(view, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                            collate_fn=_collate, pin_memory=device.type == 'cuda')
    pos = {i: k for k, i in enumerate(indices)}
    img, lab, sc, bx = [], [], [], []
    with phase as plain, torch.inference_mode(), \
            tqdm(total=len(view), desc='im_detect', unit='img', disable=not progress) as bar:
        for x, idx, hw in loader:
            out = plain(x.to(device, non_blocking=True))
            for i, (boxes, scores, labels) in zip(idx, split_detections(out, hw, conf_thresh)):
                img.append(np.full(len(scores), pos[int(i)], np.int64))
                lab.append(labels), sc.append(scores), bx.append(boxes)
            bar.update(len(idx))
    ids = image_ids(dataset, indices)
    if not img:
        return Detections.empty(ids)
    dets = Detections(ids, np.concatenate(img), np.concatenate(lab),
                      np.concatenate(sc).astype(np.float64),
                      np.concatenate(bx).astype(np.float64).reshape(-1, 4) + 1.0)
    return dets.quantized()


# ---------------------------------------------------------------- ground truth
def ground_truth(dataset, indices=None):
    """:class:`GroundTruth` (devkit coordinates, difficult objects flagged).

    VOC-layout datasets (those with ``read_annotation``) give the XML's
    numbers as written, through the loaders' own reader, exactly as the
    devkit port reads them; other datasets go through ``pull_gt`` (0-based
    pixels, + 1)."""
    indices = list(range(len(dataset))) if indices is None else list(indices)
    read = getattr(dataset, 'read_annotation', None)
    records = []
    for i in indices:
        if read is not None:
            records.append(voc_record(read(i)))
            continue
        g = dataset.pull_gt(i)
        records.append(dict(boxes=np.asarray(g['boxes'], np.float64).reshape(-1, 4) + 1.0,
                            labels=g['labels'], difficult=g['difficult'],
                            width=g['width'], height=g['height']))
    return GroundTruth.from_records(image_ids(dataset, indices), tuple(dataset.classes), records,
                                    getattr(dataset, 'source', None) or dataset.name)


def coco_target(dataset, gt, indices):
    """(coco_gt, img_ids, cat_ids) for the COCO metric: the dataset's own
    pycocotools index for COCODetection, else one built from ``gt``."""
    coco = getattr(dataset, 'coco', None)
    if coco is not None and hasattr(coco, 'loadRes'):
        img_ids = [int(dataset.ids[i]) for i in indices]
        cat_ids = getattr(dataset, 'label_to_cat_id', None) or sorted(coco.getCatIds())
        return coco, img_ids, list(cat_ids)
    return coco_from_gt(gt), list(range(1, len(gt.image_ids) + 1)), \
        list(range(1, len(gt.class_names) + 1))


# ---------------------------------------------------------------- metrics
def evaluate_detections(dets, gt, metrics=('voc07',), coco=None, verbose=False):
    """All chosen metrics. ``coco``: (coco_gt, img_ids, cat_ids) or None (built
    from ``gt``). Returns ``{'voc07': {map, ap, rec, prec, npos}, 'voc12':
    ..., 'coco': {stats, ap, summary, results}}``. A set with no image, or
    no object to score, is an EvalInputError (``GroundTruth.require_scorable``)."""
    gt.require_scorable()
    out = {}
    for m in metrics:
        if m in ('voc07', 'voc12'):
            out[m] = evaluate_voc(dets, gt, use_07_metric=(m == 'voc07'))
        elif m == 'coco':
            coco_gt, img_ids, cat_ids = coco or (coco_from_gt(gt),
                                                 list(range(1, len(gt.image_ids) + 1)),
                                                 list(range(1, len(gt.class_names) + 1)))
            res = coco_results(dets, img_ids, cat_ids)
            out[m] = evaluate_coco(coco_gt, res, img_ids, gt.class_names, verbose=verbose)
            out[m]['results'] = res
    return out


def to_json(results, images, detections):
    """The ``eval.py --json`` dict (plain floats, only the chosen metrics)."""
    out = {}
    for m in ('voc07', 'voc12'):
        if m in results:
            r = results[m]
            out[m] = {'map': float(r['map']),
                      'ap': {k: None if v is None else float(v) for k, v in r['ap'].items()}}
    if 'coco' in results:
        out['coco'] = {k: float(v) for k, v in results['coco']['stats'].items()}
    out['images'] = int(images)
    out['detections'] = int(detections)
    return out


def _fmt(ap, spec):
    """An AP as the table prints it; ``n/a`` for a class without ground truth."""
    return 'n/a' if ap is None else format(ap, spec)


def voc_table(result, use_07_metric):
    """ssd.pytorch's printed table for one VOC metric, line for line. A class
    without ground truth (AP None) shows ``n/a`` and is left out of the mean."""
    aps = list(result['ap'].values())
    known = [ap for ap in aps if ap is not None]
    mean = np.mean(known) if known else 0.0
    lines = ['VOC07 metric? ' + ('Yes' if use_07_metric else 'No')]
    lines += ['AP for {} = {}'.format(c, _fmt(ap, '.4f')) for c, ap in result['ap'].items()]
    lines += ['Mean AP = {:.4f}'.format(mean), '~~~~~~~~', 'Results:']
    lines += [_fmt(ap, '.3f') for ap in aps]
    lines += ['{:.3f}'.format(mean), '~~~~~~~~', '',
              '--------------------------------------------------------------',
              'Results computed with the **unofficial** Python eval code.',
              'Results should be very close to the official MATLAB eval code.',
              '--------------------------------------------------------------']
    return '\n'.join(lines)


def coco_table(result):
    """The same layout for COCO: per-class AP@[.5:.95], then pycocotools'
    12-line summary."""
    table = voc_table(dict(ap=result['ap']), True).splitlines()[1:-5]
    return '\n'.join(['COCO metric (pycocotools, AP@[.5:.95])'] + table
                     + [result['summary'].rstrip()])


def print_tables(results):
    for m in METRICS:
        if m in results:
            print(coco_table(results[m]) if m == 'coco' else voc_table(results[m], m == 'voc07'))


def save_outputs(results, dets, class_names, folder, set_type='test', pr_curves=True):
    """Devkit files, COCO results JSON (when computed) and PR curves into
    ``folder``. Returns the list of written paths."""
    from utils.evaluation.pr_curves import save_pr_curves
    paths = write_devkit(dets, class_names, folder, set_type)
    if 'coco' in results:
        paths.append(write_results(results['coco']['results'],
                                   os.path.join(folder, f'detections_{set_type}_results.json')))
    if pr_curves:
        paths += save_pr_curves(folder, results)
    return paths


def evaluate_model(net, dataset, device='cpu', batch_size=8, num_workers=0, metrics=('voc07',),
                   conf_thresh=0.01, top_k=200, progress=False, save_folder=None,
                   set_type='test', mean=None, channel_order=None, num_images=None,
                   verbose=False, analysis=None, analysis_thresh=0.5, gallery=16):
    """Evaluate ``net`` (either phase; restored afterwards) on ``dataset``.

    Returns the ``eval.py --json`` dict (see the module docstring). With
    ``save_folder`` it also writes the devkit files, COCO results JSON and PR
    curves there; ``verbose`` prints the tables. With ``analysis`` (a
    folder) it writes the error analysis there
    (:func:`utils.evaluation.analysis.write_analysis`, at ``analysis_thresh``,
    ``gallery`` images)."""
    if isinstance(metrics, str):
        metrics = parse_metrics(metrics)
    n = len(dataset) if num_images is None else min(int(num_images), len(dataset))
    indices = list(range(n))
    gt = ground_truth(dataset, indices).require_scorable()     # before the network runs
    dets = detect_dataset(net, dataset, device, batch_size, num_workers, conf_thresh, top_k,
                          progress, mean, channel_order, indices)
    coco = coco_target(dataset, gt, indices) if 'coco' in metrics else None
    results = evaluate_detections(dets, gt, metrics, coco, verbose=False)
    if verbose:
        print_tables(results)
    if save_folder:
        save_outputs(results, dets, gt.class_names, save_folder, set_type)
    if analysis:       # a report: a failure warns, the evaluation stands (training goes on)
        from utils.evaluation.analysis import write_analysis
        try:
            write_analysis(dets, gt, analysis, analysis_thresh, gallery,
                           lambda i: dataset.pull_image(indices[i]),
                           results.get('coco', {}).get('stats'))
        except Exception as e:  # noqa: BLE001
            import warnings
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            warnings.warn(f'{analysis}: the error analysis was not written ({msg})',
                          RuntimeWarning)
    return to_json(results, len(indices), len(dets))
