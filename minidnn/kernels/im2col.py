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

The row layout (what ``Conv2D`` uses)
-------------------------------------
``im2row`` is the transpose with the columns in (i, j, c) order:

    rows[(n·OH + a)·OW + b,  (i·kw + j)·C + c] = x_pad[n, c, a·sh + i, b·sw + j]

of shape (batch·OH·OW, kh·kw·C). In channels-last order (x_pad as (n, h, w, c))
one window row i is kw·C CONTIGUOUS values, so the kernel copies runs of kw·C
floats (160 for a 5x5 window over 32 channels) instead of runs of OW, and
rows @ W_rows, with W_rows = W.transpose(2, 3, 1, 0).reshape(kh·kw·C, O)
(``weight_rows``), gives the output in (n, a, b, o) order for all O at once.
``row2im`` is its adjoint. ``im2row_numpy`` / ``row2im_numpy`` are the twins
(a strided window view of x_pad and one copy; kh·kw slice additions).
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
#: below this many elements a parallel kernel runs on one thread: handing a few
#: microseconds of work to a second thread costs more than it saves (batch-1
#: inference), and on a busy machine the wake-up can take milliseconds
SERIAL_BELOW = 1 << 16


_thread_count_calls = None     # (get, set), found on first use: importing starts no threads


def _thread_count():
    """Numba's per-thread (get, set) thread count. The public pair costs ~16 us a
    switch and back (set_num_threads takes a lock and re-validates each time),
    8 switches a LeNet batch-1 forward, ~20 % of it; once the threading layer is
    up, its C entry points do the same in ~3 us. The public pair is the fallback
    where a Numba version lacks them."""
    global _thread_count_calls
    if _thread_count_calls is None:
        numba.get_num_threads()                          # launches the threading layer
        try:
            from numba.np.ufunc import parallel
            _thread_count_calls = (parallel._get_num_threads, parallel._set_num_threads)
        except (ImportError, AttributeError):
            _thread_count_calls = (numba.get_num_threads, numba.set_num_threads)
    return _thread_count_calls


class serial_if_small:
    """``with serial_if_small(n):`` runs Numba's parallel kernels on one thread
    when n < SERIAL_BELOW (the thread count is per calling thread)."""

    def __init__(self, n_elements: int):
        self.small = n_elements < SERIAL_BELOW

    def __enter__(self):
        if self.small:
            get, set_ = _thread_count()
            self.before = get()
            if self.before > 1:
                set_(1)
            else:
                self.small = False
        return self

    def __exit__(self, *exc):
        if self.small:
            _thread_count()[1](self.before)
        return False


_serial_twins = {}


def kernel_for(kernel, n_elements: int):
    """The parallel Numba ``kernel``, or for fewer than SERIAL_BELOW elements its
    serial build: the same Python source compiled without ``parallel=True``
    (prange is then range), under its own name so each has its own on-disk
    cache. Even at one thread a parallel kernel hands its loop to a worker
    thread of the threading layer and waits for it (with the workqueue layer,
    a wake-up each call: 0.5-3 ms a LeNet batch-1 forward on a loaded machine);
    the serial build runs in the calling thread. Built on first use."""
    if n_elements >= SERIAL_BELOW or not hasattr(kernel, "py_func"):
        return kernel           # (under NUMBA_DISABLE_JIT the kernel is the Python function)
    twin = _serial_twins.get(kernel)
    if twin is None:
        from .builds import njit_variant
        # the same options less parallel (fastmath, where the kernel asks for it)
        fastmath = kernel.targetoptions.get("fastmath", False)
        twin = _serial_twins[kernel] = njit_variant(kernel, "_serial", fastmath=fastmath)
    return twin


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


def im2col(x: np.ndarray, kernel, stride=1, padding=0, buffers: "RowBuffers | None" = None
           ) -> np.ndarray:
    """(batch, C, H, W) -> cols (C·kh·kw, batch·OH·OW), in x's dtype (Numba kernel).

    ``kernel``, ``stride``, ``padding``: an int or an (h, w) pair. With
    ``buffers``, cols is written into a reused array (overwritten by the next call)."""
    x = np.ascontiguousarray(x)
    N, C, _, _ = x.shape
    kh, kw, sh, sw, ph, pw, OH, OW = _geometry(x.shape, kernel, stride, padding)
    shape = (C * kh * kw, N * OH * OW)
    cols = (np.empty(shape, dtype=x.dtype) if buffers is None
            else buffers.get("cols", shape, x.dtype))
    kernel_for(_im2col_kernel, cols.size)(x, kh, kw, sh, sw, ph, pw, OH, OW, cols)
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
    kernel_for(_col2im_kernel, cols.size)(cols, kh, kw, sh, sw, ph, pw, OH, OW, dx)
    return dx


