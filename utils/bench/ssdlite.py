"""SSDlite320-MobileNetV3 against torchvision's: ``python -m utils.bench.ssdlite [--repeats N]``.

Side by side in one process, on the same weights (torchvision's
``ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None)`` with
seeded random weights, saved and converted by ``utils.convert_torchvision``,
built from the file by ``utils.weights.build_from_weights``, as every tool
does), with ``torch.set_num_threads(2)`` unless ``--threads`` says otherwise:

(a) **end to end**, JPEG files in, detections out, at batch 1 and 8: ours
    through the default path (``utils.inference.Predictor``, what test.py,
    eval.py and demo.live run: ``read_image``, BaseTransform to 320, the
    network in its default memory format, Detect with torchvision's
    thresholds) against torchvision's documented use (RGB float in [0, 1],
    ``model(list)``: its own resize, normalisation and postprocess);
(b) **the training step** (forward, loss, backward) at batch 8: ours
    (network in phase 'train', ``MultiBoxLoss``) against torchvision's
    ``model(images, targets)`` (its matcher, loss and transform) on the same
    images and boxes.

The weights are random but not degenerate (:func:`randomise`), and the
background bias is raised by 7.3 so that, as in a trained model, a few
thousand (prior, class) candidates pass torchvision's score threshold 0.001
(about 40 per class). A check runs first: on the same preprocessed input
the raw heads and the detections of both are compared.
"""
import argparse
import os
import tempfile

import numpy as np
import torch

from utils.bench import timeit
from utils.bench.core import _load, jpeg_files, report, synthetic_images

#: raised background logit: some thousands of candidates pass 0.001
BACKGROUND = 7.3


