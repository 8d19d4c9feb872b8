"""Winograd F(4x4, 3x3) convolution: SSD's wide 3x3 convolutions at inference
on the CPU.

A 3x3 convolution computes each 4x4 block of outputs from a 6x6 tile of the
input. Winograd's minimal filtering algorithm (Lavin & Gray, "Fast Algorithms
for Convolutional Neural Networks", CVPR 2016) transforms the tile
(``B^T d B``) and the 3x3 kernel (``G g G^T``) into 6x6 arrays whose
element-wise product, transformed back (``A^T m A``), is that block: 36
multiplications per block instead of 144. Summed over input channels, the
element-wise products become 36 matrix products ``[tiles, C] @ [C, K]``, 4x
fewer floating-point operations than the direct convolution, which oneDNN
already runs near the CPU's peak. On the 2-core CPU of doc/benchmarks.md the
VGG16 convolutions of SSD300 from conv3_1 to conv5_3 take 1.5-2x less time.

The result equals the direct convolution up to float rounding: about 1e-5 of
the largest output, against about 1e-6 for oneDNN's direct kernels
(tests/test_winograd.py). :class:`ssd.SSD` uses it only where nothing needs
gradients (inference, evaluation), on float32 CPU tensors, outside tracing,
scripting, ``torch.compile`` and ONNX export, for the layers of
:func:`eligible`; ``net.winograd = False`` turns it off.
"""
import weakref

import torch
import torch.nn as nn
import torch.nn.functional as F

# Lavin & Gray's F(4x4, 3x3), interpolation points 0, 1, -1, 2, -2 and infinity.
_BT = torch.tensor([[4, 0, -5, 0, 1, 0],
                    [0, -4, -4, 1, 1, 0],
                    [0, 4, -4, -1, 1, 0],
                    [0, -2, -1, 2, 1, 0],
                    [0, 2, -1, -2, 1, 0],
                    [0, 4, 0, -5, 0, 1]], dtype=torch.float64)
_G = torch.tensor([[1 / 4, 0, 0],
                   [-1 / 6, -1 / 6, -1 / 6],
                   [-1 / 6, 1 / 6, -1 / 6],
                   [1 / 24, 1 / 12, 1 / 6],
                   [1 / 24, -1 / 12, 1 / 6],
                   [0, 0, 1]], dtype=torch.float64)
_AT = torch.tensor([[1, 1, 1, 1, 1, 0],
                    [0, 1, -1, 2, -2, 0],
                    [0, 1, 1, 4, 4, 0],
                    [0, 1, -1, 8, -8, 1]], dtype=torch.float64)
# The two-sided transforms of a row-major flattened tile, as one matrix each.
_IN = torch.kron(_BT, _BT).float()     # [36, 36]: d -> B^T d B
_OUT = torch.kron(_AT, _AT).float()    # [16, 36]: m -> A^T m A

# Where it pays (measured in doc/benchmarks.md, batch 1 and 8, 2 threads): at
# least MIN_IN input and MIN_OUT output channels (the tile transforms cost
# per element what a narrow layer's products cost), and feature maps of at
# least MIN_SIDE (on a 10x10 map the 4x4 blocks overhang by 20%).
MIN_IN, MIN_OUT, MIN_SIDE = 128, 256, 16
# The transformed tiles of one band of an image (see conv3x3).
BAND_BYTES = 1 << 22


def applies(m, x):
    """Whether the Winograd path may run module ``m`` on input ``x``: float32
    on the CPU, no autograd graph to record (no gradient mode, or neither
    ``x`` nor ``m``'s parameters require one), and not while tracing,
    scripting, compiling or exporting to ONNX."""
    if x.device.type != 'cpu' or x.dtype != torch.float32 or m.weight.dtype != torch.float32:
        return False
    if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad
                                                           for p in m.parameters())):
        return False
    return not (torch.jit.is_tracing() or torch.jit.is_scripting()
                or torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export())


