"""Training-step benchmark: ``python -m utils.bench.train_step [--batch 4]
[--repeats 3] [--threads 2] [--device cpu]``.

Times one full SSD300 training step (21 classes): an augmented batch in
(``SSDAugmentation`` already applied), forward, matching and loss, backward,
SGD step. Every contender starts from the same weights and gets the same
batch, side by side in one process (warm-up, interleaved repeats, medians):

- **ours** -- ``build_ssd('train', 300, 21)`` as built by default (the
  fastest memory format, :func:`ssd.fast_memory_format`), ``MultiBoxLoss``,
  and the trainer's own :func:`utils.training.step.forward_backward` and
  :func:`~utils.training.step.optimizer_step`;
- **ours in NCHW** -- the same with ``channels_last=False`` (the default
  before);
- **torchvision** -- ``ssd300_vgg16(weights=None, weights_backbone=None)`` in
  train mode carrying the same weights and our priors as its anchors:
  ``model(images, targets)`` runs its transform (identity normalisation: it
  gets our preprocessed input), its per-image matcher and its loss;
- **ssd.pytorch** -- the same network in NCHW with ssd.pytorch's loss
  (:class:`utils.bench.reference.MultiBoxLoss`: its per-image matching loop,
  ``log_sum_exp`` mining and double sort).

Prints images per second, and checks first that NHWC and NCHW give the same
losses and gradients, and that our loss equals ssd.pytorch's.
"""
import argparse
import copy
import os

import numpy as np
import torch

from data.config import MEANS, voc
from layers import MultiBoxLoss
from utils.bench import reference as ref
from utils.bench import timeit
from utils.bench.core import (NUM_CLASSES, FixedAnchors, random_targets, synthetic_images,
                              torchvision_ssd)

SIZE = 300


def augmented_batch(batch, seed=0):
    """``(images [B, 3, 300, 300] float32, targets)``: VOC-sized synthetic
    images with 1-6 random objects each, through ``SSDAugmentation`` (seeded;
    an augmentation that crops every object away is drawn again), RGB, then
    ``detection_collate``. Targets are ``[n_i, 5]`` (x1, y1, x2, y2, label)."""
    from data import detection_collate
    from data.augmentations import SSDAugmentation
    aug = SSDAugmentation(SIZE, MEANS, rng=np.random.default_rng(seed))
    samples = []
    objects = random_targets(batch, seed + 2, min_objs=2)
    for img, t in zip(synthetic_images(batch, seed=seed + 1), objects):
        boxes = np.zeros((0, 4))
        while not len(boxes):
            out, boxes, labels = aug(img, t[:, :4].numpy(), t[:, 4].numpy())
        x = torch.from_numpy(np.ascontiguousarray(out[:, :, ::-1])).permute(2, 0, 1)
        samples.append((x, np.hstack([boxes, labels[:, None]]).astype(np.float32)))
    return detection_collate(samples)


def ours_step(net, images, targets, amp_dtype=None, compile=False):
    """The trainer's step: ``forward_backward`` (autocast when ``amp_dtype``)
    then ``optimizer_step``; the batch is converted to the net's memory
    format as the trainer does. Returns ``run() -> (loss_l, loss_c)``."""
    from ssd import memory_format
    from utils.training.step import forward_backward, optimizer_step
    fmt = memory_format(net)
    criterion = MultiBoxLoss(NUM_CLASSES, 0.5, True, 0, True, 3, 0.5, False,
                             images.device.type == 'cuda')
    opt = _sgd(net)
    scaler = _scaler(amp_dtype, images.device)
    model = torch.compile(net) if compile else net

    def run():
        x = images.contiguous(memory_format=fmt)
        losses = forward_backward(model, criterion, x, targets, amp_dtype, scaler)
        optimizer_step(opt, scaler)
        return losses
    return run


def tv_model(net):
    """torchvision's ``ssd300_vgg16`` (random init, nothing downloaded) in
    train mode with ``net``'s weights, our priors as anchors, and an identity
    normalisation (it is given our preprocessed input)."""
    from utils.convert_torchvision import to_torchvision
    tv = torchvision_ssd()
    tv.load_state_dict(to_torchvision(net.state_dict()))
    tv.anchor_generator = FixedAnchors(net.priors.cpu())
    tv.transform.image_mean, tv.transform.image_std = [0.0] * 3, [1.0] * 3
    return tv.to(net.priors.device).train()


def tv_targets(targets):
    """Our targets as torchvision's: pixel boxes, labels 1..20."""
    return [{'boxes': t[:, :4] * SIZE, 'labels': t[:, 4].long() + 1} for t in targets]


def tv_step(tv, images, targets, amp_dtype=None, compile=False):
    """torchvision's documented training step: ``losses = model(images,
    targets)``, their sum backward, SGD step. Returns ``run() -> (loss_l,
    loss_c)``."""
    xs, ts = list(images), tv_targets(targets)
    opt = _sgd(tv)
    scaler = _scaler(amp_dtype, images.device)
    model = torch.compile(tv) if compile else tv

    def run():
        with torch.autocast(images.device.type, dtype=amp_dtype or torch.float32,
                            enabled=amp_dtype is not None):
            losses = model(xs, ts)
        loss = losses['bbox_regression'] + losses['classification']
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        opt.zero_grad(set_to_none=True)
        return losses['bbox_regression'].detach(), losses['classification'].detach()
    return run


