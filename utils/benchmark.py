"""One benchmark row per deployment format: speed, mAP and file size.

    python -m utils.benchmark --trained_model runs/demo/shapes.pth --dataset shapes
    python -m utils.benchmark --trained_model W --dataset VOC --num_images 500 --json bench.json

Rows: ``pytorch`` (our default path: ``build_from_weights`` + ``Predictor``),
``onnxruntime-fp32``, ``onnxruntime-int8`` (``utils.export`` with
``--int8``, calibrated on the dataset's training split), ``openvino-fp32``
(the FP32 export as an IR) and ``openvino-int8`` (the INT8 QDQ file as an
IR: OpenVINO runs its quantized convolutions with int8 kernels). Formats
whose package is missing are left out with one line saying so.

Each row: ms per image at batch 1 and images/s at batch 8 (the runner's
``forward`` on a preprocessed batch: network, decode and NMS; medians of
three rounds of blocks per format, every format with the same thread count), the VOC07
mAP on the split (the same evaluation code as eval.py:
``detect_dataset`` + ``evaluate_detections``) and the file size. The files
are written to a temporary folder (``--out_dir`` keeps them). This is the
users' command; the developers' benchmarks are under ``utils/bench/``.
"""
import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch

FORMATS = ('pytorch', 'onnxruntime-fp32', 'onnxruntime-int8', 'openvino-fp32', 'openvino-int8')
NEEDS = {'onnxruntime-fp32': ('onnx', 'onnxruntime'), 'onnxruntime-int8': ('onnx', 'onnxruntime'),
         'openvino-fp32': ('onnx', 'openvino'),
         'openvino-int8': ('onnx', 'onnxruntime', 'openvino')}


def file_size(path):
    """Bytes of a model file; an IR counts its .xml and .bin."""
    if str(path).endswith('.xml'):
        return os.path.getsize(path) + os.path.getsize(str(path)[:-4] + '.bin')
    return os.path.getsize(path)


def missing_package(fmt):
    """The package a format needs that is not installed, or None."""
    import importlib.util
    for m in NEEDS.get(fmt, ()):
        if importlib.util.find_spec(m) is None:
            return m
    return None


def build_runners(args, net, classes, order, dataset_name, folder, log=print):
    """{format: (runner, file)} for ``args.formats``: the PyTorch
    :class:`Predictor` and the exported files' runners
    (``utils.export.open_exported``), all with ``args.threads`` threads."""
    from utils import export as ex
    from utils.inference import Predictor
    runners = {}
    stem = os.path.join(folder, os.path.splitext(os.path.basename(args.trained_model))[0])
    files = {'onnxruntime-fp32': stem + '.onnx', 'onnxruntime-int8': stem + '_int8.onnx',
             'openvino-fp32': stem + '.xml', 'openvino-int8': stem + '_int8.xml'}
    calib = None
    for fmt in args.formats:
        if fmt == 'pytorch':
            runners[fmt] = (Predictor(net, net.size, channel_order=order), args.trained_model)
            continue
        miss = missing_package(fmt)
        if miss:
            log(f'{fmt}: left out ({miss} is not installed: pip install {miss})')
            continue
        int8 = fmt.endswith('int8')
        if int8 and calib is None:
            calib = ex.calibration(net, args.calib_dataset or dataset_name, args.calib_images,
                                   order, dataset_root=args.dataset_root)
        path = files[fmt]
        ex.export(net, path, classes=classes, channel_order=order, dataset=dataset_name,
                  calibration=calib if int8 else None,
                  fmt='openvino' if fmt.startswith('openvino') else 'onnx')
        runners[fmt] = (ex.open_exported(path, threads=args.threads), path)
    return runners


def time_forward(runners, batches, repeats, rounds=3):
    """{(format, batch): median seconds of ``runner.forward``}. Each format
    runs in blocks (two warm-up calls, then ``repeats`` timed calls), the
    formats in turn, ``rounds`` times: load on the machine hits all alike,
    and one runtime's idle threads (OpenMP's and onnxruntime's spin after
    each call) do not steal the cores of the next call of another, which
    call-by-call interleaving measured (PyTorch at half its speed)."""
    times = {(f, b): [] for f in runners for b in batches}
    with torch.inference_mode():
        for _ in range(rounds):
            for f, (r, _) in runners.items():
                for b, x in batches.items():
                    r.forward(x), r.forward(x)
                    for _ in range(repeats):
                        t = time.perf_counter()
                        r.forward(x)
                        times[f, b].append(time.perf_counter() - t)
    return {k: float(np.median(v)) for k, v in times.items()}


def score(runner, dataset, indices, batch_size):
    """VOC07 mAP of a runner on ``dataset[indices]`` (eval.py's code)."""
    from utils.evaluation.evaluate import detect_dataset, evaluate_detections, ground_truth
    gt = ground_truth(dataset, indices).require_scorable()
    dets = detect_dataset(runner, dataset, 'cpu', batch_size, 0, 0.01, indices=indices)
    return float(evaluate_detections(dets, gt, ('voc07',))['voc07']['map'])


