"""One training step: forward and backward under AMP, the optimiser step, the
NaN/Inf policy and the stop signals (SIGINT/SIGTERM)."""
import signal

import torch

# -------------------------------------------------------------------- step

AMP_DTYPES = {'off': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}


def forward_backward(model, criterion, images, targets, amp_dtype=None, scaler=None):
    """One forward and backward pass.

    ``images [B, 3, H, W]`` on the device; ``targets`` a list of ``[n_i, 5]``
    tensors on the device. The network runs under autocast when ``amp_dtype``
    is set (CUDA); the loss is computed in float32. Returns the detached
    float32 ``(loss_l, loss_c)`` tensors (no host synchronisation).
    """
    device_type = images.device.type
    with torch.autocast(device_type, dtype=amp_dtype or torch.float32,
                        enabled=amp_dtype is not None):
        out = model(images)
    loss_l, loss_c = criterion(out, targets)
    loss = loss_l + loss_c
    if scaler is not None and scaler.is_enabled():
        scaler.scale(loss).backward()
    else:
        loss.backward()
    return loss_l.detach(), loss_c.detach()


def forward_backward_accum(model, criterion, images, targets, steps, priors,
                           amp_dtype=None, scaler=None, ddp=None):
    """Gradient accumulation (``train.py --accum_steps``): one step's batch
    ``images [B, ...]`` / ``targets`` split into ``steps`` micro-batches of
    ``B / steps``, forward and backward one after the other.

    N, the normaliser of the loss, is counted first over all micro-batches
    (``criterion.count_positives``: matching needs only the targets and
    ``priors``), summed, then reduced over processes (``normalizer``); each
    micro-batch's summed loss is divided by that N. The accumulated gradient
    is then the gradient of the whole batch (exactly so for a network without
    BatchNorm, whose statistics are per micro-batch). Under DDP (``ddp``: the
    DistributedDataParallel module) the gradients are all-reduced only after
    the last micro-batch. Returns the detached ``(loss_l, loss_c)`` of the
    whole batch (the sums over micro-batches)."""
    import contextlib
    b = images.shape[0]
    if steps < 1 or b % steps:
        raise ValueError(f'a batch of {b} images does not split into --accum_steps '
                         f'{steps} micro-batches')
    m = b // steps
    chunks = [(images[i:i + m], targets[i:i + m]) for i in range(0, b, m)]
    if not criterion.divide_by_n:
        n = None
    else:
        n = criterion.normalizer(sum(criterion.count_positives(t, priors)
                                     for _, t in chunks))
    total_l = total_c = 0
    for k, (x, t) in enumerate(chunks):
        sync = ddp is None or k == steps - 1
        with contextlib.nullcontext() if sync else ddp.no_sync():
            with torch.autocast(x.device.type, dtype=amp_dtype or torch.float32,
                                enabled=amp_dtype is not None):
                out = model(x)
            if n is None:
                loss_l, loss_c = criterion(out, t)
            else:
                loss_l, loss_c = criterion(out, t, num_pos=n)
            loss = loss_l + loss_c
            if scaler is not None and scaler.is_enabled():
                scaler.scale(loss).backward()
            else:
                loss.backward()
        total_l = total_l + loss_l.detach()
        total_c = total_c + loss_c.detach()
    return total_l, total_c


def optimizer_step(optimizer, scaler=None):
    """Step (through the GradScaler for fp16) and clear the gradients."""
    if scaler is not None and scaler.is_enabled():
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


class NonFiniteLoss(RuntimeError):
    """Training stopped on a NaN/Inf loss (the message says where)."""


class NormStats:
    """The BatchNorm running statistics of ``net`` (``running_mean``,
    ``running_var``, ``num_batches_tracked``), kept before a step and put
    back when ``--nan_policy skip`` drops it: the forward pass of a
    non-finite batch has already folded it into them, and a NaN there would
    poison every later evaluation. Free for networks without BatchNorm
    (VGG16)."""

    def __init__(self, net):
        self.buffers = [b for m in net.modules()
                        if isinstance(m, torch.nn.modules.batchnorm._NormBase)
                        for b in m.buffers()]
        self.saved = None

    def keep(self):
        if self.buffers:
            self.saved = [b.detach().clone() for b in self.buffers]

    @torch.no_grad()
    def restore(self):
        if self.saved is not None:
            for b, s in zip(self.buffers, self.saved):
                b.copy_(s)


