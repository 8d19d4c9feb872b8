"""Core speed benchmark: ``python -m utils.bench.core [--only abc] [--repeats N]``.

Prints speed ratios, every contender measured side by side in
one process on the same inputs (warm-up runs, interleaved repeats, median),
with ``torch.set_num_threads(2)`` unless ``--threads`` says otherwise:

(a) matching + MultiBoxLoss + backward, batch 32, SSD300 (8732 priors, 21
    classes): ours vs torchvision's SSD (per-image ``Matcher`` + ``box_iou``,
    then ``SSD.compute_loss``) vs ssd.pytorch (:mod:`utils.bench.reference`).
(b) ``Detect``, batch 8, on sparse logits (like a trained model: tens of
    candidates per class), dense ones (like an undertrained model: hundreds
    per class, scattered over the image) and very dense ones (thousands per
    class, most priors): ours vs torchvision's
    ``SSD.postprocess_detections`` vs ssd.pytorch's Detect (Python NMS).
(c) inference end to end (read the JPEG, BaseTransform, test-phase network),
    SSD300 at batch 1 and 8: the default ``build_ssd('test', 300, 21)`` (what
    the tools run: NHWC, Winograd for the wide 3x3 convolutions), the same
    with Winograd off, in NCHW with Winograd off (the first default), and
    torchvision's ``ssd300_vgg16`` carrying the same weights.

On a shared machine, run with ``--threads 1`` as well: with more runnable
threads than cores, every OpenMP-parallel op waits a scheduler quantum at
its barrier, which penalises batched (vectorised) code and not the per-image
loops of the peers, whose small ops stay single-threaded.

Correctness cross-checks run first and are printed: our loss and gradients
equal ssd.pytorch's, our Detect equals its Detect class by class, and the
torchvision model given our weights gives the same raw head outputs.
"""
import argparse
import os
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.models.detection import ssd300_vgg16
from torchvision.ops import box_iou

from data.base import read_image
from data.config import MEANS, voc
from layers import Detect, MultiBoxLoss, PriorBox
from layers.box_utils import point_form
from utils.bench import reference as ref
from utils.bench import timeit

NUM_CLASSES = 21


def report(title, med, ours='ours'):
    """Print medians (and minima) with the ratio contender / ours for each."""
    print(f'  {title}')
    m0, b0 = med[ours]
    for n, (m, b) in med.items():
        ratio = '' if n == ours else (f'   ours is {m / m0:.2f}x faster '
                                      f'(minima: {b / b0:.2f}x)')
        print(f'    {n:<40s} {m * 1e3:9.1f} ms (min {b * 1e3:8.1f}){ratio}')


def priors300():
    """SSD300 VOC priors ``[8732, 4]`` (cx, cy, w, h)."""
    return PriorBox(voc).forward()


