"""Probe of two cache-blocking ideas for the sparse layer's padded float32 kernels (issue #11,
sitting 19): measured, and NOT adopted — kept here so the figures can be reproduced.

    python bench/sparse_blocking_probe.py              # 1 thread, thread clock, ~1 min

Both kernels are checked against the library's padded kernels before anything is timed
(the blocked forward bit for bit; the grouped backward's dx bit for bit and its weight
gradient within float32 rounding), then each candidate is timed in ONE process,
interleaved, ``--rounds`` calls each (serial builds, 784→500, γ = 0.04, batch 100):

* ``fwd blocked/N``: the forward with xᵀ cut into N column blocks and passes of 4 vectors,
  so that a panel (784/N columns × 32 samples) fits L1 (N = 5: 20 kB), every row's
  entries split at the block boundaries (``block_pointers``) and its partial sums stored
  and reloaded between blocks (one FMA chain per lane in CSR order: the same numbers).
  Under load (sitting 19, p5, bench/results/sparse_blocking_probe_s19_load.log): padded
  96 µs; blocked/1 106, /2 119, /3 138, /5 183 — each block adds ~20 µs, ~28 cycles per (row, block, pass) visit of ~6
  entries: the short runs' loop exits and FMA chains cost more than L1 saves.
* ``bwd grouped``: the fused backward with column c's entries taken four at a time, one
  sweep over the samples per group (x[c] loaded once per group, four independent 8-lane
  dot products, one transpose-and-add reduction per group instead of a horizontal sum per
  entry and pass). Under load (p5): with dx 171 against 175 µs, without dx 116 against
  113: no clear gain (and the weight gradient's rounding changes) — with every gradient row in L1 the
  padded backward was no faster either way, so neither the per-entry chain nor L2 alone
  bounds it.

Lives in bench/ because it is a probe: the library keeps the padded kernels.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from minidnn.kernels.csr import (INDEX_DTYPE, _array_pointers, _int_args,  # noqa: E402
                                 _ir_helpers, _prefetch_helper,
                                 _store_row_vectors)

BLOCK_L1_BYTES = 24 * 1024

#: most 8-lane vectors per pass of the blocked forward (one broadcast + one L1 load per
#: FMA; more vectors would shrink the column blocks, and with them the runs of entries
#: between two accumulator loads and stores)
_BLOCKED_FORWARD_PASS_REGS = 4


def n_panel_blocks(n_dense_rows: int, pass_vectors: int, l1_bytes: int = None) -> int:
    """Blocks the dense operand's rows are cut into so that a panel of them × a pass of
    ``pass_vectors`` 8-lane float32 vectors fits ``l1_bytes`` (``BLOCK_L1_BYTES``)."""
    l1_bytes = BLOCK_L1_BYTES if l1_bytes is None else int(l1_bytes)
    panel = int(n_dense_rows) * int(pass_vectors) * 32
    return max(1, -(-panel // max(1, l1_bytes)))


def block_pointers(indptr, indices, n_cols: int, n_blocks: int) -> np.ndarray:
    """(n_rows, n_blocks + 1) int32: ``bp[r, i]`` is the first entry of row r whose column is
    ≥ i·n_cols // n_blocks, so row r's entries of column block i are ``bp[r, i]:bp[r, i+1]``
    (``bp[r, 0] = indptr[r]``, ``bp[r, n_blocks] = indptr[r+1]``). Needs sorted indices."""
    indptr = np.asarray(indptr, dtype=np.int64)
    n_rows, n_cols, n_blocks = len(indptr) - 1, int(n_cols), int(n_blocks)
    rows = np.repeat(np.arange(n_rows, dtype=np.int64), np.diff(indptr))
    keys = rows * n_cols + np.asarray(indices, dtype=np.int64)     # sorted: CSR order
    bounds = np.arange(n_blocks + 1, dtype=np.int64) * n_cols // n_blocks
    targets = np.arange(n_rows, dtype=np.int64)[:, None] * n_cols + bounds[None, :]
    bp = np.searchsorted(keys, targets.reshape(-1), side="left")
    return bp.astype(INDEX_DTYPE).reshape(n_rows, n_blocks + 1)


def _load_row_vectors(builder, helpers, base_p, row, j, k_v, n):
    # the n vectors base[row + j + 8m ...]; the one that crosses k loaded masked (its
    # lanes ≥ k read as 0 and are never stored)
    f32, i64, v8f, fma, vec_ptr, broadcast, masks, masked_load, masked_store = helpers
    values = []
    for m in range(n):
        jn = builder.add(j, ir.Constant(i64, 8 * m))
        where = builder.add(row, jn)
        slot = cgutils.alloca_once(builder, v8f)
        with builder.if_else(builder.icmp_signed("<=", builder.add(jn, ir.Constant(i64, 8)),
                                                 k_v)) as (whole, part):
            with whole:
                builder.store(builder.load(vec_ptr(base_p, where), align=4), slot)
            with part:
                builder.store(masked_load(base_p, where, masks(builder.sub(k_v, jn))), slot)
        values.append(builder.load(slot))
    return values


def _switch_on_size(builder, size, most, emit):
    # emit(n) for the case size == n, 1 ≤ n ≤ most (one code path per pass width)
    i64 = ir.IntType(64)
    done = builder.append_basic_block("size_done")
    switch = builder.switch(size, done)
    for n in range(1, most + 1):
        block = builder.append_basic_block(f"size_{n}")
        switch.add_case(ir.Constant(i64, n), block)
        builder.position_at_end(block)
        emit(n)
        builder.branch(done)
    builder.position_at_end(done)


@intrinsic
def _forward_block_padded_avx2(typingctx, out, dense, indices, data, bias, bp, n_rows, stride,
                               cb, first, last, j, nv, k, ld, ld_out):
    """For every row r of out (n_rows, ld_out): the nv vectors of samples j.. (j + 8·nv ≤
    ld; stored only below k) of

        out[r, j:] (+)= Σ_{bp[r·stride + cb] ≤ p < bp[r·stride + cb + 1]} data[p] · dense[indices[p], j:]

    from 0 when ``first``, else from out's stored partial sums; with ``last`` and a bias
    (length > 0) the bias is added to the finished sum before it is stored. dense is a
    padded (n_cols, ld) float32 buffer; one FMA chain per lane, entries in CSR order."""
    sig = types.void(out, dense, indices, data, bias, bp, n_rows, stride, cb, first, last, j,
                     nv, k, ld, ld_out)

    def codegen(context, builder, signature, args):
        out_p, dense_p, idx_p, data_p, bias_p, bp_p = _array_pointers(context, builder,
                                                                      signature, args, 6)
        helpers = _ir_helpers(context, builder)
        f32, i64, v8f, fma, vec_ptr, broadcast, masks, masked_load, masked_store = helpers
        rows_total, stride_v, cb_v, first_v, last_v, j_v, nv_v, k_v, ld_v, ld_out_v = \
            _int_args(context, builder, signature, args, 6)
        n_bias = cgutils.unpack_tuple(builder, context.make_array(signature.args[4])(
            context, builder, args[4]).shape, 1)[0]
        C = lambda v: ir.Constant(i64, v)                       # noqa: E731
        is_first = builder.icmp_signed("!=", first_v, C(0))
        add_bias = builder.and_(builder.icmp_signed("!=", last_v, C(0)),
                                builder.icmp_signed(">", n_bias, C(0)))
        zero = ir.Constant(v8f, [0.0] * 8)

        def emit(n_regs):
            with cgutils.for_range(builder, rows_total) as rows:
                r = rows.index
                row = builder.mul(r, ld_out_v)
                at_bp = builder.add(builder.mul(r, stride_v), cb_v)
                p0 = builder.zext(builder.load(builder.gep(bp_p, [at_bp])), i64)
                p1 = builder.zext(builder.load(builder.gep(bp_p, [builder.add(at_bp, C(1))])),
                                  i64)
                accs = [cgutils.alloca_once(builder, v8f) for _ in range(n_regs)]
                with builder.if_else(is_first) as (fresh, resume):
                    with fresh:
                        for acc in accs:
                            builder.store(zero, acc)
                    with resume:
                        for acc, value in zip(accs, _load_row_vectors(
                                builder, helpers, out_p, row, j_v, k_v, n_regs)):
                            builder.store(value, acc)
                with cgutils.for_range(builder, builder.sub(p1, p0)) as inner:
                    p = builder.add(p0, inner.index)
                    col = builder.zext(builder.load(builder.gep(idx_p, [p])), i64)
                    v = broadcast(builder.load(builder.gep(data_p, [p])))
                    at = builder.add(builder.mul(col, ld_v), j_v)
                    for n, acc in enumerate(accs):
                        s = builder.load(vec_ptr(dense_p, builder.add(at, C(8 * n))), align=4)
                        builder.store(builder.call(fma, [v, s, builder.load(acc)]), acc)
                with builder.if_then(add_bias):
                    b = broadcast(builder.load(builder.gep(bias_p, [r])))
                    for acc in accs:
                        builder.store(builder.fadd(builder.load(acc), b), acc)
                _store_row_vectors(builder, helpers, out_p, row, j_v, k_v,
                                   [builder.load(acc) for acc in accs])

        _switch_on_size(builder, nv_v, _BLOCKED_FORWARD_PASS_REGS, emit)
        return context.get_dummy_value()

    return sig, codegen


@numba.njit(cache=True, fastmath=True)
def _forward_blocked_share(bp, indices, data, bias, dense_pad, out, v0, v1, s0, s1):
    # every output row, for the samples of vectors v0..v1 (s0..s1): balanced passes of
    # ≤ _BLOCKED_FORWARD_PASS_REGS vectors, each over the column blocks in order (the
    # panel xᵀ[block, pass] stays in L1 while every row's entries of that block use it);
    # the bias is added at the last block, to the finished sums
    ld, ld_out = dense_pad.shape[1], out.shape[1]
    n_cb = bp.shape[1] - 1
    nv = v1 - v0
    if nv == 0 or out.shape[0] == 0:
        return
    dense_share = dense_pad.reshape(-1)[s0:]
    out_share = out.reshape(-1)[s0:]
    bp_flat = bp.reshape(-1)
    most = _BLOCKED_FORWARD_PASS_REGS
    n_pass = (nv + most - 1) // most
    base, extra = nv // n_pass, nv % n_pass
    at = 0
    for i in range(n_pass):
        size = base + (1 if i < extra else 0)
        for cb in range(n_cb):
            _forward_block_padded_avx2(out_share, dense_share, indices, data, bias, bp_flat,
                                       out.shape[0], n_cb + 1, cb, cb == 0, cb == n_cb - 1, 8 * at, size,
                                       s1 - s0, ld, ld_out)
        at += size


#: entries of a column whose weight-gradient dot products run together in the grouped
#: backward (four 8-lane accumulators and four broadcast values beside x, dx and g)
BACKWARD_GROUP = 4


def _make_backward_grouped_avx2(want_dx: bool, prefetch_next: bool):
    """The grouped backward of one column c of A (see above), with or without dx."""
    G = BACKWARD_GROUP

    @intrinsic
    def kernel(typingctx, dx, dx_local, grad, x, t_indices, perm, data, grad_data, q0, q1, c,
               k, ld_g, ld_x, ld_dx):
        sig = types.void(dx, dx_local, grad, x, t_indices, perm, data, grad_data, q0, q1, c,
                         k, ld_g, ld_x, ld_dx)

        def codegen(context, builder, signature, args):
            dx_p, acc_p, g_p, x_p, ti_p, perm_p, data_p, gd_p = _array_pointers(
                context, builder, signature, args, 8)
            helpers = _ir_helpers(context, builder)
            f32, i64, v8f, fma, vec_ptr, broadcast, masks, masked_load, masked_store = helpers
            i32 = ir.IntType(32)
            prefetch = _prefetch_helper(builder, g_p)
            q0_v, q1_v, c_v, k_v, ldg_v, ldx_v, lddx_v = _int_args(context, builder,
                                                                   signature, args, 8)
            C = lambda v: ir.Constant(i64, v)                   # noqa: E731
            zero = ir.Constant(v8f, [0.0] * 8)
            nv = builder.udiv(builder.add(k_v, C(7)), C(8))
            x_row = builder.mul(c_v, ldx_v)

            def mix(a, b, idx):
                return builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(i32, len(idx)), idx))

            if want_dx:                                     # the column's dx row: zero
                with cgutils.for_range(builder, nv) as loop:
                    builder.store(zero, vec_ptr(acc_p, builder.mul(loop.index, C(8))), align=4)

            def group(size, q):
                rows, where, values = [], [], []
                for i in range(size):
                    qi = builder.add(q, C(i))
                    r = builder.zext(builder.load(builder.gep(ti_p, [qi])), i64)
                    rows.append(builder.mul(r, ldg_v))
                    p = builder.zext(builder.load(builder.gep(perm_p, [qi])), i64)
                    where.append(p)
                    if want_dx:
                        values.append(broadcast(builder.load(builder.gep(data_p, [p]))))
                if prefetch_next:
                    # the next group's gradient rows, one prefetch per 64-byte line of the
                    # share, the entry clamped to the column's last
                    last = builder.sub(q1_v, C(1))
                    for i in range(G):
                        ahead = builder.add(q, C(G + i))
                        ahead = builder.select(builder.icmp_signed("<", ahead, q1_v), ahead, last)
                        base = builder.mul(builder.zext(builder.load(builder.gep(ti_p, [ahead])),
                                                        i64), ldg_v)
                        prefetch(base)
                        with builder.if_then(builder.icmp_signed(">", nv, C(2))):
                            prefetch(builder.add(base, C(16)))
                accs = [cgutils.alloca_once_value(builder, zero) for _ in range(size)]
                with cgutils.for_range(builder, nv) as loop:
                    off = builder.mul(loop.index, C(8))
                    xv = builder.load(vec_ptr(x_p, builder.add(x_row, off)), align=4)
                    if want_dx:
                        d_ptr = vec_ptr(acc_p, off)
                        d = builder.load(d_ptr, align=4)
                    for i in range(size):
                        g = builder.load(vec_ptr(g_p, builder.add(rows[i], off)), align=4)
                        if want_dx:
                            d = builder.call(fma, [values[i], g, d])
                        builder.store(builder.call(fma, [g, xv, builder.load(accs[i])]), accs[i])
                    if want_dx:
                        builder.store(d, d_ptr, align=4)
                a = [builder.load(acc) for acc in accs] + [zero] * (4 - size)
                # transpose-and-add: h01 = pairwise sums of a0 and a1 within 128-bit halves,
                # ..., then the two halves added: lane i of the result is entry i's sum
                h01 = builder.fadd(mix(a[0], a[1], [0, 8, 2, 10, 4, 12, 6, 14]),
                                   mix(a[0], a[1], [1, 9, 3, 11, 5, 13, 7, 15]))
                h23 = builder.fadd(mix(a[2], a[3], [0, 8, 2, 10, 4, 12, 6, 14]),
                                   mix(a[2], a[3], [1, 9, 3, 11, 5, 13, 7, 15]))
                # h01 = [a0 01, a1 01, a0 23, a1 23 | a0 45, a1 45, a0 67, a1 67]
                h = builder.fadd(mix(h01, h23, [0, 1, 8, 9, 4, 5, 12, 13]),
                                 mix(h01, h23, [2, 3, 10, 11, 6, 7, 14, 15]))
                # h = [a0 0-3, a1 0-3, a2 0-3, a3 0-3 | the same of lanes 4-7]
                s = builder.fadd(mix(h, h, [0, 1, 2, 3]), mix(h, h, [4, 5, 6, 7]))
                for i in range(size):
                    builder.store(builder.extract_element(s, C(i)), builder.gep(gd_p, [where[i]]))

            n_entries = builder.sub(q1_v, q0_v)
            n_groups = builder.udiv(builder.add(n_entries, C(G - 1)), C(G))
            with cgutils.for_range(builder, n_groups) as loop:
                q = builder.add(q0_v, builder.mul(loop.index, C(G)))
                left = builder.sub(q1_v, q)
                size = builder.select(builder.icmp_signed("<", left, C(G)), left, C(G))
                _switch_on_size(builder, size, G, lambda n: group(n, q))
            if want_dx:
                with cgutils.for_range(builder, nv) as loop:
                    off = builder.mul(loop.index, C(8))
                    value = builder.load(vec_ptr(acc_p, off), align=4)
                    _store_row_vectors(builder, helpers, dx_p, builder.mul(c_v, lddx_v), off,
                                       k_v, [value])
            return context.get_dummy_value()

        return sig, codegen

    return kernel


_backward_grouped_dx_avx2 = _make_backward_grouped_avx2(True, True)
_backward_grouped_params_avx2 = _make_backward_grouped_avx2(False, True)


@numba.njit(cache=True, fastmath=True)
def _backward_grouped_dx_share(t_indptr, t_indices, perm, data, grad_pad, x_pad, grad_data, dx,
                               dx_local, s0, s1):
    ld_g, ld_x, ld_dx = grad_pad.shape[1], x_pad.shape[1], dx.shape[1]
    g_share, x_share = grad_pad.reshape(-1)[s0:], x_pad.reshape(-1)[s0:]
    dx_share = dx.reshape(-1)[s0:]
    for c in range(len(t_indptr) - 1):
        _backward_grouped_dx_avx2(dx_share, dx_local, g_share, x_share, t_indices, perm, data,
                                  grad_data, t_indptr[c], t_indptr[c + 1], c, s1 - s0, ld_g,
                                  ld_x, ld_dx)


@numba.njit(cache=True, fastmath=True)
def _backward_grouped_params_share(t_indptr, t_indices, perm, data, grad_pad, x_pad, grad_data,
                                   dx, dx_local, s0, s1):
    ld_g, ld_x = grad_pad.shape[1], x_pad.shape[1]
    g_share, x_share = grad_pad.reshape(-1)[s0:], x_pad.reshape(-1)[s0:]
    for c in range(len(t_indptr) - 1):
        _backward_grouped_params_avx2(dx, dx_local, g_share, x_share, t_indices, perm, data,
                                      grad_data, t_indptr[c], t_indptr[c + 1], c, s1 - s0, ld_g,
                                      ld_x, 0)


def main(argv=None):
    from minidnn.kernels import csr
    from minidnn.sparse import SparseDense
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--density", type=float, default=0.04)
    p.add_argument("--rounds", type=int, default=600)
    p.add_argument("--blocks", default="1,2,3,5", help="column-block counts of the forward")
    args = p.parse_args(argv)
    if not csr.SIMD_AVAILABLE:
        raise SystemExit("the padded kernels need AVX2 + FMA")
    numba.set_num_threads(1)
    rng = np.random.default_rng(1)
    k, n_in, n_out = 100, 784, 500
    layer = SparseDense(n_in, n_out, density=args.density, rng=0)
    kern, data, bias = layer._kernels, layer.params["data"], layer.params["b"]
    x = rng.random((k, n_in), dtype=np.float32)
    g = rng.standard_normal((n_out, k)).astype(np.float32)
    x_pad, g_pad = csr.padded_buffer(n_in, k), csr.padded_buffer(n_out, k)
    x_pad[:, :k], g_pad[:, :k] = x.T, g
    out_ref, out = np.empty((n_out, k), np.float32), np.empty((n_out, k), np.float32)
    nv = (k + 7) // 8
    fns = {"fwd padded": lambda: csr._forward_padded_share(kern.indptr, kern.indices, data,
                                                           bias, x_pad, out_ref, 0, nv, 0, k)}
    fns["fwd padded"]()
    for n_cb in map(int, args.blocks.split(",")):
        bp = csr._unsigned(block_pointers(layer.buffers["indptr"], layer.buffers["indices"],
                                          n_in, n_cb))
        fns[f"fwd blocked/{n_cb}"] = (lambda bp=bp: _forward_blocked_share(
            bp, kern.indices, data, bias, x_pad, out, 0, nv, 0, k))
        fns[f"fwd blocked/{n_cb}"]()
        np.testing.assert_array_equal(out, out_ref)
    gd_ref, gd = np.empty(len(data), np.float32), np.empty(len(data), np.float32)
    dx_ref, dx = np.empty((n_in, k), np.float32), np.empty((n_in, k), np.float32)
    local = csr.padded_buffer(1, k).reshape(-1)
    a = (kern.t_indptr, kern.t_indices, kern.perm, data, g_pad, x_pad)
    fns["bwd padded dx"] = lambda: csr._backward_columns_dx_share(*a, gd_ref, dx_ref, 0, k)
    fns["bwd grouped dx"] = lambda: _backward_grouped_dx_share(*a, gd, dx, local, 0, k)
    fns["bwd padded params"] = lambda: csr._backward_columns_params_share(*a, gd_ref, dx[:0],
                                                                          0, k)
    fns["bwd grouped params"] = lambda: _backward_grouped_params_share(*a, gd, dx[:0], local,
                                                                       0, k)
    fns["bwd padded dx"]()
    fns["bwd grouped dx"]()
    np.testing.assert_array_equal(dx, dx_ref)
    np.testing.assert_allclose(gd, gd_ref, rtol=1e-4, atol=1e-4)
    for f in fns.values():
        for _ in range(10):
            f()
    times = {name: [] for name in fns}
    for _ in range(args.rounds):
        for name, f in fns.items():
            t0 = time.thread_time_ns()
            f()
            times[name].append(time.thread_time_ns() - t0)
    for name, ts in times.items():
        q = np.percentile(ts, [2, 5, 25, 50]) / 1e3
        print(f"{name:20s} p2 {q[0]:7.1f}  p5 {q[1]:7.1f}  p25 {q[2]:7.1f}  p50 {q[3]:7.1f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
