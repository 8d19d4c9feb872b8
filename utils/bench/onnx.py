"""onnxruntime against PyTorch on the CPU: ``python -m utils.bench.onnx [--repeats N] [--threads T]``.

SSD300 (VOC, 21 classes) with seeded random weights whose background logits
are raised as in a trained model (:func:`utils.bench.core.trained_like_ssd`),
on synthetic VOC-sized images preprocessed as Predictor does. Both contenders
get the same ``[B, 3, 300, 300]`` tensor and return ``[B, 21, 200, 5]``:

- PyTorch: ``build_ssd('test')`` (channels-last weights, ``inference_mode``),
  torchvision's ``nms`` per class;
- onnxruntime: the file written by :func:`utils.export.export` (NMS inside),
  CPU provider, ``intra_op_num_threads`` = ``--threads``.

The detections are checked first (:func:`utils.export.same_detections`), then
both are timed side by side in one process (warm-up, interleaved repeats,
medians) at batch 1 and 8.
"""
import argparse
import os
import tempfile

import torch

from utils.bench import timeit
from utils.bench.core import synthetic_images, trained_like_ssd


def bench_onnx(repeats, threads, batches=(1, 8)):
    import onnxruntime as ort
    from utils.export import export, same_detections
    from utils.inference import Predictor
    net = trained_like_ssd()
    images = synthetic_images(max(batches))
    with tempfile.TemporaryDirectory() as d:
        path = export(net, os.path.join(d, 'ssd300.onnx'))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        sess = ort.InferenceSession(path, opts, providers=['CPUExecutionProvider'])
    meds = {}
    for b in batches:
        x = Predictor(net, 300).preprocess(images[:b])
        xn = x.numpy()

        def torch_run():
            with torch.inference_mode():
                return net(x)

        def ort_run():
            return sess.run(['detections'], {'images': xn})[0]

        ok, msg = same_detections(ort_run(), torch_run(), tol=1e-4)
        print(f'  check batch {b}: onnxruntime vs PyTorch class by class: {msg} '
              f'[{"OK" if ok else "MISMATCH"}]')
        med = timeit({'PyTorch build_ssd(test)': torch_run, 'onnxruntime': ort_run},
                     repeats if b == 1 else max(3, repeats // 2))
        (mt, bt), (mo, bo) = med['PyTorch build_ssd(test)'], med['onnxruntime']
        print(f'  SSD300 network + Detect, batch {b} (preprocessed [B, 3, 300, 300] in)\n'
              f'    PyTorch build_ssd(test) {mt * 1e3:9.1f} ms (min {bt * 1e3:8.1f})\n'
              f'    onnxruntime             {mo * 1e3:9.1f} ms (min {bo * 1e3:8.1f})   '
              f'PyTorch / onnxruntime: {mt / mo:.2f}x (minima {bt / bo:.2f}x)')
        meds[b] = med
    return meds


def main(argv=None):
    import onnxruntime as ort
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--repeats', type=int, default=7)
    p.add_argument('--threads', type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    load = open('/proc/loadavg').read().split()[0] if os.path.exists('/proc/loadavg') else '?'
    print(f'torch {torch.__version__}, onnxruntime {ort.__version__}, {args.threads} threads '
          f'each, {args.repeats} interleaved repeats after warm-up, medians; '
          f'{os.cpu_count()} CPUs, load average {load} at start')
    bench_onnx(args.repeats, args.threads)


if __name__ == '__main__':
    main()