def run(args, log=print):
    """Build, time and score every format; returns the rows (dicts)."""
    from utils.engine.evaluator import open_dataset, resolve_dataset
    from utils.inference import Predictor
    from utils.weights import build_from_weights, read_weights
    if args.threads:
        torch.set_num_threads(args.threads)
    args.threads = torch.get_num_threads()
    weights = read_weights(args.trained_model)
    name = resolve_dataset(args, weights)
    net, classes, order = build_from_weights(weights, 'test', dataset=args.dataset)
    dataset, split = open_dataset(name, args)
    n = len(dataset) if not args.num_images else min(args.num_images, len(dataset))
    indices = range(n)
    prep = Predictor(net, net.size, channel_order=order).preprocess
    x8 = prep([dataset.pull_image(i % len(dataset)) for i in range(8)])
    batches = {1: x8[:1].contiguous(), 8: x8}
    with tempfile.TemporaryDirectory(prefix='ssd-bench-') as tmp:
        folder = args.out_dir or tmp
        os.makedirs(folder, exist_ok=True)
        runners = build_runners(args, net, classes, order, name, folder, log)
        t = time_forward(runners, batches, args.repeats)
        rows = []
        for f, (r, path) in runners.items():
            rows.append(dict(format=f, ms_batch1=1000 * t[f, 1], images_s_batch8=8 / t[f, 8],
                             map=score(r, dataset, indices, 8), size_mb=file_size(path) / 2**20,
                             file=os.path.basename(path)))
    base = next((r for r in rows if r['format'] == 'pytorch'), None)
    for r in rows:
        r['speedup_batch8'] = r['images_s_batch8'] / base['images_s_batch8'] if base else None
    meta = dict(model=args.trained_model, dataset=name, split=split, images=n,
                size=net.size, threads=args.threads, repeats=args.repeats,
                cpu=_cpu_name())
    return rows, meta


def _cpu_name():
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or platform.machine()


def format_table(rows, meta):
    """The printed table (markdown)."""
    out = [f"{meta['model']}: SSD{meta['size']}, {meta['dataset']} {meta['split']} "
           f"({meta['images']} images), {meta['threads']} threads, {meta['cpu']}",
           '| format | ms/image, batch 1 | images/s, batch 8 | x pytorch (b8) | VOC07 mAP | size (MB) |',
           '|---|---:|---:|---:|---:|---:|']
    for r in rows:
        sp = '' if r['speedup_batch8'] is None else f"{r['speedup_batch8']:.2f}x"
        out.append(f"| {r['format']} | {r['ms_batch1']:.1f} | {r['images_s_batch8']:.1f} | {sp} | "
                   f"{100 * r['map']:.2f} | {r['size_mb']:.2f} |")
    return '\n'.join(out)


def parse_args(argv=None):
    from utils.engine.cli import add_dataset_flag
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--trained_model', required=True, help='weight file (any that eval.py reads)')
    add_dataset_flag(p, help="evaluation dataset (default: the weights')")
    p.add_argument('--dataset_root', default=None, help='dataset root (VOC: VOCdevkit)')
    p.add_argument('--set_type', default=None, help='evaluation split (default: as eval.py)')
    p.add_argument('--num_images', default=None, type=int,
                   help='score on the first N images of the split (default: all)')
    p.add_argument('--formats', default=','.join(FORMATS),
                   help=f'comma-separated subset of {",".join(FORMATS)} (default: all)')
    p.add_argument('--calib_dataset', default=None,
                   help='INT8 calibration images: dataset name or folder (default: --dataset)')
    p.add_argument('--calib_images', default=100, type=int, help='calibration images (default 100)')
    p.add_argument('--threads', default=None, type=int,
                   help="threads for every format (default: torch's, the cores)")
    p.add_argument('--repeats', default=10, type=int, help='timed calls per format, batch and round (default 10)')
    p.add_argument('--out_dir', default=None, help='keep the exported files here')
    p.add_argument('--json', default=None, help='also write the rows to this JSON file')
    args = p.parse_args(argv)
    args.formats = [f.strip() for f in args.formats.split(',') if f.strip()]
    bad = [f for f in args.formats if f not in FORMATS]
    if bad or not args.formats:
        p.error(f'--formats: unknown {bad or args.formats}; choose from {", ".join(FORMATS)}')
    if args.repeats < 1:
        p.error('--repeats must be >= 1')
    # what utils.engine.evaluator.open_dataset reads
    from data import VOC_ROOT
    args.voc_root, args.year, args.ann_file = args.dataset_root or VOC_ROOT, '2007', None
    return args


def main(argv=None):
    from utils.engine.cli import run_script
    args = parse_args(argv)

    def body():
        rows, meta = run(args)
        print(format_table(rows, meta))
        if args.json:
            folder = os.path.dirname(os.path.abspath(args.json))
            os.makedirs(folder, exist_ok=True)
            tmp = args.json + '.tmp'
            with open(tmp, 'wt') as f:
                json.dump({'meta': meta, 'rows': rows}, f, indent=2)
            os.replace(tmp, args.json)
        return 0
    return run_script('utils.benchmark', body)


if __name__ == '__main__':
    sys.exit(main())
