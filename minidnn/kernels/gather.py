"""Minibatch gather straight into the feature-major layout of a sparse first layer.

``fit`` takes each minibatch as ``x[idx]``: a (batch, features) C-ordered copy
of random rows. A ``SparseDense`` first layer then transposes it to its
kernels' feature-major layout (features, batch) in a second pass. When the
first layer says it reads a Fortran-ordered (batch, features) array as it is
(``Layer.fortran_input``), ``gather_feature_major`` does both in one pass:

    out[j, i] = x[idx[i], j]          (returned as out.T, a Fortran-ordered view)

eight sample rows at a time, so each row of ``out`` is written eight floats
at once while the eight source rows stream from memory. On the 784-500-10
MNIST net at batch 100: 64 µs against 99 µs for the gather and the transpose
(1 thread, under load). The values are the same bits, only their order in
memory differs. The twin is ``gather_feature_major_numpy``.

Since sitting 19 the gather writes where the layer's kernels read (``out``: the
sparse layer's padded xᵀ buffer, ``Layer.input_buffer``), and float32 rows go
through AVX2 8 × 8 register-tile transposes (``_gather_transposed_tiles``).

Since sitting 23 every other net's minibatches (Dense, Conv2D, ... first: batches of
C-ordered sample rows) come from ``gather_rows_checked``, whose twin is
``gather_rows_numpy`` (x[idx]); like the feature-major gather it can test each row
for NaN / Inf as it copies it, which is how ``fit`` checks its training inputs in
the first epoch instead of in a pass over the data set before it.
"""
from __future__ import annotations

import math

import numba
import numpy as np

from .csr import SIMD_AVAILABLE, _transpose_tile8


@numba.njit(cache=True)
def _all_finite32(r):
    # |v| <= the largest float32 is False for NaN and ±Inf only; a boolean AND-reduction,
    # which LLVM vectorises (~20 values a ns here). NOT for a fastmath caller: Numba
    # compiles a callee with its caller's flags, and "nnan" / "ninf" fold these
    # comparisons to True (so the gather kernels below are built without fastmath: they
    # copy, and compute nothing it would speed up)
    limit = np.float32(3.4028234663852886e38)
    ok = True
    for j in range(r.shape[0]):
        ok &= abs(r[j]) <= limit
    return ok


@numba.njit(cache=True)
def _all_finite64(r):
    limit = np.float64(1.7976931348623157e308)
    ok = True
    for j in range(r.shape[0]):
        ok &= abs(r[j]) <= limit
    return ok


@numba.njit(cache=True)
def _nonfinite_bits(r):
    # whether the 1-D float row r holds a NaN or an Inf
    if r.itemsize == 4:
        return not _all_finite32(r)
    return not _all_finite64(r)


@numba.njit(cache=True)
def _gather_transposed(x, idx, out, check):
    # returns, with ``check``, the first position i whose row x[idx[i]] holds a NaN or an
    # Inf (-1: none), else -1 unchecked
    n, m = idx.shape[0], x.shape[1]
    n8 = n - n % 8
    bad = -1
    for i0 in range(0, n8, 8):
        r0, r1, r2, r3 = x[idx[i0]], x[idx[i0 + 1]], x[idx[i0 + 2]], x[idx[i0 + 3]]
        r4, r5, r6, r7 = x[idx[i0 + 4]], x[idx[i0 + 5]], x[idx[i0 + 6]], x[idx[i0 + 7]]
        for j in range(m):
            o = out[j]
            o[i0], o[i0 + 1], o[i0 + 2], o[i0 + 3] = r0[j], r1[j], r2[j], r3[j]
            o[i0 + 4], o[i0 + 5], o[i0 + 6], o[i0 + 7] = r4[j], r5[j], r6[j], r7[j]
        if check and bad < 0 and m:
            for lane in range(8):
                if _nonfinite_bits(x[idx[i0 + lane]]):
                    bad = i0 + lane
                    break
    for i in range(n8, n):
        r = x[idx[i]]
        for j in range(m):
            out[j, i] = r[j]
        if check and bad < 0 and m and _nonfinite_bits(r):
            bad = i
    return bad