def eligible(m, x):
    """Whether module ``m`` is a 3x3, stride-1, padding-1 convolution wide
    enough, on a feature map ``x`` large enough, for Winograd to be faster
    (:func:`applies` says whether it may run)."""
    return (type(m) is nn.Conv2d and m.kernel_size == (3, 3) and m.stride == (1, 1)
            and m.padding == (1, 1) and m.dilation == (1, 1) and m.groups == 1
            and m.padding_mode == 'zeros' and m.in_channels >= MIN_IN
            and m.out_channels >= MIN_OUT and min(x.shape[-2:]) >= MIN_SIDE)


def transform_weight(weight):
    """``[K, C, 3, 3]`` kernels -> ``[36, C, K]`` float32 ``G g G^T``, computed
    in float64."""
    k, c = weight.shape[:2]
    u = torch.einsum('ai,kcij,bj->abck', _G, weight.detach().double(), _G)
    return u.reshape(36, c, k).float().contiguous()


def conv3x3(x, u, bias=None, band_bytes=BAND_BYTES):
    """The 3x3 convolution (stride 1, zero padding 1) of ``x`` ``[B, C, H, W]``
    with the transformed kernels ``u`` (:func:`transform_weight`), plus
    ``bias``. Returns ``[B, K, H, W]`` in channels_last memory.

    Each image is done in bands of 4-row blocks whose transformed tiles take
    at most about ``band_bytes``, so that they stay in the caches between the
    three steps; every output is computed the same way whatever the batch."""
    b, c, h, w = x.shape
    k = u.shape[2]
    th, tw = -(-h // 4), -(-w // 4)
    rows = max(1, min(th, band_bytes // (tw * 36 * max(c, k) * x.element_size())))
    out = torch.empty(b, h, w, k, dtype=x.dtype, device=x.device)
    bias_row = (bias if bias is not None else x.new_zeros(k)).repeat(rows * tw)
    nhwc = x.permute(0, 2, 3, 1)
    for i in range(b):
        # zero-padded so that the 4x4 blocks cover the map: [4 th + 2, 4 tw + 2, C]
        xp = F.pad(nhwc[i], (0, 0, 1, 4 * tw + 1 - w, 1, 4 * th + 1 - h))
        for r0 in range(0, th, rows):
            n = min(rows, th - r0)
            tiles = n * tw
            d = xp[4 * r0:4 * (r0 + n) + 2].unfold(0, 6, 4).unfold(1, 6, 4)  # [n, tw, C, 6, 6]
            d = d.permute(0, 1, 3, 4, 2).reshape(tiles, 36, c)   # one copy, C innermost
            v = torch.matmul(_IN, d)                             # [tiles, 36, C]
            m = torch.bmm(v.transpose(0, 1), u)                  # [36, tiles, K]
            y = torch.addmm(bias_row[:tiles * k], _OUT, m.view(36, tiles * k))  # [16, tiles K]
            y = y.view(4, 4, n, tw, k).permute(2, 0, 3, 1, 4).reshape(4 * n, 4 * tw, k)
            top = 4 * r0
            bottom = min(h, top + 4 * n)
            out[i, top:bottom] = y[:bottom - top, :w]
    return out.permute(0, 3, 1, 2)


def conv(m, x):
    """``m(x)`` for an :func:`eligible` ``nn.Conv2d`` by Winograd. The
    transformed kernels (4x the weight's size: 232 MB for SSD300's nine
    layers) are kept per module, outside it (not in its state dict, pickle
    or deep copy, freed with it), and made again whenever its weight tensor
    is replaced or changed in place (``load_state_dict``, an optimizer
    step)."""
    weight = m.weight
    key = (weight.data_ptr(), weight._version)
    cached = _CACHE.get(m)
    if cached is None or cached[0] is not weight or cached[1] != key:
        cached = (weight, key, transform_weight(weight))
        _CACHE[m] = cached
    return conv3x3(x, cached[2], m.bias)


_CACHE = weakref.WeakKeyDictionary()    # module -> (weight, its version key, kernels)
