"""Column scatters for semi-synchronous updates with random neuron groups.

A semi-synchronous step (technique 4, Hori, Sekiya & Takenaka; see
``minidnn.semisync``) touches only the active group's units, the columns
``cols`` of a row-major (in, out) weight matrix. With contiguous groups
those columns are a slice and NumPy's slicing is fast. With random groups
they are a sorted index array, and NumPy's two-dimensional fancy
assignment ``buf[:, cols] = values`` goes through its general index
iterator: for Dense(1024, 1024) with 32 groups, clearing the last group's
columns and writing the new ones took 0.58 ms, more than half of the full
1024×32×1024 weight-gradient product it was meant to save (0.07 ms with
a slice). The kernels here do the same work in one sweep over the rows:

* ``write_columns(buf, clear_cols, cols, values)``:
      buf[:, clear_cols] = 0;  buf[:, cols] = values
  (the weight-gradient buffer of ``Dense._weight_grad``: the columns
  written at the last step are zeroed, the active ones written).
* ``add_columns(dst, cols, values, scale)``:
      dst[:, cols] += scale · values
  (the velocity update of ``SemiSyncSGD``: v[:, g] −= η·step).

``values`` is (rows, len(cols)), in the order of ``cols``. Index arrays
must hold valid, distinct columns (the neuron groups guarantee it; the
kernels do not check bounds). ``write_columns_numpy`` and
``add_columns_numpy`` are the plain NumPy twins that define what the
kernels compute; tests hold the kernels to them.
"""
from __future__ import annotations

import numba
import numpy as np


# -- the NumPy twins (the definition) ---------------------------------------------

def write_columns_numpy(buf: np.ndarray, clear_cols: np.ndarray, cols: np.ndarray,
                        values: np.ndarray) -> np.ndarray:
    """buf[:, clear_cols] = 0, then buf[:, cols] = values; returns buf."""
    buf[:, clear_cols] = 0
    buf[:, cols] = values
    return buf


def add_columns_numpy(dst: np.ndarray, cols: np.ndarray, values: np.ndarray,
                      scale: float) -> np.ndarray:
    """dst[:, cols] += scale · values (values in dst's dtype); returns dst."""
    dst[:, cols] += dst.dtype.type(scale) * values
    return dst


# -- the kernels ------------------------------------------------------------------

@numba.njit(cache=True)
def _write_columns_kernel(buf, clear_cols, cols, values):
    zero = buf.dtype.type(0)
    for i in range(buf.shape[0]):
        for j in range(clear_cols.shape[0]):
            buf[i, clear_cols[j]] = zero
        for j in range(cols.shape[0]):
            buf[i, cols[j]] = values[i, j]


@numba.njit(cache=True)
def _add_columns_kernel(dst, cols, values, scale):
    for i in range(dst.shape[0]):
        for j in range(cols.shape[0]):
            dst[i, cols[j]] += scale * values[i, j]


def _check(dst, cols, values, name):
    if dst.ndim != 2 or values.shape != (dst.shape[0], cols.shape[0]):
        raise ValueError(f"{name}: expected a 2-D array and values of shape (rows, len(cols)) = "
                         f"({dst.shape[0] if dst.ndim else '?'}, {cols.shape[0]}), got array "
                         f"{dst.shape} and values {values.shape}")


def write_columns(buf: np.ndarray, clear_cols: np.ndarray, cols: np.ndarray,
                  values: np.ndarray) -> np.ndarray:
    """The kernel of ``write_columns_numpy``: one sweep over buf's rows, in place."""
    clear_cols = np.ascontiguousarray(clear_cols, dtype=np.int64)
    cols = np.ascontiguousarray(cols, dtype=np.int64)
    values = np.ascontiguousarray(values, dtype=buf.dtype)
    _check(buf, cols, values, "write_columns")
    _write_columns_kernel(buf, clear_cols, cols, values)
    return buf


def add_columns(dst: np.ndarray, cols: np.ndarray, values: np.ndarray, scale: float) -> np.ndarray:
    """The kernel of ``add_columns_numpy``: one sweep over dst's rows, in place."""
    cols = np.ascontiguousarray(cols, dtype=np.int64)
    values = np.ascontiguousarray(values, dtype=dst.dtype)
    _check(dst, cols, values, "add_columns")
    _add_columns_kernel(dst, cols, values, dst.dtype.type(scale))
    return dst