def random_targets(batch, seed, min_objs=1, max_objs=6):
    """List of ``[n_i, 5]`` float32 targets (x1, y1, x2, y2, label 0..19),
    1-6 objects per image, sides 0.05-0.9 (VOC-like)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(batch):
        n = int(torch.randint(min_objs, max_objs + 1, (1,), generator=g))
        wh = 0.05 + 0.85 * torch.rand(n, 2, generator=g)
        xy = torch.rand(n, 2, generator=g) * (1 - wh)
        lab = torch.randint(0, NUM_CLASSES - 1, (n, 1), generator=g).float()
        out.append(torch.cat([xy, xy + wh, lab], 1))
    return out


# ----------------------------------------------------------------- (a) loss
def torchvision_ssd(num_classes=NUM_CLASSES, **kw):
    """A torchvision SSD300 with random weights (no download)."""
    torch.manual_seed(0)
    return ssd300_vgg16(weights=None, weights_backbone=None,
                        num_classes=num_classes, **kw)


def tv_loss_fn(model, anchors_px, targets):
    """torchvision's training-mode loss path: per-image matching, then
    ``compute_loss``. Targets in pixels, labels with background = 0."""
    tv_targets = [{'boxes': t[:, :4] * 300, 'labels': t[:, 4].long() + 1}
                  for t in targets]

    def run(loc, conf):
        matched = [model.proposal_matcher(box_iou(t['boxes'], anchors_px))
                   for t in tv_targets]
        losses = model.compute_loss(
            tv_targets, {'bbox_regression': loc, 'cls_logits': conf},
            [anchors_px] * len(tv_targets), matched)
        return losses['bbox_regression'], losses['classification']
    return run


def bench_loss(repeats, batch=32):
    priors = priors300()
    P = priors.shape[0]
    g = torch.Generator().manual_seed(1)
    loc = torch.randn(batch, P, 4, generator=g).requires_grad_()
    conf = torch.randn(batch, P, NUM_CLASSES, generator=g).requires_grad_()
    targets = random_targets(batch, seed=2)
    ours = MultiBoxLoss(NUM_CLASSES, 0.5, True, 0, True, 3, 0.5, False, False)
    theirs = ref.MultiBoxLoss(NUM_CLASSES)
    tv = tv_loss_fn(torchvision_ssd(), point_form(priors) * 300, targets)

    def step(loss_fn):
        def run():
            loc.grad = conf.grad = None
            loss_l, loss_c = loss_fn((loc, conf, priors), targets)
            (loss_l + loss_c).backward()
        return run

    check_loss(ours, theirs, tv, loc, conf, priors, targets)
    med = timeit({'ours': step(ours),
                  'torchvision SSD.compute_loss': step(lambda p, t: tv(p[0], p[1])),
                  'ssd.pytorch (reference)': step(theirs)}, repeats)
    n_obj = sum(len(t) for t in targets)
    report(f'(a) match + MultiBoxLoss + backward, batch {batch}, {P} priors, '
           f'{NUM_CLASSES} classes, {n_obj} objects', med)
    return med


def check_loss(ours, theirs, tv, loc, conf, priors, targets):
    """Print the loss and gradient differences between the contenders."""
    vals, grads = {}, {}
    for name, fn in (('ours', ours), ('ref', theirs),
                     ('tv', lambda p, t: tv(p[0], p[1]))):
        loc.grad = conf.grad = None
        loss_l, loss_c = fn((loc, conf, priors), targets)
        (loss_l + loss_c).backward()
        vals[name] = torch.stack([loss_l.detach(), loss_c.detach()])
        grads[name] = (loc.grad.clone(), conf.grad.clone())
    loc.grad = conf.grad = None
    d = (vals['ours'] - vals['ref']).abs().max().item()
    dg = max((a - b).abs().max().item() for a, b in zip(grads['ours'], grads['ref']))
    print(f'  check (a): loss ours {vals["ours"].tolist()} vs ssd.pytorch '
          f'{vals["ref"].tolist()}: max |diff| {d:.2e}, gradients {dg:.2e} '
          f'[{"OK" if d < 1e-4 and dg < 1e-6 else "MISMATCH"}]')
    print(f'             torchvision {vals["tv"].tolist()} (different matcher '
          f'and mining ties; shown for scale only)')


# --------------------------------------------------------------- (b) detect
def trained_like_outputs(batch, priors, seed=3, objects=4, background=9.0):
    """Head outputs shaped like a trained SSD's: ``loc [B, P, 4]`` small
    offsets; ``conf [B, P, C]`` logits with a confident background almost
    everywhere (logit +``background``) and, around ``objects`` random boxes
    per image, priors with IoU > 0.3 peaked on the object's class (logit
    4-10), some confusion. With ``background`` 9 a median of about 60 priors
    per image and class pass 0.01 (sparse); with 7, about 400, scattered over
    the image like an undertrained model's (dense); with 3, about 6000 of
    the 8732 (very dense)."""
    g = torch.Generator().manual_seed(seed)
    B, P, C = batch, priors.shape[0], NUM_CLASSES
    loc = 0.5 * torch.randn(B, P, 4, generator=g)
    conf = torch.randn(B, P, C, generator=g)
    conf[..., 0] += background
    boxes = torch.stack([t[:, :4] for t in random_targets(
        B, seed + 1, objects, objects)])
    iou = box_iou(boxes.view(-1, 4), point_form(priors)).view(B, objects, P)
    best_iou, best_obj = iou.max(1)
    cls = torch.randint(1, C, (B, objects), generator=g).gather(1, best_obj)
    peak = 4.0 + 6.0 * best_iou * torch.rand(B, P, generator=g)
    hit = best_iou > 0.3
    conf[..., 0] -= hit * (4.0 + 4.0 * torch.rand(B, P, generator=g))
    conf.scatter_add_(2, cls[..., None], (peak * hit)[..., None])
    return loc, conf


DETECT_CASES = {'sparse': 9.0, 'dense': 7.0, 'very dense': 3.0}   # background logit offset


def bench_detect(repeats, batch=8, cases=DETECT_CASES):
    """(b) on each case of ``cases`` (name -> ``background`` of
    :func:`trained_like_outputs`); returns ``{name: medians}``."""
    priors = priors300()
    ours = Detect(NUM_CLASSES, 0, 200, 0.01, 0.45)
    theirs = ref.Detect(NUM_CLASSES, 0, 200, 0.01, 0.45)
    model = torchvision_ssd(score_thresh=0.01, nms_thresh=0.45,
                            detections_per_img=200, topk_candidates=200)
    anchors = [point_form(priors) * 300] * batch
    sizes = [(300, 300)] * batch
    meds = {}
    for name, background in cases.items():
        loc, conf = trained_like_outputs(batch, priors, background=background)
        fns = {
            'ours': lambda: ours(loc, F.softmax(conf, -1), priors),
            'torchvision postprocess': lambda: model.postprocess_detections(
                {'bbox_regression': loc, 'cls_logits': conf}, anchors, sizes),
            'ssd.pytorch (reference)': lambda: theirs(loc, F.softmax(conf, -1), priors),
        }
        with torch.inference_mode():
            check_detect(ours, theirs, loc, conf, priors, name)
            meds[name] = timeit(fns, repeats)
        report(f'(b) Detect, {name} scores, batch {batch}, {NUM_CLASSES} classes, '
               'top_k 200, conf 0.01, nms 0.45 (softmax included)', meds[name])
    return meds


def check_detect(ours, theirs, loc, conf, priors, name):
    """Print whether our Detect equals ssd.pytorch's class by class."""
    scores = F.softmax(conf, -1)
    cand = (scores[..., 1:] > 0.01).sum(1).float()
    a, b = ours(loc, scores, priors), theirs(loc, scores, priors)
    d = (a - b).abs().max().item()
    n = int((a[..., 0] > 0).sum())
    same = bool(((a[..., 0] > 0) == (b[..., 0] > 0)).all())
    print(f'  check (b, {name}): {n} detections; candidates > 0.01 per image and '
          f'class: median {cand.median():.0f}, max {cand.max():.0f}; ours vs '
          f'ssd.pytorch class by class: same slots {same}, max |diff| {d:.2e} '
          f'[{"OK" if same and d < 1e-6 else "MISMATCH"}]')


