"""Direct convolution for layers with few input channels (NCHW in, NCHW out).

    y[n, o, a, b] = bias[o] + Σ_{c,i,j} W[o, c, i, j] · x_pad[n, c, a·sh + i, b·sw + j]

computed plane by plane: for each (sample, output channel) the output plane
(OH·OW values, a few KB, in L1) is set to the bias and then, for every tap
(c, i, j), one scaled input row is added to every output row,
y[n, o, a, :] += W[o, c, i, j] · x_pad[n, c, a·sh + i, j : j + sw·OW : sw],
a loop over b that the compiler vectorises.

Why: with C·kw small (LeNet's 1-channel and Cifar10_quick's 3-channel first
layers) the im2col product has an inner dimension of only C·kh·kw (25 or 75),
so BLAS streams its (O, batch·OH·OW) output at memory speed, and the column
matrix itself (kh·kw times the input) is written and read once more; the
direct form reads the input in place and writes y once. It is used for
evaluation (``Conv2D.forward(training=False)``), where no columns need to be
kept for the weight gradient. Same arithmetic as the product, summed in
another order, so results agree to float rounding (not bit for bit).

``direct_conv_numpy`` is the NumPy twin that defines the kernel.
"""
from __future__ import annotations

import numba
import numpy as np

from .im2col import _geometry, kernel_for


def direct_conv_numpy(x: np.ndarray, W: np.ndarray, bias, stride=1, padding=0) -> np.ndarray:
    """x (N, C, H, W), W (O, C, kh, kw), bias (O,) or None -> y (N, O, OH, OW)."""
    O, C, kh, kw = W.shape
    _, _, sh, sw, ph, pw, OH, OW = _geometry(x.shape, (kh, kw), stride, padding)
    x_pad = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    y = np.zeros((x.shape[0], O, OH, OW), dtype=np.result_type(x, W))
    for c in range(C):
        for i in range(kh):
            for j in range(kw):
                window = x_pad[:, c, i:i + sh * OH:sh, j:j + sw * OW:sw]      # (N, OH, OW)
                y += W[None, :, c, i, j, None, None] * window[:, None]
    if bias is not None:
        y += np.asarray(bias).reshape(1, -1, 1, 1)
    return y


@numba.njit(cache=True, inline="always", fastmath=True)
def _add_window_row(acc, src, w_row, L):
    """acc[b] += Σ_j w_row[j] · src[b + j] for b < L (one row of taps).

    kw = 5 and 3 take constant trip counts, which the compiler unrolls inside
    the vectorised loop over b: 5 (3) multiply-adds per load and store of acc
    instead of 1, the store-bound loop becomes load-bound (~3x faster)."""
    kw = w_row.shape[0]
    if kw == 5:
        w0, w1, w2, w3, w4 = w_row[0], w_row[1], w_row[2], w_row[3], w_row[4]
        for b in range(L):
            acc[b] += (w0 * src[b] + w1 * src[b + 1] + w2 * src[b + 2] + w3 * src[b + 3]
                       + w4 * src[b + 4])
    elif kw == 3:
        w0, w1, w2 = w_row[0], w_row[1], w_row[2]
        for b in range(L):
            acc[b] += w0 * src[b] + w1 * src[b + 1] + w2 * src[b + 2]
    else:
        for j in range(kw):
            w = w_row[j]
            for b in range(L):
                acc[b] += w * src[b + j]


@numba.njit(cache=True, inline="always", fastmath=True)
def _add_window_row5x4(acc, src, W, o, c, i, L):
    """``_add_window_row`` for output channels o..o+3 at once (kw = 5): each
    loaded input value feeds four multiply-adds, 20 per 5 loads."""
    a0, a1, a2, a3 = acc[0], acc[1], acc[2], acc[3]
    p0, p1, p2, p3 = W[o, c, i], W[o + 1, c, i], W[o + 2, c, i], W[o + 3, c, i]
    for b in range(L):
        s0, s1, s2, s3, s4 = src[b], src[b + 1], src[b + 2], src[b + 3], src[b + 4]
        a0[b] += p0[0] * s0 + p0[1] * s1 + p0[2] * s2 + p0[3] * s3 + p0[4] * s4
        a1[b] += p1[0] * s0 + p1[1] * s1 + p1[2] * s2 + p1[3] * s3 + p1[4] * s4
        a2[b] += p2[0] * s0 + p2[1] * s1 + p2[2] * s2 + p2[3] * s3 + p2[4] * s4
        a3[b] += p3[0] * s0 + p3[1] * s1 + p3[2] * s2 + p3[3] * s3 + p3[4] * s4


