from .functions import Detect, PriorBox
from .modules import L2Norm, MultiBoxLoss

__all__ = ['Detect', 'PriorBox', 'L2Norm', 'MultiBoxLoss']