# ------------------------------------------------------- (c) end to end
class FixedAnchors(torch.nn.Module):
    """Stands in for torchvision's anchor generator: our priors, in pixels."""

    def __init__(self, priors):
        super().__init__()
        self.register_buffer('anchors', point_form(priors))

    def forward(self, images, features):
        return [self.anchors * torch.tensor(s[::-1] * 2) for s in images.image_sizes]


def trained_like_ssd(seed=0, channels_last=None):
    """Our SSD300 (test phase) with seeded random weights, the background
    biases of the conf heads raised by 6.5 so that, as in a trained model,
    few priors pass conf_thresh 0.01. ``channels_last`` goes to
    ``build_ssd`` (None: its default, the fastest format here)."""
    from ssd import build_ssd
    torch.manual_seed(seed)
    net = build_ssd('test', 300, NUM_CLASSES, channels_last=channels_last).eval()
    with torch.no_grad():
        for c in net.conf:
            c.bias[0::NUM_CLASSES] += 6.5
    return net


def torchvision_with_our_weights(net):
    """torchvision's ``ssd300_vgg16`` with ``net``'s weights and priors:
    the layers are mapped by :data:`utils.convert_torchvision.KEY_MAP` (the
    converter's table, used backwards), and the anchors are our priors (its
    ``DefaultBoxGenerator`` with ssd.pytorch's scales differs in 114 priors,
    whose centres ssd.pytorch clips). Same thresholds as our Detect; no cap across classes."""
    from utils.convert_torchvision import to_torchvision
    tv = torchvision_ssd(score_thresh=0.01, nms_thresh=0.45, topk_candidates=200,
                         detections_per_img=200 * (NUM_CLASSES - 1)).eval()
    tv.load_state_dict(to_torchvision(net.state_dict()))
    tv.anchor_generator = FixedAnchors(net.priors)
    return tv


