"""Evaluate an SSD: the VOC07 AP table, VOC2010+ and COCO AP, PR curves, error analysis.

    python eval.py --trained_model weights/ssd300_mAP_77.43_v2.pth
    python eval.py --trained_model runs/demo/shapes.pth --dataset shapes --metric voc07,voc12,coco
    python eval.py --detections results/ --voc_root ~/data/VOCdevkit --metric voc07,voc12
    python eval.py --detections dets.json --dataset COCO --ann_file instances_val2017.json
    python eval.py --trained_model W --dataset custom --dataset_root mydata --set test
    python eval.py --onnx W_int8.onnx --dataset shapes      # an exported file (or W.xml)
    python eval.py --trained_model W --analysis out/        # confusion matrix, P/R/F1, AP by size, gallery

The flags of ssd.pytorch's eval.py keep their meaning; see doc/evaluation.md.
"""
import argparse
import sys

from data import VOC_ROOT
from utils.engine.cli import (add_cuda_flag, add_dataset_flag, add_detect_flags,
                              add_weights_flag, count_flag, run_script, score_flag,
                              size_flag, str2bool)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Single Shot MultiBox Detector Evaluation')
    add_weights_flag(p, '--trained_model', 'weights/ssd300_mAP_77.43_v2.pth',
                     'Trained state_dict file path to open (ssd.pytorch weights, '
                     'snapshots or full checkpoints) (default: %(default)s)')
    p.add_argument('--save_folder', default='eval/', type=str,
                   help='File path to save results (devkit files, PR curves, COCO JSON)')
    p.add_argument('--keep_top_k', default=None, type=int,
                   help='Keep at most this many detections per image after NMS, across '
                        'classes (Caffe and the paper: 200; default: no cap, as ssd.pytorch; '
                        'see doc/reproduction.md)')
    add_detect_flags(p, '--confidence_threshold', 0.01, 'Detection confidence threshold',
                     top_k_help='Detections kept per class before NMS (ssd.pytorch parsed 5 '
                                'but never used it; its Detect kept 200)')
    add_cuda_flag(p)
    p.add_argument('--voc_root', default=VOC_ROOT, help='Location of VOC root directory')
    p.add_argument('--cleanup', default=False, type=str2bool,
                   help='Remove the det_<set>_<class>.txt files after evaluation')
    add_dataset_flag(p, help='Dataset (default: the checkpoint\'s, else shapes when only that '
                             'preset fits the weights, else VOC)')
    p.add_argument('--dataset_root', default=None,
                   help='Dataset root for COCO / custom (VOC: --voc_root)')
    p.add_argument('--year', default='2007', help='VOC year')
    p.add_argument('--set_type', default=None,
                   help='Image set (default: VOC test, shapes val, COCO val2017 else val2014, '
                        'custom val else test)')
    p.add_argument('--size', default=None, type=size_flag,
                   help='input size (default: the one the file records, else SSD300 or SSD512 from its shapes)')
    p.add_argument('--metric', default=None,
                   help='Comma-separated voc07,voc12,coco (default voc07; COCO: coco)')
    p.add_argument('--json', default=None, help='Write the chosen metrics to this JSON file')
    p.add_argument('--batch_size', default=8, type=int, help='Images per forward pass')
    p.add_argument('--num_workers', default=2, type=int, help='DataLoader workers')
    p.add_argument('--detections', default=None,
                   help='Evaluate detection files instead of a network: a folder of '
                        '*det_<set>_<class>.txt or a COCO results JSON')
    p.add_argument('--ann_file', default=None, help='COCO instances JSON (ground truth)')
    p.add_argument('--num_images', default=None, type=int,
                   help='Evaluate only the first N images')
    p.add_argument('--channel_order', default=None, choices=['RGB', 'BGR'],
                   help='Input channel order (default: RGB; BGR for Caffe-converted weights)')
    p.add_argument('--bgr', action='store_true', help='Same as --channel_order BGR')
    p.add_argument('--pr_curves', default=True, type=str2bool,
                   help='Write <class>_pr.png and pr_curves.png into --save_folder')
    p.add_argument('--onnx', default=None, metavar='FILE',
                   help='Evaluate this exported file (python -m utils.export: .onnx, or an '
                        'OpenVINO .xml) instead of --trained_model; its size, preprocessing '
                        'and classes are in the file')
    p.add_argument('--backend', default=None, choices=['onnxruntime', 'openvino'],
                   help='What runs --onnx (default: openvino for .xml, else onnxruntime)')
    p.add_argument('--analysis', default=None, metavar='DIR',
                   help='Write the error analysis into DIR: confusion matrix (PNG, JSON), '
                        'precision/recall/F1 per class with the F1-best threshold '
                        '(per_class.csv), AP by object size, and a gallery of the worst '
                        'images (doc/evaluation.md)')
    p.add_argument('--analysis_thresh', default=0.5, type=score_flag,
                   help='Score threshold of the --analysis counts (default: %(default)s)')
    p.add_argument('--gallery', default=16, type=count_flag,
                   help='Images in the --analysis gallery, most errors first; 0: none '
                        '(default: %(default)s)')
    p.add_argument('--set', '--val_set', dest='image_set', default=None,
                   help='Image set, spelled as train.py\'s --val_set: VOC 2007_test (sets '
                        '--year and --set_type), COCO val2017, custom val or test')
    args = p.parse_args(argv)
    if args.image_set:     # one spelling with train.py; --year/--set_type stay ssd.pytorch's
        year, sep, split = args.image_set.partition('_')
        if sep and year.isdigit() and str(args.dataset or 'VOC').upper() == 'VOC':
            args.year, args.set_type = year, split
        else:
            args.set_type = args.image_set
    return args


def main(argv=None):
    """``python eval.py ARGV``; returns the exit code (1: one-line error)."""
    from utils.engine.evaluator import run
    args = parse_args(argv)

    def body():
        run(args)          # prints the tables, writes --save_folder and --json
        return 0
    return run_script('eval.py', body)


if __name__ == '__main__':
    sys.exit(main())
