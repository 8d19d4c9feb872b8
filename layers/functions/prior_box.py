"""Default boxes (priors) of SSD, in the paper's formula and Caffe's order."""
import math

import torch


class PriorBox:
    """Compute the priors of a config as a ``[P, 4]`` float32 tensor.

    Each row is ``(cx, cy, w, h)`` normalised to [0, 1]. Order: feature map,
    row, column, then per location: the square of side ``s_k = min_size/img``,
    the square of side ``sqrt(s_k * max_size/img)``, then for each aspect
    ratio ``a``: ``(s_k*sqrt(a), s_k/sqrt(a))`` and its reciprocal. Centres are
    ``((j + 0.5) / f_k, (i + 0.5) / f_k)`` with ``f_k = img / step``. With
    ``clip`` the centre-form values are clamped to [0, 1] as in ssd.pytorch, so
    that its published weights see the priors they were trained with.

    With ``cfg['head_layout'] == 'nvidia'`` (NVIDIA's SSD300 v1.1, whose heads
    :meth:`ssd.SSD.forward` flattens anchor-major) the order within each
    feature map is shape first, then row, column (NVIDIA's ``DefaultBoxes``):
    the same boxes, permuted.
    """

    def __init__(self, cfg):
        self.image_size = cfg['min_dim']
        self.feature_maps = cfg['feature_maps']
        self.min_sizes = cfg['min_sizes']
        self.max_sizes = cfg['max_sizes']
        self.steps = cfg['steps']
        self.aspect_ratios = cfg['aspect_ratios']
        self.clip = cfg['clip']
        self.shape_major = cfg.get('head_layout', 'ssd') == 'nvidia'
        self.variance = cfg['variance'] or [0.1]
        if any(v <= 0 for v in self.variance):
            raise ValueError('Variances must be greater than 0')

    def forward(self):
        out = []
        for k, f in enumerate(self.feature_maps):
            f_k = self.image_size / self.steps[k]
            s_k = self.min_sizes[k] / self.image_size
            s_k_prime = math.sqrt(s_k * (self.max_sizes[k] / self.image_size))
            shapes = [(s_k, s_k), (s_k_prime, s_k_prime)]
            for ar in self.aspect_ratios[k]:
                r = math.sqrt(ar)
                shapes += [(s_k * r, s_k / r), (s_k / r, s_k * r)]
            wh = torch.tensor(shapes, dtype=torch.float64)           # [A, 2]
            c = (torch.arange(f, dtype=torch.float64) + 0.5) / f_k
            cy, cx = torch.meshgrid(c, c, indexing='ij')              # rows, cols
            cxcy = torch.stack([cx, cy], -1).reshape(-1, 1, 2)        # [f*f, 1, 2]
            boxes = torch.cat([cxcy.expand(-1, len(shapes), 2),
                               wh.expand(f * f, -1, 2)], -1)   # [f*f, A, 4]
            if self.shape_major:
                boxes = boxes.transpose(0, 1)                         # [A, f*f, 4]
            out.append(boxes.reshape(-1, 4))
        output = torch.cat(out).float()
        if self.clip:
            output.clamp_(min=0, max=1)
        return output

    __call__ = forward