def synthetic_images(n, seed=4, shape=(375, 500)):
    """``n`` BGR uint8 VOC-sized images: smooth colour fields with boxes."""
    import cv2
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        img = cv2.resize(small, shape[::-1], interpolation=cv2.INTER_LINEAR)
        for _ in range(3):
            x1, y1 = rng.integers(0, shape[1] - 60), rng.integers(0, shape[0] - 60)
            color = tuple(int(c) for c in rng.integers(0, 256, 3))
            cv2.rectangle(img, (int(x1), int(y1)), (int(x1) + 60 + int(rng.integers(0, 150)),
                          int(y1) + 60 + int(rng.integers(0, 150))), color, -1)
        out.append(img)
    return out


def jpeg_files(images, folder, quality=90):
    """Write BGR ``images`` as JPEG files in ``folder``; return their paths."""
    import cv2
    paths = []
    for i, im in enumerate(images):
        paths.append(os.path.join(folder, f'{i:06d}.jpg'))
        if not cv2.imwrite(paths[-1], im, [cv2.IMWRITE_JPEG_QUALITY, quality]):
            raise OSError(f'{paths[-1]}: could not write')
    return paths


def ours_e2e(net, transform):
    """BaseTransform (resize, subtract BGR means), swap to RGB, test phase,
    under ``torch.inference_mode`` (as :class:`utils.inference.Predictor`).
    ``run`` takes BGR images or JPEG paths (read with ``read_image``)."""
    def run(images):
        images = [read_image(im) if isinstance(im, str) else im for im in images]
        x = np.stack([transform(im)[0] for im in images])[..., ::-1]
        x = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2)
        with torch.inference_mode():
            return net(x)
    return run


def tv_e2e(tv):
    """torchvision's documented use: RGB float in [0, 1], model(list)."""
    def run(images):
        images = [read_image(im) if isinstance(im, str) else im for im in images]
        xs = [torch.from_numpy(np.ascontiguousarray(im[..., ::-1])).permute(2, 0, 1)
              .float().div_(255) for im in images]
        with torch.no_grad():
            return tv(xs)
    return run


