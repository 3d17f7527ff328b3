"""Σ_n a[n, :] of a C-ordered (batch, features) array in one Numba pass: a bias gradient.

``Dense.backward_params`` takes the bias gradient as ``grad.sum(axis=0)``; on the
784-500-10 net's (100, 10) output gradient NumPy's reduction costs ~7 µs a step,
almost all of it the call, where the pass is ~1 µs. For a C-ordered array with two or
more columns NumPy's reduction adds the rows one after another into the first
(its inner loop runs along the contiguous, non-reduced axis), so the kernel, which
adds them in that order without fused multiply-adds, gives its bits exactly
(``tests/test_column_sums``). With one column the reduced axis is the contiguous one
and NumPy sums pairwise: those arrays, and any other layout, take the twin.
"""
from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True)
def _column_sums(a, out):
    n, k = a.shape
    for j in range(k):
        out[j] = a[0, j]
    for i in range(1, n):
        row = a[i]
        for j in range(k):
            out[j] += row[j]


def column_sums_numpy(a: np.ndarray) -> np.ndarray:
    """a.sum(axis=0) (the twin)."""
    return a.sum(axis=0)


def column_sums(a: np.ndarray) -> np.ndarray:
    """``a.sum(axis=0)``, bit for bit, in one pass for a C-ordered 2-D float32/float64
    array of at least one row and two columns; the twin for anything else."""
    if (isinstance(a, np.ndarray) and a.ndim == 2 and a.flags.c_contiguous
            and a.dtype in (np.float32, np.float64) and a.shape[0] > 0 and a.shape[1] > 1):
        out = np.empty(a.shape[1], dtype=a.dtype)
        _column_sums(a, out)
        return out
    return column_sums_numpy(a)
