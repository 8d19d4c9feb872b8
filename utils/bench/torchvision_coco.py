"""How our inference with a converted torchvision SSD300 differs from torchvision's own.

    python -m utils.bench.torchvision_coco [--in ssd300_vgg16_coco-b556d3b4.pth] [--images A.jpg ...]

Without ``--in`` the model is a random-weight ``ssd300_vgg16`` (91 classes)
made to behave like a trained one (:func:`random_tv`); without
``--images``, synthetic VOC-sized images. The torchvision model is converted
with :mod:`utils.convert_torchvision`; both sides then see the same 300x300
image (resized once with OpenCV, so that resizing is not a difference).

Printed: (1) the priors: how many of our 8732 differ from torchvision's
anchors, where, and by how much; (2) the detections: torchvision as shipped,
then changed one setting at a time towards ours (our priors, no box clipping,
200 candidates per class, no cap per image), each compared with ours (same
class, score within 1e-4, box within 0.01 px); (3) what remains: the softmax
over 81 classes instead of 91, and torchvision's clamp of the decoded
log-sizes at log(1000/16).
"""
import argparse
import math
import os
from unittest import mock

import cv2
import numpy as np
import torch
from torchvision.models.detection import ssd300_vgg16
from torchvision.models.detection.image_list import ImageList

from data import BaseTransform
from data.config import MEANS, coco
from layers import PriorBox
from layers.box_utils import point_form
from utils.bench.core import FixedAnchors, synthetic_images
from utils.convert_torchvision import coco_categories, torchvision_to_ssd, kept_classes


def random_tv(seed=0, background=5.5, unused=-10.0, head_scale=0.1):
    """torchvision's ssd300_vgg16 with random weights, made to behave like a
    trained one: head weights scaled by ``head_scale`` (logits of a few
    units), background logits raised by ``background`` (few priors pass
    0.01), the unused 'N/A' classes' logits lowered by ``-unused`` (never
    trained on)."""
    torch.manual_seed(seed)
    tv = ssd300_vgg16(weights=None, weights_backbone=None).eval()
    na = [i for i, n in enumerate(coco_categories()) if n == 'N/A']
    with torch.no_grad():
        for m in (*tv.head.classification_head.module_list, *tv.head.regression_head.module_list):
            m.weight.mul_(head_scale)
        for m in tv.head.classification_head.module_list:
            b = m.bias.view(-1, 91)
            b[:, 0] += background
            b[:, na] += unused
    return tv


def compare_priors(tv):
    """Print and return ``(n_differ, max_diff)``: our priors against torchvision's anchors."""
    feats = [torch.zeros(1, 1, f, f) for f in coco['feature_maps']]
    theirs = tv.anchor_generator(ImageList(torch.zeros(1, 3, 300, 300), [(300, 300)]), feats)[0]
    ours = point_form(PriorBox(coco).forward()) * 300
    d = (ours - theirs).abs().max(1).values
    differ = d > 1e-3
    sizes = [f * f * m for f, m in zip(coco['feature_maps'], coco['mbox'])]
    level = np.searchsorted(np.cumsum(sizes), differ.nonzero().flatten().numpy(), side='right')
    levels = {int(coco['feature_maps'][k]): int((level == k).sum()) for k in np.unique(level)}
    print(f'  priors: {int(differ.sum())} of {len(d)} differ (by feature map side: {levels}); '
          f'max {d.max():.2f} px of 300 (our centres are clipped to the image, '
          f'torchvision clips only widths and heights)')
    return int(differ.sum()), float(d.max())


def _ours(net, x):
    with torch.inference_mode():
        out = net(x)
    dets = []
    for o in out:
        c, k = (o[..., 0] > 0).nonzero(as_tuple=True)
        dets.append((c.numpy(), o[c, k, 0].numpy(), (o[c, k, 1:] * 300).numpy()))
    return dets


def _theirs(tv, x_rgb01, idx, clip=True):
    patch = (mock.patch('torchvision.models.detection.ssd.box_ops.clip_boxes_to_image',
                        lambda boxes, size: boxes) if not clip else mock.patch.dict({}))
    with torch.inference_mode(), patch:
        res = tv(list(x_rgb01))
    inv = {t: i for i, t in enumerate(idx)}
    return [(np.array([inv.get(int(v), -1) for v in r['labels']]), r['scores'].numpy(),
             r['boxes'].numpy()) for r in res]


