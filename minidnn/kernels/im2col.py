"""im2col / col2im: convolution as one matrix product.

A convolution of x (batch, C, H, W) with W (O, C, kh, kw) at stride (sh, sw)
and zero padding (ph, pw) is

    y[n, o, a, b] = Σ_{c,i,j} W[o, c, i, j] · x_pad[n, c, a·sh + i, b·sw + j].

``im2col`` lays every receptive field out as one column of

    cols[(c·kh + i)·kw + j,  (n·OH + a)·OW + b] = x_pad[n, c, a·sh + i, b·sw + j]

of shape (C·kh·kw, batch·OH·OW), so the whole batch is ONE BLAS product
W.reshape(O, C·kh·kw) @ cols. The rows follow W's own memory order, so the
weight matrix is a free reshape; the columns are contiguous in the output
position, so the kernel writes memory in order and the backward products
dW = dY · colsᵀ and dcols = Wᵀ · dY are single GEMMs too. ``col2im`` is the
adjoint of ``im2col``: it adds every column entry back onto the pixel it was
copied from (overlapping windows accumulate), and drops the padding.

OH = floor((H + 2·ph - kh) / sh) + 1, OW likewise
(Chellapilla, Puri & Simard, 2006, "High performance convolutional neural
networks for document processing"; Jia, 2014, Caffe).

Each public function runs the Numba kernel; ``im2col_numpy`` and
``col2im_numpy`` are the plain NumPy twins that define what the kernels do.
"""
from __future__ import annotations

import numba
import numpy as np


def as_pair(value, what: str = "value") -> tuple[int, int]:
    """(a, b) from an int a (square) or a pair (a, b)."""
    if isinstance(value, (int, np.integer)):
        return int(value), int(value)
    try:
        a, b = value
        return int(a), int(b)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be an int or a pair of ints, got {value!r}") from None


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """floor((size + 2·padding - kernel) / stride) + 1 (0 or less: input too small)."""
    return (size + 2 * padding - kernel) // stride + 1


def _geometry(x_shape, kernel, stride, padding):
    kh, kw = as_pair(kernel, "kernel_size")
    sh, sw = as_pair(stride, "stride")
    ph, pw = as_pair(padding, "padding")
    if kh <= 0 or kw <= 0 or sh <= 0 or sw <= 0 or ph < 0 or pw < 0:
        raise ValueError(f"im2col needs kernel > 0, stride > 0 and padding >= 0, got "
                         f"kernel={(kh, kw)}, stride={(sh, sw)}, padding={(ph, pw)}")
    if len(x_shape) != 4:
        raise ValueError(f"im2col expects x of shape (batch, C, H, W), got {tuple(x_shape)}")
    _, _, H, W = x_shape
    OH = conv_output_size(H, kh, sh, ph)
    OW = conv_output_size(W, kw, sw, pw)
    if OH <= 0 or OW <= 0:
        raise ValueError(f"a {kh}x{kw} window with padding {(ph, pw)} does not fit an input "
                         f"of {H}x{W}")
    return kh, kw, sh, sw, ph, pw, OH, OW


