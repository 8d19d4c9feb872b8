"""What ``eval.py`` does, as functions: open the evaluation set, load the
model, evaluate a network or detection files, print, and write the outputs."""
import json
import os

from data.base import DatasetNotFound
from data.config import dataset_name, eval_splits
from utils.engine.cli import NMS_IOU, select_device
from utils.evaluation.coco import (dets_from_results, gt_from_coco, load_coco_gt,
                             read_results)
from utils.evaluation.detections import EvalInputError, load_voc_gt, read_devkit
from utils.evaluation.evaluate import (coco_target, default_metric, detect_dataset,
                              evaluate_detections, ground_truth, parse_metrics, print_tables,
                              save_outputs, to_json)

def open_dataset(name, args):
    """The evaluation dataset (no transform: evaluation applies BaseTransform)
    and its split: ``--set_type``, else the first of the dataset's default
    evaluation splits (``data.config.eval_splits``) that is on disk."""
    from data import get_dataset
    splits = (args.set_type,) if args.set_type else eval_splits(name)
    root = args.dataset_root or (args.voc_root if name == 'VOC' else None)
    kw = {'num_images': args.num_images} if name == 'shapes' and args.num_images else {}
    if name == 'COCO':
        kw['ann_file'] = args.ann_file
    if name == 'custom' and root is None:
        raise EvalInputError('--dataset custom needs --dataset_root')
    for k, split in enumerate(splits):
        try:
            sets = [(args.year, split)] if name == 'VOC' else split
            return get_dataset(name, root, sets, **kw), split
        except (DatasetNotFound, OSError):   # only a split not on disk: try the next
            if k == len(splits) - 1:
                raise


def resolve_dataset(args, weights=None):
    """--dataset, else the one the weights were trained on (``weights``: a
    ``utils.weights.WeightFile``; see ``dataset_of``), else VOC (one spelling:
    ``data.config.dataset_name``)."""
    from utils.weights import dataset_of
    try:
        return dataset_name(args.dataset or (dataset_of(weights) if weights else 'VOC'))
    except ValueError as e:
        raise EvalInputError(str(e)) from None


def evaluate_network(args, metrics):
    """Run the network of --trained_model over the dataset; return
    (results, dets, gt, set name, dataset)."""
    from utils.weights import build_from_weights, read_weights
    if getattr(args, 'onnx', None):
        return evaluate_exported(args, metrics)
    device = select_device(args.cuda, getattr(args, 'device', None))
    weights = read_weights(args.trained_model)
    name = resolve_dataset(args, weights)
    dataset, split = open_dataset(name, args)
    num_classes = len(dataset.classes) + 1
    net, _, order = build_from_weights(weights, size=args.size, dataset=args.dataset,
                                       num_classes=num_classes, device=device,
                                       channel_order='BGR' if args.bgr else args.channel_order,
                                       nms_thresh=getattr(args, 'nms_thresh', NMS_IOU))
    print(f'Finished loading model! ({net.cfg["name"]} SSD{net.size}, '
          f'{num_classes} classes, {order} input, {device.type})')
    net.detect.keep_top_k = getattr(args, 'keep_top_k', None)   # Caffe's per-image cap
    n = len(dataset) if not args.num_images else min(args.num_images, len(dataset))
    indices = range(n)
    gt = ground_truth(dataset, indices).require_scorable()     # before the network runs
    dets = detect_dataset(net, dataset, device, args.batch_size, args.num_workers,
                          args.confidence_threshold, args.top_k, progress=True,
                          channel_order=order, indices=indices)
    print('Evaluating detections')
    coco = coco_target(dataset, gt, indices) if 'coco' in metrics else None
    return evaluate_detections(dets, gt, metrics, coco), dets, gt, split, dataset


def evaluate_exported(args, metrics):
    """Run an exported file (--onnx: .onnx, or an OpenVINO .xml; --backend)
    over the dataset, as :func:`evaluate_network` runs a network; its size,
    preprocessing, classes and dataset come from the file's metadata."""
    from utils.export import open_exported
    runner = open_exported(args.onnx, getattr(args, 'backend', None),
                           channel_order='BGR' if args.bgr else args.channel_order,
                           conf_thresh=args.confidence_threshold, batch_size=args.batch_size)
    try:
        name = dataset_name(args.dataset or runner.dataset or 'VOC')
    except ValueError as e:
        raise EvalInputError(str(e)) from None
    dataset, split = open_dataset(name, args)
    if len(dataset.classes) + 1 != runner.num_classes:
        raise EvalInputError(f'{args.onnx}: {runner.num_classes} classes with background, '
                             f'the {name} set has {len(dataset.classes) + 1}')
    precision = runner.meta.get('precision', 'fp32')
    print(f'Finished loading model! ({args.onnx}: {runner.backend}, {precision}, '
          f'SSD{runner.size}, {runner.num_classes} classes, {runner.channel_order} input)')
    n = len(dataset) if not args.num_images else min(args.num_images, len(dataset))
    indices = range(n)
    gt = ground_truth(dataset, indices).require_scorable()
    dets = detect_dataset(runner, dataset, 'cpu', args.batch_size, args.num_workers,
                          args.confidence_threshold, progress=True, indices=indices)
    print('Evaluating detections')
    coco = coco_target(dataset, gt, indices) if 'coco' in metrics else None
    return evaluate_detections(dets, gt, metrics, coco), dets, gt, split, dataset


