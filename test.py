"""Run a trained SSD and look at its detections.

    python test.py --trained_model weights/ssd300_mAP_77.43_v2.pth          # VOC07 test -> eval/test1.txt
    python test.py --trained_model weights/ssd300_mAP_77.43_v2.pth --input photos/ clip.mp4 --save_folder out/
    python test.py --onnx ssd300.onnx --input photos/      # a file from python -m utils.export, onnxruntime
    python test.py --onnx ssd300.xml --input photos/       # an OpenVINO IR (--backend openvino)

Without --input it does ssd.pytorch's job: ``<save_folder>/test1.txt`` with the
ground truth and the predictions above --visual_threshold for every VOC test
image. With --input (images, folders, videos) it writes the drawn pictures and
videos into --save_folder, plus ``detections.json``. See doc/evaluation.md.
"""
import argparse
import sys

from data import VOC_ROOT
from utils.engine.cli import (add_cuda_flag, add_dataset_flag, add_detect_flags,
                              add_source_flag, add_weights_flag, run_script, size_flag)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Single Shot MultiBox Detection')
    add_weights_flag(p, '--trained_model', 'weights/ssd_300_VOC0712.pth',
                     'Trained state_dict file path to open (default: %(default)s)')
    p.add_argument('--save_folder', default='eval/', type=str, help='Dir to save results')
    add_cuda_flag(p)
    p.add_argument('--voc_root', default=VOC_ROOT, help='Location of VOC root directory')
    p.add_argument('-f', default=None, type=str, help='Dummy arg so we can load in Jupyter Notebooks')
    add_source_flag(p, '--input', nargs='+',
                    help='Images, folders and video files to run on (instead of VOC test)')
    add_dataset_flag(p, help='What the model was trained on (class names, model preset); '
                             'default: the checkpoint\'s, else shapes when only that preset '
                             'fits the weights, else VOC')
    p.add_argument('--dataset_root', default=None, help='Custom dataset root (class names)')
    p.add_argument('--year', default='2007', help='VOC year (without --input)')
    p.add_argument('--set_type', default=None,
                   help='Image set without --input (default: VOC test, shapes val, COCO '
                        'val2017 else val2014, custom val else test)')
    p.add_argument('--size', default=None, type=size_flag,
                   help='input size (default: the one the file records, else from its shapes)')
    p.add_argument('--batch_size', default=8, type=int)
    add_detect_flags(p, '--visual_threshold', 0.6,
                     'Final confidence threshold: the detections written and drawn (the '
                     'network keeps those above min(0.01, it))',
                     top_k_help='Detections kept per class')
    p.add_argument('--channel_order', default=None, choices=['RGB', 'BGR'])
    p.add_argument('--bgr', action='store_true', help='Same as --channel_order BGR')
    p.add_argument('--onnx', default=None,
                   help='Run this exported file (python -m utils.export: .onnx, or an OpenVINO '
                        '.xml) instead of --trained_model; its size, classes and channel order '
                        'are in the file')
    p.add_argument('--backend', default=None, choices=['onnxruntime', 'openvino'],
                   help='What runs --onnx (default: openvino for .xml, else onnxruntime)')
    return p.parse_args(argv)


def main(argv=None):
    """``python test.py ARGV``; returns the exit code (1: one-line error)."""
    args = parse_args(argv)
    return run_script('test.py', run, args)


def run(args):
    """test.py's body: the model from --trained_model (``build_from_weights``),
    then --input pictures and videos, or ``test1.txt`` on the test split."""
    from data.config import eval_splits
    from utils.engine.cli import select_device
    from utils.engine.tester import run_inputs, write_test1
    from utils.inference import Predictor
    from utils.weights import build_from_weights, dataset_of, read_weights
    device = select_device(args.cuda, args.device)
    if args.onnx:             # an exported file, onnxruntime or OpenVINO (utils.export)
        from utils.export import open_exported
        predictor = open_exported(args.onnx, args.backend, device,
                                  'BGR' if args.bgr else args.channel_order,
                                  min(0.01, args.visual_threshold), args.batch_size)
        name, names = args.dataset or predictor.dataset or 'VOC', predictor.classes
    else:
        weights = read_weights(args.trained_model)
        name = args.dataset or dataset_of(weights)
        net, names, order = build_from_weights(
            weights, size=args.size, dataset=args.dataset, dataset_root=args.dataset_root,
            channel_order='BGR' if args.bgr else args.channel_order, device=device,
            top_k=args.top_k, nms_thresh=args.nms_thresh)
        predictor = Predictor(net, net.size, device=device, channel_order=order,
                              conf_thresh=min(0.01, args.visual_threshold),
                              batch_size=args.batch_size)
    print('Finished loading model!')
    if args.input:
        run_inputs(predictor, args.input, names, args.save_folder, args.visual_threshold,
                   args.batch_size)
        return 0
    from data import get_dataset
    split = args.set_type or eval_splits(name)[0]
    testset = get_dataset(name, args.voc_root if name == 'VOC' else args.dataset_root,
                          [(args.year, split)] if name == 'VOC' else split)
    print(write_test1(predictor, testset, names, args.save_folder,
                      args.visual_threshold, args.batch_size))
    return 0


if __name__ == '__main__':
    sys.exit(main())