class NonFinitePolicy:
    """What to do when ``loss_l`` or ``loss_c`` is NaN or Inf.

    ``'stop'`` (default): raise :class:`NonFiniteLoss` naming the iteration,
    the bad values and the last finite losses; nothing of the bad iteration
    is applied. ``'skip'``: drop that iteration's update, count it, and stop
    anyway after ``max_consecutive`` non-finite iterations in a row.
    """

    def __init__(self, policy='stop', max_consecutive=20):
        if policy not in ('stop', 'skip'):
            raise ValueError(f'--nan_policy must be stop or skip, got {policy!r}')
        self.policy, self.max_consecutive = policy, max_consecutive
        self.skipped = 0
        self.consecutive = 0
        self.last_finite = None   # (iteration, loss_l, loss_c)

    def check(self, it, loss_l, loss_c, bad):
        """Return True when the update of iteration ``it`` must be applied,
        False when it is skipped; raise :class:`NonFiniteLoss` to stop.
        ``bad`` is True when a loss is not finite on any process."""
        if not bad:
            self.consecutive = 0
            self.last_finite = (it, loss_l, loss_c)
            return True
        where = (f'iteration {it}: non-finite loss (loss_l={loss_l}, loss_c={loss_c}); '
                 + ('no finite loss before it' if self.last_finite is None else
                    'last finite losses at iteration %d: loss_l=%.4f, loss_c=%.4f'
                    % self.last_finite))
        self.consecutive += 1
        if self.policy == 'stop' or self.consecutive > self.max_consecutive:
            extra = (f'; {self.consecutive} in a row' if self.policy == 'skip' else '')
            raise NonFiniteLoss(where + extra + '. Try a lower --lr, --warmup, or '
                                '--nan_policy skip; resume from checkpoint.pth.')
        self.skipped += 1
        return False


# ----------------------------------------------------------------- signals

class StopSignal:
    """SIGINT/SIGTERM set :attr:`requested`; the loop then saves
    ``checkpoint.pth`` and stops at the end of the iteration. A second SIGINT
    interrupts at once (KeyboardInterrupt)."""

    def __init__(self):
        self.requested = 0
        self._old = {}

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = signum

    def __enter__(self):
        for s in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[s] = signal.signal(s, self._handle)
            except ValueError:    # not the main thread
                pass
        return self

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)
        return False


# ------------------------------------------------------------- bad samples

class BadSamples:
    """``--skip_bad`` bookkeeping in the training process: called with the
    one-line message of each bad sample that the loader replaced
    (``data.loader.make_loader(on_skip=...)``); names each sample once
    through ``write``, counts every skip, and raises
    :class:`~data.base.DatasetError` when more than ``cap`` different samples
    are bad. :meth:`summary` is the line printed at the end."""

    def __init__(self, cap=100, write=print):
        self.cap, self.write = cap, write
        self.seen = {}           # message -> times skipped
        self.count = 0

    def __call__(self, message):
        self.count += 1
        if message not in self.seen:
            self.seen[message] = 0
            self.write(f'skipping bad sample ({len(self.seen)} so far): {message}')
        self.seen[message] += 1
        if len(self.seen) > self.cap:
            from data.base import DatasetError
            raise DatasetError(f'more than --max_bad {self.cap} bad samples (the last: '
                               f'{message}); stopping')

    def summary(self):
        """None when nothing was skipped, else one line."""
        if not self.count:
            return None
        files = sorted(m.split(': ')[0] for m in self.seen)
        shown = ', '.join(files[:5]) + (f' and {len(files) - 5} more' if len(files) > 5 else '')
        return (f'--skip_bad: skipped {self.count} time{"s" if self.count > 1 else ""} '
                f'{len(self.seen)} bad sample{"s" if len(self.seen) > 1 else ""}: {shown}')
