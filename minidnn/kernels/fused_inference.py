"""Fused kernels of the inference path (``minidnn.inference``): no caches, no argmax.

Evaluation needs none of what training keeps for the backward pass (the rows
or columns of a convolution, the argmax of a max pool, a ReLU's output), so
the inference plan runs a layer and the one after it in one kernel where that
saves a pass over memory:

* ``conv_pool2x2``: a direct convolution at stride 1 (few input channels:
  LeNet's first layer) with the 2×2 / stride-2 max pool after it, pooled while
  the sample's output planes are still in cache (the register-tiled sample walk
  of ``kernels.direct_conv`` where it applies, the plane walk otherwise); its output is written in any strides, so
  the next convolution's channels-last (NHWC) input comes out of it directly:

      z[n, o, a, b] = bias[o] + Σ_{c,i,j} W[o, c, i, j] · x_pad[n, c, a + i, b + j]
      y[n, o, p, q] = max(z[n, o, 2p, 2q], z[n, o, 2p, 2q + 1],
                          z[n, o, 2p + 1, 2q], z[n, o, 2p + 1, 2q + 1])

* ``rows_pool2x2``: the 2×2 max pool of a convolution's product rows
  Y_r (N·OH·OW, O) in (n, a, b, o) order (im2row · W_r, see ``kernels.im2col``),
  with the bias, written NCHW: y[n, o, p, q] = max of Y_r over the window + b[o].
  Adding b after the max gives the same bits as before it: rounding is
  monotonic, so max_i fl(z_i + b) = fl(max_i z_i + b).
* ``im2row_nhwc``: ``kernels.im2col.im2row``'s rows from a padded channels-last
  input, copied by vectorised loops rather than slice assignments.
* ``maxpool_values``: max pooling of any geometry, values only (no argmax).
* ``bias_relu``: y ← max(y + b, 0) in place, one pass (a Dense layer and the
  ReLU after it); the same bits as ``out += b`` then ``np.maximum(out, 0)``.

A window holding a NaN pools to NaN (as the training kernels, whose first-NaN
rule only decides which index is kept). Each kernel has its NumPy twin here
(``*_numpy``), which defines it; ``tests/test_inference_plan.py`` holds each
kernel to its twin. The kernels are built with ``parallel=True`` and run through
``kernels.workers.serial_nogil`` builds: the plan splits the batch over threads
itself (each thread runs the whole net on its own samples).
"""
from __future__ import annotations

import numba
import numpy as np

from . import direct_conv as _direct
from .direct_conv import (_add_window_row, _add_window_row5x4, _forward_sample_tiled,
                          _window_rows_sample, direct_conv_numpy)


