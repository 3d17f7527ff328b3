"""CSR kernels for fixed sparse weight matrices: the three products of backprop.

A sparse matrix A of shape (n_rows, n_cols) is held as three arrays, the
layout of scipy.sparse and of scipy's ``sparsetools/csr.h``:

* ``indptr`` (n_rows + 1,) int32: row r's entries are ``indptr[r]:indptr[r+1]``;
* ``indices`` (nnz,) int32: their column numbers, sorted and unique in each row;
* ``data`` (nnz,) float32 or float64: their values.

These kernels assume that invariant and do not re-check it (``check_csr`` does,
once, where a structure enters from outside: a file, a user's arrays). The
dense operands are "feature-major", one row per feature and one column per
sample, so every inner loop runs over a contiguous batch of samples and
vectorises (8 float32 per AVX2 instruction):

* ``csr_matmul(indptr, indices, data, dense)``        = A · dense
      dense (n_cols, k) → (n_rows, k)
      out[r, :] = Σ_{p ∈ row r} data[p] · dense[indices[p], :]
* ``csr_matmul_transposed(transposed, data, dense)``  = Aᵀ · dense
      dense (n_rows, k) → (n_cols, k)
      computed as a CSR product over the transposed *structure* (built once by
      ``csr_transpose_structure``: Aᵀ's indptr/indices and the permutation that
      maps Aᵀ's entries to A's ``data``), so each output row is owned by one
      thread and no value is copied or scattered.
* ``sampled_matmul(indptr, indices, left, right)``    = (left · rightᵀ) at A's pattern
      left (n_rows, k), right (n_cols, k) → (nnz,)
      out[p] = Σ_b left[r, b] · right[indices[p], b]   for p ∈ row r
  the "sampled dense-dense matrix product" (SDDMM) that gives a sparse layer's
  weight gradient at its stored entries only, as in the SET reference code's
  ``backpropagation_updates`` (Mocanu et al., 2018).

A layer's training step uses two calls, not three (``TrainingKernels``, which
holds the unsigned index views of A and Aᵀ, made once per pattern):

* the forward product with the bias added in the same pass over each output
  row (``csr_matmul(..., bias=b)``); from a C-ordered (batch, features) x, as a
  data batch is, the transpose to the feature-major layout happens inside the
  same call (``csr_matmul_batch_major``: a first parallel region transposes,
  each thread a share of the columns, in 8 × 8 tiles; a second one multiplies),
  into a buffer that the backward pass reads and the next step reuses;
* ``csr_backward(indptr, indices, transposed, data, grad, x)`` = (the sampled
  weight gradient, the bias gradient grad.sum(axis=1), Aᵀ · grad), fused: it
  walks Aᵀ's rows (A's columns c) and for each entry (r, c) loads grad[r] once
  for both dx[c] += A[r, c]·grad[r] and grad_data = grad[r]·x[c], with x[c]
  and dx[c] in L1 for the whole column; the sampled product no longer reads
  its operands a second time. One parallel region (a thread per block of
  columns, and the same share of the bias rows); ``input_grad=False`` skips
  dx (a net's first layer); ``batch_major_grad=True`` takes a C-ordered
  (batch, n_rows) grad and transposes it inside the same call.

Work is Θ(nnz · k) for each: the zeros are never touched. Each kernel has a
plain SciPy/NumPy twin (``*_numpy``) that defines what it computes; tests hold
the kernels to the twins. The Numba kernels come in a serial and a parallel
build of the same function: the rows are cut into ``n_blocks`` contiguous
blocks (one per thread) and ``prange`` runs over the blocks. The public
functions pick the parallel one only when a call has enough work to pay for
waking the thread pool (``min_parallel_work()``: ``PARALLEL_MIN_WORK``
multiply-adds on Numba's OpenMP layer, ten times that on its slower-waking
``workqueue`` layer), and the serial build (one block) otherwise, or at one
thread. Index arrays reach the kernels as unsigned views of the same bytes,
which spares every ``dense[indices[p]]`` Numba's negative-index wrap-around.

The float32 forward has an explicit-SIMD build (``_forward_row_avx2``, LLVM IR for
AVX2 + FMA, used where ``SIMD_AVAILABLE``; see "explicit AVX2 row kernels" below):
each output row's accumulators stay in registers for the whole pass over its
entries. It agrees with the twin to float32 rounding, not bit for bit.

Since sitting 18 the layer's training step in float32 (``TrainingKernels`` where
``SIMD_AVAILABLE``) runs the "padded" kernels instead (see "padded explicit-SIMD
training kernels" below): xᵀ and gradᵀ live in buffers of the object's own whose
rows are whole 8-lane vectors; the transposes use 8 × 8 register tiles; the forward
and the fused backward are LLVM IR with ``llvm.prefetch`` of the dense row of the
entry four ahead; and each call is ONE parallel region, split by samples (each
thread its share of the batch's vectors, for every row), so no barrier is needed
and each core caches only its share of xᵀ and gradᵀ. They agree with the twins
within 1e-5 · Σ|terms| + 1e-6 per output (float32 rounding, another summation
order); float64, CPUs without AVX2/FMA and NUMBA_DISABLE_JIT keep the kernels above.

Sitting 19 added other ways to split the same padded kernels over two threads, behind
class-level switches of ``TrainingKernels`` that are off by default (two-thread A/Bs on
the loaded machine are not trustworthy; ``bench/sparse_kernel_ab.py --threads 2 --clock
wall`` compares them in one process for the quiet machine): ``THREADS = 1`` (every kernel
serial), ``FORWARD_SPLIT = "rows"`` (fill of xᵀ by samples, then output rows per
thread), ``BACKWARD_SPLIT = "products"`` (one thread dx = Aᵀ · grad by the forward's row
kernel through ``perm``, the other the weight and bias gradients) or ``"columns"`` (A's
columns per thread). The three non-default splits give the one-thread numbers bit for
bit. At one thread the kernels are unchanged: two cache-blocking rewrites measured no
better (``bench/sparse_blocking_probe.py``).

Sitting 20 measured the step's fixed costs (``bench/sparse_fixed_costs.py``): ~17 µs of
Python a step (2 µs of it cut: ``TrainingKernels._blocks`` instead of a dict of builds per
call, the threading layer asked once, the padded xᵀ view reused while its buffer and batch
stay), 2.6 µs of Numba dispatch, four parallel regions at two threads (an empty one costs
~1–3 µs more than a serial call). Per stored entry the products stream a 416-byte padded
row of the dense operand against 8 (forward) or 16 (backward) bytes of structure, so
narrower indices would save under 1 %; the kernels, their arguments and their numbers
are unchanged.

Sitting 22: where Numba's target has AVX-512F the padded kernels run on 16-lane vectors
(``_LANES = 16``: zmm registers, 32 of them; the padded rows are a whole number of 16
lanes, 112 floats at a batch of 100, so each vector is one 64-byte line), else on 8 as
before; the IR is the same, written for ``_LANES``. A batch of 100 is 7 vectors: the
forward's row and the backward's column are one pass each (13 + 0 and 7 + 6 vectors of
8 before), the fused backward holds x[c]'s 7 vectors in registers for the column
(``_HOLD_X``), and each entry costs half the instructions. With 16 lanes the row kernels
issue no software prefetches (``_PREFETCH``: the forward 74 → 62 µs without them; a
vector is one line, and the hardware prefetchers keep up), and the fills of xᵀ and gradᵀ
use 16 × 16 register tiles (``_transpose_tile16``: 100 × 784 in 18.5 → 10.9 µs). Serial
builds, 784→500, γ = 0.04, batch 100, one process, under load (``bench/sparse_kernel_ab.py
--lanes``, p5, 8 → 16 lanes, thread clock): the forward 110 → 84 µs, with the fill of xᵀ
130 → 96, the fused backward 226 → 150, without dx 162 → 107, the layer's step 442 → 324;
at two threads (wall clock) the step 326 → 257 (p50 380 → 315). The forward now moves
~97 GB/s from L2 (a 448-byte row per stored entry, ~43 bytes a cycle): it is bound by L2
bandwidth, and batch-chunked loops that keep a slice of xᵀ in L1 (one 16-lane vector of
every row per pass over the structure, outer loop over the chunks) were slower (a
prototype, 1.03–1.4× the 8-lane kernel's time). The numbers change within float32
rounding (another order of the partial sums: per lane as before, but the dot products'
partials and the horizontal sum group the lanes by 16); dx is still bit for bit the
permuted forward's, and the fused SparseSigmoid still gives the two layers' bits.
Sitting 21's one-region switches (``FILL_PER_THREAD``, ``FILL_PER_THREAD_FORWARD``,
``BALANCE_BY_NNZ``, ``LINE_ALIGNED_ROWS``), a tie or a loss on the quiet machine, were
deleted with their kernels. ``TrainingKernels._padded`` now zeroes a kept buffer's lanes
k.. when the batch size changes within one row length (a batch of 13 then one of 9 read
the first batch's samples in the pad lanes, and its weight gradient was wrong).
"""
from __future__ import annotations

import numba
import numpy as np
import scipy.sparse as sp
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .simd import avx2_fma_target, target_has
from ..threads import numba_thread_count
from .builds import njit_variant

#: multiply-adds below which the serial kernel is used (a thread-pool wake-up
#: costs about as much as this many vectorised multiply-adds)
PARALLEL_MIN_WORK = 200_000

INDEX_DTYPE = np.int32


# -- the structure ------------------------------------------------------------------

def check_csr(indptr, indices, data, shape, where: str = "CSR matrix") -> None:
    """Raise ValueError unless (indptr, indices, data) is a valid CSR matrix of ``shape``:
    indptr of length n_rows + 1, starting at 0, non-decreasing, ending at nnz; indices
    and data of length nnz; every index in [0, n_cols); indices strictly increasing
    within each row (sorted, no duplicates). This is the full check, O(nnz)."""
    n_rows, n_cols = int(shape[0]), int(shape[1])
    indptr, indices, data = np.asarray(indptr), np.asarray(indices), np.asarray(data)
    for name, arr in (("indptr", indptr), ("indices", indices), ("data", data)):
        if arr.ndim != 1:
            raise ValueError(f"{where}: {name} must be 1-D, got shape {arr.shape}")
    for name, arr in (("indptr", indptr), ("indices", indices)):
        if not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"{where}: {name} must be integers, got dtype {arr.dtype}")
    if not np.issubdtype(data.dtype, np.floating):
        raise ValueError(f"{where}: data must be floating point, got dtype {data.dtype}")
    if len(indptr) != n_rows + 1:
        raise ValueError(f"{where}: indptr has length {len(indptr)}, expected n_rows + 1 = "
                         f"{n_rows + 1}")
    if indptr[0] != 0:
        raise ValueError(f"{where}: indptr must start at 0, got {indptr[0]}")
    steps = np.diff(indptr.astype(np.int64))
    if (steps < 0).any():
        row = int(np.argmax(steps < 0))
        raise ValueError(f"{where}: indptr must be non-decreasing, but indptr[{row + 1}] = "
                         f"{indptr[row + 1]} < indptr[{row}] = {indptr[row]}")
    nnz = int(indptr[-1])
    if len(indices) != nnz or len(data) != nnz:
        raise ValueError(f"{where}: indptr says {nnz} nonzeros, but indices has {len(indices)} "
                         f"and data {len(data)}")
    if nnz:
        low, high = int(indices.min()), int(indices.max())
        if low < 0 or high >= n_cols:
            bad = low if low < 0 else high
            raise ValueError(f"{where}: column index {bad} is out of range [0, {n_cols})")
        # strictly increasing within a row: every step inside a row must be > 0
        rise = np.diff(indices.astype(np.int64))
        same_row = np.ones(nnz - 1, dtype=bool)
        row_starts = indptr[1:-1]
        row_starts = row_starts[(row_starts > 0) & (row_starts < nnz)]
        same_row[row_starts - 1] = False
        bad = np.flatnonzero(same_row & (rise <= 0))
        if len(bad):
            p = int(bad[0])
            row = int(np.searchsorted(indptr, p, side="right") - 1)
            raise ValueError(f"{where}: column indices of row {row} are not sorted and "
                             f"unique (... {indices[p]}, {indices[p + 1]} ...)")
    if not np.isfinite(data).all():
        raise ValueError(f"{where}: data contains NaN or Inf")


def csr_transpose_structure(indptr, indices, n_cols: int):
    """(t_indptr, t_indices, perm): the CSR structure of Aᵀ (n_cols, n_rows) and the
    permutation with Aᵀ's data = A's data[perm]. Built once per fixed pattern."""
    indptr = np.asarray(indptr, dtype=np.int64)
    indices = np.asarray(indices)
    n_rows = len(indptr) - 1
    rows = np.repeat(np.arange(n_rows, dtype=INDEX_DTYPE), np.diff(indptr))
    # stable sort by column keeps the rows of each column in increasing order
    perm = np.argsort(indices, kind="stable").astype(INDEX_DTYPE)
    t_indptr = np.zeros(n_cols + 1, dtype=INDEX_DTYPE)
    np.cumsum(np.bincount(indices, minlength=n_cols), out=t_indptr[1:])
    return t_indptr, rows[perm], perm


# -- the SciPy / NumPy twins (the definition) ------------------------------------------------

def csr_matmul_numpy(indptr, indices, data, dense, bias=None):
    """A · dense (+ bias[:, None]) with A = csr(indptr, indices, data) of shape
    (len(indptr)-1, len(dense))."""
    a = sp.csr_matrix((data, indices, indptr), shape=(len(indptr) - 1, dense.shape[0]))
    out = np.asarray(a @ dense, dtype=dense.dtype)
    if bias is not None:
        out += np.asarray(bias, dtype=dense.dtype)[:, None]
    return out