def randomise(model, seed=0):
    """Non-degenerate random weights and BatchNorm statistics for a
    torchvision detector (its own init, normal(0, 0.03), gives logits of
    1e-20: every score ties). Returns ``model``."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / m.weight[0].numel() ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            elif isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=g) * 0.4 + 0.8)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) * 0.4 + 0.8)
    return model


def models(folder, background=BACKGROUND):
    """``(torchvision's model, ours)`` with the same weights: torchvision's,
    saved and converted with the default command, built from the file."""
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large
    from utils import convert_torchvision
    from utils.weights import build_from_weights
    torch.manual_seed(0)
    tv = randomise(ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None)).eval()
    with torch.no_grad():
        for m in tv.head.classification_head.module_list:
            [c for c in m.modules() if isinstance(c, torch.nn.Conv2d)][-1].bias[0::91] += background
    src, dst = os.path.join(folder, 'tv.pth'), os.path.join(folder, 'ours.pth')
    torch.save(tv.state_dict(), src)
    if convert_torchvision.main(['--in', src, '--out', dst]) != 0:
        raise SystemExit('conversion failed')
    return tv, build_from_weights(dst).net


def predictor(net):
    """Ours as the tools run it, with torchvision's postprocess thresholds."""
    from layers import Detect
    from layers.backbones.mobilenet import TORCHVISION_DETECT
    from utils.inference import Predictor
    net.detect = Detect(net.num_classes, 0, **TORCHVISION_DETECT)
    return Predictor(net, conf_thresh=TORCHVISION_DETECT['conf_thresh'])


def tv_run(tv):
    from data.base import read_image

    def run(paths):
        xs = [torch.from_numpy(np.ascontiguousarray(read_image(p)[..., ::-1])).permute(2, 0, 1)
              .float().div_(255) for p in paths]
        with torch.no_grad():
            return tv(xs)
    return run


def ours_run(pred):
    from data.base import read_image
    return lambda paths: pred([read_image(p) for p in paths])


def check_same_outputs(tv, net, images):
    """Same normalised 320x320 input through both: raw heads and detections."""
    x = torch.from_numpy(np.stack([im[..., ::-1] for im in images]).copy()).permute(0, 3, 1, 2)
    x = x.float().div(255)
    with torch.inference_mode():
        net.phase = 'train'
        loc, conf, _ = net((x - 0.5) / 0.5)
        net.phase = 'test'
        out = net((x - 0.5) / 0.5)
        tv_in = tv.transform(list(x))[0].tensors
        head = tv.head(list(tv.backbone(tv_in).values()))
        ref = tv(list(x))
    d = max((loc - head['bbox_regression']).abs().max().item(),
            (conf - head['cls_logits']).abs().max().item())
    n_ours = int((out[..., 0] > 0).sum())
    n_tv = sum(len(r['scores']) for r in ref)
    s_ours = np.sort(out[..., 0][out[..., 0] > 0].numpy())
    s_tv = np.sort(torch.cat([r['scores'] for r in ref]).numpy())
    same = n_ours == n_tv and np.allclose(s_ours, s_tv, atol=1e-5)
    print(f'  check: raw heads max |diff| {d:.1e}; detections {n_ours} ours, {n_tv} '
          f'torchvision; scores equal {same} [{"OK" if same and d < 1e-4 else "MISMATCH"}]')
    return same and d < 1e-4


def bench_ssdlite_e2e(tv, net, repeats, batches=(1, 8)):
    images = synthetic_images(max(batches))
    import cv2
    pred = predictor(net)            # torchvision's thresholds, for the check too
    check_same_outputs(tv, net, [cv2.resize(im, (320, 320)) for im in images[:2]])
    meds = {}
    with tempfile.TemporaryDirectory() as folder:
        paths = jpeg_files(images, folder)
        for b in batches:
            files = paths[:b]
            fo, ft = ours_run(pred), tv_run(tv)
            med = timeit({'ours (Predictor, the tools\' path)': lambda: fo(files),
                          'torchvision ssdlite320_mobilenet_v3_large': lambda: ft(files)},
                         repeats if b == 1 else max(3, repeats // 2))
            report(f'(a) end to end, SSDlite320, batch {b} (375x500 JPEG files in)', med,
                   ours=next(iter(med)))
            meds[b] = med
    return meds


def bench_train(tv, net, repeats, batch=8, seed=5):
    from layers import MultiBoxLoss
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, 320, 320, generator=g)
    boxes = []
    for _ in range(batch):
        xy = torch.rand(3, 2, generator=g) * 0.6
        wh = torch.rand(3, 2, generator=g) * 0.3 + 0.05
        boxes.append(torch.cat([xy, xy + wh], 1))
    labels = [torch.randint(1, 91, (3,), generator=g) for _ in range(batch)]
    ours_t = [torch.cat([b, (l - 1).float()[:, None]], 1) for b, l in zip(boxes, labels)]
    tv_t = [dict(boxes=b * 320, labels=l) for b, l in zip(boxes, labels)]
    crit = MultiBoxLoss(net.num_classes, variance=net.cfg['variance'])
    net.phase = 'train'
    net.train()
    tv.train()
    xn = (x - 0.5) / 0.5
    from ssd import memory_format
    xn = xn.contiguous(memory_format=memory_format(net))

    def ours():
        net.zero_grad(set_to_none=True)
        l, c = crit(net(xn), ours_t)
        (l + c).backward()

    def theirs():
        tv.zero_grad(set_to_none=True)
        losses = tv(list(x), tv_t)
        sum(losses.values()).backward()
    med = timeit({'ours (phase train, MultiBoxLoss)': ours,
                  'torchvision model(images, targets)': theirs}, repeats)
    report(f'(b) training step (forward, loss, backward), SSDlite320, batch {batch}', med,
           ours=next(iter(med)))
    net.eval()
    tv.eval()
    net.phase = 'test'
    return med


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--only', default='ab', help='which benchmarks: a, b')
    p.add_argument('--repeats', type=int, default=7)
    p.add_argument('--threads', type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f'torch {torch.__version__}, torch.set_num_threads({args.threads}), '
          f'{args.repeats} interleaved repeats after warm-up, medians; '
          f'{os.cpu_count()} CPUs, load average {_load()} at start')
    with tempfile.TemporaryDirectory() as folder:
        tv, net = models(folder)
    if 'a' in args.only:
        bench_ssdlite_e2e(tv, net, args.repeats)
    if 'b' in args.only:
        bench_train(tv, net, args.repeats)
    print(f'load average {_load()} at the end')


if __name__ == '__main__':
    main()