@numba.njit(cache=True)
def _gather_transposed_tiles(x, idx, out, check):
    # out[j, i] = x[idx[i], j] for float32 x (C-ordered) and an out whose rows have unit
    # stride (a padded buffer's view: the row stride need not be the row length): eight
    # sample rows are copied side by side into an L1-resident scratch (eight streams
    # from memory at once), then written out as AVX2 8 x 8 register-tile transposes
    # (``csr._transpose_tile8``), eight floats a store instead of one. With ``check``
    # the scratch's rows (in L1) are tested for NaN / Inf as well (``_gather_transposed``)
    n, m = idx.shape[0], x.shape[1]
    ld = out.strides[0] // out.itemsize
    scratch = np.empty((8, m), dtype=x.dtype)
    s0, s1, s2, s3 = scratch[0], scratch[1], scratch[2], scratch[3]
    s4, s5, s6, s7 = scratch[4], scratch[5], scratch[6], scratch[7]
    n8, m8 = n - n % 8, m - m % 8
    bad = -1
    for i0 in range(0, n8, 8):
        r0, r1, r2, r3 = x[idx[i0]], x[idx[i0 + 1]], x[idx[i0 + 2]], x[idx[i0 + 3]]
        r4, r5, r6, r7 = x[idx[i0 + 4]], x[idx[i0 + 5]], x[idx[i0 + 6]], x[idx[i0 + 7]]
        for j in range(m):
            s0[j], s1[j], s2[j], s3[j] = r0[j], r1[j], r2[j], r3[j]
            s4[j], s5[j], s6[j], s7[j] = r4[j], r5[j], r6[j], r7[j]
        if check and bad < 0 and m and _nonfinite_bits(scratch.reshape(8 * m)):
            for lane in range(8):              # which row: only where one is bad
                if _nonfinite_bits(scratch[lane]):
                    bad = i0 + lane
                    break
        for j0 in range(0, m8, 8):
            _transpose_tile8(scratch, out, j0, m, j0 * ld + i0, ld)
        for j in range(m8, m):
            for lane in range(8):
                out[j, i0 + lane] = scratch[lane, j]
    for i in range(n8, n):
        r = x[idx[i]]
        for j in range(m):
            out[j, i] = r[j]
        if check and bad < 0 and m and _nonfinite_bits(r):
            bad = i
    return bad


#: float32 gathers take the register-tile kernel where Numba's target has AVX2 + FMA
#: (False: the scalar kernel; for A/Bs). At batch 100 of MNIST rows (1 thread, under
#: load): 47 against 62 µs from memory, 27 against 39 from cache
TILES = SIMD_AVAILABLE


def _gather_into(x, idx, out_t, check=False) -> int:
    # serial: splitting a 100-row gather over 2 threads saved 12.9 µs of a 637 µs sparse
    # step on the quiet machine (sitting 22, bench/fuse_epoch_ab.py): a tie, deleted
    if TILES and x.dtype == np.float32:
        return _gather_transposed_tiles(x, idx, out_t, check)
    return _gather_transposed(x, idx, out_t, check)


