"""Layout changes around the row-layout convolution, as parallel Numba kernels.

The row layout (``im2col.im2row``) works on channels-last data, the layers
speak NCHW, so every channels-last convolution step changes layout three times:

* ``pad_channels_last``:  x (N, C, H, W) -> x_pad (N, H + 2ph, W + 2pw, C), zero border
* ``rows_to_nchw``:       y_r (N·P, O) (+ bias[o]) -> y (N, O, P), P = OH·OW
* ``nchw_to_rows``:       dY (N, O, P) -> dY_r (N·P, O)

NumPy does each as one strided copy on ONE thread; at 2 threads that serial
time (~4 ms of Cifar10_quick's conv2 step) does not shrink while the products
around it halve. The kernels split the copy by sample over Numba's threads,
and inside a sample copy in (c, position) blocks of the small per-sample
plane (a few KB to 100 KB, in cache). Each has its NumPy twin (``*_numpy``),
the expression the layers used before, which defines it.

Below ``PARALLEL_MIN`` elements the public functions run the NumPy twin
instead: on LeNet's conv2 (64·50·8·8 = 204,800 values) the kernels made the
training step 3-6 % slower (one process, interleaved, under load), on
Cifar10_quick's conv2 and conv3 (819,200 and 409,600) they are even at one
thread and ~10 % faster for the whole step at two.
"""
from __future__ import annotations

import numba
import numpy as np

from .im2col import kernel_for

#: arrays smaller than this take the NumPy twin (see the module docstring)
PARALLEL_MIN = 400_000


# -- NumPy twins -------------------------------------------------------------------
def pad_channels_last_numpy(x, ph, pw, out=None):
    N, C, H, W = x.shape
    if out is None:
        out = np.zeros((N, H + 2 * ph, W + 2 * pw, C), dtype=x.dtype)
    out[:, ph:ph + H, pw:pw + W, :] = x.transpose(0, 2, 3, 1)
    return out


def rows_to_nchw_numpy(y_rows, N, OH, OW, bias=None, out=None):
    O = y_rows.shape[1]
    if out is None:
        out = np.empty((N, O, OH, OW), dtype=y_rows.dtype)
    view = y_rows.reshape(N, OH, OW, O).transpose(0, 3, 1, 2)
    if bias is None:
        np.copyto(out, view)
    else:
        np.add(view, np.asarray(bias).reshape(1, -1, 1, 1), out=out)
    return out


def nchw_to_rows_numpy(grad, out=None):
    N, O = grad.shape[:2]
    if out is None:
        out = np.empty((grad[0, 0].size * N, O), dtype=grad.dtype)
    np.copyto(out.reshape(N, -1, O), grad.reshape(N, O, -1).transpose(0, 2, 1))
    return out


# -- Numba kernels -----------------------------------------------------------------
@numba.njit(cache=True, parallel=True)
def _pad_channels_last_kernel(x, ph, pw, out):
    N, C, H, W = x.shape
    for n in numba.prange(N):
        x_n = x[n]
        for h in range(H):
            dst = out[n, h + ph]
            # writes in order, reads across the (C, W) block of row h (in L1)
            for w in range(W):
                row = dst[w + pw]
                for c in range(C):
                    row[c] = x_n[c, h, w]


@numba.njit(cache=True, parallel=True)
def _rows_to_nchw_kernel(y_rows, bias, has_bias, out):
    # out (N, O, P); y_rows (N·P, O)
    N, O, P = out.shape
    for n in numba.prange(N):
        block = y_rows[n * P:(n + 1) * P]
        for o in range(O):
            dst = out[n, o]
            b = bias[o] if has_bias else 0
            if has_bias:
                for p in range(P):
                    dst[p] = block[p, o] + b
            else:
                for p in range(P):
                    dst[p] = block[p, o]


@numba.njit(cache=True, parallel=True)
def _nchw_to_rows_kernel(grad, out):
    # grad (N, O, P) -> out (N·P, O)
    N, O, P = grad.shape
    for n in numba.prange(N):
        block = out[n * P:(n + 1) * P]
        for o in range(O):
            src = grad[n, o]
            for p in range(P):
                block[p, o] = src[p]


def pad_channels_last(x, ph, pw, out=None):
    """x (N, C, H, W) -> zero-padded channels-last (N, H + 2ph, W + 2pw, C).

    ``out``, if given, is reused: its border is never written, so a buffer that
    was zero once stays zero-padded."""
    N, C, H, W = x.shape
    if x.size < PARALLEL_MIN:
        return pad_channels_last_numpy(x, ph, pw, out)
    if out is None:
        out = np.zeros((N, H + 2 * ph, W + 2 * pw, C), dtype=x.dtype)
    x = np.ascontiguousarray(x, dtype=out.dtype)
    kernel_for(_pad_channels_last_kernel, x.size)(x, ph, pw, out)
    return out


def rows_to_nchw(y_rows, N, OH, OW, bias=None, out=None):
    """y_r (N·OH·OW, O), in (n, a, b, o) order -> y (N, O, OH, OW), + bias[o] if given."""
    O = y_rows.shape[1]
    if y_rows.size < PARALLEL_MIN:
        return rows_to_nchw_numpy(y_rows, N, OH, OW, bias, out)
    if out is None:
        out = np.empty((N, O, OH, OW), dtype=y_rows.dtype)
    y_rows = np.ascontiguousarray(y_rows)
    has_bias = bias is not None
    b = (np.ascontiguousarray(bias, dtype=out.dtype) if has_bias
         else np.zeros(O, dtype=out.dtype))
    kernel_for(_rows_to_nchw_kernel, out.size)(y_rows, b, has_bias, out.reshape(N, O, OH * OW))
    return out


def nchw_to_rows(grad, out=None):
    """dY (N, O, OH, OW) -> dY_r (N·OH·OW, O)."""
    N, O = grad.shape[:2]
    P = grad[0, 0].size
    if grad.size < PARALLEL_MIN:
        return nchw_to_rows_numpy(grad, out)
    if out is None:
        out = np.empty((N * P, O), dtype=grad.dtype)
    grad = np.ascontiguousarray(grad, dtype=out.dtype)
    kernel_for(_nchw_to_rows_kernel, grad.size)(grad.reshape(N, O, P), out)
    return out