# -- the row layout: (batch·OH·OW, kh·kw·C) ------------------------------------------
def weight_rows(W: np.ndarray) -> np.ndarray:
    """W (O, C, kh, kw) -> (kh·kw·C, O), the weight matrix of the row layout."""
    O = W.shape[0]
    return np.ascontiguousarray(W.transpose(2, 3, 1, 0)).reshape(-1, O)


def weight_from_rows(W_rows: np.ndarray, weight_shape) -> np.ndarray:
    """Inverse of ``weight_rows``: (kh·kw·C, O) -> W (O, C, kh, kw)."""
    O, C, kh, kw = weight_shape
    return np.ascontiguousarray(W_rows.reshape(kh, kw, C, O).transpose(3, 2, 0, 1))


def _pad_channels_last(x, ph, pw, out=None):
    """x (N, C, H, W) -> zero-padded channels-last (N, H + 2ph, W + 2pw, C).

    ``out``, if given, is reused: its border is never written, so a buffer that
    was zero once stays zero-padded."""
    N, C, H, W = x.shape
    if out is None:
        out = np.zeros((N, H + 2 * ph, W + 2 * pw, C), dtype=x.dtype)
    out[:, ph:ph + H, pw:pw + W, :] = x.transpose(0, 2, 3, 1)
    return out


def im2row_numpy(x: np.ndarray, kernel, stride=1, padding=0) -> np.ndarray:
    """(batch, C, H, W) -> rows (batch·OH·OW, kh·kw·C); see "The row layout"."""
    N, C, _, _ = x.shape
    kh, kw, sh, sw, ph, pw, OH, OW = _geometry(x.shape, kernel, stride, padding)
    x_pad = _pad_channels_last(x, ph, pw)
    sN, sH, sW, sC = x_pad.strides
    windows = np.lib.stride_tricks.as_strided(
        x_pad, (N, OH, OW, kh, kw, C), (sN, sh * sH, sw * sW, sH, sW, sC), writeable=False)
    return np.ascontiguousarray(windows).reshape(N * OH * OW, kh * kw * C)


def row2im_numpy(rows: np.ndarray, x_shape, kernel, stride=1, padding=0) -> np.ndarray:
    """Adjoint of ``im2row_numpy``: rows (batch·OH·OW, kh·kw·C) -> (batch, C, H, W)."""
    N, C, H, W = x_shape
    kh, kw, sh, sw, ph, pw, OH, OW = _geometry(x_shape, kernel, stride, padding)
    rows6 = rows.reshape(N, OH, OW, kh, kw, C)
    dx_pad = np.zeros((N, H + 2 * ph, W + 2 * pw, C), dtype=rows.dtype)
    for i in range(kh):
        for j in range(kw):
            dx_pad[:, i:i + sh * OH:sh, j:j + sw * OW:sw, :] += rows6[:, :, :, i, j, :]
    return np.ascontiguousarray(dx_pad[:, ph:ph + H, pw:pw + W, :].transpose(0, 3, 1, 2))


@numba.njit(cache=True, parallel=True)
def _im2row_kernel(x_pad, kh, kw, sh, sw, OH, OW, rows):
    N, Hp, Wp, C = x_pad.shape
    run = kw * C                       # one window row: contiguous in channels-last
    for n in numba.prange(N):
        plane = x_pad[n].reshape(Hp, Wp * C)
        for a in range(OH):
            for b in range(OW):
                dst = rows[(n * OH + a) * OW + b]
                start = b * sw * C
                for i in range(kh):
                    # a slice copy, which Numba guards against overlap: 2-4x slower than
                    # the element loop over 1-D views of fused_inference._im2row_nhwc_kernel
                    # (bench/im2row_copy_ab.py, serial builds, 1 thread, under load,
                    # sitting 20); it beat an element loop that indexed the whole row
                    # with an offset. Kept as it is: a change of the training path's
                    # speed wants its own A/B of the step
                    dst[i * run:(i + 1) * run] = plane[a * sh + i, start:start + run]


