"""Layout changes around the row-layout convolution, as parallel Numba kernels.

The row layout (``im2col.im2row``) works on channels-last data, the layers
speak NCHW, so every channels-last convolution step changes layout four times:

* ``pad_channels_last``:  x (N, C, H, W) -> x_pad (N, H + 2ph, W + 2pw, C), zero border
* ``rows_to_nchw``:       y_r (N·P, O) (+ bias[o]) -> y (N, O, P), P = OH·OW
* ``nchw_to_rows``:       dY (N, O, P) -> dY_r (N·P, O)
* ``unpad_to_nchw``:      dx_pad (N, H + 2ph, W + 2pw, C) -> dx (N, C, H, W), the border dropped

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


def unpad_to_nchw_numpy(x_pad, ph, pw, out=None):
    N, Hp, Wp, C = x_pad.shape
    H, W = Hp - 2 * ph, Wp - 2 * pw
    if out is None:
        out = np.empty((N, C, H, W), dtype=x_pad.dtype)
    np.copyto(out, x_pad[:, ph:ph + H, pw:pw + W, :].transpose(0, 3, 1, 2))
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


@numba.njit(cache=True, parallel=True)
def _unpad_to_nchw_kernel(x_pad, ph, pw, out):
    N, C, H, W = out.shape
    for n in numba.prange(N):
        src_n, dst_n = x_pad[n], out[n]
        for c in range(C):
            dst = dst_n[c]
            # writes each output plane in order; reads the (W, C) rows of x_pad (in L1/L2)
            for h in range(H):
                row = src_n[h + ph]
                dst_row = dst[h]
                for w in range(W):
                    dst_row[w] = row[w + pw, c]


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


def unpad_to_nchw(x_pad, ph, pw, out=None):
    """Channels-last x_pad (N, H + 2ph, W + 2pw, C) -> NCHW (N, C, H, W) without the
    border: the last step of the row layout's input gradient (``Conv2D``'s row2im)."""
    N, Hp, Wp, C = x_pad.shape
    H, W = Hp - 2 * ph, Wp - 2 * pw
    if N * C * H * W < PARALLEL_MIN:
        return unpad_to_nchw_numpy(x_pad, ph, pw, out)
    if out is None:
        out = np.empty((N, C, H, W), dtype=x_pad.dtype)
    x_pad = np.ascontiguousarray(x_pad, dtype=out.dtype)
    kernel_for(_unpad_to_nchw_kernel, out.size)(x_pad, ph, pw, out)
    return out
