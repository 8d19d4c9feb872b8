"""What ``eval.py`` does, as functions: open the evaluation set, load the
model, evaluate a network or detection files, print, and write the outputs."""
import json
import os
import sys

import torch

from utils.checkpoint import CheckpointError
from utils.evaluation.coco import (dets_from_results, gt_from_coco, load_coco_gt,
                             read_results)
from utils.evaluation.detections import EvalInputError, load_voc_gt, read_devkit
from utils.evaluation.evaluate import (coco_target, detect_dataset, evaluate_detections,
                              ground_truth, parse_metrics, print_tables,
                              save_outputs, to_json)

DEFAULT_SETS = {'voc': 'test', 'shapes': 'val', 'coco': 'val2017', 'custom': ('test', 'val')}


def str2bool(v):
    """ssd.pytorch's flag parser: 'yes', 'true', 't', '1' are True."""
    return str(v).lower() in ('yes', 'true', 't', '1')


def open_dataset(name, args):
    """The evaluation dataset (no transform: evaluation applies BaseTransform)."""
    from data import DatasetError, get_dataset
    key = name.lower()
    sets = args.set_type or DEFAULT_SETS[key]
    if key == 'voc':
        return get_dataset('VOC', args.dataset_root or args.voc_root, [(args.year, sets)])
    if key == 'shapes':
        kw = {'num_images': args.num_images} if args.num_images else {}
        return get_dataset('shapes', None, sets, **kw)
    if key == 'coco':
        from data import COCODetection, COCO_ROOT
        return COCODetection(args.dataset_root or COCO_ROOT, sets, ann_file=args.ann_file)
    if args.dataset_root is None:
        raise EvalInputError('--dataset custom needs --dataset_root')
    for k, s in enumerate((sets,) if isinstance(sets, str) else sets):
        try:
            return get_dataset('custom', args.dataset_root, s)
        except (DatasetError, FileNotFoundError, OSError):
            if k == len(sets) - 1:
                raise


def resolve_dataset(args, meta):
    """--dataset, else the checkpoint's args['dataset'], else VOC."""
    name = args.dataset or meta.get('args', {}).get('dataset') or 'VOC'
    key = str(name).lower()
    if key not in DEFAULT_SETS:
        raise EvalInputError(f'unknown dataset {name!r}: choose VOC, COCO, shapes or custom')
    return {'voc': 'VOC', 'coco': 'COCO', 'shapes': 'shapes', 'custom': 'custom'}[key]


def device_for(cuda):
    """--cuda None: CUDA when present; True without CUDA falls back to CPU."""
    if cuda is None or cuda:
        if torch.cuda.is_available():
            torch.backends.cudnn.benchmark = True
            return torch.device('cuda')
        if cuda:
            print('CUDA is not available: evaluating on the CPU.', file=sys.stderr)
    return torch.device('cpu')


def evaluate_network(args, metrics):
    """Run the network of --trained_model over the dataset; return
    (results, dets, gt, set name, dataset)."""
    from utils.inference import build_model, read_checkpoint
    state, meta = read_checkpoint(args.trained_model)
    name = resolve_dataset(args, meta)
    dataset = open_dataset(name, args)
    num_classes = len(dataset.classes) + 1
    net, info = build_model(state, meta, args.trained_model, dataset=name if (
        args.dataset or name == 'shapes') else None, size=args.size, num_classes=num_classes)
    order = 'BGR' if args.bgr else (args.channel_order or info['channel_order'])
    device = device_for(args.cuda)
    net = net.to(device)
    print(f'Finished loading model! ({info["preset"]} SSD{info["size"]}, '
          f'{num_classes} classes, {order} input, {device.type})')
    n = len(dataset) if not args.num_images else min(args.num_images, len(dataset))
    indices = range(n)
    dets = detect_dataset(net, dataset, device, args.batch_size, args.num_workers,
                          args.confidence_threshold, args.top_k, progress=True,
                          channel_order=order, indices=indices)
    print('Evaluating detections')
    gt = ground_truth(dataset, indices)
    coco = coco_target(dataset, gt, indices) if 'coco' in metrics else None
    return evaluate_detections(dets, gt, metrics, coco), dets, gt, set_name(name, args)


def set_name(name, args):
    """The <set> of det_<set>_<class>.txt: --set_type or the dataset's default."""
    s = args.set_type or DEFAULT_SETS[name.lower()]
    return s if isinstance(s, str) else s[0]


def evaluate_files(args, metrics):
    """Evaluate --detections (a folder of devkit files or a COCO results
    JSON) without a network; return (results, dets, gt)."""
    path = args.detections
    if os.path.isfile(path):
        if not args.ann_file:
            raise EvalInputError(f'{path}: a COCO results JSON needs --ann_file')
        coco_gt = load_coco_gt(args.ann_file)
        gt, img_ids, cat_ids = gt_from_coco(coco_gt)
        dets = dets_from_results(read_results(path), img_ids, cat_ids, path)
        return (evaluate_detections(dets, gt, metrics, (coco_gt, img_ids, cat_ids)), dets, gt,
                os.path.splitext(os.path.basename(path))[0])
    name = args.dataset or 'VOC'
    key = name.lower()
    if key == 'voc':
        from data import VOC_CLASSES
        gt = load_voc_gt(args.dataset_root or args.voc_root, args.year,
                         args.set_type or 'test', VOC_CLASSES)
        coco = None
    elif key == 'coco' and args.ann_file:
        coco_gt = load_coco_gt(args.ann_file)
        gt, img_ids, cat_ids = gt_from_coco(coco_gt)
        coco = (coco_gt, img_ids, cat_ids)
    else:
        dataset = open_dataset(resolve_dataset(args, {}), args)
        gt = ground_truth(dataset)
        coco = coco_target(dataset, gt, range(len(gt.image_ids))) if 'coco' in metrics else None
    set_type = args.set_type if (args.set_type and key == 'voc') else None
    dets = read_devkit(path, gt.class_names, gt.image_ids, set_type)
    return evaluate_detections(dets, gt, metrics, coco), dets, gt, set_name(name, args)


def run(args):
    """eval.py's body; returns the --json dict."""
    metrics = parse_metrics(args.metric or ('coco' if (args.dataset or '').lower() == 'coco'
                                            else 'voc07'))
    if args.detections:
        results, dets, gt, name = evaluate_files(args, metrics)
    else:
        results, dets, gt, name = evaluate_network(args, metrics)
    print_tables(results)
    written = save_outputs(results, dets, gt.class_names, args.save_folder, name,
                           pr_curves=getattr(args, 'pr_curves', True))
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


def main(args):
    """Run with one-line errors (no traceback) and exit code 1 on bad input."""
    from data import DatasetError
    try:
        return run(args)
    except (CheckpointError, EvalInputError, DatasetError, ValueError, OSError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f'eval.py: error: {msg}', file=sys.stderr)
        sys.exit(1)
