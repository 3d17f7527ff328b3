"""Implicit-GEMM convolution, channels last, for narrow channel counts (AVX2 + FMA).

The row-layout convolution (``kernels.im2col``, ``layers.conv.Conv2D``) writes
rows = im2row(x) (N·OH·OW × kh·kw·C: 82 MB a step for Cifar10_quick's conv2)
and hands it to BLAS. With only 32 output channels the products run at
45-55 GFLOP/s and the copies around them (im2row, row2im) cost another
8-12 ms a pass. The kernels here compute the same products straight from the
zero-padded channels-last input, with no rows matrix at all:

* forward (stride 1):
    y[n, a, b, o] = Σ_{i, j, c} x_pad[n, a + i, b + j, c] · W_r[(i·kw + j)·C + c, o]
* input gradient, the same kernel on dY padded by (kh-1-ph, kw-1-pw) with the
  flipped, transposed weights W_t[(i·kw + j)·O + o, c] = W[o, c, kh-1-i, kw-1-j]:
    dx[n, h, w, c] = Σ_{i, j, o} dY_pad[n, h + i, w + j, o] · W_t[(i·kw + j)·O + o, c]
  (so no row2im scatter);
* weight gradient:
    dW_r[(i·kw + j)·C + c, o] = Σ_{n, a, b} x_pad[n, a + i, b + j, c] · dY[n, a, b, o]

with W_r = ``im2col.weight_rows(W)`` ([kh][kw][C][O]). All three are one
register-tile micro-kernel (``_tile_avx2``), the GEMM micro-kernel of Goto &
van de Geijn (2008, "Anatomy of high-performance matrix multiplication") and
BLIS's 6×16 Haswell kernel (Van Zee & van de Geijn, 2015), whose "A panel" is
read in place from the padded image (implicit GEMM: Chetlur et al., 2014,
"cuDNN: efficient primitives for deep learning"):

    acc[p, 8v:8v+8] (+)= Σ_{q < n_outer} Σ_{t < n_inner}
        a[a_off + q·a_outer + t·a_inner + p·a_p] · b[b_off + q·b_outer + t·b_inner + 8v : +8]
    out[out_off + p·out_p + 8v : +8] = acc[p, 8v:8v+8]

for p < P ≤ 6 and v < V ≤ 2: up to 12 accumulators of 8 lanes in ymm registers
for the whole reduction, one broadcast of ``a`` per p and one 8-lane load of
``b`` per v for each (q, t), P·V FMAs. Numba does not keep such a block in
registers from Python loops, so the tile is written as LLVM IR through
``numba.extending.intrinsic``, like ``csr._forward_row_avx2`` and
``ternary_lut``; it is compiled only where Numba's target has AVX2 and FMA
(``simd.avx2_fma_target``), for float32, and for channel counts (the vector
side) that are multiples of 8. Elsewhere ``available`` is False and the layer
keeps im2row + BLAS.

Blocking: the forward (and input-gradient) tile is 6 consecutive output pixels of
a sample (in (a, b) order, across output rows; within one row, sitting 18's tiles, an
8-wide output gave tiles of 4, and conv3's forward and input gradient took 8.9 and
9.5 against 8.3 and 8.3 ms, ``bench/implicit_conv_tiles_ab.py``, one thread, CPU
time, under load) × 16 output channels, reducing over the kh kernel rows (outer) and
the kw·C contiguous values of each (inner); the weights are re-laid as contiguous
16-column panels (``panels``) so each tile streams them in order. The weight
gradient's tile is 6 consecutive (j, c) entries of one kernel row × 16 output
channels, reducing over about 64 output positions (whole output rows) at a time
(``WEIGHT_GRAD_POSITIONS``)
so dY and x_pad stay in L1 across the tiles. Both are parallel over samples (one
partial dW per thread). One thread, under load, Cifar10_quick's conv2: 84, 85 and
74 GFLOP/s for the three passes against 36-46 for im2row + BLAS and a 1024³ GEMM
at 82 (``bench/implicit_conv_geometry.py``).

Whole passes (``conv_nchw``, ``backward_nchw``, sitting 20; what ``Conv2D`` runs,
its ``IMPLICIT_FUSED`` switch deleted in sitting 22): the layer speaks NCHW, so
around the kernels sat a padding pass into channels last, the kernels, and a copy
pass back to NCHW (plus, in the backward, the padding
of dY, NumPy's bias sum, the weight re-layouts and the partials' sum), each over the
whole batch and each parallel kernel a thread hand-off of its own (Numba's workqueue
wakes every worker twice per parallel region). The fused drivers give each thread a
contiguous range of samples for the whole pass: it pads a sample, runs its tiles into
a small per-thread scratch (in L1/L2), and writes the sample's NCHW output (with the
bias) or input gradient, so a pass is one region; db is summed per plane in NumPy's
order inside the same region (``_pairwise_sum``), and the weights' panels and the dW
layout come from one small kernel each. The same tile calls on the same data, so the
same bits as the separate passes (``conv_rows``, ``weight_grad_rows``, kept as the
reference ``tests/test_conv3_20.py`` holds the whole passes to, bit for bit). One
thread, CPU time, under load (sitting 20's ``bench/conv3_fused_ab.py --threads 1``):
conv3 fwd + bwd 29.4 against 30.4 ms, conv2 55.1 against 56.8; the calling thread's
share at two threads 1.2 against 3.3 ms (conv3) and 1.0 against 2.1 (conv2); quiet,
2 threads, conv3 alone 23.3 against 28.1 ms, conv2 29.1 against 34.5 ms.

The NumPy twins (``*_numpy``) are the im2row path itself (a strided window view
of x_pad and one product), which defines what the kernels compute; the kernels
sum in another order (one FMA chain per lane), so they agree to float32
rounding: |kernel − twin| ≤ 1e-5·Σ|a·b| + 1e-6.
"""
from __future__ import annotations


