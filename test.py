"""Run a trained SSD and look at its detections.

    python test.py --trained_model weights/ssd300_mAP_77.43_v2.pth          # VOC07 test -> eval/test1.txt
    python test.py --trained_model weights/ssd300_mAP_77.43_v2.pth --input photos/ clip.mp4 --save_folder out/

Without --input it does ssd.pytorch's job: ``<save_folder>/test1.txt`` with the
ground truth and the predictions above --visual_threshold for every VOC test
image. With --input (images, folders, videos) it writes the drawn pictures and
videos into --save_folder, plus ``detections.json``. See doc/evaluation.md.
"""
import argparse
import sys

from data import VOC_ROOT
from utils.engine.evaluator import device_for, str2bool


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Single Shot MultiBox Detection')
    p.add_argument('--trained_model', default='weights/ssd_300_VOC0712.pth', type=str,
                   help='Trained state_dict file path to open')
    p.add_argument('--save_folder', default='eval/', type=str, help='Dir to save results')
    p.add_argument('--visual_threshold', default=0.6, type=float,
                   help='Final confidence threshold')
    p.add_argument('--cuda', default=None, type=str2bool,
                   help='Use cuda to train model (default: when available)')
    p.add_argument('--voc_root', default=VOC_ROOT, help='Location of VOC root directory')
    p.add_argument('-f', default=None, type=str, help='Dummy arg so we can load in Jupyter Notebooks')
    p.add_argument('--input', nargs='+', default=None,
                   help='Images, folders and video files to run on (instead of VOC test)')
    p.add_argument('--dataset', default=None, choices=['VOC', 'COCO', 'shapes', 'custom'],
                   type=lambda s: {'voc': 'VOC', 'coco': 'COCO'}.get(s.lower(), s),
                   help='What the model was trained on (class names, model preset); '
                        'default: the checkpoint\'s, else VOC')
    p.add_argument('--dataset_root', default=None, help='Custom dataset root (class names)')
    p.add_argument('--year', default='2007', help='VOC year (without --input)')
    p.add_argument('--set_type', default='test', help='VOC image set (without --input)')
    p.add_argument('--size', default=None, type=int, choices=[300, 512])
    p.add_argument('--batch_size', default=8, type=int)
    p.add_argument('--top_k', default=200, type=int, help='Detections kept per class')
    p.add_argument('--channel_order', default=None, choices=['RGB', 'BGR'])
    p.add_argument('--bgr', action='store_true', help='Same as --channel_order BGR')
    return p.parse_args(argv)


def main(args):
    from data import DatasetError, get_dataset
    from utils.checkpoint import CheckpointError
    from utils.inference import Predictor, build_model, read_checkpoint
    from utils.engine.tester import InputError, class_names_for, run_inputs, write_test1
    try:
        state, meta = read_checkpoint(args.trained_model)
        name = args.dataset or meta.get('args', {}).get('dataset') or 'VOC'
        explicit = args.dataset or meta.get('args', {}).get('dataset')
        known = class_names_for(name, None, args.dataset_root) if explicit else None
        num = len(known) + 1 if known else None      # else: the state dict's class count
        net, info = build_model(state, meta, args.trained_model, dataset=name if (
            args.dataset or name == 'shapes') else None, size=args.size, num_classes=num,
            top_k=args.top_k)
        names = class_names_for(name, info['num_classes'], args.dataset_root)
        device = device_for(args.cuda)
        order = 'BGR' if args.bgr else (args.channel_order or info['channel_order'])
        predictor = Predictor(net.to(device), info['size'], device=device, channel_order=order,
                              conf_thresh=min(0.01, args.visual_threshold),
                              batch_size=args.batch_size)
        print('Finished loading model!')
        if args.input:
            run_inputs(predictor, args.input, names, args.save_folder, args.visual_threshold,
                       args.batch_size)
        else:
            testset = get_dataset(name, args.voc_root if name == 'VOC' else args.dataset_root,
                                  [(args.year, args.set_type)] if name == 'VOC'
                                  else args.set_type)
            print(write_test1(predictor, testset, names, args.save_folder,
                              args.visual_threshold, args.batch_size))
    except (CheckpointError, DatasetError, InputError, ValueError, OSError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f'test.py: error: {msg}', file=sys.stderr)
        sys.exit(1)


if __name__ == '__main__':
    main(parse_args())