def check_e2e(net, tv, images, transform):
    """Same preprocessed input through both: raw heads, priors, detections."""
    from torchvision.models.detection.image_list import ImageList
    x = np.stack([transform(im)[0] for im in images])[..., ::-1]
    x = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2)
    with torch.inference_mode():
        net.phase = 'train'
        loc, conf, priors = net(x)
        net.phase = 'test'
        dets = net(x)
        feats = list(tv.backbone(x).values())
        head = tv.head(feats)
        anchors = tv.anchor_generator(ImageList(x, [(300, 300)] * len(x)), feats)
        tv_dets = tv.postprocess_detections(head, anchors, [(300, 300)] * len(x))
        with mock.patch('torchvision.models.detection.ssd.box_ops.clip_boxes_to_image',
                        lambda boxes, size: boxes):   # ssd.pytorch does not clip
            tv_noclip = tv.postprocess_detections(head, anchors, [(300, 300)] * len(x))
    d_loc = (loc - head['bbox_regression']).abs().max().item()
    d_conf = (conf - head['cls_logits']).abs().max().item()
    d_pri = (point_form(priors) * 300 - anchors[0]).abs().max().item() / 300
    ours_s = sorted(dets[..., 0][dets[..., 0] > 0].tolist())
    tv_s = sorted(torch.cat([d['scores'] for d in tv_dets]).tolist())
    nc_s = sorted(torch.cat([d['scores'] for d in tv_noclip]).tolist())
    same = len(ours_s) == len(nc_s) and np.allclose(ours_s, nc_s, atol=1e-5)
    print(f'  check (c): raw heads max |diff| loc {d_loc:.1e}, conf {d_conf:.1e} '
          f'(|conf| up to {conf.abs().max():.0f}); priors {d_pri:.1e}; detections '
          f'{len(ours_s)} ours vs {len(tv_s)} torchvision (it clips boxes to the '
          f'image before NMS), {len(nc_s)} with its clipping off: scores equal '
          f'{same} [{"OK" if same and max(d_loc, d_conf) < 1e-4 else "MISMATCH"}]')


def bench_e2e(repeats, batches=(1, 8)):
    """(c): JPEG files in, detections out, through the default
    ``build_ssd('test', 300, 21)``, the same weights with Winograd off (the
    default before it), in NCHW with Winograd off (the first default), and
    torchvision's ``ssd300_vgg16``; returns ``{batch: medians}``."""
    import tempfile
    from data import BaseTransform
    from ssd import memory_format
    net = trained_like_ssd()
    direct = trained_like_ssd()
    direct.winograd = False
    nchw = trained_like_ssd(channels_last=False)
    nchw.winograd = False
    tv = torchvision_with_our_weights(net)
    transform = BaseTransform(300, MEANS)
    images = synthetic_images(max(batches))
    check_e2e(net, tv, images[:2], transform)
    fmt = 'NHWC' if memory_format(net) == torch.channels_last else 'NCHW'
    meds = {}
    with tempfile.TemporaryDirectory() as folder:
        paths = jpeg_files(images, folder)
        for b in batches:
            files = paths[:b]
            fo, fd, fn = (ours_e2e(n, transform) for n in (net, direct, nchw))
            ft = tv_e2e(tv)
            med = timeit({f'ours (default build_ssd: {fmt}, Winograd)': lambda: fo(files),
                          f'ours, {fmt}, Winograd off': lambda: fd(files),
                          'ours, NCHW, Winograd off': lambda: fn(files),
                          'torchvision ssd300_vgg16': lambda: ft(files)},
                         repeats if b == 1 else max(3, repeats // 2))
            report(f'(c) inference end to end, SSD300, batch {b} (375x500 JPEG files '
                   'in)', med, ours=next(iter(med)))
            meds[b] = med
    return meds


def _load():
    """The 1-minute load average ('?' where /proc/loadavg is missing)."""
    return open('/proc/loadavg').read().split()[0] if os.path.exists('/proc/loadavg') else '?'


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--only', default='abc', help='which benchmarks: a, b, c')
    p.add_argument('--repeats', type=int, default=7)
    p.add_argument('--threads', type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    load = _load()
    print(f'torch {torch.__version__}, torch.set_num_threads({args.threads}), '
          f'{args.repeats} interleaved repeats after warm-up, medians; '
          f'{os.cpu_count()} CPUs, load average {load} at start')
    if 'a' in args.only:
        bench_loss(args.repeats)
    if 'b' in args.only:
        bench_detect(args.repeats)
    if 'c' in args.only:
        bench_e2e(args.repeats)
    print(f'load average {_load()} at the end')


if __name__ == '__main__':
    main()