@numba.njit(cache=True, parallel=True, fastmath=True)
def _direct_conv_kernel(x_pad, W, bias, sh, sw, out):
    # fastmath: lets the compiler fuse the multiply-adds (FMA) and vectorise.
    # Stride 1: one output plane is computed over the padded width,
    # acc[a·Wp + b] (b < Wp, of which b < OW is kept), so a tap adds ONE
    # contiguous run of L = (OH-1)·Wp + OW values, x_flat[i·Wp + j:][:L], and
    # the vectorised loop runs long instead of OW at a time
    N, C, Hp, Wp = x_pad.shape
    O, _, kh, kw = W.shape
    OH, OW = out.shape[2], out.shape[3]
    if sh == 1 and sw == 1:
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
                    plane = out[n, o + q]
                    for a in range(OH):
                        plane[a, :] = acc4[q, a * Wp:a * Wp + OW]
                o += block
        return
    for t in numba.prange(N * O):
        n = t // O
        o = t % O
        plane = out[n, o]
        b0 = bias[o]
        for a in range(OH):
            plane[a, :] = b0
        for c in range(C):
            x_plane = x_pad[n, c]
            for i in range(kh):
                for j in range(kw):
                    w = W[o, c, i, j]
                    for a in range(OH):
                        dst = plane[a]
                        src = x_plane[a * sh + i]
                        for b in range(OW):
                            dst[b] += w * src[b * sw + j]


def direct_conv(x: np.ndarray, W: np.ndarray, bias=None, stride=1, padding=0,
                x_pad_buffer: np.ndarray | None = None,
                out: np.ndarray | None = None) -> np.ndarray:
    """The Numba kernel: same arguments and result as ``direct_conv_numpy``.

    ``x_pad_buffer``: optional reused (N, C, H + 2ph, W + 2pw) array with a zero
    border (only its interior is written), to skip the allocation of the padded
    copy. ``out``: optional C-contiguous (N, O, OH, OW) array to write y into."""
    O, C, kh, kw = W.shape
    if x.ndim != 4 or x.shape[1] != C:
        raise ValueError(f"direct_conv expects x of shape (batch, {C}, H, W) for W of shape "
                         f"{tuple(W.shape)}, got {tuple(x.shape)}")
    _, _, sh, sw, ph, pw, OH, OW = _geometry(x.shape, (kh, kw), stride, padding)
    dtype = np.result_type(x, W)
    N, _, H, Wd = x.shape
    if ph == 0 and pw == 0:
        x_pad = np.ascontiguousarray(x, dtype=dtype)
    else:
        shape = (N, C, H + 2 * ph, Wd + 2 * pw)
        if x_pad_buffer is None:
            x_pad = np.zeros(shape, dtype)
        else:
            if x_pad_buffer.shape != shape or x_pad_buffer.dtype != dtype:
                raise ValueError(f"x_pad_buffer must have shape {shape} and dtype {dtype}, "
                                 f"got {x_pad_buffer.shape} {x_pad_buffer.dtype}")
            x_pad = x_pad_buffer
        x_pad[:, :, ph:ph + H, pw:pw + Wd] = x
    W = np.ascontiguousarray(W, dtype=dtype)
    bias = np.zeros(O, dtype) if bias is None else np.ascontiguousarray(bias, dtype=dtype)
    if out is None:
        out = np.empty((N, O, OH, OW), dtype)
    elif out.shape != (N, O, OH, OW) or out.dtype != dtype or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous {dtype} array of shape "
                         f"{(N, O, OH, OW)}, got {out.dtype} {out.shape}")
    kernel_for(_direct_conv_kernel, out.size)(x_pad, W, bias, sh, sw, out)
    return out


# -- the weight gradient -----------------------------------------------------------
def direct_conv_weight_grad_numpy(x: np.ndarray, grad: np.ndarray, kernel, stride=1,
                                  padding=0) -> np.ndarray:
    """dW[o, c, i, j] = Σ_{n,a,b} dY[n, o, a, b] · x_pad[n, c, a·sh + i, b·sw + j]
    for x (N, C, H, W) and dY (N, O, OH, OW): the twin of the kernel below."""
    kh, kw, sh, sw, ph, pw, OH, OW = _geometry(x.shape, kernel, stride, padding)
    if grad.shape[2:] != (OH, OW) or grad.shape[0] != x.shape[0]:
        raise ValueError(f"dY must have shape (N, O, {OH}, {OW}) for x of shape "
                         f"{tuple(x.shape)}, got {tuple(grad.shape)}")
    x_pad = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    dW = np.empty((grad.shape[1], x.shape[1], kh, kw), dtype=np.result_type(x, grad))
    for i in range(kh):
        for j in range(kw):
            window = x_pad[:, :, i:i + sh * OH:sh, j:j + sw * OW:sw]         # (N, C, OH, OW)
            dW[:, :, i, j] = np.einsum("noab,ncab->oc", grad, window)
    return dW