import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ..threads import numba_thread_count
from .builds import njit_variant
from .simd import avx2_fma_target
from .softmax_xent import _pairwise_block

#: the kernels run only where this is True (Numba's target has AVX2 + FMA; tests
#: switch it off to hold the fallback)
SIMD_AVAILABLE = avx2_fma_target()

#: the widest register tile: output pixels (broadcast side) and 8-lane vectors
MAX_P, MAX_V = 6, 2
#: output positions the weight gradient sweeps at a time, in whole output rows
#: (``weight_grad_rows``: R = max(1, WEIGHT_GRAD_POSITIONS // OW); see
#: ``_weight_grad_rows``). Sitting 18 swept 4 rows: right for conv2 (OW = 16), but
#: on conv3's 8×8 outputs a tile then summed only 32 positions between loading and
#: storing its 12 accumulators; one process, one thread, CPU time, under load
#: (medians of 15): conv3 R = 8 10.9 against R = 4 11.8 ms, conv2 R = 2 / 4 / 8
#: 20.5 / 18.1 / 21.2 ms
WEIGHT_GRAD_POSITIONS = 64
#: samples the weight gradient sums in registers before adding them to its total
WEIGHT_GRAD_SAMPLES = 8


def _tile_codegen(with_table: bool, lanes: int = 8):
    """The LLVM IR of the tile, for ``_tile_avx2`` (rows a_p apart) or
    ``_tile_table_avx2`` (rows at a table's offsets); ``lanes`` floats a vector (8: ymm,
    16: zmm for ``direct_conv``'s ``_tile_avx512``). Each lane's sum is the same FMA
    chain in the same order at either width."""
    def codegen(context, builder, signature, args):
        out_ptr, a_ptr, b_ptr = [context.make_array(t)(context, builder, v).data
                                 for t, v in zip(signature.args[:3], args[:3])]
        i64 = ir.IntType(64)
        (out_off_v, a_off_v, b_off_v, P_v, V_v, n_outer_v, a_outer_v, b_outer_v, n_inner_v,
         a_inner_v, b_inner_v) = [
            context.cast(builder, v, t, types.int64)
            for v, t in zip(args[3:14], signature.args[3:14])]
        if with_table:
            table_ptr = context.make_array(signature.args[14])(context, builder, args[14]).data
            rest = args[15:]
        else:
            rest = args[14:]
        first = len(args) - len(rest)
        # a_p, or with a table the table's offset a_table_off
        a_p_v, out_p_v = [context.cast(builder, v, t, types.int64)
                          for v, t in zip(rest[:2], signature.args[first:first + 2])]
        acc_flag = context.cast(builder, rest[2], signature.args[first + 2], types.boolean)
        f32 = ir.FloatType()
        v8f = ir.VectorType(f32, lanes)
        fma = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(v8f, [v8f, v8f, v8f]), f"llvm.fma.v{lanes}f32")
        zero = ir.Constant(v8f, [0.0] * lanes)
        mask0 = ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes)

        def c64(k):
            return ir.Constant(i64, k)

        def vec_ptr(base, offset):
            return builder.bitcast(builder.gep(base, [offset]), v8f.as_pointer())

        def body(n_p, n_v):
            accs = [[cgutils.alloca_once(builder, v8f) for _ in range(n_v)] for _ in range(n_p)]
            for p in range(n_p):
                row = builder.add(out_off_v, builder.mul(c64(p), out_p_v))
                for v in range(n_v):
                    old = builder.load(vec_ptr(out_ptr, builder.add(row, c64(lanes * v))), align=4)
                    builder.store(builder.select(acc_flag, old, zero), accs[p][v])
            # the operands walked as pointers, advanced by their strides (with the
            # offsets recomputed from the loop indices, LLVM reloaded the strides from
            # the stack each step: 16 loads per 12 FMAs, load-port bound)
            f32p = f32.as_pointer()
            a_cur, b_cur = cgutils.alloca_once(builder, f32p), cgutils.alloca_once(builder, f32p)
            a_row, b_row = cgutils.alloca_once(builder, f32p), cgutils.alloca_once(builder, f32p)
            builder.store(builder.gep(a_ptr, [a_off_v]), a_row)
            builder.store(builder.gep(b_ptr, [b_off_v]), b_row)
            if with_table:
                a_offsets = [builder.load(builder.gep(table_ptr, [builder.add(a_p_v, c64(p))]))
                             for p in range(n_p)]
            else:       # (a table costs the weight gradient 15-20 %: constants fold here)
                a_offsets = [builder.mul(c64(p), a_p_v) for p in range(n_p)]
            with cgutils.for_range(builder, n_outer_v):
                a_q, b_q = builder.load(a_row), builder.load(b_row)
                builder.store(a_q, a_cur)
                builder.store(b_q, b_cur)
                with cgutils.for_range(builder, n_inner_v):
                    a_t, b_t = builder.load(a_cur), builder.load(b_cur)
                    bs = [builder.load(builder.bitcast(builder.gep(b_t, [c64(lanes * v)]),
                                                       v8f.as_pointer()), align=4)
                          for v in range(n_v)]
                    for p in range(n_p):
                        value = builder.load(builder.gep(a_t, [a_offsets[p]]))
                        one = builder.insert_element(ir.Constant(v8f, ir.Undefined), value,
                                                     c64(0))
                        splat = builder.shuffle_vector(one, ir.Constant(v8f, ir.Undefined),
                                                       mask0)
                        for v in range(n_v):
                            builder.store(builder.call(
                                fma, [splat, bs[v], builder.load(accs[p][v])]), accs[p][v])
                    builder.store(builder.gep(a_t, [a_inner_v]), a_cur)
                    builder.store(builder.gep(b_t, [b_inner_v]), b_cur)
                builder.store(builder.gep(a_q, [a_outer_v]), a_row)
                builder.store(builder.gep(b_q, [b_outer_v]), b_row)
            for p in range(n_p):
                row = builder.add(out_off_v, builder.mul(c64(p), out_p_v))
                for v in range(n_v):
                    builder.store(builder.load(accs[p][v]),
                                  vec_ptr(out_ptr, builder.add(row, c64(lanes * v))), align=4)

        for n_p in range(1, MAX_P + 1):
            for n_v in range(1, MAX_V + 1):
                hit = builder.and_(builder.icmp_signed("==", P_v, c64(n_p)),
                                   builder.icmp_signed("==", V_v, c64(n_v)))
                with builder.if_then(hit):
                    body(n_p, n_v)
        return context.get_dummy_value()

    return codegen


