"""Gradient accumulation (train.py --accum_steps K): N is counted over the K
micro-batches before dividing, so one step with K micro-batches equals one
step on the whole batch (on a network without BatchNorm)."""
import copy

import pytest
import torch

import train
import utils.engine.trainer as trainer
from data.config import shapes
from layers import MultiBoxLoss
from ssd import build_ssd
from utils.checkpoint import load_file
from utils.engine.run_config import parse_run_config
from utils.training.step import forward_backward, forward_backward_accum, optimizer_step

NO_BN = dict(shapes, batch_norm=False)      # the preset without BatchNorm
S = shapes['min_dim']


def _batch(b=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(b, 3, S, S, generator=g) * 50
    targets = []
    for i in range(b):
        if i == 1:                          # an image without objects: N = 0 on its own
            targets.append(torch.zeros(0, 5))
            continue
        n = 1 + i % 3
        xy = torch.rand(n, 2, generator=g) * 0.5
        wh = 0.1 + torch.rand(n, 2, generator=g) * 0.4
        lab = torch.randint(0, 5, (n, 1), generator=g).float()
        targets.append(torch.cat([xy, xy + wh, lab], 1))
    return images, targets


def _nets():
    torch.manual_seed(0)
    net = build_ssd('train', S, 6, cfg=NO_BN)
    return net, copy.deepcopy(net)


def _step(net, fn):
    opt = torch.optim.SGD(net.parameters(), lr=1e-2, momentum=0.9, weight_decay=5e-4)
    fn(net, MultiBoxLoss(6, variance=NO_BN['variance']))
    optimizer_step(opt)
    return net.state_dict()


def _max_diff(a, b):
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.mark.parametrize('k', [2, 4])
def test_accumulated_step_equals_the_whole_batch(k):
    # in float64: the same algorithm gives the same step to rounding (in
    # float32 oneDNN's batch-1 and batch-4 kernels part by ~1e-6 on this CPU)
    images, targets = _batch(4)
    images, targets = images.double(), [t.double() for t in targets]
    a, b = (n.double() for n in _nets())
    whole = _step(a, lambda n, c: forward_backward(n, c, images, targets))
    accum = _step(b, lambda n, c: forward_backward_accum(n, c, images, targets, k, n.priors))
    assert _max_diff(whole, accum) <= 1e-12
    assert _max_diff(whole, dict(_nets()[0].state_dict())) > 1e-4     # the step moved them


def test_per_micro_batch_normalisation_would_differ():
    """The test above can fail: dividing each micro-batch by its own N (the
    naive accumulation) gives another step."""
    images, targets = _batch(4)
    a, b = _nets()
    whole = _step(a, lambda n, c: forward_backward(n, c, images, targets))

    def naive(net, crit):
        for i in (0, 2):
            forward_backward(net, crit, images[i:i + 2], targets[i:i + 2])
    assert _max_diff(whole, _step(b, naive)) > 1e-4


def test_losses_are_those_of_the_whole_batch():
    images, targets = _batch(4)
    net = _nets()[0]
    crit = MultiBoxLoss(6, variance=NO_BN['variance'])
    l1, c1 = forward_backward(net, crit, images, targets)
    l2, c2 = forward_backward_accum(net, crit, images, targets, 2, net.priors)
    assert float(l1) == pytest.approx(float(l2), rel=1e-5)
    assert float(c1) == pytest.approx(float(c2), rel=1e-5)
    with pytest.raises(ValueError, match='does not split'):
        forward_backward_accum(net, crit, images, targets, 3, net.priors)


def test_count_positives_is_the_loss_n():
    images, targets = _batch(4)
    net = _nets()[0]
    crit = MultiBoxLoss(6, variance=NO_BN['variance'])
    with torch.no_grad():
        _, _, n = crit.sums(net(images), targets)
    assert int(crit.count_positives(targets, net.priors)) == int(n) > 0


TINY = ['--dataset', 'shapes', '--batch_size', '4', '--train_images', '12',
        '--num_workers', '0', '--quiet', '--eval_every', '0', '--optimizer', 'sgd',
        '--lr', '1e-2', '--warmup', '0']


def test_train_py_accum_equals_whole_batch(tmp_path, monkeypatch):
    """train.py --accum_steps 2 on the shapes preset without BatchNorm: the
    weights after one step equal those of --accum_steps 1."""
    monkeypatch.setattr(trainer, 'model_config', lambda d, n, size=None, backbone=None: dict(NO_BN, num_classes=n))
    out = {}
    for k in (1, 2):
        folder = tmp_path / f'k{k}'
        assert train.main(TINY + ['--max_iter', '1', '--accum_steps', str(k),
                                  '--save_folder', str(folder)]) == 0
        out[k] = load_file(folder / 'shapes.pth')
    assert _max_diff(out[1], out[2]) <= 1e-6


def test_accum_resumes_exactly(tmp_path):
    """Iteration = optimizer step: 2 steps straight equal 1 step, then
    --resume for the second (K=2, shapes preset)."""
    a, b = tmp_path / 'a', tmp_path / 'b'
    assert train.main(TINY + ['--max_iter', '2', '--accum_steps', '2',
                              '--save_folder', str(a)]) == 0
    assert train.main(TINY + ['--max_iter', '1', '--accum_steps', '2',
                              '--save_folder', str(b)]) == 0
    assert train.main(TINY + ['--max_iter', '2', '--accum_steps', '2', '--save_folder', str(b),
                              '--resume', str(b / 'checkpoint.pth')]) == 0
    wa, wb = load_file(a / 'shapes.pth'), load_file(b / 'shapes.pth')
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_accum_nan_skips_the_whole_step(tmp_path, monkeypatch):
    """A non-finite loss in one micro-batch: --nan_policy skip drops the
    whole step (no partial update from the other micro-batch). Without
    BatchNorm: a NaN forward pass would leave NaN running statistics, which
    the skip does not restore (with or without accumulation)."""
    monkeypatch.setattr(trainer, 'model_config', lambda d, n, size=None, backbone=None: dict(NO_BN, num_classes=n))
    real = trainer.forward_backward_accum

    def poisoned(model, criterion, images, targets, *a, **kw):
        images = images.clone()
        images[-1] = float('nan')           # the last micro-batch only
        return real(model, criterion, images, targets, *a, **kw)
    monkeypatch.setattr(trainer, 'forward_backward_accum', poisoned)
    assert train.main(TINY + ['--max_iter', '1', '--accum_steps', '2', '--nan_policy', 'skip',
                              '--pretrained', str(_shapes_file(tmp_path)),
                              '--save_folder', str(tmp_path / 'x')]) == 0
    start, end = load_file(_shapes_file(tmp_path)), load_file(tmp_path / 'x' / 'shapes.pth')
    assert all(torch.equal(start[k], end[k]) for k in start)
    assert load_file(tmp_path / 'x' / 'checkpoint.pth')['skipped'] == 1


def _shapes_file(tmp_path):
    path = tmp_path / 'start.pth'
    if not path.exists():
        torch.manual_seed(1)
        torch.save(build_ssd('train', S, 6, cfg=NO_BN).state_dict(), path)
    return path


def test_batch_must_split_into_processes_and_micro_batches(capsys):
    assert parse_run_config(['--dataset', 'shapes', '--batch_size', '8',
                             '--accum_steps', '4']).accum_steps == 4
    with pytest.raises(ValueError, match='divisible by processes x --accum_steps'):
        parse_run_config(['--dataset', 'shapes', '--batch_size', '6', '--accum_steps', '4'])
    assert train.main(['--dataset', 'shapes', '--batch_size', '6', '--accum_steps', '4']) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and '--accum_steps' in err[0]


DDP_WORKER = r'''
import json, sys
import torch, torch.distributed as dist
from data.config import shapes
from layers import MultiBoxLoss
from ssd import build_ssd
from utils.training.step import forward_backward, forward_backward_accum, optimizer_step
from tests.test_accum import NO_BN, S, _batch

dist.init_process_group('gloo')
rank = dist.get_rank()
images, targets = _batch(4, seed=rank)          # other images on each rank
if rank == 1:
    targets = [t[:0] for t in targets]          # no object at all on rank 1: N from rank 0 only
out = []
for k in (1, 2):
    torch.manual_seed(0)
    net = build_ssd('train', S, 6, cfg=NO_BN)
    ddp = torch.nn.parallel.DistributedDataParallel(net)
    opt = torch.optim.SGD(net.parameters(), lr=1e-2, momentum=0.9, weight_decay=5e-4)
    crit = MultiBoxLoss(6, variance=NO_BN['variance'])
    if k == 1:
        forward_backward(ddp, crit, images, targets)
    else:
        forward_backward_accum(ddp, crit, images, targets, k, net.priors, ddp=ddp)
    optimizer_step(opt)
    out.append(torch.cat([p.detach().flatten() for p in net.parameters()]))
other = [torch.zeros_like(out[1]) for _ in range(2)]
dist.all_gather(other, out[1])
if rank == 0:
    with open(sys.argv[1], 'w') as f:
        json.dump({'accum_vs_whole': float((out[0] - out[1]).abs().max()),
                   'ranks': float((other[0] - other[1]).abs().max())}, f)
del ddp
dist.barrier()                  # both ranks done before either tears gloo down
dist.destroy_process_group()
'''


def test_ddp_accumulation_equals_whole_batch(tmp_path):
    """torchrun, 2 gloo processes: --accum_steps 2 equals 1 (N summed over
    micro-batches and processes; gradients all-reduced once)."""
    import json
    import os
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script, result = tmp_path / 'worker.py', tmp_path / 'r.json'
    script.write_text(DDP_WORKER)
    env = dict(os.environ, PYTHONPATH=root, OMP_NUM_THREADS='1')
    p = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone',
                        '--nproc_per_node=2', str(script), str(result)], cwd=root, env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(result.read_text())
    assert r['ranks'] == 0 and r['accum_vs_whole'] <= 1e-6
