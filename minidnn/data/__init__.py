"""Datasets for minidnn: MNIST, Fashion-MNIST, CIFAR-10/100 and a small embedded MNIST subset.

>>> from minidnn.data import load
>>> train, val, test = load("embedded")        # no download; in the repository
>>> splits = load("mnist")                     # 50,000 / 10,000 / 10,000
>>> splits = load("cifar10")                   # 45,000 / 5,000 / 10,000, (N, 3, 32, 32)

Images are float32 (N, C, H, W) = uint8 pixel / 255 for every source.
"""
from .api import DataUnavailableError, class_count, fetch, load
from .cifar import CifarFormatError
from .dataset import Dataset, Splits
from .idx import IDXError, read_idx, write_idx
from .sources import ChecksumError

__all__ = ["Dataset", "Splits", "load", "fetch", "class_count", "read_idx", "write_idx", "IDXError",
           "ChecksumError", "DataUnavailableError", "CifarFormatError"]