def analysis(args, results, dets, gt, dataset):
    """--analysis DIR: the error analysis (``utils.evaluation.analysis``),
    printed and written; the gallery when the images are known (a dataset,
    or VOC's JPEGImages beside the annotations)."""
    from utils.evaluation.analysis import analysis_table, write_analysis
    from utils.evaluation.evaluate import image_ids
    if dataset is None and args.detections and resolve_dataset(args) == 'VOC':
        try:
            dataset, _ = open_dataset('VOC', args)
        except (DatasetNotFound, OSError):
            dataset = None
    pull = None
    if dataset is not None:
        index = {k: i for i, k in enumerate(image_ids(dataset, range(len(dataset))))}
        if all(k in index for k in gt.image_ids):
            pull = lambda i: dataset.pull_image(index[gt.image_ids[i]])  # noqa: E731
    coco = results.get('coco', {}).get('stats')
    result, paths = write_analysis(dets, gt, args.analysis, args.analysis_thresh,
                                   args.gallery, pull, coco)
    print(analysis_table(result))
    print(f'analysis: {", ".join(os.path.basename(p) for p in paths)} in {args.analysis}'
          + ('' if pull else ' (no gallery: the images are not known)'))
    return result


def set_name(name, args):
    """The <set> of det_<set>_<class>.txt: --set_type or the dataset's default."""
    return args.set_type or eval_splits(name)[0]


def evaluate_files(args, metrics):
    """Evaluate --detections (a folder of devkit files or a COCO results
    JSON) without a network; return (results, dets, gt, set name, dataset
    or None: the images, for the --analysis gallery, when they are known)."""
    path = args.detections
    if os.path.isfile(path):
        if not args.ann_file:
            raise EvalInputError(f'{path}: a COCO results JSON needs --ann_file')
        coco_gt = load_coco_gt(args.ann_file)
        gt, img_ids, cat_ids = gt_from_coco(coco_gt)
        dets = dets_from_results(read_results(path), img_ids, cat_ids, path)
        return (evaluate_detections(dets, gt, metrics, (coco_gt, img_ids, cat_ids)), dets, gt,
                os.path.splitext(os.path.basename(path))[0], None)
    name = resolve_dataset(args)
    dataset = None
    if name == 'VOC':
        from data import VOC_CLASSES
        gt = load_voc_gt(args.dataset_root or args.voc_root, args.year,
                         args.set_type or eval_splits('VOC')[0], VOC_CLASSES)
        coco = None
    elif name == 'COCO' and args.ann_file:
        coco_gt = load_coco_gt(args.ann_file)
        gt, img_ids, cat_ids = gt_from_coco(coco_gt)
        coco = (coco_gt, img_ids, cat_ids)
    else:
        dataset, _ = open_dataset(name, args)
        gt = ground_truth(dataset)
        coco = coco_target(dataset, gt, range(len(gt.image_ids))) if 'coco' in metrics else None
    set_type = args.set_type if (args.set_type and name == 'VOC') else None
    dets = read_devkit(path, gt.class_names, gt.image_ids, set_type)
    return evaluate_detections(dets, gt, metrics, coco), dets, gt, set_name(name, args), dataset


def run(args):
    """eval.py's body; returns the --json dict."""
    results_json = bool(args.detections) and os.path.isfile(args.detections)  # COCO results
    metrics = parse_metrics(args.metric or default_metric('COCO' if results_json else args.dataset))
    if args.detections:
        results, dets, gt, name, dataset = evaluate_files(args, metrics)
    else:
        results, dets, gt, name, dataset = evaluate_network(args, metrics)
    print_tables(results)
    written = save_outputs(results, dets, gt.class_names, args.save_folder, name,
                           pr_curves=getattr(args, 'pr_curves', True))
    if getattr(args, 'analysis', None):
        analysis(args, results, dets, gt, dataset)
    if args.cleanup:
        for p in written:
            if os.path.basename(p).find('det_') >= 0 and p.endswith('.txt'):
                os.remove(p)
    out = to_json(results, len(gt.image_ids), len(dets))
    if args.json:
        folder = os.path.dirname(os.path.abspath(args.json))
        os.makedirs(folder, exist_ok=True)
        with open(args.json, 'wt') as f:
            json.dump(out, f, indent=2)
    return out