@intrinsic
def _tile_avx2(typingctx, out, a, b, out_off, a_off, b_off, P, V, n_outer, a_outer, b_outer,
               n_inner, a_inner, b_inner, a_p, out_p, accumulate):
    """The micro-kernel of the module docstring on flat float32 arrays (offsets and
    strides in elements), the P broadcast rows ``a_p`` apart. ``accumulate``: start
    from ``out`` instead of zero."""
    sig = types.void(out, a, b, out_off, a_off, b_off, P, V, n_outer, a_outer, b_outer,
                     n_inner, a_inner, b_inner, a_p, out_p, accumulate)
    return sig, _tile_codegen(False)


@intrinsic
def _tile_table_avx2(typingctx, out, a, b, out_off, a_off, b_off, P, V, n_outer, a_outer,
                     b_outer, n_inner, a_inner, b_inner, a_table, a_table_off, out_p,
                     accumulate):
    """``_tile_avx2`` with the P broadcast rows at ``a_off + a_table[a_table_off + p]``
    (int64): any P output pixels of a sample, e.g. across output rows."""
    sig = types.void(out, a, b, out_off, a_off, b_off, P, V, n_outer, a_outer, b_outer,
                     n_inner, a_inner, b_inner, a_table, a_table_off, out_p, accumulate)
    return sig, _tile_codegen(True)