def csr_matmul_transposed_numpy(indptr, indices, data, dense, n_cols: int):
    """Aᵀ · dense with A = csr(indptr, indices, data) of shape (len(dense), n_cols)."""
    a = sp.csr_matrix((data, indices, indptr), shape=(dense.shape[0], n_cols))
    return np.asarray(a.T @ dense, dtype=dense.dtype)


def sampled_matmul_numpy(indptr, indices, left, right):
    """(left · rightᵀ)[r, c] for every stored (r, c) of the pattern, in CSR order (nnz,)."""
    rows = np.repeat(np.arange(len(indptr) - 1), np.diff(np.asarray(indptr, dtype=np.int64)))
    return np.einsum("ij,ij->i", left[rows], right[indices]).astype(left.dtype, copy=False)


def csr_backward_numpy(indptr, indices, data, grad, x, input_grad: bool = True):
    """(grad_data, grad_bias, dx) of ``csr_backward``: the sampled product, the row
    sums of grad and Aᵀ · grad (None without input_grad)."""
    dx = (csr_matmul_transposed_numpy(indptr, indices, data, grad, x.shape[0])
          if input_grad else None)
    return (sampled_matmul_numpy(indptr, indices, grad, x), grad.sum(axis=1).astype(grad.dtype),
            dx)


# -- the kernels ---------------------------------------------------------------------------
#
# Indices reach the kernels as unsigned views (``_unsigned``: the same bytes), so
# ``dense[indices[p]]`` needs no negative-index wrap-around and the row loops stay
# short; every inner loop runs over the batch, contiguous, and vectorises. Each
# ``*_rows`` function below becomes a serial and a ``prange`` build (``_KERNELS``);
# the ``_range`` helpers do one block of rows and are shared by both.

@numba.njit(cache=True, fastmath=True)
def _forward_range(indptr, indices, data, bias, zero, dense, out, r0, r1):
    # out[r] = Σ_p data[p]·dense[indices[p]] + bias[r] for rows r0..r1; four stored
    # entries per pass over the output row, so it is loaded and stored once per four
    # multiply-adds (eight per pass was no faster at γ = 0.04, where a row has ~31
    # entries and more of it then falls to the shorter passes); a bias of length 0
    # means none. The bias is added last, while
    # the row is still in L1, so the result is bit for bit the product followed by
    # ``+= bias`` (what the autoencoder's encoder computes).
    k = out.shape[1]
    has_bias = len(bias) > 0
    for r in range(r0, r1):
        acc = out[r]
        for b in range(k):
            acc[b] = zero
        p, stop = indptr[r], indptr[r + 1]
        while p + 4 <= stop:
            v0, v1, v2, v3 = data[p], data[p + 1], data[p + 2], data[p + 3]
            s0, s1 = dense[indices[p]], dense[indices[p + 1]]
            s2, s3 = dense[indices[p + 2]], dense[indices[p + 3]]
            for b in range(k):
                acc[b] += v0 * s0[b] + v1 * s1[b] + v2 * s2[b] + v3 * s3[b]
            p += 4
        while p < stop:
            v0 = data[p]
            s0 = dense[indices[p]]
            for b in range(k):
                acc[b] += v0 * s0[b]
            p += 1
        if has_bias:
            bias_r = bias[r]
            for b in range(k):
                acc[b] += bias_r


@numba.njit(cache=True, fastmath=True)
def _permuted_range(indptr, indices, perm, data, dense, out, r0, r1):
    # the same product with the values read through a permutation (Aᵀ's entries in
    # A's data), so Aᵀ never needs a copy of the values
    k = out.shape[1]
    for r in range(r0, r1):
        acc = out[r]
        for b in range(k):
            acc[b] = 0
        p, stop = indptr[r], indptr[r + 1]
        while p + 4 <= stop:
            v0, v1, v2, v3 = data[perm[p]], data[perm[p + 1]], data[perm[p + 2]], data[perm[p + 3]]
            s0, s1 = dense[indices[p]], dense[indices[p + 1]]
            s2, s3 = dense[indices[p + 2]], dense[indices[p + 3]]
            for b in range(k):
                acc[b] += v0 * s0[b] + v1 * s1[b] + v2 * s2[b] + v3 * s3[b]
            p += 4
        while p < stop:
            v0 = data[perm[p]]
            s0 = dense[indices[p]]
            for b in range(k):
                acc[b] += v0 * s0[b]
            p += 1


@numba.njit(cache=True, fastmath=True)
def _sampled_range(indptr, indices, left, right, zero, out, row_sums, r0, r1):
    # out[p] = left[r]·right[indices[p]]: four dot products per pass over the left
    # row (one load of it feeds four multiply-adds); sums start from ``zero``, a
    # scalar of the operands' dtype, so float32 stays float32 and vectorises 8 wide.
    # ``row_sums`` (length n_rows, or 0: not wanted) gets Σ_b left[r, b], the bias
    # gradient, from the same pass.
    k = left.shape[1]
    want_sums = len(row_sums) > 0
    for r in range(r0, r1):
        row = left[r]
        if want_sums:
            t = zero
            for b in range(k):
                t += row[b]
            row_sums[r] = t
        p, stop = indptr[r], indptr[r + 1]
        while p + 4 <= stop:
            c0, c1 = right[indices[p]], right[indices[p + 1]]
            c2, c3 = right[indices[p + 2]], right[indices[p + 3]]
            t0 = t1 = t2 = t3 = zero
            for b in range(k):
                x = row[b]
                t0 += x * c0[b]
                t1 += x * c1[b]
                t2 += x * c2[b]
                t3 += x * c3[b]
            out[p], out[p + 1], out[p + 2], out[p + 3] = t0, t1, t2, t3
            p += 4
        while p < stop:
            c0 = right[indices[p]]
            t0 = zero
            for b in range(k):
                t0 += row[b] * c0[b]
            out[p] = t0
            p += 1


