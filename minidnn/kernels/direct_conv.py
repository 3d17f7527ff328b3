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

Register-tiled kernels (sitting 19, second half of this module; float32, stride 1,
AVX2 + FMA, output rows of >= 8 pixels; ``Conv2D._direct_tiled_applies``): the same sums
with the output block held in ymm registers over the whole C·kh·kw reduction
(``implicit_conv._tile_avx2`` with 8 output pixels on the vector side and up to 6
output channels on the broadcast side), reading the input as rows
xr (N, Hp, C, Wp) (``window_rows``, written sample by sample inside the forward's
parallel loop), and the weight and bias gradients from one walk over xr and dY
(``_wgrad_tile_avx2``: 5 taps × 2 channels of 8-lane partial sums, per-thread
partials over samples). Twins: ``window_rows_numpy``, ``direct_conv_numpy``,
``direct_conv_weight_grad_numpy``. One thread, under load, Cifar10_quick's conv1
(``python bench/conv1_ab.py --threads 1 --repeats 30``,
``bench/results/conv1_ab_1t_load.json``): forward 8.35 against 13.27 ms, dW + db
10.28 against 12.52 ms (plane walk + NumPy's db); PyTorch 2.13 13.40 and 13.86 ms
in the same run.

16 lanes (sitting 22, ``WIDE_AVAILABLE``: Numba's target has AVX-512F): the forward's
row blocks of 32 pixels run ``_tile_avx512`` (the same tile on two zmm vectors; the rest
of a row the 8-lane tiles; the same FMA chain per output, so the same bits), and the weight gradient of rows of 16·k pixels (or 16·k + 9 ..
16·k + 15: no more lanes than the 8-lane walk) ``_wgrad_tile_avx512`` (16-lane partial
sums: other bits, within float32 rounding).
In-process A/B, under load, 8 → 16 lanes (``python bench/conv_wide_ab.py``,
``bench/results/conv_wide_ab_load.log``): Cifar10_quick's conv1 (OW = 32) forward
9.13 → 6.55 ms, dW + db 9.83 → 8.57 (one thread), 9.63 → 6.71 and 8.22 → 7.83 (two
threads). LeNet's conv1 (OW = 24) runs the 8-lane tiles: as a zmm 16 + ymm 8 split its
forward was no faster (0.94-1.09 of the 8-lane time over five runs) and its dW 1-3 %
slower, so the rules above leave it out (its arms now run the same code: 0.97-1.02,
the noise of the A/B).
"""
from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .im2col import _geometry, as_pair, kernel_for
from .implicit_conv import _tile_avx2, _tile_codegen
from .simd import avx2_fma_target, target_has
from ..threads import numba_thread_count
from .workers import serial_nogil


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


# == the register-tiled direct convolution (AVX2 + FMA, float32, stride 1) ===========
#
# The plane-by-plane kernels above keep one output row of each of four channels in
# memory (acc4) and add a scaled input row per tap: every multiply-add loads and
# stores its accumulator, ~41 GFLOP/s on Cifar10_quick's conv1 (one thread). Here
# the output block stays in registers for the whole reduction over the C·kh·kw
# taps: the GEMM micro-kernel of ``implicit_conv._tile_avx2`` (Goto & van de Geijn,
# 2008) with the vector side along the output row (8 consecutive pixels of one
# output channel, contiguous in NCHW) and the broadcast side along up to 6 output
# channels (a weight each):
#
#     acc[p, 8v:8v+8] = Σ_{i, c, j} Wt[(i·C + c)·kw + j, o0 + p] · xr[n, a + i, c, b0 + j + 8v : +8]
#     y[n, o0 + p, a, b0 + 8v : +8] = acc[p, 8v:8v+8] + bias[o0 + p]
#
# for p < P ≤ 6, v < V ≤ 2, with the input held as "rows" xr (N, Hp, C, Wp), the
# zero-padded input with the channel axis moved inside the image rows
# (xr[n, h, c, w] = x_pad[n, c, h, w]): the kh·C window rows of a tap block are then
# Wp apart, one strided outer loop of the tile, and the kw taps of a row one
# contiguous inner loop. The weight gradient is the same walk with the roles
# turned (``_wgrad_tile_avx2``): its register block is J ≤ 6 taps of one window row
# × V ≤ 2 output channels, each an 8-lane partial sum over output pixels
#
#     acc[j, v] += xr[n, a + i, c, b + j : +8] · dY[n, o0 + v, a, b : +8]    over a, b
#     dW[o0 + v, c, i, j0 + j] += Σ_lanes acc[j, v]
#
# 10 multiply-adds per 7 loads at J = 5, V = 2, with no store inside the loop.

#: the tiled kernels run only where this is True (Numba's target has AVX2 + FMA; tests
#: switch it off to hold the plane-by-plane fallback)
SIMD_AVAILABLE = avx2_fma_target()
#: where Numba's target also has AVX-512F the forward's row blocks of >= 16 pixels take
#: 16-lane (zmm) tiles (``_tile_avx512``), the rest of a row the 8-lane ones: the same FMA
#: chain per output, so the same bits (``tests/test_direct_conv_tiled.py``)
WIDE_AVAILABLE = SIMD_AVAILABLE and target_has("avx512f")
#: the weight gradient's register block: taps of one window row × output channels
WGRAD_MAX_J, WGRAD_MAX_V = 6, 2
#: output channels per forward tile (the broadcast side of ``_tile_avx2``)
FORWARD_MAX_P = 6


def _wgrad_codegen(width: int):
    """The LLVM IR of ``_wgrad_tile_avx2`` (``width`` 8) and ``_wgrad_tile_avx512`` (16)."""

    def codegen(context, builder, signature, args):
        dw_ptr, x_ptr, g_ptr = [context.make_array(t)(context, builder, v).data
                                for t, v in zip(signature.args[:3], args[:3])]
        i64, i32 = ir.IntType(64), ir.IntType(32)
        (dw_off_v, x_off_v, g_off_v, J_v, V_v, n_rows_v, x_row_v, g_row_v, n_blocks_v,
         tail_v, tail_lo_v, g_v_v, dw_j_v, dw_v_v, sum_off_v) = [
            context.cast(builder, v, t, types.int64)
            for v, t in zip(args[3:18], signature.args[3:18])]
        f32 = ir.FloatType()
        v8f = ir.VectorType(f32, width)
        fma = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(v8f, [v8f, v8f, v8f]), f"llvm.fma.v{width}f32")
        zero = ir.Constant(v8f, [0.0] * width)
        lanes = ir.Constant(ir.VectorType(i32, width), list(range(width)))

        def c64(k):
            return ir.Constant(i64, k)

        def load8(base, offset):
            return builder.load(builder.bitcast(builder.gep(base, [offset]), v8f.as_pointer()),
                                align=4)

        def hsum(acc):
            # pairwise: (16 lanes: first 0+8, ..., 7+15), (0+4, 1+5, 2+6, 3+7), then
            # halves, then the last two
            if width == 16:
                acc = builder.fadd(
                    builder.shuffle_vector(acc, acc, ir.Constant(ir.VectorType(i32, 8),
                                                                 list(range(8)))),
                    builder.shuffle_vector(acc, acc, ir.Constant(ir.VectorType(i32, 8),
                                                                 list(range(8, 16)))))
            four = builder.fadd(
                builder.shuffle_vector(acc, acc, ir.Constant(ir.VectorType(i32, 4), [0, 1, 2, 3])),
                builder.shuffle_vector(acc, acc, ir.Constant(ir.VectorType(i32, 4), [4, 5, 6, 7])))
            two = builder.fadd(
                builder.shuffle_vector(four, four, ir.Constant(ir.VectorType(i32, 2), [0, 1])),
                builder.shuffle_vector(four, four, ir.Constant(ir.VectorType(i32, 2), [2, 3])))
            return builder.fadd(builder.extract_element(two, c64(0)),
                                builder.extract_element(two, c64(1)))

        def add_to(offset, value):
            at = builder.gep(dw_ptr, [offset])
            builder.store(builder.fadd(builder.load(at), value), at)

        def body(n_j, n_v, with_sum):
            accs = [[cgutils.alloca_once(builder, v8f) for _ in range(n_v)] for _ in range(n_j)]
            sums = [cgutils.alloca_once(builder, v8f) for _ in range(n_v if with_sum else 0)]
            for acc in [a for row in accs for a in row] + sums:
                builder.store(zero, acc)
            g_offs = [builder.mul(c64(v), g_v_v) for v in range(n_v)]

            def block(x_at, g_at, mask):
                gs = []
                for v in range(n_v):
                    gv = load8(g_at, g_offs[v])
                    if mask is not None:
                        gv = builder.select(mask, gv, zero)
                    gs.append(gv)
                for v, acc in enumerate(sums):
                    builder.store(builder.fadd(builder.load(acc), gs[v]), acc)
                for j in range(n_j):
                    xv = load8(x_at, c64(j))
                    for v in range(n_v):
                        builder.store(builder.call(fma, [xv, gs[v], builder.load(accs[j][v])]),
                                      accs[j][v])

            f32p = f32.as_pointer()
            x_row_p, g_row_p = cgutils.alloca_once(builder, f32p), cgutils.alloca_once(builder, f32p)
            x_cur, g_cur = cgutils.alloca_once(builder, f32p), cgutils.alloca_once(builder, f32p)
            builder.store(builder.gep(x_ptr, [x_off_v]), x_row_p)
            builder.store(builder.gep(g_ptr, [g_off_v]), g_row_p)
            has_tail = builder.icmp_signed(">=", tail_v, c64(0))
            lo32 = builder.trunc(tail_lo_v, i32)
            lo_splat = builder.shuffle_vector(
                builder.insert_element(ir.Constant(ir.VectorType(i32, width), ir.Undefined),
                                       lo32, c64(0)),
                ir.Constant(ir.VectorType(i32, width), ir.Undefined),
                ir.Constant(ir.VectorType(i32, width), [0] * width))
            mask = builder.icmp_signed(">=", lanes, lo_splat)
            with cgutils.for_range(builder, n_rows_v):
                x_r, g_r = builder.load(x_row_p), builder.load(g_row_p)
                builder.store(x_r, x_cur)
                builder.store(g_r, g_cur)
                with cgutils.for_range(builder, n_blocks_v):
                    x_t, g_t = builder.load(x_cur), builder.load(g_cur)
                    block(x_t, g_t, None)
                    builder.store(builder.gep(x_t, [c64(width)]), x_cur)
                    builder.store(builder.gep(g_t, [c64(width)]), g_cur)
                with builder.if_then(has_tail, likely=False):
                    block(builder.gep(x_r, [tail_v]), builder.gep(g_r, [tail_v]), mask)
                builder.store(builder.gep(x_r, [x_row_v]), x_row_p)
                builder.store(builder.gep(g_r, [g_row_v]), g_row_p)
            for j in range(n_j):
                for v in range(n_v):
                    add_to(builder.add(dw_off_v, builder.add(builder.mul(c64(j), dw_j_v),
                                                             builder.mul(c64(v), dw_v_v))),
                           hsum(builder.load(accs[j][v])))
            for v, acc in enumerate(sums):
                add_to(builder.add(sum_off_v, c64(v)), hsum(builder.load(acc)))

        wants_sum = builder.icmp_signed(">=", sum_off_v, c64(0))
        for n_j in range(1, WGRAD_MAX_J + 1):
            for n_v in range(1, WGRAD_MAX_V + 1):
                hit = builder.and_(builder.icmp_signed("==", J_v, c64(n_j)),
                                   builder.icmp_signed("==", V_v, c64(n_v)))
                with builder.if_then(hit):
                    with builder.if_else(wants_sum) as (then, otherwise):
                        with then:
                            body(n_j, n_v, True)
                        with otherwise:
                            body(n_j, n_v, False)
        return context.get_dummy_value()

    return codegen


@intrinsic
def _wgrad_tile_avx2(typingctx, dw, x, g, dw_off, x_off, g_off, J, V, n_rows, x_row, g_row,
                     n_blocks, tail, tail_lo, g_v, dw_j, dw_v, sum_off):
    """dw[dw_off + j·dw_j + v·dw_v] += Σ_r Σ_k Σ_lanes x[x_off + r·x_row + 8k + j : +8] ·
    g[g_off + v·g_v + r·g_row + 8k : +8] for j < J ≤ 6, v < V ≤ 2, r < n_rows,
    k < n_blocks, plus (when tail >= 0) one more block per row at element ``tail``
    whose g lanes below ``tail_lo`` count as zero (an overlapping last block of a
    row whose length is not a multiple of 8). With ``sum_off >= 0`` also
    dw[sum_off + v] += Σ_r Σ_k Σ_lanes g[...] (the bias gradient, from the g vectors
    the block loads anyway: 2 adds per 10 FMAs, where a separate pass over dY cost
    ~2.4 ms a Cifar10_quick step). Flat float32 arrays, element offsets."""
    sig = types.void(dw, x, g, dw_off, x_off, g_off, J, V, n_rows, x_row, g_row, n_blocks,
                     tail, tail_lo, g_v, dw_j, dw_v, sum_off)

    return sig, _wgrad_codegen(8)


@intrinsic
def _wgrad_tile_avx512(typingctx, dw, x, g, dw_off, x_off, g_off, J, V, n_rows, x_row, g_row,
                       n_blocks, tail, tail_lo, g_v, dw_j, dw_v, sum_off):
    """``_wgrad_tile_avx2`` on 16-lane vectors (blocks of 16 pixels, ``tail_lo`` < 16;
    called only where ``WIDE_AVAILABLE``): per-lane partial sums over other pixel
    subsets, so other bits than the 8-lane tile, within float32 rounding."""
    sig = types.void(dw, x, g, dw_off, x_off, g_off, J, V, n_rows, x_row, g_row, n_blocks,
                     tail, tail_lo, g_v, dw_j, dw_v, sum_off)

    return sig, _wgrad_codegen(16)


@intrinsic
def _tile_avx512(typingctx, out, a, b, out_off, a_off, b_off, P, V, n_outer, a_outer, b_outer,
                 n_inner, a_inner, b_inner, a_p, out_p, accumulate):
    """``implicit_conv._tile_avx2`` on 16-lane vectors: V ≤ 2 blocks of 16 floats on the
    vector side (the forward calls it with V = 2) (one zmm each where the target has AVX-512F; LLVM splits them in two
    ymm elsewhere, so it compiles, but only ``WIDE_AVAILABLE`` targets call it)."""
    sig = types.void(out, a, b, out_off, a_off, b_off, P, V, n_outer, a_outer, b_outer,
                     n_inner, a_inner, b_inner, a_p, out_p, accumulate)
    return sig, _tile_codegen(False, 16)


def window_rows_numpy(x: np.ndarray, padding) -> np.ndarray:
    """x (N, C, H, W) -> xr (N, H + 2ph, C, W + 2pw), xr[n, h, c, w] = x_pad[n, c, h, w]:
    the zero-padded input with its channels inside the image rows (the layout the
    tiled kernels read). The twin of ``_window_rows_kernel``."""
    ph, pw = as_pair(padding, "padding")
    x_pad = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    return np.ascontiguousarray(x_pad.transpose(0, 2, 1, 3))


@numba.njit(cache=True, inline="always")
def _window_rows_sample(x, n, ph, pw, dst):
    # dst (Hp, C, Wp) = the rows of sample n of x (N, C, H, W), zero-padded by (ph, pw).
    # Every value written (border zeros too): no buffer state to trust, and the
    # border is 1/8 of Cifar10_quick's rows
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    Hp = dst.shape[0]
    zero = dst.dtype.type(0)
    for h in range(Hp):
        inside = ph <= h < ph + H
        for c in range(C):
            row = dst[h, c]
            if not inside:
                row[:] = zero
            else:
                row[:pw] = zero
                row[pw:pw + W] = x[n, c, h - ph]
                row[pw + W:] = zero


@numba.njit(cache=True, nogil=True)
def _window_rows_kernel(x, ph, pw, out):
    # serial: a 1.5 MB copy (0.2-0.4 ms) is shorter than a wake-up of the thread pool
    # on a loaded machine (up to 7 ms measured at 2 threads); the training forward
    # writes the rows itself, sample by sample, inside its parallel loop
    for n in range(x.shape[0]):
        _window_rows_sample(x, n, ph, pw, out[n])


@numba.njit(cache=True, inline="always")
def _forward_sample_tiled(xf, x_off, wf, bias, C, Wp, kh, kw, O, OH, OW, yf, y_off, y_plane,
                          wide):
    # y[y_off + o·y_plane + a·OW + b] for one sample (its rows xr at x_off): output
    # channels in ceil(O / 6) near-equal tiles, each output row in blocks of 16 and 8
    # pixels (with ``wide``, first blocks of 32 on 16-lane vectors), the last
    # block shifted back to end at OW (overlapping pixels are recomputed with the same
    # sums), then the bias added to the tile's planes while they are in L1 (a loop
    # over whole planes: row by row it cost 2 ms of 10)
    n_ot = (O + FORWARD_MAX_P - 1) // FORWARD_MAX_P
    for t in range(n_ot):
        o0 = t * O // n_ot
        o1 = (t + 1) * O // n_ot
        for a in range(OH):
            b = 0
            while b < OW:
                rem = OW - b
                if wide and rem >= 32:
                    # (blocks of 32 only: 12 zmm accumulators; a 16-pixel zmm tile has 6,
                    # too few to hide the FMA latency, and LeNet's OW = 24 as 16 + 8 was
                    # no faster than 16 + 8 on ymm)
                    _tile_avx512(yf, wf, xf, y_off + o0 * y_plane + a * OW + b, o0,
                                 x_off + a * C * Wp + b, o1 - o0, 2, kh * C, kw * O, Wp,
                                 kw, O, 1, 1, y_plane, False)
                    b += 32
                    continue
                nv = 2 if rem >= 16 else 1
                start = b if rem >= 8 else OW - 8
                _tile_avx2(yf, wf, xf, y_off + o0 * y_plane + a * OW + start, o0,
                           x_off + a * C * Wp + start, o1 - o0, nv, kh * C, kw * O, Wp,
                           kw, O, 1, 1, y_plane, False)
                b = start + 8 * nv
        for o in range(o0, o1):
            plane = yf[y_off + o * y_plane:y_off + o * y_plane + OH * OW]
            bo = bias[o]
            for e in range(OH * OW):
                plane[e] += bo


@numba.njit(cache=True, parallel=True)
def _direct_conv_tiled_kernel(x, ph, pw, xr, wt, bias, out, wide):
    # x (N, C, H, W); xr (N, Hp, C, Wp) the rows, written here sample by sample
    # (each in L1 when the tiles read it: the layout transform costs no pass of its
    # own); wt (kh·C·kw·O,) = Wt[(i·C + c)·kw + j, o]; out (N, O, OH, OW)
    N, Hp, C, Wp = xr.shape
    _, O, OH, OW = out.shape
    kh, kw = Hp - OH + 1, Wp - OW + 1
    xf, yf = xr.reshape(-1), out.reshape(-1)
    for n in numba.prange(N):
        _window_rows_sample(x, n, ph, pw, xr[n])
        _forward_sample_tiled(xf, n * Hp * C * Wp, wt, bias, C, Wp, kh, kw, O, OH, OW, yf,
                              n * O * OH * OW, OH * OW, wide)


@numba.njit(cache=True, parallel=True)
def _direct_weight_grad_tiled_kernel(xr, grad, kh, kw, parts, wide):
    # parts[t] = (dW (O·C·kh·kw) | db (O)) summed over the t-th range of samples: one
    # partial per thread, so no two threads write one sum. For each sample and pair
    # of output channels the pair's dY planes (8 KB for Cifar10_quick) and the sample's
    # rows (15 KB) stay in L1 across the C·kh window rows; db comes with the first
    # window row's tiles
    N, Hp, C, Wp = xr.shape
    _, O, OH, OW = grad.shape
    T = parts.shape[0]
    K = C * kh * kw
    plane = OH * OW
    xf, gf = xr.reshape(-1), grad.reshape(-1)
    # 16-lane blocks (AVX-512F targets) where they cover no more lanes than 8-lane ones
    # would (OW = 32: dW + db 11 % faster; OW = 24, 1 block + a masked one against 3:
    # 1-3 % slower, so LeNet's conv1 keeps the 8-lane walk and its bits)
    wide = wide and OW >= 16 and (OW % 16 == 0 or OW % 16 > 8)
    width = 16 if wide else 8
    full = OW // width
    tail = OW - width if OW % width else -1
    tail_lo = width - OW % width
    for part in numba.prange(T):
        pf = parts[part]
        pf[:] = 0
        lo, hi = part * N // T, (part + 1) * N // T
        for n in range(lo, hi):
            for o0 in range(0, O, WGRAD_MAX_V):
                nv = min(WGRAD_MAX_V, O - o0)
                g_off = (n * O + o0) * plane
                for i in range(kh):
                    for c in range(C):
                        for j0 in range(0, kw, WGRAD_MAX_J):
                            first = i == 0 and c == 0 and j0 == 0     # db with the first block
                            dw_off = ((o0 * C + c) * kh + i) * kw + j0
                            x_off = ((n * Hp + i) * C + c) * Wp + j0
                            nj = min(WGRAD_MAX_J, kw - j0)
                            sum_off = O * K + o0 if first else -1
                            if wide:
                                _wgrad_tile_avx512(pf, xf, gf, dw_off, x_off, g_off, nj, nv, OH,
                                                   C * Wp, OW, full, tail, tail_lo, plane, 1,
                                                   K, sum_off)
                            else:
                                _wgrad_tile_avx2(pf, xf, gf, dw_off, x_off, g_off, nj, nv, OH,
                                                 C * Wp, OW, full, tail, tail_lo, plane, 1, K,
                                                 sum_off)


def tiled_applies(dtype, stride, output_width: int) -> bool:
    """Whether the register-tiled kernels run: AVX2 + FMA in Numba's target, float32,
    stride 1 and an output row of at least 8 pixels (one vector)."""
    return (SIMD_AVAILABLE and np.dtype(dtype) == np.float32
            and as_pair(stride, "stride") == (1, 1) and output_width >= 8)


def _tiled_weights(W: np.ndarray) -> np.ndarray:
    """W (O, C, kh, kw) -> flat Wt[(i·C + c)·kw + j, o] (the forward tile's panel)."""
    return np.ascontiguousarray(W.transpose(2, 1, 3, 0), dtype=np.float32).reshape(-1)


def window_rows(x: np.ndarray, padding, out: np.ndarray | None = None) -> np.ndarray:
    """The Numba kernel of ``window_rows_numpy``, into ``out`` when given."""
    N, C, H, W = x.shape
    ph, pw = as_pair(padding, "padding")
    shape = (N, H + 2 * ph, C, W + 2 * pw)
    if out is None:
        out = np.empty(shape, x.dtype)
    elif out.shape != shape or out.dtype != x.dtype or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous {x.dtype} array of shape {shape}, got "
                         f"{out.dtype} {out.shape}")
    _window_rows_kernel(np.ascontiguousarray(x), ph, pw, out)
    return out


def direct_conv_tiled(x: np.ndarray, W: np.ndarray, bias=None, padding=0,
                      rows_buffer: np.ndarray | None = None,
                      out: np.ndarray | None = None,
                      wide: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(y, xr): ``direct_conv_numpy(x, W, bias, 1, padding)`` by the register-tiled
    kernel (``tiled_applies`` must hold), and the rows xr it read
    (``window_rows_numpy``), which ``direct_conv_weight_grad_tiled`` takes. ``wide``:
    16-lane tiles for row blocks of >= 16 pixels (default ``WIDE_AVAILABLE``; False
    holds the 8-lane tiles, for tests)."""
    O, C, kh, kw = W.shape
    if x.ndim != 4 or x.shape[1] != C:
        raise ValueError(f"direct_conv_tiled expects x of shape (batch, {C}, H, W) for W of "
                         f"shape {tuple(W.shape)}, got {tuple(x.shape)}")
    _, _, _, _, ph, pw, OH, OW = _geometry(x.shape, (kh, kw), 1, padding)
    if not tiled_applies(x.dtype, 1, OW) or np.dtype(W.dtype) != np.float32:
        raise ValueError(f"the tiled direct convolution needs float32 data, AVX2 + FMA and "
                         f"an output row of >= 8 pixels; got {x.dtype} / {W.dtype}, OW = {OW}, "
                         f"SIMD {'on' if SIMD_AVAILABLE else 'off'}")
    N, _, H, Wd = x.shape
    shape = (N, H + 2 * ph, C, Wd + 2 * pw)
    if rows_buffer is None:
        xr = np.empty(shape, np.float32)
    elif (rows_buffer.shape != shape or rows_buffer.dtype != np.float32
          or not rows_buffer.flags.c_contiguous):
        raise ValueError(f"rows_buffer must be a C-contiguous float32 array of shape {shape}, "
                         f"got {rows_buffer.dtype} {rows_buffer.shape}")
    else:
        xr = rows_buffer
    bias = np.zeros(O, np.float32) if bias is None else np.ascontiguousarray(bias, np.float32)
    if out is None:
        out = np.empty((N, O, OH, OW), np.float32)
    elif out.shape != (N, O, OH, OW) or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous float32 array of shape "
                         f"{(N, O, OH, OW)}, got {out.dtype} {out.shape}")
    wide = WIDE_AVAILABLE if wide is None else bool(wide)
    kernel_for(_direct_conv_tiled_kernel, out.size)(np.ascontiguousarray(x), ph, pw, xr,
                                                    _tiled_weights(W), bias, out, wide)
    return out, xr


def direct_conv_weight_grad_tiled(xr: np.ndarray, grad: np.ndarray, kernel,
                                  wide: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(dW, db) for the stride-1 layer whose rows ``direct_conv_tiled`` returned:
    dW = ``direct_conv_weight_grad_numpy`` (O, C, kh, kw), db = Σ_{n,a,b} dY (O,).
    One partial sum per Numba thread over its range of samples, added at the end."""
    kh, kw = as_pair(kernel, "kernel")
    N, Hp, C, Wp = xr.shape
    OH, OW = Hp - kh + 1, Wp - kw + 1
    if grad.ndim != 4 or grad.shape[0] != N or grad.shape[2:] != (OH, OW):
        raise ValueError(f"dY must have shape ({N}, O, {OH}, {OW}) for rows of shape "
                         f"{tuple(xr.shape)}, got {tuple(grad.shape)}")
    if xr.dtype != np.float32 or grad.dtype != np.float32 or not tiled_applies(
            np.float32, 1, OW):
        raise ValueError(f"the tiled weight gradient needs float32 rows and dY, AVX2 + FMA "
                         f"and OW >= 8; got {xr.dtype} / {grad.dtype}, OW = {OW}")
    O = grad.shape[1]
    threads = min(max(1, numba_thread_count()), N)
    parts = np.empty((threads, O * C * kh * kw + O), np.float32)
    kernel = _direct_weight_grad_tiled_kernel if threads > 1 else serial_nogil(
        _direct_weight_grad_tiled_kernel)
    kernel(np.ascontiguousarray(xr), np.ascontiguousarray(grad), kh, kw, parts,
           WIDE_AVAILABLE if wide is None else bool(wide))
    total = parts[0]
    for t in range(1, threads):
        total += parts[t]
    return total[:O * C * kh * kw].reshape(O, C, kh, kw).copy(), total[O * C * kh * kw:].copy()


def direct_conv_padded_serial(x_pad: np.ndarray, W: np.ndarray, bias: np.ndarray, stride,
                              out: np.ndarray) -> np.ndarray:
    """y = the direct convolution of the already zero-padded x_pad (N, C, Hp, Wp) into
    out (N, O, OH, OW), in the calling thread without the GIL (the inference plan
    splits the batch over threads itself): the register-tiled kernel where
    ``tiled_applies`` (float32), the plane walk otherwise."""
    O, C, kh, kw = W.shape
    N, _, Hp, Wp = x_pad.shape
    sh, sw = as_pair(stride, "stride")
    if (x_pad.dtype == np.float32 and W.dtype == np.float32 and out.flags.c_contiguous
            and tiled_applies(np.float32, (sh, sw), Wp - kw + 1)):
        rows = np.empty((N, Hp, C, Wp), np.float32)
        serial_nogil(_direct_conv_tiled_kernel)(np.ascontiguousarray(x_pad), 0, 0, rows,
                                                _tiled_weights(W),
                                                np.ascontiguousarray(bias, np.float32), out,
                                                WIDE_AVAILABLE)
        return out
    serial_nogil(_direct_conv_kernel)(x_pad, W, bias, sh, sw, out)
    return out