# -- NumPy twins: the definition ----------------------------------------------
def im2col_numpy(x: np.ndarray, kernel, stride=1, padding=0) -> np.ndarray:
    """(batch, C, H, W) -> cols (C·kh·kw, batch·OH·OW); see the module docstring."""
    N, C, _, _ = x.shape
    kh, kw, sh, sw, ph, pw, OH, OW = _geometry(x.shape, kernel, stride, padding)
    x_pad = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    cols = np.empty((C, kh, kw, N, OH, OW), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            window = x_pad[:, :, i:i + sh * OH:sh, j:j + sw * OW:sw]  # (N, C, OH, OW)
            cols[:, i, j] = window.transpose(1, 0, 2, 3)
    return cols.reshape(C * kh * kw, N * OH * OW)


def col2im_numpy(cols: np.ndarray, x_shape, kernel, stride=1, padding=0) -> np.ndarray:
    """Adjoint of ``im2col_numpy``: cols (C·kh·kw, batch·OH·OW) -> (batch, C, H, W)."""
    N, C, H, W = x_shape
    kh, kw, sh, sw, ph, pw, OH, OW = _geometry(x_shape, kernel, stride, padding)
    cols6 = cols.reshape(C, kh, kw, N, OH, OW)
    x_pad = np.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            x_pad[:, :, i:i + sh * OH:sh, j:j + sw * OW:sw] += cols6[:, i, j].transpose(1, 0, 2, 3)
    return x_pad[:, :, ph:ph + H, pw:pw + W].copy()


# -- Numba kernels ----------------------------------------------------------------
@numba.njit(cache=True, inline="always")
def _valid_range(j, pad, stride, size, n_out):
    """Output positions b in [lo, hi) whose input b·stride - pad + j lies in [0, size)."""
    lo = -((j - pad) // stride)  # ceil((pad - j) / stride)
    if lo < 0:
        lo = 0
    hi = (size - 1 + pad - j) // stride + 1
    if hi > n_out:
        hi = n_out
    if hi < lo:
        hi = lo
    return lo, hi


@numba.njit(cache=True, parallel=True)
def _im2col_kernel(x, kh, kw, sh, sw, ph, pw, OH, OW, cols):
    N, C, H, W = x.shape
    L = OH * OW
    # rows are independent: one thread per group of (c, i, j); 1-D and 2-D
    # views index much faster in Numba than the 4-D array
    for row in numba.prange(C * kh * kw):
        c = row // (kh * kw)
        i = (row // kw) % kh
        j = row % kw
        lo, hi = _valid_range(j, pw, sw, W, OW)
        offset = j - pw
        dst = cols[row]
        for n in range(N):
            x_plane = x[n, c]
            for a in range(OH):
                ih = a * sh - ph + i
                base = n * L + a * OW
                if ih < 0 or ih >= H:
                    dst[base:base + OW] = 0
                    continue
                src = x_plane[ih]
                dst[base:base + lo] = 0
                if sw == 1:
                    dst[base + lo:base + hi] = src[lo + offset:hi + offset]
                else:
                    for b in range(lo, hi):
                        dst[base + b] = src[b * sw + offset]
                dst[base + hi:base + OW] = 0


@numba.njit(cache=True, parallel=True)
def _col2im_kernel(cols, kh, kw, sh, sw, ph, pw, OH, OW, dx):
    N, C, H, W = dx.shape
    L = OH * OW
    # each sample's pixels are written by one thread only: no races
    for n in numba.prange(N):
        for c in range(C):
            dx_plane = dx[n, c]
            for i in range(kh):
                for j in range(kw):
                    src = cols[(c * kh + i) * kw + j]
                    lo, hi = _valid_range(j, pw, sw, W, OW)
                    offset = j - pw
                    for a in range(OH):
                        ih = a * sh - ph + i
                        if ih < 0 or ih >= H:
                            continue
                        base = n * L + a * OW
                        dst = dx_plane[ih]
                        for b in range(lo, hi):
                            dst[b * sw + offset] += src[base + b]


def im2col(x: np.ndarray, kernel, stride=1, padding=0) -> np.ndarray:
    """(batch, C, H, W) -> cols (C·kh·kw, batch·OH·OW), in x's dtype (Numba kernel).

    ``kernel``, ``stride``, ``padding``: an int or an (h, w) pair."""
    x = np.ascontiguousarray(x)
    N, C, _, _ = x.shape
    kh, kw, sh, sw, ph, pw, OH, OW = _geometry(x.shape, kernel, stride, padding)
    cols = np.empty((C * kh * kw, N * OH * OW), dtype=x.dtype)
    _im2col_kernel(x, kh, kw, sh, sw, ph, pw, OH, OW, cols)
    return cols


def col2im(cols: np.ndarray, x_shape, kernel, stride=1, padding=0) -> np.ndarray:
    """Adjoint of ``im2col``: cols (C·kh·kw, batch·OH·OW) -> (batch, C, H, W) (Numba kernel)."""
    x_shape = tuple(int(d) for d in x_shape)
    kh, kw, sh, sw, ph, pw, OH, OW = _geometry(x_shape, kernel, stride, padding)
    N, C, _, _ = x_shape
    if cols.shape != (C * kh * kw, N * OH * OW):
        raise ValueError(f"col2im expects cols of shape {(C * kh * kw, N * OH * OW)} for "
                         f"x_shape {x_shape}, got {tuple(cols.shape)}")
    cols = np.ascontiguousarray(cols)
    dx = np.zeros(x_shape, dtype=cols.dtype)
    _col2im_kernel(cols, kh, kw, sh, sw, ph, pw, OH, OW, dx)
    return dx