def _csr_matmul_rows(indptr, indices, data, bias, zero, dense, out, n_blocks):
    n_rows = out.shape[0]
    for c in numba.prange(n_blocks):
        _forward_range(indptr, indices, data, bias, zero, dense, out,
                       c * n_rows // n_blocks, (c + 1) * n_rows // n_blocks)


def _csr_matmul_permuted_rows(indptr, indices, perm, data, dense, out, n_blocks):
    n_rows = out.shape[0]
    for c in numba.prange(n_blocks):
        _permuted_range(indptr, indices, perm, data, dense, out,
                        c * n_rows // n_blocks, (c + 1) * n_rows // n_blocks)


def _sampled_matmul_rows(indptr, indices, left, right, zero, out, row_sums, n_blocks):
    n_rows = left.shape[0]
    for c in numba.prange(n_blocks):
        _sampled_range(indptr, indices, left, right, zero, out, row_sums,
                       c * n_rows // n_blocks, (c + 1) * n_rows // n_blocks)


@numba.njit(cache=True, fastmath=True)
def _transpose_block(a, out):
    # out[j, i] = a[i, j]: 8 × 8 tiles with constant trip counts (LLVM unrolls
    # them; each tile's reads and writes stay in a few cache lines), then the
    # ragged edges
    n, m = a.shape
    n8, m8 = n - n % 8, m - m % 8
    for r0 in range(0, n8, 8):
        for j0 in range(0, m8, 8):
            for i in range(8):
                for j in range(8):
                    out[j0 + j, r0 + i] = a[r0 + i, j0 + j]
        for j in range(m8, m):
            for i in range(8):
                out[j, r0 + i] = a[r0 + i, j]
    for r in range(n8, n):
        for j in range(m):
            out[j, r] = a[r, j]


@numba.njit(cache=True, fastmath=True)
def _transpose_range(a, out, j0, j1):
    # out[j, :] = a[:, j] for the columns j0..j1 of a (one thread's share)
    _transpose_block(a[:, j0:j1], out[j0:j1])


@numba.njit(cache=True, fastmath=True)
def _backward_columns_range(t_indptr, t_indices, perm, data, grad, x, zero, grad_data, dx,
                            c0, c1):
    # Column c of A (row c of Aᵀ) for c0..c1, both products in one pass over its
    # entries q (row r = t_indices[q], value data[perm[q]]):
    #     dx[c]              = Σ_q data[perm[q]] · grad[r]          (Aᵀ · grad)
    #     grad_data[perm[q]] = grad[r] · x[c]                      (the sampled product)
    # The grad[r] row is loaded once for both (the three-product form loads it
    # twice, from L2), x[c] and dx[c] stay in L1 for the whole column, and four
    # entries share each pass over them. dx with 0 rows: the sampled product only.
    k = grad.shape[1]
    want_dx = dx.shape[0] > 0
    for c in range(c0, c1):
        xr = x[c]
        q, stop = t_indptr[c], t_indptr[c + 1]
        if want_dx:
            acc = dx[c]
            for b in range(k):
                acc[b] = zero
            while q + 4 <= stop:
                p0, p1, p2, p3 = perm[q], perm[q + 1], perm[q + 2], perm[q + 3]
                v0, v1, v2, v3 = data[p0], data[p1], data[p2], data[p3]
                s0, s1 = grad[t_indices[q]], grad[t_indices[q + 1]]
                s2, s3 = grad[t_indices[q + 2]], grad[t_indices[q + 3]]
                t0 = t1 = t2 = t3 = zero
                for b in range(k):
                    a0, a1, a2, a3 = s0[b], s1[b], s2[b], s3[b]
                    acc[b] += v0 * a0 + v1 * a1 + v2 * a2 + v3 * a3
                    xb = xr[b]
                    t0 += a0 * xb
                    t1 += a1 * xb
                    t2 += a2 * xb
                    t3 += a3 * xb
                grad_data[p0], grad_data[p1], grad_data[p2], grad_data[p3] = t0, t1, t2, t3
                q += 4
            while q < stop:
                v0 = data[perm[q]]
                s0 = grad[t_indices[q]]
                t0 = zero
                for b in range(k):
                    a0 = s0[b]
                    acc[b] += v0 * a0
                    t0 += a0 * xr[b]
                grad_data[perm[q]] = t0
                q += 1
        else:
            while q + 4 <= stop:
                s0, s1 = grad[t_indices[q]], grad[t_indices[q + 1]]
                s2, s3 = grad[t_indices[q + 2]], grad[t_indices[q + 3]]
                t0 = t1 = t2 = t3 = zero
                for b in range(k):
                    xb = xr[b]
                    t0 += s0[b] * xb
                    t1 += s1[b] * xb
                    t2 += s2[b] * xb
                    t3 += s3[b] * xb
                grad_data[perm[q]], grad_data[perm[q + 1]] = t0, t1
                grad_data[perm[q + 2]], grad_data[perm[q + 3]] = t2, t3
                q += 4
            while q < stop:
                s0 = grad[t_indices[q]]
                t0 = zero
                for b in range(k):
                    t0 += s0[b] * xr[b]
                grad_data[perm[q]] = t0
                q += 1


@numba.njit(cache=True, fastmath=True)
def _row_sums_range(a, zero, out, r0, r1):
    k = a.shape[1]
    for r in range(r0, r1):
        row = a[r]
        t = zero
        for b in range(k):
            t += row[b]
        out[r] = t


def _backward_rows(t_indptr, t_indices, perm, data, grad, x, zero, grad_data, grad_bias, dx,
                   n_blocks):
    # A layer's whole backward pass in one parallel region: block c does columns
    # [c·n/B, (c+1)·n/B) of A (the rows of dx and those entries of the weight
    # gradient, fused) and the same share of the bias gradient's rows, so the
    # thread pool wakes once per backward pass. dx with 0 rows: no input gradient
    # (the first layer of a net); grad_bias of length 0: no bias.
    n_rows, n_cols = grad.shape[0], x.shape[0]
    want_bias = len(grad_bias) > 0
    for c in numba.prange(n_blocks):
        if want_bias:
            _row_sums_range(grad, zero, grad_bias, c * n_rows // n_blocks,
                            (c + 1) * n_rows // n_blocks)
        _backward_columns_range(t_indptr, t_indices, perm, data, grad, x, zero, grad_data, dx,
                                c * n_cols // n_blocks, (c + 1) * n_cols // n_blocks)


def _backward_batch_major_rows(t_indptr, t_indices, perm, data, grad_bm, grad, x, zero,
                               grad_data, grad_bias, dx, n_blocks):
    # the same, from a batch-major grad (k, n_rows): first each block transposes
    # its share of it into ``grad`` (n_rows, k), then (a second parallel region,
    # a barrier between them) the fused products; one call from Python
    n_rows, n_cols = grad.shape[0], x.shape[0]
    for c in numba.prange(n_blocks):
        _transpose_range(grad_bm, grad, c * n_rows // n_blocks, (c + 1) * n_rows // n_blocks)
    want_bias = len(grad_bias) > 0
    for c in numba.prange(n_blocks):
        if want_bias:
            _row_sums_range(grad, zero, grad_bias, c * n_rows // n_blocks,
                            (c + 1) * n_rows // n_blocks)
        _backward_columns_range(t_indptr, t_indices, perm, data, grad, x, zero, grad_data, dx,
                                c * n_cols // n_blocks, (c + 1) * n_cols // n_blocks)


def _csr_matmul_batch_major_rows(indptr, indices, data, bias, zero, x_bm, dense, out,
                                 n_blocks):
    # A · x_bmᵀ from a batch-major x_bm (k, n_cols): each block transposes its
    # share of the columns into ``dense`` (n_cols, k, kept: the backward pass
    # reads it), then the product by row blocks (a second parallel region)
    n_rows, n_cols = out.shape[0], dense.shape[0]
    for c in numba.prange(n_blocks):
        _transpose_range(x_bm, dense, c * n_cols // n_blocks, (c + 1) * n_cols // n_blocks)
    for c in numba.prange(n_blocks):
        _forward_range(indptr, indices, data, bias, zero, dense, out,
                       c * n_rows // n_blocks, (c + 1) * n_rows // n_blocks)


def _transpose_rows(a, out, n_blocks):
    n_cols = a.shape[1]
    for c in numba.prange(n_blocks):
        _transpose_range(a, out, c * n_cols // n_blocks, (c + 1) * n_cols // n_blocks)


# -- explicit AVX2 row kernels (float32) -----------------------------------------------------
#
# The loops above run at one cost per multiply-add whatever the batch: LLVM keeps
# the output row in memory and loads and stores it once per four entries. Held in
# registers instead (LLVM does not do it from Python loops: register blocks of 8
# samples written in Python came out scalar and 3× slower), the forward costs one
# broadcast and one 8-lane FMA per (entry, 8 samples). These are written as LLVM IR
# through ``numba.extending.intrinsic``, the way ``ternary_lut`` writes its
# ``vpermps`` loop, and are compiled only where Numba's target has AVX2 and FMA
# (``SIMD_AVAILABLE``); float64, other CPUs and NUMBA_DISABLE_JIT keep the kernels
# above. Their summation order differs from the twins' (one FMA chain per lane,
# entries in CSR order), so results agree with the twins to float32 rounding:
# |got − twin| ≤ 1e-5 · Σ_p |data[p]·dense[indices[p], b]| + 1e-6 per output.

# The fused backward written the same way (dx accumulators in registers in passes of
# 64, 32 and 8 samples, each entry's dot product summed across its 8 lanes once per
# pass and added to grad_data) ran slower than ``_backward_columns_range`` in the same
# kind of A/B (serial builds, 784→500, γ = 0.04, batch 100, 1 thread, under load): with
# dx 218 against 203 µs, without 160 against 125 µs (minima of 200). Sitting 18 found
# why (each entry's dot product was one chain of dependent FMAs) and wrote the padded
# backward below, which is used for float32 training steps; the kernels of this
# section remain the forward of ``csr_matmul`` / ``csr_matmul_batch_major``.

#: the AVX2 + FMA row kernels run only where this is True (set at import from Numba's
#: target CPU, ``simd.avx2_fma_target``; tests switch it off to hold the fallback)
SIMD_AVAILABLE = avx2_fma_target()

#: 8-lane registers a pass of the forward row kernel keeps as accumulators: 12 (96
#: samples: a batch of 100 in one pass over a row's entries, 14 of the 16 ymm
#: registers with the broadcast value and one loaded operand), then passes of 4 and 1
_FORWARD_PASS_REGS = (12, 4, 1)


def _ir_helpers(context, builder, lanes: int = 8):
    # (f32, i64, the vector type, its fma, vec_ptr, broadcast, masks, masked_load,
    # masked_store) for vectors of ``lanes`` float32: 8 (AVX2: ymm; the masked ops are
    # vmaskmovps) or 16 (AVX-512: zmm; LLVM's generic masked load / store, k-masks)
    if lanes != 8:
        return _wide_ir_helpers(builder, lanes)
    f32, i64 = ir.FloatType(), ir.IntType(64)
    v8f = ir.VectorType(f32, 8)
    fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v8f, [v8f, v8f, v8f]),
                                         "llvm.fma.v8f32")

    def vec_ptr(base, offset):
        return builder.bitcast(builder.gep(base, [offset]), v8f.as_pointer())

    i8p, v8i = ir.IntType(8).as_pointer(), ir.VectorType(ir.IntType(32), 8)
    maskload = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(v8f, [i8p, v8i]), "llvm.x86.avx.maskload.ps.256")
    maskstore = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.VoidType(), [i8p, v8i, v8f]),
        "llvm.x86.avx.maskstore.ps.256")

    def masks(n):
        """the 8-lane mask of the first n (< 8) lanes: all ones where lane < n"""
        lanes = ir.Constant(v8i, list(range(8)))
        splat = builder.insert_element(ir.Constant(v8i, ir.Undefined),
                                       builder.trunc(n, ir.IntType(32)), ir.Constant(i64, 0))
        splat = builder.shuffle_vector(splat, ir.Constant(v8i, ir.Undefined),
                                       ir.Constant(v8i, [0] * 8))
        return builder.sext(builder.icmp_signed("<", lanes, splat), v8i)

    def masked_load(base, offset, mask):
        return builder.call(maskload, [builder.bitcast(builder.gep(base, [offset]), i8p), mask])

    def masked_store(base, offset, mask, value):
        builder.call(maskstore, [builder.bitcast(builder.gep(base, [offset]), i8p), mask, value])

    def broadcast(value):
        one = builder.insert_element(ir.Constant(v8f, ir.Undefined), value, ir.Constant(i64, 0))
        return builder.shuffle_vector(one, ir.Constant(v8f, ir.Undefined),
                                      ir.Constant(ir.VectorType(ir.IntType(32), 8), [0] * 8))
    return f32, i64, v8f, fma, vec_ptr, broadcast, masks, masked_load, masked_store


def _wide_ir_helpers(builder, lanes: int):
    f32, i64, i1, i32 = ir.FloatType(), ir.IntType(64), ir.IntType(1), ir.IntType(32)
    vf, vi = ir.VectorType(f32, lanes), ir.VectorType(i32, lanes)
    vb = ir.VectorType(i1, lanes)
    fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vf, [vf, vf, vf]),
                                         f"llvm.fma.v{lanes}f32")
    load_fn = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(vf, [vf.as_pointer(), i32, vb, vf]),
        f"llvm.masked.load.v{lanes}f32.p0")
    store_fn = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.VoidType(), [vf, vf.as_pointer(), i32, vb]),
        f"llvm.masked.store.v{lanes}f32.p0")

    def vec_ptr(base, offset):
        return builder.bitcast(builder.gep(base, [offset]), vf.as_pointer())

    def masks(n):
        """the mask of the first n (< lanes) lanes"""
        splat = builder.insert_element(ir.Constant(vi, ir.Undefined), builder.trunc(n, i32),
                                       ir.Constant(i64, 0))
        splat = builder.shuffle_vector(splat, ir.Constant(vi, ir.Undefined),
                                       ir.Constant(vi, [0] * lanes))
        return builder.icmp_signed("<", ir.Constant(vi, list(range(lanes))), splat)

    def masked_load(base, offset, mask):
        return builder.call(load_fn, [vec_ptr(base, offset), ir.Constant(i32, 4), mask,
                                      ir.Constant(vf, [0.0] * lanes)])

    def masked_store(base, offset, mask, value):
        builder.call(store_fn, [value, vec_ptr(base, offset), ir.Constant(i32, 4), mask])

    def broadcast(value):
        one = builder.insert_element(ir.Constant(vf, ir.Undefined), value, ir.Constant(i64, 0))
        return builder.shuffle_vector(one, ir.Constant(vf, ir.Undefined),
                                      ir.Constant(vi, [0] * lanes))
    return f32, i64, vf, fma, vec_ptr, broadcast, masks, masked_load, masked_store


@intrinsic
def _forward_row_avx2(typingctx, out, dense, indices, data, p0, p1, r, k, k8):
    """out[r·k + j] = Σ_{p0 ≤ p < p1} data[p] · dense[indices[p]·k + j] for j < k8 (a
    multiple of 8) and then for k8 ≤ j < k (< 8 more, masked), on flat float32 views of
    out (n_rows·k) and dense (n_cols·k): passes of 96, 32 and 8 samples, each with its
    accumulators in registers for the whole pass over the row's entries (one broadcast
    + one ``vfmadd`` per entry and 8 samples), written to out once; when k8 is a
    multiple of 96 (a batch of 100) the last 96-sample pass carries the masked tail,
    so the row's entries are walked once (13 accumulators)."""
    sig = types.void(out, dense, indices, data, p0, p1, r, k, k8)

    def codegen(context, builder, signature, args):
        out_a, dense_a, idx_a, data_a = args[:4]
        out_p, dense_p, idx_p, data_p = [
            context.make_array(t)(context, builder, v).data
            for t, v in zip(signature.args[:4], (out_a, dense_a, idx_a, data_a))]
        f32, i64, v8f, fma, vec_ptr, broadcast, masks, masked_load, masked_store = \
            _ir_helpers(context, builder)
        p0_v, p1_v, r_v, k_v, k8_v = [context.cast(builder, v, t, types.int64)
                                      for v, t in zip(args[4:], signature.args[4:])]
        n_entries = builder.sub(p1_v, p0_v)
        row = builder.mul(r_v, k_v)
        zero = ir.Constant(v8f, [0.0] * 8)

        def passes(n_regs, first, count, mask=None):
            # ``count`` passes of 8·n_regs samples from ``first``; with ``mask``, one more
            # register of up to 7 samples after them, loaded and stored masked
            # (vmaskmovps: lanes outside the mask are neither read nor written, so the
            # last row of dense or out is never overrun)
            accs = [cgutils.alloca_once(builder, v8f)
                    for _ in range(n_regs + (mask is not None))]          # → registers
            with cgutils.for_range(builder, count) as outer:
                j = builder.add(first, builder.mul(outer.index, ir.Constant(i64, 8 * n_regs)))
                for acc in accs:
                    builder.store(zero, acc)
                with cgutils.for_range(builder, n_entries) as inner:
                    p = builder.add(p0_v, inner.index)
                    col = builder.zext(builder.load(builder.gep(idx_p, [p])), i64)
                    v = broadcast(builder.load(builder.gep(data_p, [p])))
                    at = builder.add(builder.mul(col, k_v), j)
                    for n, acc in enumerate(accs):
                        where = builder.add(at, ir.Constant(i64, 8 * n))
                        s = (builder.load(vec_ptr(dense_p, where), align=4) if n < n_regs
                             else masked_load(dense_p, where, mask))
                        builder.store(builder.call(fma, [v, s, builder.load(acc)]), acc)
                for n, acc in enumerate(accs):
                    where = builder.add(builder.add(row, j), ir.Constant(i64, 8 * n))
                    if n < n_regs:
                        builder.store(builder.load(acc), vec_ptr(out_p, where), align=4)
                    else:
                        masked_store(out_p, where, mask, builder.load(acc))

        tail = builder.sub(k_v, k8_v)
        one = ir.Constant(i64, 1)
        has_tail = builder.icmp_unsigned(">", tail, ir.Constant(i64, 0))
        wide = ir.Constant(i64, 8 * _FORWARD_PASS_REGS[0])
        # k8 a multiple of the widest pass (a batch of 100: 96 + 4): its last pass
        # carries the masked tail too, so a row's entries are walked once
        with builder.if_else(builder.and_(has_tail, builder.and_(
                builder.icmp_unsigned(">", k8_v, ir.Constant(i64, 0)),
                builder.icmp_unsigned("==", builder.urem(k8_v, wide),
                                      ir.Constant(i64, 0))))) as (merged, general):
            with merged:
                count = builder.udiv(k8_v, wide)
                passes(_FORWARD_PASS_REGS[0], ir.Constant(i64, 0), builder.sub(count, one))
                passes(_FORWARD_PASS_REGS[0], builder.sub(k8_v, wide), one, masks(tail))
            with general:
                first, left = ir.Constant(i64, 0), k8_v
                for n_regs in _FORWARD_PASS_REGS:
                    width = ir.Constant(i64, 8 * n_regs)
                    count = builder.udiv(left, width)
                    passes(n_regs, first, count)
                    first = builder.add(first, builder.mul(count, width))
                    left = builder.urem(left, width)
                # the last k − k8 (< 8) samples: one more pass, masked
                with builder.if_then(has_tail):
                    passes(0, k8_v, one, masks(tail))
        return context.get_dummy_value()

    return sig, codegen


@numba.njit(cache=True, fastmath=True)
def _forward_range_simd(indptr, indices, data, bias, zero, dense, out, r0, r1):
    # as _forward_range, float32 with AVX2 + FMA: each row by _forward_row_avx2,
    # then the bias
    k = out.shape[1]
    k8 = k - k % 8
    has_bias = len(bias) > 0
    out_flat, dense_flat = out.reshape(-1), dense.reshape(-1)
    for r in range(r0, r1):
        _forward_row_avx2(out_flat, dense_flat, indices, data, indptr[r], indptr[r + 1], r, k,
                          k8)
        if has_bias:
            acc = out[r]
            br = bias[r]
            for b in range(k):
                acc[b] += br


def _csr_matmul_simd_rows(indptr, indices, data, bias, zero, dense, out, n_blocks):
    n_rows = out.shape[0]
    for c in numba.prange(n_blocks):
        _forward_range_simd(indptr, indices, data, bias, zero, dense, out,
                            c * n_rows // n_blocks, (c + 1) * n_rows // n_blocks)


def _csr_matmul_batch_major_simd_rows(indptr, indices, data, bias, zero, x_bm, dense, out,
                                      n_blocks):
    n_rows, n_cols = out.shape[0], dense.shape[0]
    for c in numba.prange(n_blocks):
        _transpose_range(x_bm, dense, c * n_cols // n_blocks, (c + 1) * n_cols // n_blocks)
    for c in numba.prange(n_blocks):
        _forward_range_simd(indptr, indices, data, bias, zero, dense, out,
                            c * n_rows // n_blocks, (c + 1) * n_rows // n_blocks)


# -- padded explicit-SIMD training kernels (float32, sitting 18) -----------------------------
#
# The training step's operands xᵀ (n_cols, k) and gradᵀ (n_rows, k) live in buffers
# that ``TrainingKernels`` allocates itself: rows ``ld = padded_width(k)`` floats long
# (k rounded up to a multiple of 8), zero-filled when allocated, 64-byte aligned. The
# kernels write only columns < k, so the pad lanes stay zero. Every row then holds a
# whole number of 8-lane vectors, and three costs of the kernels above go away:
#
# * no masked loads in the inner loops (``vmaskmovps`` on the last 4 samples of a row
#   of 100 cost about a sixth of the forward, in a one-process A/B with xᵀ in L1);
# * the transposes to the feature-major layout use 8 × 8 register tiles
#   (``_transpose_tile8``: eight 8-lane loads, 24 shuffles, eight stores), 2× faster
#   than the scalar tiles of ``_transpose_block`` (100 × 784 float32: 42 → 20 µs);
# * the fused backward can be written with explicit vectors (``_backward_col_avx2``).
#
# Software prefetch: each entry's row of the dense operand is a random 400-byte read
# from L2 (xᵀ is 313 kB, gradᵀ 200 kB: L2 is 512 kB per core). The row kernels below
# issue ``llvm.prefetch`` (``prefetcht0``) for the row of the entry ``PREFETCH_DISTANCE``
# entries ahead while computing this one, one per 64-byte line of the pass. The
# prefetched entry is clamped to the last entry of the matrix (``min(p + d, nnz − 1)``)
# and the offsets to vectors the pass itself reads, so every prefetched address lies
# inside the operand's own buffer (a prefetch cannot fault on x86, but we do not rely
# on it).
#
# The backward differs from the failed sitting-17 attempt in its pass shape: a pass
# covers at most ``_BACKWARD_PASS_REGS`` = 7 vectors (a batch of 100 = 13 vectors is
# walked as 7 + 6; the column's ~20 gradient rows, 8 kB, stay in L1 for the second
# pass). With 13 dx accumulators the loop was bound by computation, not memory (an
# A/B with every gradient row in L1 was no faster): all 16 ymm registers were taken,
# two accumulators spilled to the stack, and each entry's ∂W dot product was one
# chain of 13 dependent FMAs. The IR asks for four partial sums per entry; LLVM's
# reassociation (fastmath) folds them back into one chain, but of 7 FMAs, with no
# spills. ``bench/sparse_kernel_ab.py`` (serial builds, 784→500, γ = 0.04, batch 100,
# 1 thread, under load, 5th percentiles of 1600 interleaved calls): with dx 168
# against 198 µs for the portable kernel, without dx (a first layer) 111 against 123.

#: entries ahead whose dense row is prefetched (one-process A/Bs under load, serial
#: build, 784→500, γ = 0.04, batch 100: 2 and 8 no better than 4)
PREFETCH_DISTANCE = 4

#: float32 lanes of the padded kernels' vectors: 16 (zmm) where Numba's target has
#: AVX-512F (sitting 22), else 8 (ymm); the padded buffers' rows are a whole number of them
_LANES = 16 if target_has("avx512f") else 8

#: whether the row kernels prefetch the dense row of the entry PREFETCH_DISTANCE ahead:
#: with 8 lanes (sitting 18's A/B); with 16 not (sitting 22: serial builds, one process,
#: thread clock, under load, p5: the forward 74 → 62 µs without, the backward 99 → 98;
#: one line a vector, the hardware prefetchers keep up and the prefetches only took load
#: slots)
_PREFETCH = _LANES == 8

#: whether the fused backward with dx holds x[c]'s vectors in registers (with 16-lane
#: vectors: 32 zmm registers, 7 dx accumulators + 7 of x at a batch of 100)
_HOLD_X = _LANES == 16

#: most vectors per pass of the padded backward (see above)
_BACKWARD_PASS_REGS = 7

#: most 8-lane vectors per pass of the padded forward: 13 accumulators + the broadcast
#: value + one operand = 15 of the 16 ymm registers; a batch of ≤ 104 in one pass
_PADDED_FORWARD_PASS_REGS = 13


def _pass_lines(n_regs: int) -> int:
    # the software prefetches of a pass of n_regs vectors: one a 64-byte line with 8-lane
    # vectors, none with 16 (``_PREFETCH``)
    return (n_regs * _LANES + 15) // 16 if _PREFETCH else 0


def padded_path(dtype) -> bool:
    """Whether ``TrainingKernels`` runs the padded kernels for data of ``dtype`` (float32
    where ``SIMD_AVAILABLE``), read at call time so a test can switch SIMD off."""
    return SIMD_AVAILABLE and (dtype is np.float32 or np.dtype(dtype) == np.float32)


def padded_width(k: int) -> int:
    """Row length of the padded feature-major buffers: k rounded up to a multiple of the
    padded kernels' vector width ``_LANES`` (16 with AVX-512, else 8)."""
    return (int(k) + _LANES - 1) // _LANES * _LANES


def padded_buffer(n: int, k: int, dtype=np.float32) -> np.ndarray:
    """A zero-filled (n, padded_width(k)) C-ordered array whose data is 64-byte aligned
    (rows start on a 32-byte boundary, so no 8-lane load splits a cache line)."""
    ld = padded_width(k)
    dtype = np.dtype(dtype)
    raw = np.zeros(n * ld * dtype.itemsize + 64, dtype=np.uint8)
    start = (-raw.ctypes.data) % 64
    return raw[start:start + n * ld * dtype.itemsize].view(dtype).reshape(n, ld)


def _prefetch_helper(builder, base):
    i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
    fn = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]), "llvm.prefetch.p0")

    def prefetch(offset):
        # read (0), keep in all levels (3: prefetcht0), data cache (1)
        builder.call(fn, [builder.bitcast(builder.gep(base, [offset]), i8p), ir.Constant(i32, 0),
                          ir.Constant(i32, 3), ir.Constant(i32, 1)])
    return prefetch


def _array_pointers(context, builder, signature, args, n):
    return [context.make_array(t)(context, builder, v).data
            for t, v in zip(signature.args[:n], args[:n])]


def _int_args(context, builder, signature, args, first):
    return [context.cast(builder, v, t, types.int64)
            for v, t in zip(args[first:], signature.args[first:])]


def _store_row_vectors(builder, helpers, out_p, row, j, k_v, values):
    # out[row + j + 8n ...] = values[n]; the vector that crosses k is stored masked
    f32, i64, v8f, fma, vec_ptr, broadcast, masks, masked_load, masked_store = helpers
    for n, value in enumerate(values):
        jn = builder.add(j, ir.Constant(i64, _LANES * n))
        where = builder.add(row, jn)
        with builder.if_else(builder.icmp_signed("<=", builder.add(jn, ir.Constant(i64, _LANES)),
                                                 k_v)) as (whole, part):
            with whole:
                builder.store(value, vec_ptr(out_p, where), align=4)
            with part:
                masked_store(out_p, where, masks(builder.sub(k_v, jn)), value)


def _balanced_passes(builder, n_vectors, most, emit):
    # cut the n_vectors 8-lane vectors from vector 0 into ceil(n/most) passes of
    # sizes differing by at most one (13 → 7 + 6, not 7 + 1 + ...), and emit(size,
    # first sample, is_first) for each: one code path per size, chosen by a switch
    i64 = ir.IntType(64)
    C = lambda v: ir.Constant(i64, v)                           # noqa: E731
    n_pass = builder.udiv(builder.add(n_vectors, C(most - 1)), C(most))
    with builder.if_then(builder.icmp_signed(">", n_pass, C(0))):
        base = builder.udiv(n_vectors, n_pass)
        extra = builder.urem(n_vectors, n_pass)
        at = cgutils.alloca_once_value(builder, C(0))
        with cgutils.for_range(builder, n_pass) as loop:
            size = builder.add(base, builder.zext(builder.icmp_signed("<", loop.index, extra), i64))
            first_vector = builder.load(at)
            is_first = builder.icmp_signed("==", first_vector, C(0))
            done = builder.append_basic_block("pass_done")
            switch = builder.switch(size, done)
            for n_regs in range(1, most + 1):
                block = builder.append_basic_block(f"pass_{n_regs}")
                switch.add_case(C(n_regs), block)
                builder.position_at_end(block)
                emit(n_regs, builder.mul(first_vector, C(_LANES)), is_first)
                builder.branch(done)
            builder.position_at_end(done)
            builder.store(builder.add(first_vector, size), at)


def _forward_row_padded_codegen(permuted: bool):
    """The codegen of ``_forward_row_padded_avx2`` (``permuted=False``: entry p's value is
    data[p]) and of ``_forward_row_padded_permuted_avx2`` (its value is data[perm[p]], for
    Aᵀ's rows over A's values: the product Aᵀ · grad without a copy of the values)."""
    n_arrays = 5 if permuted else 4

    def codegen(context, builder, signature, args):
        pointers = _array_pointers(context, builder, signature, args, n_arrays)
        if permuted:
            out_p, dense_p, idx_p, perm_p, data_p = pointers
        else:
            (out_p, dense_p, idx_p, data_p), perm_p = pointers, None
        helpers = _ir_helpers(context, builder, _LANES)
        f32, i64, v8f, fma, vec_ptr, broadcast, masks, masked_load, masked_store = helpers
        prefetch = _prefetch_helper(builder, dense_p)
        p0_v, p1_v, r_v, k_v, ld_v, ld_out_v, pf_end_v = _int_args(context, builder, signature,
                                                                   args, n_arrays)
        C = lambda v: ir.Constant(i64, v)                       # noqa: E731
        n_entries = builder.sub(p1_v, p0_v)
        last = builder.sub(pf_end_v, C(1))
        zero = ir.Constant(v8f, [0.0] * _LANES)

        def one_pass(n_regs, j, is_first):
            accs = [cgutils.alloca_once_value(builder, zero) for _ in range(n_regs)]
            with cgutils.for_range(builder, n_entries) as inner:
                p = builder.add(p0_v, inner.index)
                ahead = builder.add(p, C(PREFETCH_DISTANCE))
                ahead = builder.select(builder.icmp_signed("<", ahead, pf_end_v), ahead, last)
                ahead_row = builder.add(builder.mul(builder.zext(
                    builder.load(builder.gep(idx_p, [ahead])), i64), ld_v), j)
                for line in range(_pass_lines(n_regs)):     # each 64-byte line of the pass
                    prefetch(builder.add(ahead_row, C(16 * line)))
                col = builder.zext(builder.load(builder.gep(idx_p, [p])), i64)
                at_value = (p if perm_p is None
                            else builder.zext(builder.load(builder.gep(perm_p, [p])), i64))
                v = broadcast(builder.load(builder.gep(data_p, [at_value])))
                at = builder.add(builder.mul(col, ld_v), j)
                for n, acc in enumerate(accs):
                    s = builder.load(vec_ptr(dense_p, builder.add(at, C(_LANES * n))), align=4)
                    builder.store(builder.call(fma, [v, s, builder.load(acc)]), acc)
            _store_row_vectors(builder, helpers, out_p, builder.mul(r_v, ld_out_v), j, k_v,
                               [builder.load(acc) for acc in accs])

        n_vectors = builder.udiv(builder.add(k_v, C(_LANES - 1)), C(_LANES))
        _balanced_passes(builder, n_vectors, _PADDED_FORWARD_PASS_REGS, one_pass)
        return context.get_dummy_value()

    return codegen


@intrinsic
def _forward_row_padded_avx2(typingctx, out, dense, indices, data, p0, p1, r, k, ld, ld_out,
                             pf_end):
    """out[r, j] = Σ_{p0 ≤ p < p1} data[p] · dense[indices[p], j] for j < k, with dense a
    padded (n_cols, ld) float32 buffer (ld = padded_width(k) or more) and out (n_rows, k)
    C-ordered: balanced passes of ≤ 13 vectors, accumulators in registers, unmasked loads
    (the pad lanes are read, computed and never stored), the row of entry
    min(p + PREFETCH_DISTANCE, pf_end − 1) prefetched while entry p is computed."""
    sig = types.void(out, dense, indices, data, p0, p1, r, k, ld, ld_out, pf_end)
    return sig, _forward_row_padded_codegen(False)


@intrinsic
def _forward_row_padded_permuted_avx2(typingctx, out, dense, indices, perm, data, p0, p1, r, k,
                                      ld, ld_out, pf_end):
    """As ``_forward_row_padded_avx2`` with entry p's value data[perm[p]]: over Aᵀ's
    structure (t_indptr, t_indices, perm) and A's values, row c of out is
    dx[c] = Σ_q data[perm[q]] · grad[t_indices[q]], one FMA chain per lane in Aᵀ order:
    bit for bit the dx of the fused padded backward (``_backward_col_avx2``)."""
    sig = types.void(out, dense, indices, perm, data, p0, p1, r, k, ld, ld_out, pf_end)
    return sig, _forward_row_padded_codegen(True)


def _make_backward_col_avx2(want_dx: bool):
    """The fused backward of one column c of A over padded gradᵀ and xᵀ buffers; with
    ``want_dx`` also dx[c] (in registers, written once), without it x[c]'s vectors of
    the pass are held in registers instead."""

    @intrinsic
    def kernel(typingctx, dx, grad, x, t_indices, perm, data, grad_data, q0, q1, c, k, ld_g,
               ld_x, ld_dx, pf_end):
        sig = types.void(dx, grad, x, t_indices, perm, data, grad_data, q0, q1, c, k, ld_g,
                         ld_x, ld_dx, pf_end)

        def codegen(context, builder, signature, args):
            dx_p, g_p, x_p, ti_p, perm_p, data_p, gd_p = _array_pointers(
                context, builder, signature, args, 7)
            helpers = _ir_helpers(context, builder, _LANES)
            f32, i64, v8f, fma, vec_ptr, broadcast, masks, masked_load, masked_store = helpers
            i32 = ir.IntType(32)
            prefetch = _prefetch_helper(builder, g_p)
            q0_v, q1_v, c_v, k_v, ldg_v, ldx_v, lddx_v, pf_end_v = _int_args(
                context, builder, signature, args, 7)
            C = lambda v: ir.Constant(i64, v)                   # noqa: E731
            n_entries = builder.sub(q1_v, q0_v)
            last = builder.sub(pf_end_v, C(1))
            x_row = builder.mul(c_v, ldx_v)
            zero = ir.Constant(v8f, [0.0] * _LANES)

            def lanes(t, idx):
                return builder.shuffle_vector(t, t, ir.Constant(ir.VectorType(i32, len(idx)), idx))

            def horizontal_sum(t):
                if _LANES == 16:
                    t = builder.fadd(lanes(t, list(range(8))), lanes(t, list(range(8, 16))))
                s = builder.fadd(lanes(t, [0, 1, 2, 3]), lanes(t, [4, 5, 6, 7]))
                s = builder.fadd(s, lanes(s, [2, 3, 2, 3]))
                s = builder.fadd(s, lanes(s, [1, 1, 1, 1]))
                return builder.extract_element(s, C(0))

            def x_vector(j, n):
                return builder.load(vec_ptr(x_p, builder.add(x_row, builder.add(j, C(_LANES * n)))),
                                    align=4)

            def one_pass(n_regs, j, is_first):
                accs = ([cgutils.alloca_once_value(builder, zero) for _ in range(n_regs)]
                        if want_dx else [])
                # x[c]'s vectors of the pass in registers, loaded once before the entries
                # (LLVM cannot hoist the loads itself: the grad_data stores might alias
                # x); with dx on AVX2 the 16 ymm registers are taken by dx, so x is read
                # from L1 each entry there
                hold = _HOLD_X or not want_dx
                held = [x_vector(j, n) for n in range(n_regs)] if hold else None
                with cgutils.for_range(builder, n_entries) as inner:
                    q = builder.add(q0_v, inner.index)
                    ahead = builder.add(q, C(PREFETCH_DISTANCE))
                    ahead = builder.select(builder.icmp_signed("<", ahead, pf_end_v), ahead, last)
                    ahead_row = builder.add(builder.mul(builder.zext(
                        builder.load(builder.gep(ti_p, [ahead])), i64), ldg_v), j)
                    for line in range(_pass_lines(n_regs)):
                        prefetch(builder.add(ahead_row, C(16 * line)))
                    r = builder.zext(builder.load(builder.gep(ti_p, [q])), i64)
                    p = builder.zext(builder.load(builder.gep(perm_p, [q])), i64)
                    g_row = builder.add(builder.mul(r, ldg_v), j)
                    if want_dx:
                        v = broadcast(builder.load(builder.gep(data_p, [p])))
                    # four dot-product chains, then a tree. (Sitting 22, 16 lanes, one
                    # process, thread clock, under load: two chains without dx were 76 → 72
                    # µs, but the fast-math flags of the callers then let LLVM sum them in
                    # another order in csr_fused's column split than in the layer's kernel,
                    # and the fused SparseSigmoid's weight gradient lost its bit-for-bit
                    # equality with the two layers': not kept. With dx, one or two chains
                    # were slower, 98–99 against 95; summing four entries' dot products
                    # at once in one shuffle tree was a tie without dx and 20 % slower with
                    # it, 116 against 97: not kept either. Written with fma calls only, the
                    # sums of the chains as fma(a, 1, b), two chains without dx were 108 →
                    # 102.5 µs, but the fused pair's bits still differed from the layers':
                    # not kept.)
                    chains = 4
                    partial = [None] * chains
                    for n in range(n_regs):
                        g = builder.load(vec_ptr(g_p, builder.add(g_row, C(_LANES * n))), align=4)
                        if want_dx:
                            builder.store(builder.call(fma, [v, g, builder.load(accs[n])]),
                                          accs[n])
                        xv = held[n] if hold else x_vector(j, n)
                        t = partial[n % chains]
                        partial[n % chains] = (builder.fmul(g, xv) if t is None
                                               else builder.call(fma, [g, xv, t]))
                    partial = [t for t in partial if t is not None]
                    while len(partial) > 1:
                        partial = [builder.fadd(partial[i], partial[i + 1]) if i + 1 < len(partial)
                                   else partial[i] for i in range(0, len(partial), 2)]
                    s = horizontal_sum(partial[0])
                    where = builder.gep(gd_p, [p])
                    with builder.if_else(is_first) as (first, later):
                        with first:
                            builder.store(s, where)
                        with later:
                            builder.store(builder.fadd(builder.load(where), s), where)
                if want_dx:
                    _store_row_vectors(builder, helpers, dx_p, builder.mul(c_v, lddx_v), j, k_v,
                                       [builder.load(acc) for acc in accs])

            n_vectors = builder.udiv(builder.add(k_v, C(_LANES - 1)), C(_LANES))
            _balanced_passes(builder, n_vectors, _BACKWARD_PASS_REGS, one_pass)
            return context.get_dummy_value()

        return sig, codegen

    return kernel


_backward_col_avx2 = _make_backward_col_avx2(True)
_backward_col_params_avx2 = _make_backward_col_avx2(False)


@intrinsic
def _transpose_tile8(typingctx, src, dst, src_at, src_ld, dst_at, dst_ld):
    """dst[dst_at + j·dst_ld + i] = src[src_at + i·src_ld + j] for i, j < 8, on the data
    pointers of two float32 arrays: eight 8-lane loads, the unpack / shuffle / 128-bit
    permute network of an AVX 8 × 8 transpose (as LLVM shufflevectors), eight stores."""
    sig = types.void(src, dst, src_at, src_ld, dst_at, dst_ld)

    def codegen(context, builder, signature, args):
        src_p, dst_p = _array_pointers(context, builder, signature, args, 2)
        f32, i64, v8f, fma, vec_ptr, broadcast, masks, masked_load, masked_store = \
            _ir_helpers(context, builder)
        s_at, s_ld, d_at, d_ld = _int_args(context, builder, signature, args, 2)
        C = lambda v: ir.Constant(i64, v)                       # noqa: E731

        def mix(a, b, idx):
            return builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(ir.IntType(32), 8), idx))
        rows = [builder.load(vec_ptr(src_p, builder.add(s_at, builder.mul(s_ld, C(i)))), align=4)
                for i in range(8)]
        t = []
        for i in range(0, 8, 2):           # unpacklo / unpackhi of row pairs
            t += [mix(rows[i], rows[i + 1], [0, 8, 1, 9, 4, 12, 5, 13]),
                  mix(rows[i], rows[i + 1], [2, 10, 3, 11, 6, 14, 7, 15])]
        lo, hi = [0, 1, 8, 9, 4, 5, 12, 13], [2, 3, 10, 11, 6, 7, 14, 15]
        u = [mix(t[0], t[2], lo), mix(t[0], t[2], hi), mix(t[1], t[3], lo), mix(t[1], t[3], hi),
             mix(t[4], t[6], lo), mix(t[4], t[6], hi), mix(t[5], t[7], lo), mix(t[5], t[7], hi)]
        columns = ([mix(u[i], u[i + 4], [0, 1, 2, 3, 8, 9, 10, 11]) for i in range(4)]
                   + [mix(u[i], u[i + 4], [4, 5, 6, 7, 12, 13, 14, 15]) for i in range(4)])
        for j, column in enumerate(columns):
            builder.store(column, vec_ptr(dst_p, builder.add(d_at, builder.mul(d_ld, C(j)))),
                          align=4)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _transpose_tile16(typingctx, src, dst, src_at, src_ld, dst_at, dst_ld):
    """dst[dst_at + j·dst_ld + i] = src[src_at + i·src_ld + j] for i, j < 16: sixteen
    16-lane loads, four stages of eight interleave pairs (out[2i], out[2i+1] = the low and
    high interleaves of v[i] and v[i+8]; four such perfect shuffles transpose 16 × 16),
    sixteen stores. For 16-lane (AVX-512) targets: each shuffle one vpermt2ps."""
    sig = types.void(src, dst, src_at, src_ld, dst_at, dst_ld)

    def codegen(context, builder, signature, args):
        src_p, dst_p = _array_pointers(context, builder, signature, args, 2)
        f32, i64, vf, fma, vec_ptr, broadcast, masks, masked_load, masked_store = \
            _ir_helpers(context, builder, 16)
        s_at, s_ld, d_at, d_ld = _int_args(context, builder, signature, args, 2)
        C = lambda v: ir.Constant(i64, v)                       # noqa: E731
        idx = ir.VectorType(ir.IntType(32), 16)
        lo = ir.Constant(idx, [i // 2 + 16 * (i % 2) for i in range(16)])
        hi = ir.Constant(idx, [8 + i // 2 + 16 * (i % 2) for i in range(16)])
        v = [builder.load(vec_ptr(src_p, builder.add(s_at, builder.mul(s_ld, C(i)))), align=4)
             for i in range(16)]
        for _ in range(4):
            w = []
            for i in range(8):
                w += [builder.shuffle_vector(v[i], v[i + 8], lo),
                      builder.shuffle_vector(v[i], v[i + 8], hi)]
            v = w
        for j, column in enumerate(v):
            builder.store(column, vec_ptr(dst_p, builder.add(d_at, builder.mul(d_ld, C(j)))),
                          align=4)
        return context.get_dummy_value()

    return sig, codegen


@numba.njit(cache=True, fastmath=True)
def _transpose_samples_padded(a, out, s0, s1):
    # out[j, i] = a[i, j] for the samples (rows of a) s0 ≤ i < s1, every column j: a is a
    # C-ordered float32 (k, m), out the padded (m, ld ≥ k) buffer. With 16-lane vectors
    # 16 × 16 register tiles where 16 samples and 16 columns are whole (then 8 × 8 and
    # scalar copies for those 16 samples' last columns); 8 × 8 tiles where 8 samples and
    # 8 columns are whole; scalar copies at the ragged edges; the pad lanes k..ld of out
    # are never written.
    m = a.shape[1]
    src_ld, dst_ld = a.shape[1], out.shape[1]
    m8 = m - m % 8
    first8 = s0
    if _LANES == 16:
        m16 = m - m % 16
        first8 = s0 + (s1 - s0) // 16 * 16
        for i0 in range(s0, first8, 16):
            for j0 in range(0, m16, 16):
                _transpose_tile16(a, out, i0 * src_ld + j0, src_ld, j0 * dst_ld + i0, dst_ld)
            for j0 in range(m16, m8, 8):
                _transpose_tile8(a, out, i0 * src_ld + j0, src_ld, j0 * dst_ld + i0, dst_ld)
                _transpose_tile8(a, out, (i0 + 8) * src_ld + j0, src_ld, j0 * dst_ld + i0 + 8,
                                 dst_ld)
            for j in range(m8, m):
                for i in range(i0, i0 + 16):
                    out[j, i] = a[i, j]
    s8 = first8 + (s1 - first8) // 8 * 8
    for i0 in range(first8, s8, 8):
        for j0 in range(0, m8, 8):
            _transpose_tile8(a, out, i0 * src_ld + j0, src_ld, j0 * dst_ld + i0, dst_ld)
        for j in range(m8, m):
            for i in range(i0, i0 + 8):
                out[j, i] = a[i, j]
    # the last (s1 − s0) % 8 samples: column by column, so each row of out is touched once
    # (sample by sample, each of the < 8 passes wrote one float into every row of out, a
    # cache line each: 4.3 µs of the 18.5 of a 100 × 784 fill)
    for j in range(m):
        dst = out[j]
        for i in range(s8, s1):
            dst[i] = a[i, j]


#: how the padded kernels fill their padded operand's lanes from ``source``
FILL_NONE, FILL_TRANSPOSE, FILL_COPY = 0, 1, 2


@numba.njit(cache=True, fastmath=True)
def _fill_share(source, pad, fill, s0, s1):
    # the lanes s0..s1 of every row of pad, from a batch-major source (k, n), transposed,
    # or a feature-major source (n, k), copied; FILL_NONE: nothing
    if fill == FILL_TRANSPOSE:
        _transpose_samples_padded(source, pad, s0, s1)
    elif fill == FILL_COPY:
        n = s1 - s0
        for j in range(pad.shape[0]):
            src, dst = source[j, s0:s1], pad[j, s0:s1]
            for i in range(n):
                dst[i] = src[i]


@numba.njit(cache=True)
def _sample_share(c, n_blocks, k):
    # (first vector, end vector, first sample, end sample) of block c when the k samples'
    # ceil(k/8) 8-lane vectors are cut into n_blocks contiguous shares
    nv = (k + _LANES - 1) // _LANES
    v0, v1 = c * nv // n_blocks, (c + 1) * nv // n_blocks
    return v0, v1, min(k, _LANES * v0), min(k, _LANES * v1)


@numba.njit(cache=True, fastmath=True)
def _add_bias_share(out, bias, s0, s1):
    n = s1 - s0
    for r in range(out.shape[0]):
        acc = out[r, s0:s1]
        br = bias[r]
        for b in range(n):
            acc[b] += br


@numba.njit(cache=True, fastmath=True)
def _row_sums_share(a, zero, out, s0, s1):
    # out[r] = Σ_{s0 ≤ b < s1} a[r, b]; the loop runs over a slice from 0 (written
    # ``for b in range(s0, s1)`` LLVM left the reduction scalar: 7× slower)
    n = s1 - s0
    for r in range(len(out)):
        row = a[r, s0:s1]
        t = zero
        for b in range(n):
            t += row[b]
        out[r] = t


@numba.njit(cache=True, fastmath=True)
def _forward_padded_share(indptr, indices, data, bias, dense_pad, out, v0, v1, s0, s1):
    # every output row, for the samples of vectors v0..v1 (s0..s1); the bias is added
    # after the product, while out is still in cache
    # the intrinsic sees the share as its own narrower problem: views that start at
    # sample s0 (same row strides), k = s1 − s0 samples
    ld, ld_out = dense_pad.shape[1], out.shape[1]
    nnz = len(indices)
    dense_share, out_share = dense_pad.reshape(-1)[s0:], out.reshape(-1)[s0:]
    for r in range(out.shape[0]):
        _forward_row_padded_avx2(out_share, dense_share, indices, data, indptr[r], indptr[r + 1],
                                 r, s1 - s0, ld, ld_out, nnz)
    if len(bias) > 0:
        _add_bias_share(out, bias, s0, s1)


@numba.njit(cache=True, fastmath=True)
def _backward_columns_dx_share(t_indptr, t_indices, perm, data, grad_pad, x_pad, grad_data, dx,
                               s0, s1):
    # (one intrinsic per function: with both in one, LLVM spilled the loops' base
    # pointers to the stack and the fused loop ran ~15 % slower)
    ld_g, ld_x, ld_dx, nnz = grad_pad.shape[1], x_pad.shape[1], dx.shape[1], len(t_indices)
    g_share, x_share = grad_pad.reshape(-1)[s0:], x_pad.reshape(-1)[s0:]
    dx_share = dx.reshape(-1)[s0:]
    for c in range(len(t_indptr) - 1):
        _backward_col_avx2(dx_share, g_share, x_share, t_indices, perm, data, grad_data,
                           t_indptr[c], t_indptr[c + 1], c, s1 - s0, ld_g, ld_x, ld_dx, nnz)


@numba.njit(cache=True, fastmath=True)
def _backward_columns_params_share(t_indptr, t_indices, perm, data, grad_pad, x_pad, grad_data,
                                   dx, s0, s1):
    ld_g, ld_x, nnz = grad_pad.shape[1], x_pad.shape[1], len(t_indices)
    g_share, x_share = grad_pad.reshape(-1)[s0:], x_pad.reshape(-1)[s0:]
    for c in range(len(t_indptr) - 1):
        _backward_col_params_avx2(dx, g_share, x_share, t_indices, perm, data, grad_data,
                                  t_indptr[c], t_indptr[c + 1], c, s1 - s0, ld_g, ld_x, 0, nnz)


@numba.njit(cache=True, fastmath=True)
def _backward_padded_share(t_indptr, t_indices, perm, data, grad_pad, x_pad, k, zero,
                           grad_data, grad_bias, dx, v0, v1, s0, s1):
    # every column of A and every bias row, for the samples of vectors v0..v1 (s0..s1):
    # this share's terms of grad_data and grad_bias (written, not added), and dx[:, s0:s1].
    # The intrinsics see the share as a narrower problem of their own: flat views that
    # start at sample s0 (the same row strides), s1 − s0 samples.
    _row_sums_share(grad_pad, zero, grad_bias, s0, s1)
    if v1 == v0:                    # no samples: no passes, and every product is 0
        for q in range(len(grad_data)):
            grad_data[q] = zero
    elif dx.shape[0] > 0:
        _backward_columns_dx_share(t_indptr, t_indices, perm, data, grad_pad, x_pad, grad_data,
                                   dx, s0, s1)
    else:
        _backward_columns_params_share(t_indptr, t_indices, perm, data, grad_pad, x_pad,
                                       grad_data, dx, s0, s1)


@numba.njit(cache=True, fastmath=True)
def _input_grad_padded_share(t_indptr, t_indices, perm, data, grad_pad, dx, s0, s1):
    # dx[:, s0:s1] = (Aᵀ · grad)[:, s0:s1] alone, by Aᵀ's rows over A's values (the
    # forward's row kernel through ``perm``); the product split's first half
    ld_g, ld_dx, nnz = grad_pad.shape[1], dx.shape[1], len(t_indices)
    g_share, dx_share = grad_pad.reshape(-1)[s0:], dx.reshape(-1)[s0:]
    for c in range(len(t_indptr) - 1):
        _forward_row_padded_permuted_avx2(dx_share, g_share, t_indices, perm, data, t_indptr[c],
                                          t_indptr[c + 1], c, s1 - s0, ld_g, ld_dx, nnz)


@numba.njit(cache=True, fastmath=True)
def _forward_padded_row_range(indptr, indices, data, bias, dense_pad, out, r0, r1):
    # output rows r0..r1 for every sample (the row split's share), the bias added to each
    # finished row: the numbers of the one-block ``_forward_padded_share``
    k, ld, ld_out, nnz = out.shape[1], dense_pad.shape[1], out.shape[1], len(indices)
    if k == 0:
        return
    dense_flat, out_flat = dense_pad.reshape(-1), out.reshape(-1)
    has_bias = len(bias) > 0
    for r in range(r0, r1):
        _forward_row_padded_avx2(out_flat, dense_flat, indices, data, indptr[r], indptr[r + 1],
                                 r, k, ld, ld_out, nnz)
        if has_bias:
            acc, br = out[r], bias[r]
            for b in range(k):
                acc[b] += br


@numba.njit(cache=True, fastmath=True)
def _backward_dx_column_range(t_indptr, t_indices, perm, data, grad_pad, x_pad, grad_data, dx,
                              c0, c1):
    # the fused backward with dx for A's columns c0..c1 and every sample (the column split)
    k, ld_g, ld_x, ld_dx = dx.shape[1], grad_pad.shape[1], x_pad.shape[1], dx.shape[1]
    g_flat, x_flat, dx_flat = grad_pad.reshape(-1), x_pad.reshape(-1), dx.reshape(-1)
    for c in range(c0, c1):
        _backward_col_avx2(dx_flat, g_flat, x_flat, t_indices, perm, data, grad_data,
                           t_indptr[c], t_indptr[c + 1], c, k, ld_g, ld_x, ld_dx, len(t_indices))


@numba.njit(cache=True, fastmath=True)
def _backward_params_column_range(t_indptr, t_indices, perm, data, grad_pad, x_pad, grad_data,
                                  dx, k, c0, c1):
    # the same without dx (a first layer)
    ld_g, ld_x = grad_pad.shape[1], x_pad.shape[1]
    g_flat, x_flat = grad_pad.reshape(-1), x_pad.reshape(-1)
    for c in range(c0, c1):
        _backward_col_params_avx2(dx, g_flat, x_flat, t_indices, perm, data, grad_data,
                                  t_indptr[c], t_indptr[c + 1], c, k, ld_g, ld_x, 0,
                                  len(t_indices))


def _csr_matmul_padded_rowsplit(indptr, indices, data, bias, source, dense_pad, out, fill,
                                n_blocks):
    # the padded forward split by output ROWS (``FORWARD_SPLIT = "rows"``): a first region
    # fills xᵀ (each block its share of the samples), then, after its barrier, block c
    # computes rows [c·n/B, (c+1)·n/B) for every sample. Each core reads all of xᵀ and
    # writes only its own rows of out; the numbers are the one-block kernel's.
    k, n_rows = out.shape[1], out.shape[0]
    if fill != FILL_NONE:
        for c in numba.prange(n_blocks):
            v0, v1, s0, s1 = _sample_share(c, n_blocks, k)
            _fill_share(source, dense_pad, fill, s0, s1)
    for c in numba.prange(n_blocks):
        _forward_padded_row_range(indptr, indices, data, bias, dense_pad, out,
                                  c * n_rows // n_blocks, (c + 1) * n_rows // n_blocks)


def _backward_padded_colsplit(t_indptr, t_indices, perm, data, source, grad_pad, x_pad, k, zero,
                              grad_data, grad_bias, dx, fill, n_blocks):
    # the padded backward split by A's COLUMNS (``BACKWARD_SPLIT = "columns"``, with or
    # without dx): after the fill of gradᵀ (a first region, by samples), block c does
    # columns [c·n/B, (c+1)·n/B) — their rows of dx and their entries of the weight
    # gradient, every sample — and the same share of the bias rows. No partial sums; the
    # numbers are the one-block kernel's.
    n_rows, n_cols = grad_pad.shape[0], len(t_indptr) - 1
    want_dx = dx.shape[0] > 0
    if fill != FILL_NONE:
        for c in numba.prange(n_blocks):
            v0, v1, s0, s1 = _sample_share(c, n_blocks, k)
            _fill_share(source, grad_pad, fill, s0, s1)
    for c in numba.prange(n_blocks):
        r0, r1 = c * n_rows // n_blocks, (c + 1) * n_rows // n_blocks
        if len(grad_bias) > 0:
            _row_sums_share(grad_pad[r0:r1], zero, grad_bias[r0:r1], 0, k)
        c0, c1 = c * n_cols // n_blocks, (c + 1) * n_cols // n_blocks
        if k == 0:                  # no samples: every product is 0
            for q in range(t_indptr[c0], t_indptr[c1]):
                grad_data[perm[q]] = zero
        elif want_dx:
            _backward_dx_column_range(t_indptr, t_indices, perm, data, grad_pad, x_pad,
                                      grad_data, dx, c0, c1)
        else:
            _backward_params_column_range(t_indptr, t_indices, perm, data, grad_pad, x_pad,
                                          grad_data, dx, k, c0, c1)


def _backward_products_rows(t_indptr, t_indices, perm, data, source, grad_pad, x_pad, k, zero,
                            grad_data, grad_bias, dx, fill, n_blocks):
    # the padded backward split by PRODUCT instead of by samples (``BACKWARD_SPLIT =
    # "products"``, for two threads and an input gradient): a first parallel region fills
    # grad_pad (each block its share of the samples), then (after its barrier) block 0
    # computes dx = Aᵀ · grad for every sample and block 1 the weight and bias gradients
    # for every sample. No output is written by two threads (no partial sums, no cache line
    # of dx shared between cores), and each core reads all of gradᵀ from its own L2.
    # dx is bit for bit the fused kernel's; the weight gradient is the one-block fused
    # kernel's (the sample split sums two partial dot products instead).
    nv = (k + 7) // 8
    if fill != FILL_NONE:
        for c in numba.prange(n_blocks):
            v0, v1, s0, s1 = _sample_share(c, n_blocks, k)
            _fill_share(source, grad_pad, fill, s0, s1)
    for c in numba.prange(2):
        if c == 0:
            if nv > 0:
                _input_grad_padded_share(t_indptr, t_indices, perm, data, grad_pad, dx, 0, k)
        else:
            _backward_padded_share(t_indptr, t_indices, perm, data, grad_pad, x_pad, k, zero,
                                   grad_data, grad_bias, dx[:0], 0, nv, 0, k)


def _csr_matmul_padded_rows(indptr, indices, data, bias, source, dense_pad, out, fill,
                            n_blocks):
    # the training forward over a padded xᵀ buffer, in ONE parallel region: block c
    # owns a share of the batch's samples (whole 8-lane vectors), fills those samples'
    # lanes of every xᵀ row (``fill`` = FILL_TRANSPOSE: from the batch-major x
    # (k, n_cols) in ``source``; FILL_COPY: from a feature-major (n_cols, k) one;
    # FILL_NONE: dense_pad holds xᵀ already), then computes every output row for
    # them. No block reads what another writes, so no barrier (no second region) is
    # needed, and each core's cache holds only its share of xᵀ.
    k = out.shape[1]
    for c in numba.prange(n_blocks):
        v0, v1, s0, s1 = _sample_share(c, n_blocks, k)
        _fill_share(source, dense_pad, fill, s0, s1)
        _forward_padded_share(indptr, indices, data, bias, dense_pad, out, v0, v1, s0, s1)


def _backward_padded_rows(t_indptr, t_indices, perm, data, source, grad_pad, x_pad, k, zero,
                          grad_data, grad_bias, dx, partial, bias_partial, fill, n_blocks):
    # the fused backward over padded gradᵀ and xᵀ buffers, in ONE parallel region, split
    # by samples as the forward: block c fills its samples of grad_pad from ``source``
    # (``fill`` as the forward's: a batch-major (k, n_rows) grad transposed, a
    # feature-major one copied, or none) and computes dx[:, its samples]
    # and its samples' terms of the weight and bias gradients: block 0 into grad_data /
    # grad_bias, block c > 0 into partial[c − 1] / bias_partial[c − 1] (n_blocks − 1
    # rows each), summed after the region (one pass over nnz + n_rows values).
    want_bias = len(grad_bias) > 0
    for c in numba.prange(n_blocks):
        v0, v1, s0, s1 = _sample_share(c, n_blocks, k)
        _fill_share(source, grad_pad, fill, s0, s1)
        gd = grad_data if c == 0 else partial[c - 1]
        gb = grad_bias if c == 0 else bias_partial[c - 1]
        _backward_padded_share(t_indptr, t_indices, perm, data, grad_pad, x_pad, k, zero, gd,
                               gb[:len(grad_bias)] if want_bias else gb[:0], dx, v0, v1, s0, s1)
    for c in range(n_blocks - 1):
        part = partial[c]
        for q in range(len(grad_data)):
            grad_data[q] += part[q]
        if want_bias:
            part_b = bias_partial[c]
            for r in range(len(grad_bias)):
                grad_bias[r] += part_b[r]


_KERNELS = {}
for _name, _fn in (("matmul", _csr_matmul_rows), ("matmul_permuted", _csr_matmul_permuted_rows),
                   ("sampled", _sampled_matmul_rows), ("backward", _backward_rows),
                   ("backward_batch_major", _backward_batch_major_rows),
                   ("matmul_batch_major", _csr_matmul_batch_major_rows),
                   ("transpose", _transpose_rows),
                   ("matmul_simd", _csr_matmul_simd_rows),
                   ("matmul_batch_major_simd", _csr_matmul_batch_major_simd_rows),
                   ("matmul_padded", _csr_matmul_padded_rows),
                   ("backward_padded", _backward_padded_rows),
                   ("backward_products", _backward_products_rows),
                   ("matmul_padded_rowsplit", _csr_matmul_padded_rowsplit),
                   ("backward_padded_colsplit", _backward_padded_colsplit)):
    # each build under its own name, so its own on-disk cache entry (``builds``)
    _KERNELS[_name] = (njit_variant(_fn, "_serial", fastmath=True),
                       njit_variant(_fn, "_parallel", fastmath=True, parallel=True))


#: the threading layer's factor on PARALLEL_MIN_WORK, once the layer is known (it is
#: fixed for the life of the process from the first parallel kernel on)
_layer_factor = None


def min_parallel_work() -> int:
    """Multiply-adds from which a call runs on the thread pool. Numba's OpenMP
    pool wakes in a few µs; its ``workqueue`` pool (minidnn.configure_threads'
    choice) takes about 0.1 ms, which only a call ten times larger pays for."""
    global _layer_factor
    if _layer_factor is not None:
        return PARALLEL_MIN_WORK * _layer_factor
    try:
        layer = numba.threading_layer()
    except ValueError:          # no parallel kernel has run yet: the layer is not chosen
        return PARALLEL_MIN_WORK
    # asked once: numba.threading_layer() costs a fraction of a µs per call, twice a step
    _layer_factor = 10 if layer == "workqueue" else 1
    return PARALLEL_MIN_WORK * _layer_factor


def _kernel(name, work):
    """(kernel, n_blocks): the serial build with one block, or the parallel one
    with a block per thread when ``work`` multiply-adds pay for the thread pool."""
    serial, parallel = _KERNELS[name]
    threads = numba_thread_count()       # numba.get_num_threads() without its locks
    if threads > 1 and work >= min_parallel_work():
        return parallel, threads
    return serial, 1


def _sample_blocks(blocks: int, k: int) -> int:
    """Blocks of the padded kernels, which split the batch's 8-lane vectors: at most
    one per vector, at least one."""
    return max(1, min(blocks, (k + _LANES - 1) // _LANES))


def _forward_name(name: str, dtype) -> str:
    """The forward kernel for data of ``dtype``: the AVX2 + FMA row kernel for float32
    where Numba's target has it (``SIMD_AVAILABLE``), the portable one otherwise. In
    one-process A/Bs at 1 thread under load (784→500, γ = 0.04, batch 100, medians of
    300 interleaved calls of the serial builds), the product took 106 against 130 µs;
    with the transpose of x inside (the training path) the gain is a few per cent,
    within the noise of ``bench/sparse_simd_ab.py`` on the loaded machine."""
    return name + "_simd" if SIMD_AVAILABLE and dtype == np.float32 else name


def _unsigned(a: np.ndarray) -> np.ndarray:
    """The same index array as unsigned integers (a view): indexing with them skips
    Numba's negative-index wrap-around."""
    return a.view(np.uint32 if a.itemsize == 4 else np.uint64)


def _operand(dense, rows: int, dtype, what: str, name: str = "dense") -> np.ndarray:
    dense = np.asarray(dense)
    if dense.ndim != 2 or dense.shape[0] != rows:
        raise ValueError(f"{what} expects {name} of shape ({rows}, k), got {dense.shape}")
    return np.ascontiguousarray(dense, dtype=dtype)


def _indices(indptr, indices):
    return (_unsigned(np.asarray(indptr, dtype=INDEX_DTYPE)),
            _unsigned(np.asarray(indices, dtype=INDEX_DTYPE)))


def csr_matmul(indptr, indices, data, dense, n_cols: int, out=None, bias=None):
    """A · dense (+ bias[:, None]) for A = csr(indptr, indices, data) of shape
    (n_rows, n_cols); dense (n_cols, k) → (n_rows, k), in data's dtype."""
    dense = _operand(dense, n_cols, data.dtype, "csr_matmul")
    n_rows = len(indptr) - 1
    if out is None:
        out = np.empty((n_rows, dense.shape[1]), dtype=data.dtype)
    bias = np.zeros(0, data.dtype) if bias is None else np.asarray(bias, dtype=data.dtype)
    if len(bias) not in (0, n_rows):
        raise ValueError(f"csr_matmul: bias has length {len(bias)}, expected {n_rows}")
    kernel, blocks = _kernel(_forward_name("matmul", data.dtype), len(data) * dense.shape[1])
    kernel(*_indices(indptr, indices), data, bias, data.dtype.type(0), dense, out, blocks)
    return out


def csr_matmul_transposed(transposed, data, dense, n_rows: int, out=None):
    """Aᵀ · dense for A (n_rows, n_cols) with values ``data`` (nnz,) and ``transposed`` =
    csr_transpose_structure(A's indptr, indices, n_cols); dense (n_rows, k) → (n_cols, k)."""
    t_indptr, t_indices, perm = transposed
    dense = _operand(dense, n_rows, data.dtype, "csr_matmul_transposed")
    if out is None:
        out = np.empty((len(t_indptr) - 1, dense.shape[1]), dtype=data.dtype)
    kernel, blocks = _kernel("matmul_permuted", len(data) * dense.shape[1])
    kernel(*_indices(t_indptr, t_indices), _unsigned(np.asarray(perm, dtype=INDEX_DTYPE)),
           data, dense, out, blocks)
    return out


def sampled_matmul(indptr, indices, left, right, n_cols: int, out=None, row_sums=None):
    """(left · rightᵀ) at the pattern (indptr, indices) of an (n_rows, n_cols) matrix:
    left (n_rows, k), right (n_cols, k) → (nnz,), in the order of ``indices``.
    ``row_sums`` (n_rows,), if given, receives left.sum(axis=1) from the same pass."""
    left = np.asarray(left)
    left = _operand(left, len(indptr) - 1, left.dtype, "sampled_matmul", "left")
    right = _operand(right, n_cols, left.dtype, "sampled_matmul", "right")
    if left.shape[1] != right.shape[1]:
        raise ValueError(f"sampled_matmul: left {left.shape} and right {right.shape} must have "
                         f"the same number of columns")
    if out is None:
        out = np.empty(len(indices), dtype=left.dtype)
    row_sums = np.zeros(0, left.dtype) if row_sums is None else row_sums
    kernel, blocks = _kernel("sampled", len(indices) * left.shape[1])
    kernel(*_indices(indptr, indices), left, right, left.dtype.type(0), out, row_sums, blocks)
    return out


def csr_matmul_batch_major(indptr, indices, data, x, n_cols: int, bias=None, xt=None):
    """(A · xᵀ (+ bias[:, None]), xᵀ) from a batch-major x (k, n_cols) in one call.

    The transpose to the kernels' feature-major layout happens inside the same
    parallel call, each thread taking a share of the columns; xᵀ (n_cols, k,
    C-ordered) is handed back because the backward pass needs it too. ``xt``:
    a buffer of that shape and data's dtype to write it into (reused between
    steps, so no allocation). Equals ``csr_matmul(..., transpose(x), ...)``."""
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != n_cols:
        raise ValueError(f"csr_matmul_batch_major expects x of shape (k, {n_cols}), got {x.shape}")
    x = np.ascontiguousarray(x, dtype=data.dtype)
    k, n_rows = x.shape[0], len(indptr) - 1
    if xt is None or xt.shape != (n_cols, k) or xt.dtype != data.dtype \
            or not xt.flags.c_contiguous:
        xt = np.empty((n_cols, k), dtype=data.dtype)
    out = np.empty((n_rows, k), dtype=data.dtype)
    bias = np.zeros(0, data.dtype) if bias is None else np.asarray(bias, dtype=data.dtype)
    if len(bias) not in (0, n_rows):
        raise ValueError(f"csr_matmul_batch_major: bias has length {len(bias)}, expected {n_rows}")
    kernel, blocks = _kernel(_forward_name("matmul_batch_major", data.dtype),
                             (len(data) + n_cols) * k)
    kernel(*_indices(indptr, indices), data, bias, data.dtype.type(0), x, xt, out, blocks)
    return out, xt


def csr_backward(indptr, indices, transposed, data, grad, x, input_grad: bool = True,
                 batch_major_grad: bool = False, grad_scratch=None):
    """A sparse layer's backward pass in one call (one wake-up of the thread pool).

    For A = csr(indptr, indices, data) of shape (n_rows, n_cols), ``transposed`` =
    csr_transpose_structure(indptr, indices, n_cols), grad (n_rows, k) and x
    (n_cols, k), both feature-major: returns (grad_data, grad_bias, dx) with

        grad_data = (grad · xᵀ) sampled at A's pattern     (nnz,)
        grad_bias = grad.sum(axis=1)                        (n_rows,)
        dx        = Aᵀ · grad                               (n_cols, k), or None

    (``input_grad=False``: no dx, as for a net's first layer). The kernel walks
    Aᵀ's rows (A's columns) and computes dx[c] and the weight gradient of
    column c's entries in the same pass, so each grad row it loads feeds both
    products. ``batch_major_grad=True``: grad is given as (k, n_rows) and is
    transposed inside the same call (into ``grad_scratch``, an (n_rows, k)
    buffer, if given). The twin is ``csr_backward_numpy``."""
    n_rows, n_cols = len(indptr) - 1, len(transposed[0]) - 1
    if batch_major_grad:
        grad = np.asarray(grad)
        if grad.ndim != 2 or grad.shape[1] != n_rows:
            raise ValueError(f"csr_backward expects a batch-major grad of shape (k, {n_rows}), "
                             f"got {grad.shape}")
        grad_bm = np.ascontiguousarray(grad, dtype=data.dtype)
        k = grad_bm.shape[0]
        if grad_scratch is None or grad_scratch.shape != (n_rows, k) \
                or grad_scratch.dtype != data.dtype or not grad_scratch.flags.c_contiguous:
            grad_scratch = np.empty((n_rows, k), dtype=data.dtype)
        grad = grad_scratch
    else:
        grad = _operand(grad, n_rows, data.dtype, "csr_backward", "grad")
    x = _operand(x, n_cols, data.dtype, "csr_backward", "x")
    if grad.shape[1] != x.shape[1]:
        raise ValueError(f"csr_backward: grad {grad.shape} and x {x.shape} must have the same "
                         f"number of columns")
    k = grad.shape[1]
    grad_data = np.empty(len(data), dtype=data.dtype)
    grad_bias = np.empty(n_rows, dtype=data.dtype)
    dx = np.empty((n_cols if input_grad else 0, k), dtype=data.dtype)
    t_indptr, t_indices, perm = transposed
    structure = (*_indices(t_indptr, t_indices), _unsigned(np.asarray(perm, dtype=INDEX_DTYPE)))
    work = len(data) * k * (2 if input_grad else 1)
    if batch_major_grad:
        kernel, blocks = _kernel("backward_batch_major", work + n_rows * k)
        kernel(*structure, data, grad_bm, grad, x, data.dtype.type(0), grad_data, grad_bias, dx,
               blocks)
    else:
        kernel, blocks = _kernel("backward", work)
        kernel(*structure, data, grad, x, data.dtype.type(0), grad_data, grad_bias, dx, blocks)
    return grad_data, grad_bias, (dx if input_grad else None)


class TrainingKernels:
    """The two kernel calls of a sparse layer's training step, for one fixed pattern.

    ``csr_matmul(_batch_major)`` and ``csr_backward`` check and convert their
    operands on every call (a few µs each, which at γ = 0.04 is a tenth of a
    step); this holds the unsigned index views of A and Aᵀ, made once, and
    trusts its caller (SparseDense) for the rest: data, bias and the dense
    operands C-contiguous in data's dtype, with matching shapes. Results equal
    the public functions' (the same kernels), and so their twins."""

    #: at most this many threads for the training kernels (None: Numba's thread count).
    #: 1 runs the serial builds whatever the thread count. A class-level switch for the
    #: quiet-machine A/B of sitting 19 (``bench/sparse_kernel_ab.py --step-variants``): on
    #: the loaded 2-core machine the 2-thread kernels were no faster than one thread.
    THREADS: int | None = None

    #: how the float32 backward with an input gradient splits its work over two threads:
    #: "samples" (each thread its share of the batch, both products; sitting 18) or
    #: "products" (``_backward_products_rows``: one thread dx = Aᵀ · grad, the other the
    #: weight and bias gradients, after the fill of gradᵀ). Used only when the call runs
    #: on exactly two blocks; without an input gradient (a first layer) it is always
    #: "samples". Class-level, for the same quiet A/B.
    #: Default "columns" with FORWARD_SPLIT "rows" (sitting 19's quiet run, the first with
    #: really parallel builds, see ``kernels.builds``): the 784→500 γ = 0.04 layer step at
    #: 2 threads, p50 328 µs rows+columns against 396 samples, 359 rows+products and 499
    #: serial (``bench/sparse_kernel_ab.py --threads 2 --clock wall``, one process,
    #: interleaved); in ``bench/sparse_speed.py``'s separate peers 486 against 560 µs
    #: (``results/sparse_speed_splits_quiet.json``, ``quiet_bench_stop19.log``).
    BACKWARD_SPLIT: str = "columns"

    #: how the float32 forward splits its work over threads: "samples" (sitting 18) or
    #: "rows" (``_csr_matmul_padded_rowsplit``: the fill of xᵀ by samples, then each thread
    #: its block of output rows for every sample). BACKWARD_SPLIT may also be "columns"
    #: (``_backward_padded_colsplit``: each thread its block of A's columns — dx rows and
    #: weight-gradient entries — for every sample, with or without dx). "rows", "columns"
    #: and "products" give the one-thread numbers bit for bit; "samples" sums per-thread
    #: partial dot products. Class-level, for the quiet A/B (default: see BACKWARD_SPLIT).
    FORWARD_SPLIT: str = "rows"

    def __init__(self, indptr, indices, transposed, n_cols: int):
        t_indptr, t_indices, perm = transposed
        self.n_rows, self.n_cols = len(indptr) - 1, int(n_cols)
        self.nnz = len(indices)
        self.indptr, self.indices = _indices(indptr, indices)
        self.t_indptr, self.t_indices = _indices(t_indptr, t_indices)
        self.perm = _unsigned(np.asarray(perm, dtype=INDEX_DTYPE))
        # the padded float32 buffers of xᵀ and gradᵀ (``padded_buffer``), allocated at the
        # first step and again when the batch size changes
        self._x_pad = self._grad_pad = self._x_other = self._x_view = self._partial = None
        # the buffer ``_x_view`` is a view of, so a forward call that fills the same buffer
        # for the same batch hands out the same view object instead of slicing a new one
        self._x_view_of = None
        # the batch each padded buffer was last handed out for (``_padded``)
        self._buffer_k = {}

    def _padded(self, which: str, n: int, k: int) -> np.ndarray:
        """The padded buffer ``which`` for batch k: a new zeroed one when its row length
        changes; kept when it does not, with lanes k.. zeroed again when the batch it was
        last handed out for was another (a larger batch of the same row length left its
        samples there, and the backward's dot products read every lane of a vector:
        until sitting 22 a batch of 13 then one of 9 gave a wrong weight gradient)."""
        buf = getattr(self, which)
        if buf is None or buf.shape != (n, padded_width(k)):
            buf = padded_buffer(n, k)
            setattr(self, which, buf)
        elif self._buffer_k.get(which) != k:
            buf[:, k:] = 0
        self._buffer_k[which] = k
        return buf

    def _blocks(self, work: int) -> int:
        """The thread blocks a call of ``work`` multiply-adds runs on: Numba's thread
        count, at most ``THREADS``, when the work pays for the thread pool; else 1 (the
        serial build). Read every call: the thread count is per thread and may change."""
        threads = numba_thread_count()       # numba.get_num_threads() without its locks
        cap = self.THREADS
        if cap is not None and cap < threads:
            threads = int(cap)
        if threads > 1 and work >= min_parallel_work():
            return threads
        return 1

    def step_regions(self, k: int, fill_x: bool = True, input_grad: bool = True,
                     dtype=np.float32) -> int:
        """The parallel regions one training step (``forward`` then ``backward`` from a
        C-ordered grad) opens at batch size k under the current switches and thread count:
        0 where both calls run serial. ``fill_x=False``: x is already in the padded buffer
        (``input_buffer``, as ``fit`` does). With FORWARD_SPLIT "rows" and BACKWARD_SPLIT
        "columns" that is 4 (3 without the fill of x)."""
        regions = 0
        if padded_path(dtype):
            if self._blocks((self.nnz + self.n_cols) * k) > 1:
                regions += 2 if self.FORWARD_SPLIT == "rows" and fill_x else 1
            blocks = self._blocks(self.nnz * k * (2 if input_grad else 1) + self.n_rows * k)
            if blocks > 1:
                if self.BACKWARD_SPLIT == "columns":
                    regions += 2
                elif (self.BACKWARD_SPLIT == "products" and input_grad
                      and _sample_blocks(blocks, k) == 2):
                    regions += 2
                else:
                    regions += 1
            return regions
        # the portable kernels: a transpose region, then the product's
        regions += 2 * (self._blocks((self.nnz + self.n_cols) * k) > 1)
        regions += 2 * (self._blocks(self.nnz * k * (2 if input_grad else 1)
                                     + self.n_rows * k) > 1)
        return regions

    def _pick(self, name: str, work: int):
        """(kernel, n_blocks) as ``_kernel``, with at most ``THREADS`` blocks."""
        blocks = self._blocks(work)
        return _KERNELS[name][blocks > 1], blocks

    def _owns_x(self, xt) -> bool:
        # xt is the view of this object's padded xᵀ buffer that forward handed out last
        # (its pad lanes are the zeros written at allocation): an identity test, as
        # an address comparison through ``ndarray.ctypes`` costs ~5 µs
        return xt is self._x_view

    def _partials(self, blocks: int, dtype):
        # the (blocks − 1)-row scratch of the sample-split backward, kept between calls
        if self._partial is None or self._partial[0].shape[0] != blocks - 1 \
                or self._partial[0].dtype != dtype:
            self._partial = (np.empty((blocks - 1, self.nnz), dtype=dtype),
                             np.empty((blocks - 1, self.n_rows), dtype=dtype))
        return self._partial

    def input_buffer(self, k: int, dtype):
        """The (n_cols, k) view of the padded xᵀ buffer, for a caller to write xᵀ into
        and hand to ``forward`` (feature-major) as it is, which then fills nothing; None
        where ``forward`` takes no padded buffer (not float32, or no AVX2 + FMA)."""
        if not (SIMD_AVAILABLE and np.dtype(dtype) == np.float32):
            return None
        view = self._x_view
        if view is None or view.shape[1] != k:
            pad = self._padded("_x_pad", self.n_cols, k)
            view = self._x_view = pad[:, :k]
            self._x_view_of = pad
        return view

    def forward(self, data, bias, x, xt=None, batch_major: bool = True):
        """(A · xᵀ + bias, xᵀ) for a batch-major x (k, n_cols), transposed into
        ``xt`` (n_cols, k) inside the call; ``batch_major=False``: x is already
        feature-major (n_cols, k) and is handed back as xᵀ. bias: length n_rows
        or 0.

        float32 where ``SIMD_AVAILABLE``: xᵀ goes into this object's padded buffer
        (transposed there, or copied there when given feature-major, in the same
        call, each thread its share of the samples), ``xt`` is not used, and the xᵀ handed back is a (n_cols, k)
        view of that buffer, overwritten by the next forward call; the product is
        ``_forward_row_padded_avx2``'s."""
        if SIMD_AVAILABLE and data.dtype == np.float32:
            # the per-step path: every test below is an attribute read or an identity
            # (sitting 20 cut ~2 µs of Python a call here; the kernels and their
            # arguments are unchanged, so are the numbers)
            if batch_major:
                k, fill = x.shape[0], FILL_TRANSPOSE
            else:
                # x is ``input_buffer``'s view: xᵀ is in the padded buffer already
                k = x.shape[1]
                fill = FILL_NONE if x is self._x_view else FILL_COPY
            pad = self._x_pad
            if pad is None or self._buffer_k.get("_x_pad") != k:
                pad = self._padded("_x_pad", self.n_cols, k)
            out = np.empty((self.n_rows, k), dtype=np.float32)
            blocks = self._blocks((self.nnz + self.n_cols) * k)
            if blocks > 1 and self.FORWARD_SPLIT == "rows":
                _KERNELS["matmul_padded_rowsplit"][1](self.indptr, self.indices, data, bias, x,
                                                      pad, out, fill, blocks)
            else:
                _KERNELS["matmul_padded"][blocks > 1](self.indptr, self.indices, data, bias, x,
                                                      pad, out, fill, _sample_blocks(blocks, k))
            if fill != FILL_NONE:
                view = self._x_view
                if view is None or self._x_view_of is not pad or view.shape[1] != k:
                    view = self._x_view = pad[:, :k]
                    self._x_view_of = pad
            return out, self._x_view
        zero = data.dtype.type(0)
        if not batch_major:
            out = np.empty((self.n_rows, x.shape[1]), dtype=data.dtype)
            kernel, blocks = self._pick(_forward_name("matmul", data.dtype), self.nnz * x.shape[1])
            kernel(self.indptr, self.indices, data, bias, zero, x, out, blocks)
            return out, x
        k = x.shape[0]
        if xt is None or xt.shape != (self.n_cols, k) or xt.dtype != data.dtype:
            xt = np.empty((self.n_cols, k), dtype=data.dtype)
        out = np.empty((self.n_rows, k), dtype=data.dtype)
        kernel, blocks = self._pick(_forward_name("matmul_batch_major", data.dtype),
                                 (self.nnz + self.n_cols) * k)
        kernel(self.indptr, self.indices, data, bias, zero, x, xt, out, blocks)
        return out, xt

    def backward(self, data, grad, xt, input_grad: bool, want_bias: bool = True,
                 batch_major: bool = False, grad_scratch=None):
        """(grad_data, grad_bias or None, dx or None) as ``csr_backward``; grad is
        (n_rows, k), or (k, n_rows) with ``batch_major`` (then transposed inside
        the call into ``grad_scratch``, an (n_rows, k) buffer).

        float32 where ``SIMD_AVAILABLE``: grad goes into this object's padded gradᵀ
        buffer (transposed or copied in the same call), ``grad_scratch`` is not
        used, xt is used as it is when it is the view ``forward`` handed out last (and
        copied into a second padded buffer otherwise), and the products are
        ``_backward_col_avx2``'s."""
        zero = data.dtype.type(0)
        k = xt.shape[1]
        if SIMD_AVAILABLE and data.dtype == np.float32:
            if xt is self._x_view:          # ``_owns_x``, inlined
                x_pad = self._x_pad
            else:                   # another xᵀ: into a buffer of its own (forward's stays)
                x_pad = self._padded("_x_other", self.n_cols, k)
                x_pad[:, :k] = xt
            g_pad = self._grad_pad
            if g_pad is None or self._buffer_k.get("_grad_pad") != k:
                g_pad = self._padded("_grad_pad", self.n_rows, k)
            grad_data = np.empty(self.nnz, dtype=np.float32)
            grad_bias = np.empty(self.n_rows if want_bias else 0, dtype=np.float32)
            dx = np.empty((self.n_cols if input_grad else 0, k), dtype=np.float32)
            work = self.nnz * k * (2 if input_grad else 1) + (self.n_rows * k if batch_major else 0)
            fill = FILL_TRANSPOSE if batch_major else FILL_COPY
            blocks = self._blocks(work)
            kernel = _KERNELS["backward_padded"][blocks > 1]
            if blocks > 1 and self.BACKWARD_SPLIT == "columns":
                _KERNELS["backward_padded_colsplit"][1](self.t_indptr, self.t_indices, self.perm,
                                                        data, grad, g_pad, x_pad, k, zero,
                                                        grad_data, grad_bias, dx, fill, blocks)
                return (grad_data, grad_bias if want_bias else None, dx if input_grad else None)
            blocks = _sample_blocks(blocks, k)
            if input_grad and blocks == 2 and self.BACKWARD_SPLIT == "products":
                _KERNELS["backward_products"][1](self.t_indptr, self.t_indices, self.perm, data,
                                                 grad, g_pad, x_pad, k, zero, grad_data,
                                                 grad_bias, dx, fill, blocks)
                return (grad_data, grad_bias if want_bias else None, dx)
            partial, bias_partial = self._partials(blocks, data.dtype)
            kernel(self.t_indptr, self.t_indices, self.perm, data, grad, g_pad, x_pad, k, zero,
                   grad_data, grad_bias, dx, partial, bias_partial, fill, blocks)
            return (grad_data, grad_bias if want_bias else None, dx if input_grad else None)
        grad_data = np.empty(self.nnz, dtype=data.dtype)
        grad_bias = np.empty(self.n_rows if want_bias else 0, dtype=data.dtype)
        dx = np.empty((self.n_cols if input_grad else 0, k), dtype=data.dtype)
        work = self.nnz * k * (2 if input_grad else 1)
        if batch_major:
            kernel, blocks = self._pick("backward_batch_major", work + self.n_rows * k)
            kernel(self.t_indptr, self.t_indices, self.perm, data, grad, grad_scratch, xt, zero,
                   grad_data, grad_bias, dx, blocks)
        else:
            kernel, blocks = self._pick("backward", work)
            kernel(self.t_indptr, self.t_indices, self.perm, data, grad, xt, zero, grad_data,
                   grad_bias, dx, blocks)
        return (grad_data, grad_bias if want_bias else None, dx if input_grad else None)


def transpose_into(a: np.ndarray, out=None) -> np.ndarray:
    """aᵀ written into ``out`` (a C-ordered (m, n) array of a's dtype; a new one if
    None) by the tiled Numba kernel, parallel over column blocks for large a.
    The twin is ``np.ascontiguousarray(a.T)``."""
    a = np.ascontiguousarray(a)
    if a.ndim != 2:
        raise ValueError(f"transpose_into expects a 2-D array, got shape {a.shape}")
    if out is None:
        out = np.empty(a.shape[::-1], dtype=a.dtype)
    elif out.shape != a.shape[::-1] or out.dtype != a.dtype or not out.flags.c_contiguous:
        raise ValueError(f"transpose_into: out must be a C-ordered {a.shape[::-1]} array of "
                         f"{a.dtype}, got {out.shape} {out.dtype}")
    kernel, blocks = _kernel("transpose", a.size)
    kernel(a, out, blocks)
    return out


def transpose(a: np.ndarray, dtype=None) -> np.ndarray:
    """aᵀ as a C-contiguous array of ``dtype`` (default a's): the kernels' layout.
    A Fortran-ordered ``a`` (the output of a sparse layer, or a gradient computed
    from one) transposes for free, as a view; otherwise NumPy's strided copy
    (about as fast as a Numba loop here: 100×784 float32 in ~30 µs)."""
    a = np.asarray(a)
    if a.ndim != 2:
        raise ValueError(f"transpose expects a 2-D array, got shape {a.shape}")
    return np.ascontiguousarray(a.T, dtype=a.dtype if dtype is None else dtype)
