"""Datasets for minidnn: MNIST, Fashion-MNIST and a small embedded MNIST subset.

>>> from minidnn.data import load
>>> train, val, test = load("embedded")        # no download; in the repository
>>> splits = load("mnist")                     # 50,000 / 10,000 / 10,000

Images are float32 (N, 1, 28, 28) = uint8 pixel / 255 for every source.
"""
from .api import DataUnavailableError, fetch, load
from .dataset import Dataset, Splits
from .idx import IDXError, read_idx, write_idx
from .sources import ChecksumError

__all__ = ["Dataset", "Splits", "load", "fetch", "read_idx", "write_idx", "IDXError",
           "ChecksumError", "DataUnavailableError"]
