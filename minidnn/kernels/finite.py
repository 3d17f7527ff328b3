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
the first row holding a NaN or Inf, or -1. From ``PARALLEL_MIN_VALUES`` values on, and
with more than one Numba thread, row ranges are checked in parallel (the pass is bound
by memory, and two cores keep more reads in flight).
"""
from __future__ import annotations

import numba
import numpy as np

from ..threads import numba_thread_count


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


@numba.njit(cache=True, fastmath={"reassoc"}, parallel=True)
def _first_nonfinite_row_parallel(x, n_chunks):
    # the same test on n_chunks row ranges at once (a whole data set is read at the
    # speed of memory, and two cores keep more reads in flight than one); each range
    # stops at its first bad row and the smallest of those is the answer
    n, m = x.shape
    per = (n + n_chunks - 1) // n_chunks
    firsts = np.full(n_chunks, n, dtype=np.int64)
    for c in numba.prange(n_chunks):
        zero = x.dtype.type(0)
        for i in range(c * per, min(n, (c + 1) * per)):
            row = x[i]
            acc = zero
            for j in range(m):
                acc += row[j] * zero
            if acc != zero:
                firsts[c] = i
                break
    first = firsts.min()
    return -1 if first == n else first


#: values from which the check runs on every Numba thread (below, one pass is too short
#: for the pool's wake-up to pay)
PARALLEL_MIN_VALUES = 1 << 20


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
        rows = x.reshape(len(x), -1)
        threads = numba_thread_count()      # numba.get_num_threads() without its locks
        if threads > 1 and x.size >= PARALLEL_MIN_VALUES and len(x) >= 4 * threads:
            return int(_first_nonfinite_row_parallel(rows, 4 * threads))
        return int(_first_nonfinite_row(rows))
    return first_nonfinite_row_numpy(x)