def _matched(a, b, score_tol=1e-4, box_tol=0.01):
    """How many detections of ``a`` have a partner in ``b`` (same class)."""
    n = 0
    for (ca, sa, ba), (cb, sb, bb) in zip(a, b):
        free = np.ones(len(cb), bool)
        for c, s, box in zip(ca, sa, ba):
            ok = free & (cb == c) & (np.abs(sb - s) <= score_tol) & \
                (np.abs(bb - box).max(1, initial=0) <= box_tol)
            if ok.any():
                free[np.argmax(ok)] = False
                n += 1
    return n


def compare_detections(tv, images):
    """Print the detection differences, one torchvision setting at a time."""
    from ssd import build_ssd
    idx, _ = kept_classes(coco_categories())
    sd, _ = torchvision_to_ssd(tv.state_dict())
    net = build_ssd('test', 300, 81, cfg=coco).eval()
    net.load_state_dict(sd)
    imgs = [cv2.resize(im, (300, 300)) for im in images]
    x = torch.from_numpy(np.ascontiguousarray(
        np.stack([BaseTransform(300, MEANS)(im)[0] for im in imgs])[..., ::-1])).permute(0, 3, 1, 2)
    rgb = torch.from_numpy(np.ascontiguousarray(np.stack(imgs)[..., ::-1])).permute(
        0, 3, 1, 2).float() / 255
    ours = _ours(net, x)
    n_ours = sum(len(d[0]) for d in ours)
    print(f'  detections (score > 0.01), {len(imgs)} images: ours {n_ours}')
    saved = (tv.anchor_generator, tv.topk_candidates, tv.detections_per_img)
    steps = [('torchvision as shipped', {}),
             ('+ our priors', dict(anchors=True)),
             ('+ no box clipping to the image', dict(anchors=True, clip=False)),
             ('+ 200 candidates per class (not 400)', dict(anchors=True, clip=False, topk=200)),
             ('+ no cap of 200 per image', dict(anchors=True, clip=False, topk=200, cap=False))]
    try:
        for name, s in steps:
            tv.anchor_generator = FixedAnchors(net.priors) if s.get('anchors') else saved[0]
            tv.topk_candidates = s.get('topk', saved[1])
            tv.detections_per_img = 200 * 80 if s.get('cap') is False else saved[2]
            theirs = _theirs(tv, rgb, idx, clip=s.get('clip', True))
            n = sum(len(d[0]) for d in theirs)
            m = _matched(theirs, ours)
            print(f'    {name:<40s} torchvision {n:5d}, equal to ours {m:5d} '
                  f'({n - m} of theirs and {n_ours - m} of ours unmatched)')
    finally:
        tv.anchor_generator, tv.topk_candidates, tv.detections_per_img = saved
    with torch.inference_mode():
        head = tv.head(list(tv.backbone(x).values()))
    s91 = head['cls_logits'].softmax(-1)[..., idx]
    s81 = head['cls_logits'][..., idx].softmax(-1)
    clamp = math.log(1000.0 / 16)
    print(f'  softmax over 81 classes instead of 91: max |score diff| '
          f'{(s91 - s81)[..., 1:].abs().max():.1e}; decoded log-sizes above '
          f'log(1000/16) = {clamp:.3f} (torchvision clamps them): '
          f'{int((head["bbox_regression"][..., 2:] * 0.2 > clamp).sum())}')


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--in', dest='src', default=None,
                   help="torchvision's ssd300_vgg16 file (default: random weights)")
    p.add_argument('--images', nargs='*', default=None, help='images (default: 8 synthetic)')
    p.add_argument('--threads', type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    tv = random_tv()
    if args.src:
        from utils.checkpoint import load_model_state
        tv = ssd300_vgg16(weights=None, weights_backbone=None).eval()
        tv.load_state_dict(load_model_state(args.src))
    images = ([cv2.imread(f) for f in args.images] if args.images else synthetic_images(8))
    if any(im is None for im in images):
        raise SystemExit('error: an --images file is not a readable image')
    load = open('/proc/loadavg').read().split()[0] if os.path.exists('/proc/loadavg') else '?'
    print(f'torchvision ssd300_vgg16 ({args.src or "random weights, trained-like (random_tv)"}) '
          f'vs ours converted; load average {load}')
    compare_priors(tv)
    compare_detections(tv, images)


if __name__ == '__main__':
    main()
