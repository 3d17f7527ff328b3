"""Max and average pooling (NCHW), with Caffe's ceil-mode output size.

Window (a, b) of a pooling layer with kernel (kh, kw), stride (sh, sw) and
padding (ph, pw) covers input rows [a·sh - ph, a·sh - ph + kh) and columns
[b·sw - pw, b·sw - pw + kw), clipped to the input.

Output size (per spatial axis, size H, kernel k, stride s, padding p):

* ``ceil_mode=False`` (PyTorch's default): OH = floor((H + 2p - k) / s) + 1.
* ``ceil_mode=True`` (Caffe): OH = ceil((H + 2p - k) / s) + 1, minus one if the
  last window would start at or beyond H + p, so that every window starts
  inside the input or its left padding (Caffe's ``PoolingLayer::Reshape``;
  Caffe checks this only when p > 0, we always do, as PyTorch). Cifar10_quick's
  3/2 pools take 32 -> 16 -> 8 -> 4.

Padding must satisfy 0 <= p < k, so every window overlaps the input.

Each Numba kernel has its NumPy twin here (``*_numpy``), which defines it.
"""
from __future__ import annotations

import numba
import numpy as np

from ..kernels import pooling as pool_kernels
from ..kernels.im2col import as_pair, kernel_for
from .base import Layer