# -- drivers (parallel over samples) ------------------------------------------------
def _conv_rows(x_pad, w_panels, O, kh, kw, OH, OW, y_rows, pixels):
    """y_rows (N·OH·OW, O) = the stride-1 correlation of x_pad (N, Hp, Wp, C) with
    W_r (kh·kw·C, O) held as ``panels(W_r)``, in (n, a, b, o) order. O % 8 == 0.

    The tiles are MAX_P consecutive output pixels of the sample in (a, b) order,
    across output rows, their windows at ``pixels[q] = (a·Wp + b)·C``. (Sitting 18's
    tiles of up to MAX_P pixels within one output row, 4 pixels and 8 accumulators
    instead of 12 on 8-wide outputs, summed each output in the same order: the same
    bits; their ``FLAT_TILES`` switch went in sitting 22.)"""
    N, Hp, Wp, C = x_pad.shape
    K = kh * kw * C
    Q = OH * OW
    xf, yf = x_pad.reshape(-1), y_rows.reshape(-1)
    run = kw * C
    for n in numba.prange(N):
        for ob in range(0, O, 8 * MAX_V):
            nv = min(MAX_V, (O - ob) // 8)
            width = 8 * nv
            for q0 in range(0, Q, MAX_P):
                _tile_table_avx2(yf, xf, w_panels, (n * Q + q0) * O + ob, n * Hp * Wp * C,
                                 K * ob, min(MAX_P, Q - q0), nv, kh, Wp * C, run * width,
                                 run, 1, width, pixels, q0, O, False)


def panels(w_rows: np.ndarray) -> np.ndarray:
    """W_r (K, O) -> flat panels: for each block of 16 columns (8 for a last odd
    block), W_r[:, ob:ob + width] contiguous, at offset K·ob. The forward tile then
    reads its weights as one contiguous stream (rows of O = 64 floats read 16 at a
    time made Cifar10_quick's conv3 run at 58 against 70 GFLOP/s packed; one
    process, one thread, under load)."""
    K, O = w_rows.shape
    out = np.empty(K * O, dtype=w_rows.dtype)
    for ob in range(0, O, 8 * MAX_V):
        width = min(8 * MAX_V, O - ob)
        out[K * ob:K * (ob + width)] = w_rows[:, ob:ob + width].reshape(-1)
    return out


def _weight_grad_sample(xf, gf, bf, pf, n, lo, hi, Hp, Wp, C, Gh, Gw, gh, gw, O, kh, kw,
                        OH, OW, R, S):
    """Sample n's share of one thread's weight gradient (the thread's samples are
    [lo, hi)), the tile loop of ``_weight_grad_rows`` and ``_backward_nchw``: R output
    rows at a time, every tile of dW_r (6 (j, c) entries of kernel row i × 16 output
    channels) sums x_pad's windows (``xf``, x_pad (N, Hp, Wp, C) flat) times dY
    (``gf``, g_pad (N, Gh, Gw, O) flat, dY at (gh, gw)) into the block ``bf`` (fresh at
    the first sample of each block of S); after a block's last sample (or the range's)
    the block is added to the thread's partial ``pf``."""
    run = kw * C
    n_m = (run + MAX_P - 1) // MAX_P
    for a0 in range(0, OH, R):
        rr = min(R, OH - a0)
        g0 = ((n * Gh + gh + a0) * Gw + gw) * O
        fresh = a0 == 0 and (n - lo) % S == 0     # the first tile of a block
        for i in range(kh):
            for ob in range(0, O, 8 * MAX_V):
                nv = min(MAX_V, (O - ob) // 8)
                for mt in range(n_m):
                    m0 = mt * MAX_P
                    _tile_avx2(bf, xf, gf, (i * run + m0) * O + ob,
                               ((n * Hp + i + a0) * Wp) * C + m0, g0 + ob,
                               min(MAX_P, run - m0), nv, rr, Wp * C, Gw * O, OW, C, O,
                               1, O, not fresh)
    if (n - lo) % S == S - 1 or n == hi - 1:
        for e in range(pf.size):
            pf[e] += bf[e]


# inlined into both drivers at Numba's IR level, so each compiles the loop it had before
_weight_grad_sample = numba.njit(cache=True, inline="always")(_weight_grad_sample)


def _weight_grad_rows(x_pad, g_pad, gh, gw, kh, kw, OH, OW, parts, block, R, S):
    """parts[t] (kh·kw·C, O) = Σ over the t-th range of samples of
    x_pad-windowsᵀ · dY, dY = g_pad[:, gh:gh + OH, gw:gw + OW, :] (O % 8 == 0), R
    output rows at a time: every tile of dW_r sweeps the same R·OW positions of dY
    and x_pad while they are in L1 (the whole sample at once: 48 KB a sweep for
    conv2, 56 against 78 GFLOP/s at R = 4; one process, one thread, under load).
    The tiles sum S samples into ``block[t]`` and each block is then added to
    ``parts[t]``: one float32 chain of S·OH·OW terms and one of N / (S·T) instead
    of a chain over all N·OH·OW / T positions (Cifar10_quick's conv1 shape: 102,400
    terms, an error of 1e-5 relative)."""
    N, Hp, Wp, C = x_pad.shape
    _, Gh, Gw, O = g_pad.shape
    T = parts.shape[0]
    xf, gf = x_pad.reshape(-1), g_pad.reshape(-1)
    for part in numba.prange(T):
        pf = parts[part].reshape(-1)
        bf = block[part].reshape(-1)
        pf[:] = 0
        lo, hi = part * N // T, (part + 1) * N // T
        for n in range(lo, hi):
            _weight_grad_sample(xf, gf, bf, pf, n, lo, hi, Hp, Wp, C, Gh, Gw, gh, gw, O, kh,
                                kw, OH, OW, R, S)


# -- whole passes in one parallel region (what Conv2D runs) -------------------------
def _conv_nchw(x, ph, pw, x_pad, w_panels, bias, has_bias, kh, kw, scratch, y, pixels):
    """The whole forward of a sample range per thread, NCHW in and out: for each
    sample n, x[n] (C, H, W) into the interior of x_pad[n] (Hp, Wp, C; its border
    stays zero), the flat tiles of ``_conv_rows`` into this thread's ``scratch``
    (OH·OW, O; in L1/L2), then y[n, o, q] = scratch[q, o] + bias[o] (y is (N, O,
    OH·OW)). The same tile calls on the same data as ``pad_channels_last`` →
    ``_conv_rows`` (flat) → ``rows_to_nchw``, so the same bits, in one parallel
    region instead of three passes (two of them over the whole batch in memory)
    and two thread hand-offs."""
    N, C, H, W = x.shape
    _, Hp, Wp, _ = x_pad.shape
    _, O, Q = y.shape
    T = scratch.shape[0]
    K = kh * kw * C
    run = kw * C
    xf = x_pad.reshape(-1)
    for part in numba.prange(T):
        sf = scratch[part]
        lo, hi = part * N // T, (part + 1) * N // T
        for n in range(lo, hi):
            x_n, dst_n = x[n], x_pad[n]
            for h in range(H):
                for w in range(W):
                    row = dst_n[h + ph, w + pw]
                    for c in range(C):
                        row[c] = x_n[c, h, w]
            for ob in range(0, O, 8 * MAX_V):
                nv = min(MAX_V, (O - ob) // 8)
                width = 8 * nv
                for q0 in range(0, Q, MAX_P):
                    _tile_table_avx2(sf, xf, w_panels, q0 * O + ob, n * Hp * Wp * C, K * ob,
                                     min(MAX_P, Q - q0), nv, kh, Wp * C, run * width, run, 1,
                                     width, pixels, q0, O, False)
            y_n = y[n]
            for o in range(O):
                dst = y_n[o]
                if has_bias:
                    b = bias[o]
                    for q in range(Q):
                        dst[q] = sf[q * O + o] + b
                else:
                    for q in range(Q):
                        dst[q] = sf[q * O + o]


@numba.njit(cache=True)
def _pairwise_sum(a, lo, n):
    """Σ a[lo:lo + n] in float32 in NumPy's order (``pairwise_sum`` of its
    loops_utils: up to 128 terms ``softmax_xent._pairwise_block``, the loss's copy of
    it; above that two halves split at a multiple of 8), so ``grad.sum(axis=(0, 2,
    3))`` comes out bit for bit as NumPy's: for each sample, in order, out[o] += this
    sum over the plane (NumPy 1.x/2.x's reduction loop for more than one channel; with
    one channel it merges the planes into one sum, a case the kernels, O % 8 == 0,
    never see)."""
    if n <= 128:
        return _pairwise_block(a, lo, n, np.float32(0.0))
    n2 = n // 2
    n2 -= n2 % 8
    return _pairwise_sum(a, lo, n2) + _pairwise_sum(a, lo + n2, n - n2)


def _backward_nchw(grad, qh, qw, x_pad, g_pad, kh, kw, parts, block, R, S, wt_panels,
                   scratch, dx, pixels, input_grad, plane_sums, with_bias):
    """The whole backward of a sample range per thread (thread t: samples
    [t·N/T, (t+1)·N/T), as ``_weight_grad_rows``): for each sample n, grad[n] (O,
    OH, OW) into the interior of g_pad[n] at (qh, qw) (border zero); its weight-
    gradient tiles (``_weight_grad_rows``'s, the same blocks of S samples, into
    ``parts[t]``); with ``with_bias`` each plane's sum Σ_{a,b} dY[n, o, a, b] into
    plane_sums[n, o] (``_pairwise_sum``); and with ``input_grad`` the input gradient's flat tiles
    (``_conv_rows`` of g_pad with the flipped weights ``wt_panels``) into
    ``scratch[t]`` (H·W, C), written to dx[n, c, p] (dx is (N, C, H·W)). Per
    output the same sums in the same order as ``pad_channels_last`` →
    ``_weight_grad_rows`` / ``_conv_rows`` → ``rows_to_nchw``: the same bits, in
    one parallel region instead of four."""
    N, O, OH, OW = grad.shape
    _, Hp, Wp, C = x_pad.shape
    _, Gh, Gw, _ = g_pad.shape
    T = parts.shape[0]
    Hx, Wx = Gh - kh + 1, Gw - kw + 1
    P = Hx * Wx
    Kt = kh * kw * O
    run_t = kw * O
    xf, gf = x_pad.reshape(-1), g_pad.reshape(-1)
    for part in numba.prange(T):
        pf = parts[part].reshape(-1)
        bf = block[part].reshape(-1)
        sf = scratch[part]
        pf[:] = 0
        lo, hi = part * N // T, (part + 1) * N // T
        for n in range(lo, hi):
            g_n, dst_n = grad[n], g_pad[n]
            if with_bias:
                flat_n = g_n.reshape(-1)
                for o in range(O):
                    plane_sums[n, o] = _pairwise_sum(flat_n, o * OH * OW, OH * OW)
            for a in range(OH):
                for b in range(OW):
                    row = dst_n[a + qh, b + qw]
                    for o in range(O):
                        row[o] = g_n[o, a, b]
            _weight_grad_sample(xf, gf, bf, pf, n, lo, hi, Hp, Wp, C, Gh, Gw, qh, qw, O, kh,
                                kw, OH, OW, R, S)
            if not input_grad:
                continue
            for cb in range(0, C, 8 * MAX_V):
                nv = min(MAX_V, (C - cb) // 8)
                width = 8 * nv
                for q0 in range(0, P, MAX_P):
                    _tile_table_avx2(sf, gf, wt_panels, q0 * C + cb, n * Gh * Gw * O, Kt * cb,
                                     min(MAX_P, P - q0), nv, kh, Gw * O, run_t * width, run_t,
                                     1, width, pixels, q0, C, False)
            dx_n = dx[n]
            for c in range(C):
                dst = dx_n[c]
                for p in range(P):
                    dst[p] = sf[p * C + c]


_BUILDS = {}


def _build(fn, parallel: bool):
    """``fn`` compiled with or without ``parallel=True``, each build under its own
    name (``fn.__qualname__`` + ``_parallel`` / ``_serial``) and so its own on-disk
    cache. Numba's cache index is keyed by the function's qualified name, source
    file and signature, not by the ``parallel`` flag: built from the same function
    object, whichever build was compiled first in a fresh cache was loaded for both
    afterwards. Sitting 18's kernels were built that way, so after any one-thread run
    (the test suite runs with NUMBA_NUM_THREADS=1) every later two-thread run ran
    the serial build: all of a call's work on the calling thread (per-thread CPU
    time from /proc/self/task/*/schedstat, ``bench/implicit_conv_threads.py``)."""
    key = (fn.__name__, parallel)
    kernel = _BUILDS.get(key)
    if kernel is None:
        suffix = "_parallel" if parallel else "_serial"
        kernel = _BUILDS[key] = njit_variant(fn, suffix, parallel=parallel)
    return kernel


def _threads() -> int:
    return max(1, numba_thread_count())     # numba.get_num_threads() without its locks


def available(dtype, vector_channels: int) -> bool:
    """Whether the kernels run for data of ``dtype`` with ``vector_channels`` on the
    8-lane side (the output channels of a forward, the input channels of an input
    gradient): float32, a multiple of 8, AVX2 + FMA in Numba's target."""
    return (SIMD_AVAILABLE and np.dtype(dtype) == np.float32 and vector_channels > 0
            and vector_channels % 8 == 0)


def _check(x_pad, other, kh, kw, vector_channels):
    """Clear errors at the boundary: the kernels index raw memory, so nothing
    outside these shapes may reach them."""
    if x_pad.dtype != np.float32 or other.dtype != np.float32:
        raise TypeError(f"the implicit-GEMM kernels take float32, got {x_pad.dtype} and "
                        f"{other.dtype}")
    if x_pad.ndim != 4 or x_pad.shape[1] < kh or x_pad.shape[2] < kw or min(kh, kw) < 1:
        raise ValueError(f"expected a padded input x_pad (N, Hp, Wp, C) with Hp >= {kh} and "
                         f"Wp >= {kw}, got {x_pad.shape}")
    if vector_channels % 8:
        raise ValueError(f"the implicit-GEMM kernels need a multiple of 8 channels on the "
                         f"vector side, got {vector_channels}")


def _require_simd():
    if not SIMD_AVAILABLE:
        raise RuntimeError("the implicit-GEMM kernels need AVX2 + FMA in Numba's target "
                           "(and JIT compilation); use the im2row path")


# -- public functions ----------------------------------------------------------------
def conv_rows(x_pad: np.ndarray, w_rows: np.ndarray, kernel, out: np.ndarray | None = None,
              parallel: bool = True) -> np.ndarray:
    """Stride-1 correlation of the padded channels-last x_pad (N, Hp, Wp, C) with
    w_rows (kh·kw·C, O): y_rows (N·OH·OW, O), OH = Hp - kh + 1, OW = Wp - kw + 1,
    in (n, a, b, o) order (the rows path's ``im2row(x) · W_r``). Kernel; split over
    samples on Numba's threads when ``parallel`` and more than one thread is set
    (each output is the same sum either way)."""
    kh, kw = kernel
    w_rows = np.asarray(w_rows)
    if w_rows.ndim != 2:
        raise ValueError(f"expected w_rows (kh·kw·C, O), got shape {w_rows.shape}")
    _check(x_pad, w_rows, kh, kw, w_rows.shape[1])
    N, Hp, Wp, C = x_pad.shape
    if w_rows.shape[0] != kh * kw * C:
        raise ValueError(f"expected w_rows ({kh}·{kw}·{C}, O) for x_pad {x_pad.shape}, got "
                         f"{w_rows.shape}")
    OH, OW = Hp - kh + 1, Wp - kw + 1
    x_pad = np.ascontiguousarray(x_pad)
    O = w_rows.shape[1]
    if out is None:
        out = np.empty((N * OH * OW, O), dtype=np.float32)
    elif (out.shape != (N * OH * OW, O) or out.dtype != np.float32
          or not out.flags.c_contiguous):
        raise ValueError(f"out must be a C-contiguous float32 array of shape "
                         f"{(N * OH * OW, O)}, got {out.dtype} {out.shape}")
    _require_simd()
    a, b = np.divmod(np.arange(OH * OW, dtype=np.int64), OW)
    _build(_conv_rows, parallel and _threads() > 1 and N > 1)(
        x_pad, panels(w_rows), O, kh, kw, OH, OW, out, (a * Wp + b) * C)
    return out


def weight_grad_rows(x_pad: np.ndarray, g_pad: np.ndarray, kernel, offset=(0, 0),
                     parallel: bool = True) -> np.ndarray:
    """dW_r (kh·kw·C, O) = Σ_{n,a,b} window(x_pad)[n, a, b]ᵀ · dY[n, a, b] for the
    stride-1 correlation, dY = g_pad[:, gh:gh + OH, gw:gw + OW, :] with (gh, gw) =
    ``offset`` (so the padded dY of the input gradient serves as is), OH = Hp - kh + 1.
    Kernel; with ``parallel`` and more than one Numba thread, the samples are split
    over the threads, one partial sum per thread, added at the end."""
    kh, kw = kernel
    _check(x_pad, g_pad, kh, kw, g_pad.shape[-1] if g_pad.ndim else 0)
    N, Hp, Wp, C = x_pad.shape
    OH, OW = Hp - kh + 1, Wp - kw + 1
    gh, gw = offset
    if (g_pad.ndim != 4 or g_pad.shape[0] != N or min(gh, gw) < 0
            or g_pad.shape[1] < gh + OH or g_pad.shape[2] < gw + OW):
        raise ValueError(f"dY {g_pad.shape} at offset {offset} does not hold the "
                         f"{N}×{OH}×{OW} output of x_pad {x_pad.shape}")
    O = g_pad.shape[3]
    _require_simd()
    threads = min(_threads(), N) if parallel else 1
    parts = np.empty((threads, kh * kw * C, O), dtype=np.float32)
    block = np.empty_like(parts)
    _build(_weight_grad_rows, threads > 1)(np.ascontiguousarray(x_pad),
                                           np.ascontiguousarray(g_pad), gh, gw, kh, kw, OH,
                                           OW, parts, block,
                                           max(1, WEIGHT_GRAD_POSITIONS // OW),
                                           WEIGHT_GRAD_SAMPLES)
    dW = parts[0]
    for t in range(1, threads):
        dW += parts[t]
    return dW


@numba.njit(cache=True)
def _weight_panels(W, flip, out):
    """out = ``panels(weight_rows(W))`` (flip False) or
    ``panels(flipped_weight_rows(W))`` (flip True) straight from W (O, C, kh, kw):
    one pass instead of a transposing copy and a panel copy. Each panel row (up
    to 16 columns, one 64-byte line) is written whole from up to 16 runs of kh·kw
    contiguous weights (element by element in either order it cost ~100 µs for
    conv3's 51,200 weights, about what the two NumPy copies cost)."""
    O, C, kh, kw = W.shape
    rows_per, cols = (O, C) if flip else (C, O)
    K = kh * kw * rows_per
    taps = kh * kw
    wf = W.reshape(-1)
    # flat offsets (4-D indexing cost ~1.4 ns an element here): W[o, c, i, j] is at
    # (o·C + c)·taps + i·kw + j; along a panel row the column steps by C·taps (columns
    # are output channels) or by taps (columns are input channels, flipped)
    step = taps if flip else C * taps
    for ob in range(0, cols, 8 * MAX_V):
        width = min(8 * MAX_V, cols - ob)
        for r in range(rows_per):
            src0 = (r * C + ob) * taps if flip else (ob * C + r) * taps
            for i in range(kh):
                for j in range(kw):
                    if flip:        # W_t[(i·kw + j)·O + o, c] = W[o, c, kh-1-i, kw-1-j]
                        dst = K * ob + (((kh - 1 - i) * kw + (kw - 1 - j)) * rows_per + r) * width
                    else:           # W_r[(i·kw + j)·C + c, o] = W[o, c, i, j]
                        dst = K * ob + ((i * kw + j) * rows_per + r) * width
                    src = src0 + i * kw + j
                    for t in range(width):
                        out[dst + t] = wf[src + t * step]


@numba.njit(cache=True)
def _finish_grads(parts, plane_sums, with_bias, dW, db):
    """dW (O, C, kh, kw) = Σ_t parts[t] (kh·kw·C, O), added in t order as
    ``weight_grad_rows`` does, written in W's layout (``weight_from_rows``); db[o] =
    Σ_n plane_sums[n, o] in n order (NumPy's ``grad.sum(axis=(0, 2, 3))``)."""
    O, C, kh, kw = dW.shape
    T = parts.shape[0]
    if T > 1:           # the partials added in place, in order, rows read in order
        total = parts[0]
        for t in range(1, T):
            part = parts[t]
            for r in range(total.shape[0]):
                for o in range(O):
                    total[r, o] += part[r, o]
    total = parts[0]
    for i in range(kh):
        for j in range(kw):
            for c in range(C):
                src = total[(i * kw + j) * C + c]
                for o in range(O):
                    dW[o, c, i, j] = src[o]
    if with_bias:
        for o in range(O):
            db[o] = 0
        for n in range(plane_sums.shape[0]):
            for o in range(O):
                db[o] += plane_sums[n, o]


def _check_buffer(name, buf, shape):
    if (not isinstance(buf, np.ndarray) or buf.shape != shape or buf.dtype != np.float32
            or not buf.flags.c_contiguous):
        got = (f"{buf.dtype} {buf.shape}" if isinstance(buf, np.ndarray) else type(buf).__name__)
        raise ValueError(f"{name} must be a C-contiguous float32 array of shape {shape} with a "
                         f"zero border, got {got}")


def conv_nchw(x: np.ndarray, W: np.ndarray, bias, pads, x_pad: np.ndarray,
              parallel: bool = True) -> np.ndarray:
    """The stride-1 forward from NCHW to NCHW in one pass: y (N, O, OH, OW) =
    rows_to_nchw(conv_rows(pad_channels_last(x, ph, pw), weight_rows(W))) + bias[o],
    the same bits (``_conv_nchw``), W (O, C, kh, kw), with x's padded channels-last
    copy written into ``x_pad`` (N, H + 2ph, W + 2pw, C), whose border must be zero
    (the interior is overwritten; the backward reads it). ``bias``: (O,) or None.
    Kernel; with ``parallel`` and more than one Numba thread, one contiguous range of
    samples per thread."""
    ph, pw = pads
    x = np.ascontiguousarray(x)
    W = np.ascontiguousarray(W)
    if x.ndim != 4 or W.ndim != 4 or W.shape[1] != x.shape[1]:
        raise ValueError(f"expected x (N, C, H, W) and W (O, C, kh, kw), got {x.shape} and "
                         f"{W.shape}")
    N, C, H, Wd = x.shape
    O, _, kh, kw = W.shape
    _check_buffer("x_pad", x_pad, (N, H + 2 * ph, Wd + 2 * pw, C))
    _check(x_pad, x, kh, kw, O)
    if W.dtype != np.float32:
        raise TypeError(f"the implicit-GEMM kernels take float32, got W {W.dtype}")
    Hp, Wp = H + 2 * ph, Wd + 2 * pw
    OH, OW = Hp - kh + 1, Wp - kw + 1
    _require_simd()
    has_bias = bias is not None
    b = (np.ascontiguousarray(bias, dtype=np.float32) if has_bias
         else np.zeros(O, dtype=np.float32))
    threads = min(_threads(), N) if parallel else 1
    y = np.empty((N, O, OH, OW), dtype=np.float32)
    a, c = np.divmod(np.arange(OH * OW, dtype=np.int64), OW)
    scratch = np.empty((threads, OH * OW * O), dtype=np.float32)
    w_panels = np.empty(W.size, dtype=np.float32)
    _weight_panels(W, False, w_panels)
    _build(_conv_nchw, threads > 1)(x, ph, pw, x_pad, w_panels, b, has_bias, kh, kw,
                                    scratch, y.reshape(N, O, OH * OW), (a * Wp + c) * C)
    return y


def backward_nchw(grad: np.ndarray, x_pad: np.ndarray, W: np.ndarray, pads, g_pad: np.ndarray,
                  bias: bool = True, input_grad: bool = True, parallel: bool = True):
    """(dW, db, dx) of the stride-1 layer in one pass from the NCHW dY (N, O, OH, OW):
    dW (O, C, kh, kw) = ``weight_from_rows(weight_grad_rows(x_pad, g_pad, kernel, (qh,
    qw)))``, db = ``dY.sum(axis=(0, 2, 3))`` (None without ``bias``) and dx (N, C, H, W)
    = ``rows_to_nchw(conv_rows(g_pad, flipped_weight_rows(W)))`` (None without
    ``input_grad``), g_pad = dY zero-padded channels-last by (qh, qw) = (kh-1-ph,
    kw-1-pw) into the buffer ``g_pad`` (N, OH + 2qh, OW + 2qw, O), whose border must be
    zero. The same bits as those calls at the same thread count (``_backward_nchw``,
    ``_finish_grads``); with ``parallel`` and more than one Numba thread, one range of
    samples per thread."""
    W = np.ascontiguousarray(W)
    if W.ndim != 4:
        raise ValueError(f"expected W (O, C, kh, kw), got shape {W.shape}")
    O, C, kh, kw = W.shape
    ph, pw = pads
    grad = np.ascontiguousarray(grad)
    _check(x_pad, grad, kh, kw, O)
    N, Hp, Wp, Cx = x_pad.shape
    OH, OW = Hp - kh + 1, Wp - kw + 1
    H, Wd = Hp - 2 * ph, Wp - 2 * pw
    if Cx != C or grad.shape != (N, O, OH, OW):
        raise ValueError(f"expected dY {(N, O, OH, OW)} and x_pad (N, Hp, Wp, {C}) for W "
                         f"{W.shape}, got dY {grad.shape} and x_pad {x_pad.shape}")
    qh, qw = kh - 1 - ph, kw - 1 - pw
    if min(qh, qw) < 0:
        raise ValueError(f"padding {pads} exceeds kernel - 1 for kernel {(kh, kw)}")
    _check_buffer("g_pad", g_pad, (N, OH + 2 * qh, OW + 2 * qw, O))
    if input_grad and C % 8:
        raise ValueError(f"the input gradient needs a multiple of 8 input channels, got {C}")
    if W.dtype != np.float32:
        raise TypeError(f"the implicit-GEMM kernels take float32, got W {W.dtype}")
    _require_simd()
    threads = min(_threads(), N) if parallel else 1
    parts = np.empty((threads, kh * kw * C, O), dtype=np.float32)
    block = np.empty_like(parts)
    Gw = OW + 2 * qw
    if input_grad:
        dx = np.empty((N, C, H, Wd), dtype=np.float32)
        wt = np.empty(W.size, dtype=np.float32)
        _weight_panels(W, True, wt)
        scratch = np.empty((threads, H * Wd * C), dtype=np.float32)
        a, b = np.divmod(np.arange(H * Wd, dtype=np.int64), Wd)
        pixels = (a * Gw + b) * O
    else:   # (typed placeholders: the kernel reads none of them)
        dx = np.empty((N, C, 1, 1), dtype=np.float32)
        wt = np.empty(8, dtype=np.float32)
        scratch = np.empty((threads, 8), dtype=np.float32)
        pixels = np.zeros(1, dtype=np.int64)
    plane_sums = np.empty((N, O) if bias else (1, 1), dtype=np.float32)
    _build(_backward_nchw, threads > 1)(
        grad, qh, qw, x_pad, g_pad, kh, kw, parts, block,
        max(1, WEIGHT_GRAD_POSITIONS // OW), WEIGHT_GRAD_SAMPLES, wt,
        scratch, dx.reshape(N, C, -1), pixels, input_grad, plane_sums, bias)
    dW = np.empty_like(W)
    db = np.empty(O, dtype=np.float32) if bias else np.empty(1, dtype=np.float32)
    _finish_grads(parts, plane_sums, bias, dW, db)
    return dW, (db if bias else None), (dx if input_grad else None)


def flipped_weight_rows(W: np.ndarray) -> np.ndarray:
    """W (O, C, kh, kw) -> W_t (kh·kw·O, C), W_t[(i·kw + j)·O + o, c] = W[o, c, kh-1-i, kw-1-j]:
    the weights of the input gradient as a correlation of the padded dY."""
    return np.ascontiguousarray(W[:, :, ::-1, ::-1].transpose(2, 3, 0, 1)).reshape(
        -1, W.shape[1])


# -- NumPy twins (the im2row path) ----------------------------------------------------
def _windows(x_pad, kh, kw):
    N, Hp, Wp, C = x_pad.shape
    OH, OW = Hp - kh + 1, Wp - kw + 1
    sN, sH, sW, sC = x_pad.strides
    return np.lib.stride_tricks.as_strided(
        x_pad, (N, OH, OW, kh, kw, C), (sN, sH, sW, sH, sW, sC), writeable=False)


def conv_rows_numpy(x_pad, w_rows, kernel):
    """Twin of ``conv_rows``: im2row of x_pad (a window view, one copy) · w_rows."""
    kh, kw = kernel
    N, Hp, Wp, C = x_pad.shape
    rows = np.ascontiguousarray(_windows(x_pad, kh, kw)).reshape(-1, kh * kw * C)
    return rows @ w_rows


def weight_grad_rows_numpy(x_pad, g_pad, kernel, offset=(0, 0)):
    """Twin of ``weight_grad_rows``: rowsᵀ · dY_r."""
    kh, kw = kernel
    N, Hp, Wp, C = x_pad.shape
    OH, OW = Hp - kh + 1, Wp - kw + 1
    gh, gw = offset
    rows = np.ascontiguousarray(_windows(x_pad, kh, kw)).reshape(-1, kh * kw * C)
    g = np.ascontiguousarray(g_pad[:, gh:gh + OH, gw:gw + OW, :]).reshape(-1, g_pad.shape[3])
    return rows.T @ g


def conv_nchw_numpy(x, W, bias, pads):
    """Twin of ``conv_nchw``: (y, x_pad) from the padding, ``conv_rows_numpy`` and the
    NCHW copy with the bias, as three NumPy steps."""
    from .im2col import weight_rows
    from .layout import pad_channels_last_numpy, rows_to_nchw_numpy
    x_pad = pad_channels_last_numpy(x, *pads)
    N, Hp, Wp, C = x_pad.shape
    kernel = W.shape[2:]
    OH, OW = Hp - kernel[0] + 1, Wp - kernel[1] + 1
    y_rows = conv_rows_numpy(x_pad, weight_rows(W), kernel)
    return rows_to_nchw_numpy(y_rows, N, OH, OW, bias), x_pad


def backward_nchw_numpy(grad, x_pad, W, pads, bias=True, input_grad=True):
    """Twin of ``backward_nchw``: (dW, db, dx) from the padded dY, the two im2row
    products, NumPy's sum and the NCHW copy."""
    from .im2col import weight_from_rows
    from .layout import pad_channels_last_numpy, rows_to_nchw_numpy
    O, C, kh, kw = W.shape
    qh, qw = kh - 1 - pads[0], kw - 1 - pads[1]
    g_pad = pad_channels_last_numpy(grad, qh, qw)
    dW = weight_from_rows(weight_grad_rows_numpy(x_pad, g_pad, (kh, kw), (qh, qw)), W.shape)
    db = grad.sum(axis=(0, 2, 3)) if bias else None
    if not input_grad:
        return dW, db, None
    N, Hp, Wp, _ = x_pad.shape
    dx_rows = conv_rows_numpy(g_pad, flipped_weight_rows(W), (kh, kw))
    return dW, db, rows_to_nchw_numpy(dx_rows, N, Hp - 2 * pads[0], Wp - 2 * pads[1])