def gather_feature_major_numpy(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """x[idx] as a Fortran-ordered (batch, features) array (the definition)."""
    return np.asfortranarray(x[idx])


def applies(x) -> bool:
    """Whether ``gather_feature_major`` takes this data set: a C-ordered 2-D float array."""
    return (isinstance(x, np.ndarray) and x.ndim == 2 and x.flags.c_contiguous
            and x.dtype in (np.float32, np.float64))


def gather_feature_major(x: np.ndarray, idx: np.ndarray, check: bool = True,
                         out: np.ndarray | None = None) -> np.ndarray:
    """x[idx] (idx: in-range row numbers) as a Fortran-ordered (batch, features) array,
    in one Numba pass, for an ``applies`` x; equals ``gather_feature_major_numpy``.
    ``check=False`` skips the range check of idx, for a caller whose rows come from a
    permutation of range(len(x)) (``fit``). ``out``: a (batch, features) array of x's
    dtype whose transpose has unit-stride rows (a layer's ``input_buffer``: the padded
    buffer its kernels read) to write into and return, instead of a new one."""
    idx = np.ascontiguousarray(idx, dtype=np.intp)
    if check and len(idx) and (idx.min() < 0 or idx.max() >= len(x)):
        raise IndexError(f"gather_feature_major: row numbers must lie in [0, {len(x)}), got "
                         f"[{idx.min()}, {idx.max()}]")
    return gather_feature_major_checked(x, idx, out, False)[0]


def gather_feature_major_checked(x: np.ndarray, idx: np.ndarray, out: np.ndarray | None = None,
                                 finite: bool = True) -> tuple[np.ndarray, int]:
    """(``gather_feature_major(x, idx, check=False, out=out)``, the first position i
    whose row x[idx[i]] holds a NaN or an Inf, or -1): with ``finite`` the gather tests
    each row as it copies it (the row is in L1 then: a few µs a batch of 100 MNIST rows,
    where a separate pass over the data set reads it from memory again); without, -1.
    ``fit`` checks its training data so in its first epoch (``training.fit``)."""
    idx = np.ascontiguousarray(idx, dtype=np.intp)
    if out is None:
        target = np.empty((x.shape[1], len(idx)), dtype=x.dtype)
        bad = _gather_into(x, idx, target, finite)
        return target.T, int(bad)
    if (out.shape != (len(idx), x.shape[1]) or out.dtype != x.dtype
            or (out.strides[0] != out.itemsize and out.size)):
        raise ValueError(f"gather_feature_major: out must be a ({len(idx)}, {x.shape[1]}) "
                         f"{x.dtype} array with unit-stride columns, got {out.shape} "
                         f"{out.dtype} strides {out.strides}")
    bad = _gather_into(x, idx, out.T, finite)
    return out, int(bad)


# -- row-major minibatches (every other net: Dense, Conv2D, ... first) -----------------------

@numba.njit(cache=True)
def _gather_rows(x, idx, out, check, limit):
    # out[i] = x[idx[i]] for 2-D C-ordered x and out (a sample's values as one row: an
    # (N, C, H, W) batch is N contiguous rows too). Four source rows stream at once
    # (more reads in flight than one row at a time, as NumPy's x[idx] copies: 40 against
    # 55 µs a batch of 100 MNIST rows, 1 thread, under load), and with ``check`` the
    # copy loop also ANDs |v| <= limit (x's largest finite value: False for NaN and ±Inf
    # only) over the four, nearly free there (a second pass over the batch from L1 cost
    # ~9 µs). Returns the first position i whose row holds a NaN / Inf, or -1 (also when
    # unchecked). Built without fastmath, which would fold the comparison to True
    n, m = idx.shape[0], x.shape[1]
    n4 = n - n % 4
    bad = -1
    for i in range(0, n4, 4):
        s0, s1, s2, s3 = x[idx[i]], x[idx[i + 1]], x[idx[i + 2]], x[idx[i + 3]]
        d0, d1, d2, d3 = out[i], out[i + 1], out[i + 2], out[i + 3]
        if check and bad < 0:
            ok = True
            for j in range(m):
                a, b, c, d = s0[j], s1[j], s2[j], s3[j]
                d0[j], d1[j], d2[j], d3[j] = a, b, c, d
                ok &= (abs(a) <= limit) & (abs(b) <= limit) & (abs(c) <= limit) & (abs(d) <= limit)
            if not ok:                         # which row: only where one is bad
                for lane in range(4):
                    if _nonfinite_bits(out[i + lane]):
                        bad = i + lane
                        break
        else:
            for j in range(m):
                d0[j], d1[j], d2[j], d3[j] = s0[j], s1[j], s2[j], s3[j]
    for i in range(n4, n):
        src, dst = x[idx[i]], out[i]
        for j in range(m):
            dst[j] = src[j]
        if check and bad < 0 and m and _nonfinite_bits(dst):
            bad = i
    return bad


#: the largest finite value of each dtype ``rows_apply`` takes (the kernel's NaN / Inf test)
_LARGEST = {np.dtype(t): t(np.finfo(t).max) for t in (np.float32, np.float64)}


def rows_apply(x) -> bool:
    """Whether ``gather_rows_checked`` takes this data set: a C-ordered float array
    with at least one dimension."""
    return (isinstance(x, np.ndarray) and x.ndim >= 1 and x.flags.c_contiguous
            and x.dtype in (np.float32, np.float64))


def gather_rows_numpy(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """x[idx] (the definition of ``gather_rows_checked``'s array)."""
    return x[idx]


def gather_rows_checked(x: np.ndarray, idx: np.ndarray,
                        finite: bool = True) -> tuple[np.ndarray, int]:
    """(x[idx] as a new C-ordered array, the first position i whose sample x[idx[i]]
    holds a NaN or an Inf, or -1; -1 without ``finite``), for a ``rows_apply`` x and
    in-range row numbers idx (``fit``'s permutation: not checked here). One Numba pass
    that also tests each row while it is in L1, where ``fit`` used to check the whole
    data set first (a pass from memory) and then take ``x[idx]``."""
    idx = np.ascontiguousarray(idx, dtype=np.intp)
    # the wrapper's own cost matters for narrow rows (~5 µs for x[idx] of 100 rows of
    # 20 floats): 2-D x, fit's usual case, is passed as it is
    rows = x if x.ndim == 2 else x.reshape(len(x), math.prod(x.shape[1:]))   # 1-D: m = 1
    out = np.empty((len(idx), rows.shape[1]), dtype=x.dtype)
    bad = _gather_rows(rows, idx, out, finite, _LARGEST[x.dtype])
    return (out if x.ndim == 2 else out.reshape((len(idx),) + x.shape[1:])), int(bad)


@numba.njit(cache=True)
def _rows_in_range(idx, n):
    for r in range(idx.shape[0]):
        if idx[r] < 0 or idx[r] >= n:
            return False
    return True


def gather_rows_into(x: np.ndarray, idx: np.ndarray, out: np.ndarray) -> np.ndarray:
    """out ← x[idx] (the twin is ``np.take(x, idx, axis=0, out=out)``) by the same four-row
    kernel, unchecked, for a C-ordered 2-D float x of out's dtype and integer indices
    inside [0, len(x)); np.take otherwise (negative indices, its errors). The RBM's
    minibatch (sitting 23: 100 random MNIST rows from cold memory, 1 thread under load,
    np.take 284-308 µs, four rows at a time 130-156)."""
    if (x.ndim == 2 and x.flags.c_contiguous and x.dtype in _LARGEST and x.dtype == out.dtype
            and out.flags.c_contiguous and out.shape == (len(idx), x.shape[1])
            and idx.ndim == 1 and idx.dtype.kind in "iu" and _rows_in_range(idx, x.shape[0])):
        _gather_rows(x, idx, out, False, _LARGEST[x.dtype])
        return out
    return np.take(x, idx, axis=0, out=out)
