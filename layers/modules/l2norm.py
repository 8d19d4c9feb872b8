"""L2Norm of ParseNet, applied to conv4_3 with a learned per-channel scale."""
import torch
import torch.nn as nn


class L2Norm(nn.Module):
    """``[N, C, H, W] -> [N, C, H, W]``: each location's channel vector is
    L2-normalised, then multiplied by ``weight [C]`` (initialised to ``scale``,
    20 in the paper). Same formula as ssd.pytorch (``x / (||x|| + eps)``)."""

    def __init__(self, n_channels, scale):
        super().__init__()
        self.n_channels = n_channels
        self.gamma = scale or None
        self.eps = 1e-10
        self.weight = nn.Parameter(torch.empty(n_channels))
        self.reset_parameters()

    def reset_parameters(self):
        nn.init.constant_(self.weight, self.gamma)

    def forward(self, x):
        norm = x.pow(2).sum(dim=1, keepdim=True).sqrt() + self.eps
        return self.weight.view(1, -1, 1, 1) * (x / norm)