@numba.njit(cache=True, parallel=True)
def _row2im_kernel(rows, kh, kw, sh, sw, OH, OW, dx_pad):
    N, Hp, Wp, C = dx_pad.shape
    run = kw * C
    # one thread per sample: each writes only its own dx_pad[n], no races
    for n in numba.prange(N):
        plane = dx_pad[n].reshape(Hp, Wp * C)
        for a in range(OH):
            for b in range(OW):
                src = rows[(n * OH + a) * OW + b]
                start = b * sw * C
                for i in range(kh):
                    # both runs as 1-D views indexed from 0: the loop vectorizes
                    # (3-4x faster than indexing the whole row with an offset)
                    dst = plane[a * sh + i, start:start + run]
                    part = src[i * run:(i + 1) * run]
                    for t in range(run):
                        dst[t] += part[t]


class RowBuffers:
    """Scratch arrays reused from one call to the next (same shape, same dtype),
    so a training loop does not allocate and page-fault ~100 MB per step."""

    def __init__(self):
        self._arrays = {}

    def get(self, key, shape, dtype, zero=False):
        array = self._arrays.get(key)
        if array is None or array.shape != tuple(shape) or array.dtype != dtype:
            array = np.zeros(shape, dtype) if zero else np.empty(shape, dtype)
            self._arrays[key] = array
        elif zero:
            array.fill(0)
        return array

    def clear(self):
        self._arrays.clear()


def im2row(x: np.ndarray, kernel, stride=1, padding=0, buffers: RowBuffers | None = None
           ) -> np.ndarray:
    """(batch, C, H, W) -> rows (batch·OH·OW, kh·kw·C), in x's dtype (Numba kernel).

    With ``buffers``, the padded input and the rows are written into reused
    arrays (the returned rows are then overwritten by the next call)."""
    N, C, H, W = np.shape(x)
    kh, kw, sh, sw, ph, pw, OH, OW = _geometry(np.shape(x), kernel, stride, padding)
    x = np.asarray(x)
    if buffers is None:
        x_pad = _pad_channels_last(x, ph, pw)
        rows = np.empty((N * OH * OW, kh * kw * C), dtype=x.dtype)
    else:
        shape = (N, H + 2 * ph, W + 2 * pw, C)
        fresh = buffers._arrays.get("x_pad")
        x_pad = buffers.get("x_pad", shape, x.dtype,
                            zero=fresh is None or fresh.shape != shape or fresh.dtype != x.dtype)
        from .layout import pad_channels_last      # (layout imports this module)
        pad_channels_last(x, ph, pw, out=x_pad)    # its parallel kernel: same values
        rows = buffers.get("rows", (N * OH * OW, kh * kw * C), x.dtype)
    kernel_for(_im2row_kernel, rows.size)(x_pad, kh, kw, sh, sw, OH, OW, rows)
    return rows


def row2im(rows: np.ndarray, x_shape, kernel, stride=1, padding=0,
           buffers: RowBuffers | None = None) -> np.ndarray:
    """Adjoint of ``im2row``: rows (batch·OH·OW, kh·kw·C) -> (batch, C, H, W) (Numba kernel)."""
    x_shape = tuple(int(d) for d in x_shape)
    kh, kw, sh, sw, ph, pw, OH, OW = _geometry(x_shape, kernel, stride, padding)
    N, C, H, W = x_shape
    if rows.shape != (N * OH * OW, kh * kw * C):
        raise ValueError(f"row2im expects rows of shape {(N * OH * OW, kh * kw * C)} for "
                         f"x_shape {x_shape}, got {tuple(rows.shape)}")
    rows = np.ascontiguousarray(rows)
    shape = (N, H + 2 * ph, W + 2 * pw, C)
    dx_pad = (np.zeros(shape, rows.dtype) if buffers is None
              else buffers.get("dx_pad", shape, rows.dtype, zero=True))
    kernel_for(_row2im_kernel, rows.size)(rows, kh, kw, sh, sw, OH, OW, dx_pad)
    # a copy always (with C = 1 and no padding the transpose alone would be a
    # view of the reused buffer, overwritten by the next call)
    return np.array(dx_pad[:, ph:ph + H, pw:pw + W, :].transpose(0, 3, 1, 2), order="C")