@numba.njit(cache=True, parallel=True, fastmath=True)
def _direct_weight_grad_kernel(x_pad, grad, kh, kw, dW):
    # Stride 1. For each pair of output channels (o, o+1) (one thread each)
    # and sample n, dY[n, o] is laid on the padded width, g[a·Wp + b] (zeros
    # at b >= OW), so tap (c, i, j) is ONE long dot product
    # g · x_flat[i·Wp + j:][:L], a reduction the compiler vectorises
    # (fastmath: reassociated, as BLAS does). With kw = 5 the 5 taps of a
    # window row and the 2 channels share each load: 10 multiply-adds per 7
    # loads (1 per 2 with one tap at a time).
    N, C, Hp, Wp = x_pad.shape
    O, OH, OW = grad.shape[1], grad.shape[2], grad.shape[3]
    L = (OH - 1) * Wp + OW
    for pair in numba.prange((O + 1) // 2):
        o = 2 * pair
        two = o + 1 < O and kw == 5
        g = np.zeros((2, L), x_pad.dtype)
        zero = g[0, 0]
        g0, g1 = g[0], g[1]
        for q in range(2 if o + 1 < O else 1):
            dW[o + q] = 0
        for n in range(N):
            for q in range(2 if o + 1 < O else 1):
                g_src = grad[n, o + q]
                for a in range(OH):
                    g[q, a * Wp:a * Wp + OW] = g_src[a]
            for c in range(C):
                x_flat = x_pad[n, c].reshape(Hp * Wp)
                for i in range(kh):
                    src = x_flat[i * Wp:]
                    if two:
                        s0, s1, s2, s3, s4 = zero, zero, zero, zero, zero
                        u0, u1, u2, u3, u4 = zero, zero, zero, zero, zero
                        for t in range(L):
                            x0, x1, x2, x3, x4 = src[t], src[t + 1], src[t + 2], src[t + 3], \
                                src[t + 4]
                            gv, hv = g0[t], g1[t]
                            s0 += gv * x0
                            s1 += gv * x1
                            s2 += gv * x2
                            s3 += gv * x3
                            s4 += gv * x4
                            u0 += hv * x0
                            u1 += hv * x1
                            u2 += hv * x2
                            u3 += hv * x3
                            u4 += hv * x4
                        row, row1 = dW[o, c, i], dW[o + 1, c, i]
                        row[0] += s0
                        row[1] += s1
                        row[2] += s2
                        row[3] += s3
                        row[4] += s4
                        row1[0] += u0
                        row1[1] += u1
                        row1[2] += u2
                        row1[3] += u3
                        row1[4] += u4
                    else:
                        for q in range(2 if o + 1 < O else 1):
                            gq = g[q]
                            for j in range(kw):
                                acc = zero
                                for t in range(L):
                                    acc += gq[t] * src[t + j]
                                dW[o + q, c, i, j] += acc


def direct_conv_weight_grad(x_pad: np.ndarray, grad: np.ndarray, kernel) -> np.ndarray:
    """The Numba kernel at stride 1: x_pad the zero-padded input (N, C, Hp, Wp)
    (as ``direct_conv`` pads it), dY (N, O, OH, OW) -> dW (O, C, kh, kw)."""
    kh, kw = kernel
    N, C, Hp, Wp = x_pad.shape
    if grad.ndim != 4 or grad.shape[0] != N or grad.shape[2:] != (Hp - kh + 1, Wp - kw + 1):
        raise ValueError(f"dY must have shape ({N}, O, {Hp - kh + 1}, {Wp - kw + 1}) for a "
                         f"padded input of shape {tuple(x_pad.shape)}, got {tuple(grad.shape)}")
    dtype = np.result_type(x_pad, grad)
    x_pad = np.ascontiguousarray(x_pad, dtype=dtype)
    grad = np.ascontiguousarray(grad, dtype=dtype)
    dW = np.empty((grad.shape[1], C, kh, kw), dtype)
    kernel_for(_direct_weight_grad_kernel, x_pad.size + grad.size)(x_pad, grad, kh, kw, dW)
    return dW