# -- NumPy twins: the definition -----------------------------------------------------
def maxpool2x2_values_numpy(z: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> (N, C, H // 2, W // 2): max over each 2×2 window (NaN if any is)."""
    N, C, H, W = z.shape
    PH, PW = H // 2, W // 2
    windows = z[:, :, :2 * PH, :2 * PW].reshape(N, C, PH, 2, PW, 2)
    return windows.max(axis=(3, 5))


def conv_pool2x2_numpy(x: np.ndarray, W: np.ndarray, bias, padding=0) -> np.ndarray:
    """maxpool2x2(direct_conv(x, W, bias, stride 1, padding)), NCHW."""
    return maxpool2x2_values_numpy(direct_conv_numpy(x, W, bias, 1, padding))


def rows_pool2x2_numpy(y_rows: np.ndarray, N: int, OH: int, OW: int, bias=None) -> np.ndarray:
    """Y_r (N·OH·OW, O) in (n, a, b, o) order -> (N, O, OH // 2, OW // 2) pooled, + bias."""
    O = y_rows.shape[1]
    z = y_rows.reshape(N, OH, OW, O).transpose(0, 3, 1, 2)
    out = np.ascontiguousarray(maxpool2x2_values_numpy(z))
    if bias is not None:
        out += np.asarray(bias, dtype=out.dtype).reshape(1, -1, 1, 1)
    return out


def im2row_nhwc_numpy(x_pad: np.ndarray, kh: int, kw: int, sh: int = 1, sw: int = 1
                      ) -> np.ndarray:
    """rows[(n·OH + a)·OW + b, (i·kw + j)·C + c] = x_pad[n, a·sh + i, b·sw + j, c] for a
    zero-padded channels-last x_pad (N, Hp, Wp, C): ``kernels.im2col.im2row``'s layout."""
    N, Hp, Wp, C = x_pad.shape
    OH, OW = (Hp - kh) // sh + 1, (Wp - kw) // sw + 1
    windows = np.lib.stride_tricks.sliding_window_view(x_pad, (kh, kw), axis=(1, 2))
    # (N, Hp-kh+1, Wp-kw+1, C, kh, kw) -> strided positions, then (i, j, c) order
    windows = windows[:, ::sh, ::sw][:, :OH, :OW].transpose(0, 1, 2, 4, 5, 3)
    return windows.reshape(N * OH * OW, kh * kw * C).copy()


def maxpool_values_numpy(x: np.ndarray, geometry) -> np.ndarray:
    """Max over each window of ``layers.pooling`` geometry (kh, kw, sh, sw, ph, pw, OH, OW)."""
    from ..layers.pooling import maxpool_forward_numpy
    return maxpool_forward_numpy(x, geometry)[0]


def bias_relu_numpy(y: np.ndarray, bias) -> np.ndarray:
    """max(y + b, 0) with NaN kept: Dense's ``out += b`` and then ``relu_numpy``."""
    out = y + np.asarray(bias, dtype=y.dtype)
    return np.maximum(out, out.dtype.type(0))


# -- Numba kernels ----------------------------------------------------------------------
@numba.njit(cache=True)
def _pool2x2_plane(z, row_stride, out):
    # out[p, q] = max of the 2×2 window at (2p, 2q) of the plane z (rows row_stride apart,
    # flat). Not fastmath (the caller is): `v != v` must stay, it makes NaN win
    PH, PW = out.shape
    for p in range(PH):
        top = z[2 * p * row_stride:]
        bottom = z[(2 * p + 1) * row_stride:]
        dst = out[p]
        for q in range(PW):
            w = 2 * q
            best = top[w]
            v = top[w + 1]
            best = v if (v > best) | (v != v) else best
            v = bottom[w]
            best = v if (v > best) | (v != v) else best
            v = bottom[w + 1]
            best = v if (v > best) | (v != v) else best
            dst[q] = best


@numba.njit(cache=True, parallel=True, fastmath=True)
def _conv_pool2x2_kernel(x_pad, W, bias, out):
    # The stride-1 branch of kernels.direct_conv._direct_conv_kernel (the same plane
    # acc[a·Wp + b] over the padded width, four output channels at a time for kw = 5),
    # then each plane pooled while in L1 instead of copied out. out (N, O, PH, PW) may
    # have any strides (an NHWC buffer seen as NCHW)
    N, C, Hp, Wp = x_pad.shape
    O, _, kh, kw = W.shape
    OH, OW = Hp - kh + 1, Wp - kw + 1
    L = (OH - 1) * Wp + OW
    for n in numba.prange(N):
        acc4 = np.empty((4, L), x_pad.dtype)
        o = 0
        while o < O:
            block = 4 if (kw == 5 and o + 4 <= O) else 1
            for q in range(block):
                acc4[q, :] = bias[o + q]
            for c in range(C):
                x_flat = x_pad[n, c].reshape(Hp * Wp)
                for i in range(kh):
                    if block == 4:
                        _add_window_row5x4(acc4, x_flat[i * Wp:], W, o, c, i, L)
                    else:
                        _add_window_row(acc4[0], x_flat[i * Wp:], W[o, c, i], L)
            for q in range(block):
                _pool2x2_plane(acc4[q], Wp, out[n, o + q])
            o += block


@numba.njit(cache=True, parallel=True)
def _conv_pool2x2_tiled_kernel(x_pad, wt, bias, kh, kw, out):
    # The training forward's sample walk (kernels.direct_conv: _window_rows_sample,
    # _forward_sample_tiled: register tiles of 6 channels x 16 pixels), each sample's
    # (O, OH, OW) output planes into a scratch that stays in L2, then pooled. x_pad is
    # already padded (rows with no further padding); wt as direct_conv._tiled_weights
    N, C, Hp, Wp = x_pad.shape
    O = out.shape[1]
    OH, OW = Hp - kh + 1, Wp - kw + 1
    for n in numba.prange(N):
        rows = np.empty((Hp, C, Wp), x_pad.dtype)
        z = np.empty(O * OH * OW, x_pad.dtype)
        _window_rows_sample(x_pad, n, 0, 0, rows)
        _forward_sample_tiled(rows.reshape(-1), 0, wt, bias, C, Wp, kh, kw, O, OH, OW, z, 0,
                              OH * OW, _direct.WIDE_AVAILABLE)
        for o in range(O):
            _pool2x2_plane(z[o * OH * OW:], OW, out[n, o])


@numba.njit(cache=True, parallel=True)
def _rows_pool2x2_kernel(y_rows, OH, OW, bias, has_bias, out):
    # y_rows (N·OH·OW, O), (n, a, b, o) order; out (N, O, PH, PW). The inner loop runs
    # over o: four contiguous rows read, vectorised selects
    N, O, PH, PW = out.shape
    P = OH * OW
    for n in numba.prange(N):
        block = y_rows[n * P:(n + 1) * P]
        best = np.empty(O, y_rows.dtype)
        for p in range(PH):
            for q in range(PW):
                r = 2 * p * OW + 2 * q
                r0, r1, r2, r3 = block[r], block[r + 1], block[r + OW], block[r + OW + 1]
                for o in range(O):
                    m = r0[o]
                    v = r1[o]
                    m = v if (v > m) | (v != v) else m
                    v = r2[o]
                    m = v if (v > m) | (v != v) else m
                    v = r3[o]
                    m = v if (v > m) | (v != v) else m
                    best[o] = m + bias[o] if has_bias else m
                for o in range(O):
                    out[n, o, p, q] = best[o]


@numba.njit(cache=True, parallel=True)
def _im2row_nhwc_kernel(x_pad, kh, kw, sh, sw, OH, OW, rows):
    # kernels.im2col._im2row_kernel with an element loop over 1-D views indexed from 0,
    # which the compiler vectorises: 2-4x faster than its slice assignment (a copy
    # that Numba guards against overlap); 4.4x on LeNet's conv2 chunks of 8 samples,
    # 2.1-2.3x on LeNet's and Cifar10_quick's whole batches (bench/im2row_copy_ab.py,
    # serial builds, 1 thread, under load, sitting 20)
    N, Hp, Wp, C = x_pad.shape
    run = kw * C
    for n in numba.prange(N):
        plane = x_pad[n].reshape(Hp, Wp * C)
        for a in range(OH):
            for b in range(OW):
                dst = rows[(n * OH + a) * OW + b]
                start = b * sw * C
                for i in range(kh):
                    src = plane[a * sh + i, start:start + run]
                    part = dst[i * run:(i + 1) * run]
                    for t in range(run):
                        part[t] = src[t]


@numba.njit(cache=True, parallel=True)
def _maxpool_values_kernel(x, kh, kw, sh, sw, ph, pw, out):
    # windows clipped to the input (every window overlaps it: 0 <= p < k)
    N, C, H, W = x.shape
    OH, OW = out.shape[2], out.shape[3]
    for n in numba.prange(N):
        for c in range(C):
            x_plane, out_plane = x[n, c], out[n, c]
            for a in range(OH):
                h0 = max(a * sh - ph, 0)
                h1 = min(a * sh - ph + kh, H)
                out_row = out_plane[a]
                for b in range(OW):
                    w0 = max(b * sw - pw, 0)
                    w1 = min(b * sw - pw + kw, W)
                    best = x_plane[h0, w0]
                    for h in range(h0, h1):
                        row = x_plane[h]
                        for w in range(w0, w1):
                            v = row[w]
                            best = v if (v > best) | (v != v) else best
                    out_row[b] = best


@numba.njit(cache=True)
def _bias_relu_kernel(y, bias, zero):
    # in place, y (M, K) C-contiguous; (v > 0) | (v != v): +0 for ±0, NaN kept (relu_numpy)
    M, K = y.shape
    for i in range(M):
        row = y[i]
        for j in range(K):
            v = row[j] + bias[j]
            row[j] = v if (v > 0) | (v != v) else zero


# -- wrappers (the plan calls the serial, GIL-free builds) -----------------------------
def _serial(kernel):
    from .workers import serial_nogil
    return serial_nogil(kernel)


def conv_pool2x2(x_pad: np.ndarray, W: np.ndarray, bias: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``conv_pool2x2_numpy`` on the zero-padded input x_pad (N, C, Hp, Wp), C-contiguous,
    into out (N, O, (Hp - kh + 1) // 2, (Wp - kw + 1) // 2), any strides. float32 with
    AVX2 + FMA and output rows of >= 8 pixels: the register-tiled sample walk of
    ``direct_conv`` (``_conv_pool2x2_tiled_kernel``); otherwise the plane walk."""
    O, C, kh, kw = W.shape
    N, _, Hp, Wp = x_pad.shape
    expected = (N, O, (Hp - kh + 1) // 2, (Wp - kw + 1) // 2)
    if x_pad.shape[1] != C or tuple(out.shape) != expected:
        raise ValueError(f"conv_pool2x2: x_pad {x_pad.shape}, W {W.shape} need out of shape "
                         f"{expected}, got {out.shape}")
    OW = Wp - kw + 1
    if (x_pad.dtype == np.float32 and W.dtype == np.float32
            and _direct.tiled_applies(np.float32, 1, OW)):
        _serial(_conv_pool2x2_tiled_kernel)(np.ascontiguousarray(x_pad),
                                             _direct._tiled_weights(W),
                                             np.ascontiguousarray(bias, np.float32), kh, kw, out)
        return out
    _serial(_conv_pool2x2_kernel)(np.ascontiguousarray(x_pad), np.ascontiguousarray(W),
                                   bias, out)
    return out


def rows_pool2x2(y_rows: np.ndarray, N: int, OH: int, OW: int, bias, out=None) -> np.ndarray:
    """``rows_pool2x2_numpy`` into out (N, O, OH // 2, OW // 2), any strides."""
    O = y_rows.shape[1]
    if y_rows.shape[0] != N * OH * OW:
        raise ValueError(f"rows_pool2x2: y_rows needs {N * OH * OW} rows, got {y_rows.shape}")
    if out is None:
        out = np.empty((N, O, OH // 2, OW // 2), y_rows.dtype)
    has_bias = bias is not None
    b = bias if has_bias else np.zeros(O, y_rows.dtype)
    _serial(_rows_pool2x2_kernel)(np.ascontiguousarray(y_rows), OH, OW, b, has_bias, out)
    return out


def im2row_nhwc(x_pad: np.ndarray, kh: int, kw: int, sh: int, sw: int, out=None) -> np.ndarray:
    """``im2row_nhwc_numpy`` (Numba, serial build) into out (N·OH·OW, kh·kw·C) if given."""
    N, Hp, Wp, C = x_pad.shape
    OH, OW = (Hp - kh) // sh + 1, (Wp - kw) // sw + 1
    if out is None:
        out = np.empty((N * OH * OW, kh * kw * C), x_pad.dtype)
    _serial(_im2row_nhwc_kernel)(np.ascontiguousarray(x_pad), kh, kw, sh, sw, OH, OW, out)
    return out


def maxpool_values(x: np.ndarray, geometry, out=None) -> np.ndarray:
    """``maxpool_values_numpy`` (Numba, serial build)."""
    kh, kw, sh, sw, ph, pw, OH, OW = geometry
    x = np.ascontiguousarray(x)
    if out is None:
        out = np.empty(x.shape[:2] + (OH, OW), x.dtype)
    _serial(_maxpool_values_kernel)(x, kh, kw, sh, sw, ph, pw, out)
    return out


def bias_relu(y: np.ndarray, bias) -> np.ndarray:
    """``bias_relu_numpy`` in place on a C-contiguous 2-D y; returns y."""
    if y.ndim != 2 or not y.flags.c_contiguous:
        raise ValueError(f"bias_relu needs a C-contiguous 2-D array, got {y.shape}")
    _serial(_bias_relu_kernel)(y, np.ascontiguousarray(bias, dtype=y.dtype), y.dtype.type(0))
    return y


__all__ = ["im2row_nhwc", "im2row_nhwc_numpy", "conv_pool2x2", "conv_pool2x2_numpy", "rows_pool2x2", "rows_pool2x2_numpy",
           "maxpool_values", "maxpool_values_numpy", "bias_relu", "bias_relu_numpy",
           "maxpool2x2_values_numpy"]
