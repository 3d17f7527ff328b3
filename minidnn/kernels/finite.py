"""Where a data set first holds NaN or Inf, in one pass and no temporaries (``fit``'s check).

``fit`` and ``evaluate`` refuse training data with a NaN or Inf in it and name the
first sample that holds one. The NumPy twin (``first_nonfinite_row_numpy``, the
check ``training._split_xy`` made before sitting 18) builds a boolean copy of each
4096-sample chunk with ``np.isfinite`` and reduces it per row: ~57 ms on the 50,000
MNIST training images (39 M float32 values, one thread, under load), paid by every
``fit`` call, which is 15 % of a sparse 784-500-10 epoch. The kernel reads each value
once and keeps no copy:

    row i is finite  ⇔  Σ_j x[i, j]·0 = 0

since x·0 is ±0 for a finite x and NaN for ±Inf and NaN, and a NaN term makes the
sum NaN whatever the order of addition. That lets the row's sum be split into
vector partial sums (``fastmath={"reassoc"}`` only: no flag that assumes finite
values, so x·0 is not folded to 0). The answer is the twin's exactly: the index of
the first row holding a NaN or Inf, or -1.
"""
from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, fastmath={"reassoc"})
def _first_nonfinite_row(x):
    n, m = x.shape
    zero = x.dtype.type(0)
    for i in range(n):
        row = x[i]
        acc = zero
        for j in range(m):
            acc += row[j] * zero
        if acc != zero:               # NaN: the row holds a NaN or an Inf
            return i
    return -1


def first_nonfinite_row_numpy(x: np.ndarray) -> int:
    """The first i with a NaN or Inf anywhere in x[i], or -1 (the twin; chunked so that
    the boolean ``isfinite`` copy stays small)."""
    for start in range(0, len(x), 4096):
        chunk = x[start:start + 4096]
        finite = np.isfinite(chunk).reshape(len(chunk), -1).all(axis=1)
        if not finite.all():
            return start + int(np.argmin(finite))
    return -1


def first_nonfinite_row(x: np.ndarray) -> int:
    """``first_nonfinite_row_numpy`` for a floating array x of any shape (samples first):
    one Numba pass for C-contiguous float32/float64 x, the twin otherwise."""
    if (x.dtype in (np.float32, np.float64) and x.flags.c_contiguous and x.ndim >= 1
            and len(x) and x.size):
        return int(_first_nonfinite_row(x.reshape(len(x), -1)))
    return first_nonfinite_row_numpy(x)
