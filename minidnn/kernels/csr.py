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

Work is Θ(nnz · k) for each: the zeros are never touched. Each kernel has a
plain SciPy/NumPy twin (``*_numpy``) that defines what it computes; tests hold
the kernels to the twins. The Numba kernels come in a serial and a parallel
(rows split across threads with ``prange``) build of the same function; the
public functions pick the parallel one only when a call has enough work to pay
for waking the thread pool (``PARALLEL_MIN_WORK`` multiply-adds).
"""
from __future__ import annotations

import numba
import numpy as np
import scipy.sparse as sp

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

def csr_matmul_numpy(indptr, indices, data, dense):
    """A · dense with A = csr(indptr, indices, data) of shape (len(indptr)-1, len(dense))."""
    a = sp.csr_matrix((data, indices, indptr), shape=(len(indptr) - 1, dense.shape[0]))
    return np.asarray(a @ dense, dtype=dense.dtype)


def csr_matmul_transposed_numpy(indptr, indices, data, dense, n_cols: int):
    """Aᵀ · dense with A = csr(indptr, indices, data) of shape (len(dense), n_cols)."""
    a = sp.csr_matrix((data, indices, indptr), shape=(dense.shape[0], n_cols))
    return np.asarray(a.T @ dense, dtype=dense.dtype)


def sampled_matmul_numpy(indptr, indices, left, right):
    """(left · rightᵀ)[r, c] for every stored (r, c) of the pattern, in CSR order (nnz,)."""
    rows = np.repeat(np.arange(len(indptr) - 1), np.diff(np.asarray(indptr, dtype=np.int64)))
    return np.einsum("ij,ij->i", left[rows], right[indices]).astype(left.dtype, copy=False)


# -- the kernels ---------------------------------------------------------------------------

def _csr_matmul_rows(indptr, indices, data, dense, out):
    # Four stored entries per pass over the output row: the row is loaded and
    # stored once per four multiply-adds instead of once per one.
    n_rows, k = out.shape
    for r in numba.prange(n_rows):
        acc = out[r]
        acc[:] = 0
        start, stop = indptr[r], indptr[r + 1]
        p = start
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


def _csr_matmul_permuted_rows(indptr, indices, perm, data, dense, out):
    # the same product, with the values read through a permutation (Aᵀ's
    # entries in A's data), so Aᵀ never needs a copy of the values
    n_rows, k = out.shape
    for r in numba.prange(n_rows):
        acc = out[r]
        acc[:] = 0
        start, stop = indptr[r], indptr[r + 1]
        p = start
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


def _sampled_matmul_rows(indptr, indices, left, right, zero, out):
    # Four dot products per pass over the left row (one load of it feeds four
    # multiply-adds); sums start from ``zero``, a scalar of the operands' dtype,
    # so float32 stays float32 and vectorises 8 wide.
    n_rows, k = left.shape
    for r in numba.prange(n_rows):
        row = left[r]
        start, stop = indptr[r], indptr[r + 1]
        p = start
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


_KERNELS = {}
for _name, _fn in (("matmul", _csr_matmul_rows), ("matmul_permuted", _csr_matmul_permuted_rows),
                   ("sampled", _sampled_matmul_rows)):
    _KERNELS[_name] = (numba.njit(cache=True, fastmath=True)(_fn),
                       numba.njit(cache=True, fastmath=True, parallel=True)(_fn))


def _kernel(name, work):
    serial, parallel = _KERNELS[name]
    return parallel if work >= PARALLEL_MIN_WORK and numba.get_num_threads() > 1 else serial


def _operand(dense, rows: int, dtype, what: str, name: str = "dense") -> np.ndarray:
    dense = np.asarray(dense)
    if dense.ndim != 2 or dense.shape[0] != rows:
        raise ValueError(f"{what} expects {name} of shape ({rows}, k), got {dense.shape}")
    return np.ascontiguousarray(dense, dtype=dtype)


def csr_matmul(indptr, indices, data, dense, n_cols: int, out=None):
    """A · dense for A = csr(indptr, indices, data) of shape (n_rows, n_cols); dense
    (n_cols, k) → (n_rows, k), in data's dtype."""
    dense = _operand(dense, n_cols, data.dtype, "csr_matmul")
    if out is None:
        out = np.empty((len(indptr) - 1, dense.shape[1]), dtype=data.dtype)
    _kernel("matmul", len(data) * dense.shape[1])(indptr, indices, data, dense, out)
    return out


def csr_matmul_transposed(transposed, data, dense, n_rows: int, out=None):
    """Aᵀ · dense for A (n_rows, n_cols) with values ``data`` (nnz,) and ``transposed`` =
    csr_transpose_structure(A's indptr, indices, n_cols); dense (n_rows, k) → (n_cols, k)."""
    t_indptr, t_indices, perm = transposed
    dense = _operand(dense, n_rows, data.dtype, "csr_matmul_transposed")
    if out is None:
        out = np.empty((len(t_indptr) - 1, dense.shape[1]), dtype=data.dtype)
    _kernel("matmul_permuted", len(data) * dense.shape[1])(t_indptr, t_indices, perm, data,
                                                            dense, out)
    return out


def sampled_matmul(indptr, indices, left, right, n_cols: int, out=None):
    """(left · rightᵀ) at the pattern (indptr, indices) of an (n_rows, n_cols) matrix:
    left (n_rows, k), right (n_cols, k) → (nnz,), in the order of ``indices``."""
    left = np.asarray(left)
    left = _operand(left, len(indptr) - 1, left.dtype, "sampled_matmul", "left")
    right = _operand(right, n_cols, left.dtype, "sampled_matmul", "right")
    if left.shape[1] != right.shape[1]:
        raise ValueError(f"sampled_matmul: left {left.shape} and right {right.shape} must have "
                         f"the same number of columns")
    if out is None:
        out = np.empty(len(indices), dtype=left.dtype)
    _kernel("sampled", len(indices) * left.shape[1])(indptr, indices, left, right,
                                                      left.dtype.type(0), out)
    return out
