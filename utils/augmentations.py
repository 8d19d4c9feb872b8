"""ssd.pytorch's old import path: ``from utils.augmentations import
SSDAugmentation`` (the code lives in data/augmentations.py)."""
from data.augmentations import SSDAugmentation  # noqa: F401

__all__ = ['SSDAugmentation']