def pool_output_size(size: int, kernel: int, stride: int, padding: int,
                     ceil_mode: bool = False) -> int:
    """Number of windows along one axis (see the module docstring)."""
    span = size + 2 * padding - kernel
    if span < 0:
        return 0
    if not ceil_mode:
        return span // stride + 1
    out = -(-span // stride) + 1
    if (out - 1) * stride >= size + padding:
        out -= 1
    return out


def _avg_divisors(size, kernel, stride, padding, n_out):
    """Per-window divisor along one axis: the window clipped to the padded input [-p, size + p)."""
    start = np.arange(n_out) * stride - padding
    return np.minimum(start + kernel, size + padding) - start


def _pad_to_windows(x, geometry, fill):
    """x padded by ph, pw (and on the far side as far as ceil-mode windows reach) with fill."""
    kh, kw, sh, sw, ph, pw, OH, OW = geometry
    H, W = x.shape[2:]
    bottom = max(ph, (OH - 1) * sh + kh - H - ph)
    right = max(pw, (OW - 1) * sw + kw - W - pw)
    return np.pad(x, ((0, 0), (0, 0), (ph, bottom), (pw, right)), constant_values=fill)


# -- NumPy twins: the definition ----------------------------------------------
def maxpool_forward_numpy(x, geometry):
    """Max over each window and the argmax as a flat index h·W + w into the
    (H, W) input plane; ties go to the first element in row-major order."""
    kh, kw, sh, sw, ph, pw, OH, OW = geometry
    N, C, H, W = x.shape
    x_pad = _pad_to_windows(x, geometry, -np.inf)
    windows = np.stack([x_pad[:, :, i:i + sh * OH:sh, j:j + sw * OW:sw]
                        for i in range(kh) for j in range(kw)])   # (kh·kw, N, C, OH, OW)
    k = np.argmax(windows, axis=0)
    out = np.take_along_axis(windows, k[None], axis=0)[0]
    rows = np.arange(OH).reshape(-1, 1) * sh - ph + k // kw
    cols = np.arange(OW) * sw - pw + k % kw
    return out.astype(x.dtype), (rows * W + cols).astype(np.int32)


def maxpool_backward_numpy(grad, argmax, x_shape):
    """Each output gradient goes to its window's argmax input only."""
    N, C, H, W = x_shape
    dx = np.zeros((N * C, H * W), dtype=grad.dtype)
    plane = np.repeat(np.arange(N * C), argmax[0, 0].size)
    np.add.at(dx, (plane, argmax.reshape(-1)), grad.reshape(-1))
    return dx.reshape(x_shape)


def avgpool_forward_numpy(x, geometry):
    """Sum over the window (padding counts as zeros) / window size clipped to
    the padded input: Caffe's and PyTorch's ``count_include_pad=True``."""
    kh, kw, sh, sw, ph, pw, OH, OW = geometry
    H, W = x.shape[2:]
    x_pad = _pad_to_windows(x, geometry, 0)
    total = sum(x_pad[:, :, i:i + sh * OH:sh, j:j + sw * OW:sw]
                for i in range(kh) for j in range(kw))
    divisor = np.outer(_avg_divisors(H, kh, sh, ph, OH), _avg_divisors(W, kw, sw, pw, OW))
    return (total / divisor).astype(x.dtype)


def avgpool_backward_numpy(grad, geometry, x_shape):
    """Each output gradient / divisor is spread over the window's input pixels."""
    kh, kw, sh, sw, ph, pw, OH, OW = geometry
    N, C, H, W = x_shape
    divisor = np.outer(_avg_divisors(H, kh, sh, ph, OH), _avg_divisors(W, kw, sw, pw, OW))
    share = (grad / divisor).astype(grad.dtype)
    dx_pad = _pad_to_windows(np.zeros(x_shape, grad.dtype), geometry, 0)
    for i in range(kh):
        for j in range(kw):
            dx_pad[:, :, i:i + sh * OH:sh, j:j + sw * OW:sw] += share
    return dx_pad[:, :, ph:ph + H, pw:pw + W].copy()


# -- Numba kernels ----------------------------------------------------------------
# One thread per sample; inside, each (H, W) plane is a 2-D view, which Numba
# indexes much faster than the 4-D array.
@numba.njit(cache=True, parallel=True)
def _maxpool_forward_kernel(x, kh, kw, sh, sw, ph, pw, out, argmax):
    N, C, H, W = x.shape
    OH, OW = out.shape[2], out.shape[3]
    for n in numba.prange(N):
        for c in range(C):
            x_plane, out_plane, argmax_plane = x[n, c], out[n, c], argmax[n, c]
            for a in range(OH):
                h0 = max(a * sh - ph, 0)
                h1 = min(a * sh - ph + kh, H)
                for b in range(OW):
                    w0 = max(b * sw - pw, 0)
                    w1 = min(b * sw - pw + kw, W)
                    best = x_plane[h0, w0]
                    best_at = h0 * W + w0
                    for h in range(h0, h1):
                        for w in range(w0, w1):
                            v = x_plane[h, w]
                            # strict > keeps the first of ties; the first NaN wins, as
                            # np.argmax. Bitwise ops keep it branch-free (2x faster).
                            take = (v > best) | ((v != v) & (best == best))
                            best = v if take else best
                            best_at = h * W + w if take else best_at
                    out_plane[a, b] = best
                    argmax_plane[a, b] = best_at


# The fast paths: plain strict > comparisons, which the compiler turns into
# selects (no NaN test per element: that test alone made the kernels ~10x
# slower). They return, per sample, the sum of every value they read: it is NaN
# whenever a NaN was read (or inf - inf met), and then the layer reruns the
# exact kernels above, whose first-NaN-wins rule the twin defines. Same tie rule
# (first maximum in row-major window order), so without NaN the results are
# those of the exact kernels bit for bit.
@numba.njit(cache=True, inline="always")
def _max_of_window(x_plane, h0, h1, w0, w1, W):
    """(max, flat argmax) of x_plane[h0:h1, w0:w1], first maximum in row-major order."""
    best = x_plane[h0, w0]
    best_at = h0 * W + w0
    total = 0.0
    for h in range(h0, h1):
        row = x_plane[h]
        for w in range(w0, w1):
            v = row[w]
            total += v
            if v > best:
                best, best_at = v, h * W + w
    return best, best_at, total


@numba.njit(cache=True, inline="always")
def _max_of_3x3(x_plane, h, w, W):
    """The same for a full 3x3 window at (h, w): constant trip counts, which
    the compiler unrolls (~2x faster than the same loop with kh, kw at run time)."""
    best = x_plane[h, w]
    best_at = h * W + w
    total = 0.0
    for i in range(3):
        row = x_plane[h + i]
        for j in range(3):
            v = row[w + j]
            total += v
            if v > best:
                best, best_at = v, (h + i) * W + w + j
    return best, best_at, total


@numba.njit(cache=True, parallel=True)
def _maxpool_fast_kernel(x, kh, kw, sh, sw, ph, pw, out, argmax, checksum):
    # Any geometry. Windows that lie wholly inside the input (all but the
    # border ones) take a loop without clipping, 3x3 ones (Cifar10_quick,
    # AlexNet) an unrolled one; border windows are clipped. 3x faster than
    # clipping every window (Cifar10_quick's pool1).
    N, C, H, W = x.shape
    OH, OW = out.shape[2], out.shape[3]
    b_lo = min(-(-pw // sw), OW)                          # first b with b·sw - pw >= 0
    b_hi = max(min((W + pw - kw) // sw + 1, OW), b_lo)    # past the last b with a full window
    square3 = kh == 3 and kw == 3
    for n in numba.prange(N):
        total = 0.0
        for c in range(C):
            x_plane, out_plane, argmax_plane = x[n, c], out[n, c], argmax[n, c]
            for a in range(OH):
                h_start = a * sh - ph
                h0, h1 = max(h_start, 0), min(h_start + kh, H)
                out_row, argmax_row = out_plane[a], argmax_plane[a]
                inner_lo, inner_hi = b_lo, b_hi
                if h_start < 0 or h_start + kh > H:
                    inner_lo, inner_hi = OW, OW                 # a border row: all clipped
                for b in range(OW):
                    if inner_lo <= b < inner_hi:
                        continue                                # done below, unclipped
                    w_start = b * sw - pw
                    best, best_at, s = _max_of_window(x_plane, h0, h1, max(w_start, 0),
                                                      min(w_start + kw, W), W)
                    out_row[b], argmax_row[b] = best, best_at
                    total += s
                for b in range(inner_lo, inner_hi):
                    w_start = b * sw - pw
                    if square3:
                        best, best_at, s = _max_of_3x3(x_plane, h_start, w_start, W)
                    else:
                        best, best_at, s = _max_of_window(x_plane, h_start, h_start + kh,
                                                          w_start, w_start + kw, W)
                    out_row[b], argmax_row[b] = best, best_at
                    total += s
        checksum[n] = total


@numba.njit(cache=True, parallel=True)
def _maxpool_backward_kernel(grad, argmax, dx_planes):
    N, C, OH, OW = grad.shape
    for n in numba.prange(N):
        for c in range(C):
            grad_plane, argmax_plane, dx_plane = grad[n, c], argmax[n, c], dx_planes[n, c]
            for a in range(OH):
                for b in range(OW):
                    dx_plane[argmax_plane[a, b]] += grad_plane[a, b]


@numba.njit(cache=True, parallel=True)
def _avgpool_forward_kernel(x, kh, kw, sh, sw, ph, pw, out):
    N, C, H, W = x.shape
    OH, OW = out.shape[2], out.shape[3]
    square3 = kh == 3 and kw == 3
    for n in numba.prange(N):
        for c in range(C):
            x_plane, out_plane = x[n, c], out[n, c]
            for a in range(OH):
                h_start = a * sh - ph
                h_end = min(h_start + kh, H + ph)
                h0, h1 = max(h_start, 0), min(h_end, H)
                for b in range(OW):
                    w_start = b * sw - pw
                    w_end = min(w_start + kw, W + pw)
                    w0, w1 = max(w_start, 0), min(w_end, W)
                    total = 0.0
                    if square3 and h0 == h_start and h1 == h0 + 3 and w0 == w_start \
                            and w1 == w0 + 3:
                        # a full 3x3 window (Cifar10_quick): constant trip counts, same
                        # order of additions, ~2x faster than the run-time bounds
                        for i in range(3):
                            row = x_plane[h0 + i]
                            for j in range(3):
                                total += row[w0 + j]
                    else:
                        for h in range(h0, h1):
                            for w in range(w0, w1):
                                total += x_plane[h, w]
                    out_plane[a, b] = total / ((h_end - h_start) * (w_end - w_start))


@numba.njit(cache=True, parallel=True)
def _avgpool_backward_kernel(grad, kh, kw, sh, sw, ph, pw, dx):
    N, C, H, W = dx.shape
    OH, OW = grad.shape[2], grad.shape[3]
    square3 = kh == 3 and kw == 3
    for n in numba.prange(N):
        for c in range(C):
            grad_plane, dx_plane = grad[n, c], dx[n, c]
            for a in range(OH):
                h_start = a * sh - ph
                h_end = min(h_start + kh, H + ph)
                h0, h1 = max(h_start, 0), min(h_end, H)
                for b in range(OW):
                    w_start = b * sw - pw
                    w_end = min(w_start + kw, W + pw)
                    w0, w1 = max(w_start, 0), min(w_end, W)
                    share = grad_plane[a, b] / ((h_end - h_start) * (w_end - w_start))
                    if square3 and h0 == h_start and h1 == h0 + 3 and w0 == w_start \
                            and w1 == w0 + 3:
                        for i in range(3):
                            row = dx_plane[h0 + i]
                            for j in range(3):
                                row[w0 + j] += share
                    else:
                        for h in range(h0, h1):
                            for w in range(w0, w1):
                                dx_plane[h, w] += share


# -- layers ----------------------------------------------------------------------------
class _Pool2D(Layer):
    """Shared geometry, validation and config of MaxPool2D and AvgPool2D."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode: bool = False,
                 name: str | None = None):
        super().__init__(name)
        kind = type(self).__name__
        self.kernel = as_pair(kernel_size, f"{kind} kernel_size")
        self.strides = self.kernel if stride is None else as_pair(stride, f"{kind} stride")
        self.pads = as_pair(padding, f"{kind} padding")
        if min(self.kernel) <= 0 or min(self.strides) <= 0:
            raise ValueError(f"{kind} needs kernel_size > 0 and stride > 0, got "
                             f"kernel_size={kernel_size!r}, stride={stride!r}")
        if not all(0 <= p < k for p, k in zip(self.pads, self.kernel)):
            raise ValueError(f"{kind} needs 0 <= padding < kernel_size, got "
                             f"padding={padding!r}, kernel_size={kernel_size!r}")
        self.ceil_mode = bool(ceil_mode)
        self._stride_given = stride

    def _geometry(self, shape, per_sample=False):
        """(kh, kw, sh, sw, ph, pw, OH, OW) for an input shape, or a ValueError."""
        if len(shape) != (3 if per_sample else 4):
            expected = "(C, H, W)" if per_sample else "(batch, C, H, W)"
            raise ValueError(f"{self!r} expects input of shape {expected}, got {tuple(shape)}")
        H, W = shape[-2:]
        OH = pool_output_size(H, self.kernel[0], self.strides[0], self.pads[0], self.ceil_mode)
        OW = pool_output_size(W, self.kernel[1], self.strides[1], self.pads[1], self.ceil_mode)
        if OH <= 0 or OW <= 0:
            raise ValueError(f"{self!r} needs H + 2*padding >= {self.kernel[0]} and "
                             f"W + 2*padding >= {self.kernel[1]}, got input of shape "
                             f"{tuple(shape)}")
        return self.kernel + self.strides + self.pads + (OH, OW)

    def output_shape(self, input_shape):
        geometry = self._geometry(tuple(input_shape), per_sample=True)
        return (input_shape[0],) + geometry[6:]

    def get_config(self):
        def value(pair):
            return pair[0] if pair[0] == pair[1] else pair
        return {"kernel_size": value(self.kernel),
                "stride": None if self._stride_given is None else value(self.strides),
                "padding": value(self.pads), "ceil_mode": self.ceil_mode, "name": self.name}

    def __repr__(self) -> str:
        config = self.get_config()
        args = [f"kernel_size={config['kernel_size']!r}"]
        if config["stride"] is not None:
            args.append(f"stride={config['stride']!r}")
        if self.pads != (0, 0):
            args.append(f"padding={config['padding']!r}")
        if self.ceil_mode:
            args.append("ceil_mode=True")
        return f"{type(self).__name__}({', '.join(args)})"


class MaxPool2D(_Pool2D):
    """y[n, c, a, b] = max of x[n, c] over window (a, b).

    Backward routes each output gradient to its window's argmax only (the
    first maximum in row-major order on ties); overlapping windows that share
    an argmax add up there. Shapes: (batch, C, H, W) -> (batch, C, OH, OW).
    """

    def forward(self, x, training=False):
        geometry = self._geometry(np.shape(x))
        kh, kw, sh, sw, ph, pw, OH, OW = geometry
        x = np.ascontiguousarray(x)
        # dispatch rule: the separable kernels of ``kernels.pooling`` (uint8 window
        # offsets) take float32/float64 and windows of at most MAX_WINDOW taps; the
        # per-window kernels (int32 flat argmax) take the rest. (Sitting 22 deleted the
        # ``OFFSETS`` switch, on since sitting 19, and the 2×2 per-window kernels that
        # only it reached: the general ones give the same values and argmax.)
        if kh * kw <= pool_kernels.MAX_WINDOW and x.dtype in (np.float32, np.float64):
            return self._forward_offsets(x, geometry)
        N, C = x.shape[:2]
        out = np.empty((N, C, OH, OW), dtype=x.dtype)
        argmax = np.empty((N, C, OH, OW), dtype=np.int32)
        checksum = np.empty(N)
        n = x.size
        kernel_for(_maxpool_fast_kernel, n)(x, kh, kw, sh, sw, ph, pw, out, argmax, checksum)
        if np.isnan(checksum).any():           # a NaN was read: the exact rule
            kernel_for(_maxpool_forward_kernel, n)(x, kh, kw, sh, sw, ph, pw, out, argmax)
        self._x_shape, self._argmax, self._offsets = x.shape, argmax, None
        return out

    def _forward_offsets(self, x, geometry):
        """The separable kernel; a NaN read sends the batch to the exact kernel, whose
        flat argmax becomes offsets (``kernels.pooling.offsets_from_argmax``)."""
        kh, kw, sh, sw, ph, pw, OH, OW = geometry
        N, C = x.shape[:2]
        out = np.empty((N, C, OH, OW), dtype=x.dtype)
        offsets = np.empty((N, C, OH, OW), dtype=np.uint8)
        nan_seen = np.empty(N, dtype=np.bool_)
        kernel_for(pool_kernels._maxpool_offsets_kernel, x.size)(
            x, kh, kw, sh, sw, ph, pw, out, offsets, nan_seen)
        if nan_seen.any():
            argmax = np.empty((N, C, OH, OW), dtype=np.int32)
            kernel_for(_maxpool_forward_kernel, x.size)(x, kh, kw, sh, sw, ph, pw, out, argmax)
            offsets = pool_kernels.offsets_from_argmax(argmax, geometry, x.shape[3])
        self._x_shape, self._argmax, self._offsets = x.shape, None, offsets
        self._geometry_cache = geometry
        return out

    def flat_argmax(self):
        """The last forward's argmax as flat in-plane indices h·W + w (int32, the
        NumPy twin's form), whichever path ran."""
        if self._offsets is None:
            return self._argmax
        kh, kw, sh, sw, ph, pw, OH, OW = self._geometry_cache
        W = self._x_shape[3]
        k = self._offsets.astype(np.int64)
        rows = (np.arange(OH) * sh - ph).reshape(-1, 1) + k // kw
        cols = np.arange(OW) * sw - pw + k % kw
        return (rows * W + cols).astype(np.int32)

    def backward(self, grad):
        if self._offsets is not None:
            kh, kw, sh, sw, ph, pw, _, _ = self._geometry_cache
            rows, cols = pool_kernels.offset_tables(kw)
            dx = np.empty(self._x_shape, dtype=grad.dtype)
            kernel_for(pool_kernels._maxpool_offsets_backward_kernel, dx.size)(
                np.ascontiguousarray(grad), self._offsets, rows, cols, sh, sw, ph, pw, dx)
            return dx
        N, C, H, W = self._x_shape
        dx = np.zeros((N, C, H * W), dtype=grad.dtype)
        kernel_for(_maxpool_backward_kernel, dx.size)(np.ascontiguousarray(grad), self._argmax, dx)
        return dx.reshape(self._x_shape)


class AvgPool2D(_Pool2D):
    """y[n, c, a, b] = Σ x[n, c] over window (a, b) / |window|.

    Padding counts as zeros and |window| is the window clipped to the padded
    input [-p, H + p), as Caffe (and PyTorch's ``count_include_pad=True``):
    a ceil-mode window that hangs over the far edge is averaged over its part
    inside the padded input only, so a constant input pools to itself there.
    Shapes: (batch, C, H, W) -> (batch, C, OH, OW).
    """

    def forward(self, x, training=False):
        geometry = self._geometry(np.shape(x))
        kh, kw, sh, sw, ph, pw, OH, OW = geometry
        x = np.ascontiguousarray(x)
        N, C = x.shape[:2]
        out = np.empty((N, C, OH, OW), dtype=x.dtype)
        # dispatch rule: the separable forward of ``kernels.pooling`` for float32 and
        # float64 (sitting 19; its ``SEPARABLE`` switch deleted in sitting 22), the
        # per-window kernel (also the inference plan's) for other dtypes. The backward
        # stays the per-window scatter: the separable one lost under load (4.2 vs
        # 3.3 ms on Cifar10_quick's pool2).
        if x.dtype in (np.float32, np.float64):
            divisor = pool_kernels.avg_divisors(x.shape, geometry, x.dtype)
            kernel_for(pool_kernels._avgpool_sep_forward_kernel, x.size)(
                x, kh, kw, sh, sw, ph, pw, divisor, out)
        else:
            kernel_for(_avgpool_forward_kernel, x.size)(x, kh, kw, sh, sw, ph, pw, out)
        self._x_shape, self._geometry_cache = x.shape, geometry
        return out

    def backward(self, grad):
        kh, kw, sh, sw, ph, pw, _, _ = self._geometry_cache
        # dispatch rule: 3×3/2 without padding on even widths (Cifar10_quick's pools) takes
        # the gather of ``kernels.pooling`` (same bits, sitting 24); the rest this scatter
        if (pool_kernels.takes_flat_3x3s2(kh, kw, sh, sw, ph, pw, self._x_shape[3])
                and grad.dtype in (np.float32, np.float64)):
            dx = np.empty(self._x_shape, dtype=grad.dtype)
            divisor = pool_kernels.avg_divisors(self._x_shape, self._geometry_cache, np.float64)
            kernel_for(pool_kernels._avgpool3x3s2_backward_kernel, dx.size)(
                np.ascontiguousarray(grad), divisor, dx)
            return dx
        dx = np.zeros(self._x_shape, dtype=grad.dtype)
        kernel_for(_avgpool_backward_kernel, dx.size)(np.ascontiguousarray(grad), kh, kw, sh, sw,
                                                      ph, pw, dx)
        return dx


__all__ = ["MaxPool2D", "AvgPool2D", "pool_output_size"]
