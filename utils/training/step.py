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