def ref_step(net, images, targets):
    """ssd.pytorch's step: its loss on the network, backward, SGD step."""
    criterion = ref.MultiBoxLoss(NUM_CLASSES)
    opt = _sgd(net)

    def run():
        loss_l, loss_c = criterion(net(images), targets)
        (loss_l + loss_c).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss_l.detach(), loss_c.detach()
    return run


def _sgd(net):
    """ssd.pytorch's optimiser (momentum 0.9, weight decay 5e-4); a small lr
    keeps random weights finite over the repeats."""
    return torch.optim.SGD(net.parameters(), lr=1e-5, momentum=0.9, weight_decay=5e-4)


def _scaler(amp_dtype, device):
    """A GradScaler for fp16 (None otherwise)."""
    if amp_dtype is not torch.float16:
        return None
    return torch.amp.GradScaler(device.type)


def base_net(seed=0, channels_last=None):
    """SSD300, 21 classes, train phase, seeded random weights."""
    from ssd import build_ssd
    torch.manual_seed(seed)
    return build_ssd('train', SIZE, NUM_CLASSES, voc, channels_last=channels_last)


def check_gradients(nets, images, targets):
    """Print the losses and gradient differences: ours (default format) vs
    ours in NCHW vs ssd.pytorch's loss on the same network."""
    ours, nchw = nets
    out = {}
    for name, net, crit in (
            ('ours', ours, MultiBoxLoss(NUM_CLASSES, 0.5, True, 0, True, 3, 0.5, False, False)),
            ('nchw', nchw, MultiBoxLoss(NUM_CLASSES, 0.5, True, 0, True, 3, 0.5, False, False)),
            ('ssd.pytorch', nchw, ref.MultiBoxLoss(NUM_CLASSES))):
        net.zero_grad(set_to_none=True)
        loss_l, loss_c = crit(net(images), targets)
        (loss_l + loss_c).backward()
        out[name] = (torch.stack([loss_l, loss_c]).detach(),
                     [p.grad.clone() for p in net.parameters()])
        net.zero_grad(set_to_none=True)
    d_fmt = (out['ours'][0] - out['nchw'][0]).abs().max().item()
    names = [n for n, _ in ours.named_parameters()]
    g_fmt, worst = max((((a - b).norm() / b.norm().clamp(min=1e-12)).item(), n)
                       for a, b, n in zip(out['ours'][1], out['nchw'][1], names))
    d_ref = (out['nchw'][0] - out['ssd.pytorch'][0]).abs().max().item()
    ok = d_fmt < 1e-3 and g_fmt < 1e-2 and d_ref < 1e-4     # float rounding
    print(f'  check: loss (loc, conf) ours {out["ours"][0].tolist()}; NHWC vs NCHW max '
          f'|diff| {d_fmt:.1e}, gradients max relative (L2, per tensor) {g_fmt:.1e} ({worst}); ours vs ssd.pytorch '
          f'on the same network {d_ref:.1e} [{"OK" if ok else "MISMATCH"}]')
    return ok


def bench_train_step(batch=4, repeats=3, device='cpu'):
    """Time the four steps; print and return ``{name: (median, min)}``."""
    from ssd import memory_format
    device = torch.device(device)
    images, targets = augmented_batch(batch)
    images, targets = images.to(device), [t.to(device) for t in targets]
    ours = base_net().to(device)
    nchw = base_net(channels_last=False).to(device)
    check_gradients((ours, nchw), images, targets)
    fmt = 'NHWC' if memory_format(ours) == torch.channels_last else 'NCHW'
    fns = {f'ours (default: {fmt})': ours_step(ours, images, targets),
           'ours in NCHW': ours_step(copy.deepcopy(nchw), images, targets),
           'torchvision ssd300_vgg16': tv_step(tv_model(nchw), images, targets),
           'ssd.pytorch (its loss)': ref_step(copy.deepcopy(nchw), images, targets)}
    if device.type == 'cuda':
        fns = {k: _synced(f) for k, f in fns.items()}
    med = timeit(fns, repeats)
    n_obj = sum(len(t) for t in targets)
    print(f'  SSD300 training step, batch {batch} ({n_obj} objects), {device.type}: '
          'forward, loss, backward, SGD step')
    first = next(iter(med))
    for name, (m, b) in med.items():
        ratio = '' if name == first else f'   ours is {m / med[first][0]:.2f}x faster'
        print(f'    {name:<28s} {m * 1e3:9.0f} ms (min {b * 1e3:7.0f})  '
              f'{batch / m:6.2f} images/s{ratio}')
    return med


def _synced(fn):
    def run():
        out = fn()
        torch.cuda.synchronize()
        return out
    return run


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--batch', type=int, default=4)
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--device', default='cpu')
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f'torch {torch.__version__}, torch.set_num_threads({args.threads}), '
          f'{args.repeats} interleaved repeats after warm-up, medians; '
          f'{os.cpu_count()} CPUs, load average {_load()} at start')
    bench_train_step(args.batch, args.repeats, args.device)
    print(f'load average {_load()} at the end')
    return 0


def _load():
    return open('/proc/loadavg').read().split()[0] if os.path.exists('/proc/loadavg') else '?'


if __name__ == '__main__':
    raise SystemExit(main())
