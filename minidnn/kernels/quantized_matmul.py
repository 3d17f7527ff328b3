"""Matrix products with weights held as integer codes on a grid (techniques 1 and 2).

A discrete layer's weight matrix is Q = c·Δ with int8 codes c (in, out), and
the layer computes y = g·(x Q) + b = (g·Δ)·(x c) + b. The products here take
the codes themselves and apply the scale s = g·Δ once per output, at the end:

* ``ternary_matmul``: codes in {−1, 0, 1} (Δ = 2^0). Each output is a sum of
  the inputs with code +1 minus the sum of those with code −1: additions and
  subtractions only, no multiplications, over the nonzero codes only (after
  randomized rounding of W/max|W| most ternary codes are 0). The codes are
  first turned into a ``TernaryPlan``: for each output unit j, the input
  indices with c_ij = +1 and those with c_ij = −1 (CSR-like, column by
  column; int32 pointers, uint16/uint32 indices).
* ``code_matmul``: any int8 codes (Δ = 2^−k): y_b = s·Σ_i x_bi c_i, an
  integer-code product whose float32 accumulator is scaled once; rows of x
  that are zero (MNIST background pixels) are skipped.

Their NumPy twin is the float simulation, ``float_simulation(x, codes, s)``
= s·(x @ c.astype(x.dtype)), which is what training uses (BLAS). The kernels
add the same terms in another order, so for general inputs they agree to
float rounding (|Δy| ≤ 2·in·ε·s·Σ|x_i c_i|); for inputs on a dyadic grid
(x = m/2^p with small m) every partial sum is exact and they are
bit-identical, which the tests check.

Technique 2 adds its int32-accumulating kernels at the end of this module.
"""
from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np


# -- the twin: the float simulation --------------------------------------------------------

def float_simulation(x: np.ndarray, codes: np.ndarray, scale: float) -> np.ndarray:
    """s·(x @ c) with the codes as floats of x's dtype: (batch, in) → (batch, out)."""
    out = x @ codes.astype(x.dtype)
    out *= x.dtype.type(scale)
    return out


# -- ternary: additions and subtractions only ---------------------------------------------

@dataclass
class TernaryPlan:
    """Column-wise index lists of a ternary code matrix (in, out).

    Inputs with code +1 for output j are ``plus_index[plus_ptr[j]:plus_ptr[j+1]]``,
    those with code −1 ``minus_index[minus_ptr[j]:minus_ptr[j+1]]``, ascending."""

    in_features: int
    out_features: int
    plus_ptr: np.ndarray
    plus_index: np.ndarray
    minus_ptr: np.ndarray
    minus_index: np.ndarray

    @property
    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in vars(self).values() if isinstance(a, np.ndarray)))


def ternary_plan(codes: np.ndarray) -> TernaryPlan:
    """The ``TernaryPlan`` of int codes in {−1, 0, 1} of shape (in, out)."""
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ValueError(f"ternary codes must be a matrix (in, out), got shape {codes.shape}")
    if codes.size and (codes.min() < -1 or codes.max() > 1):
        raise ValueError(f"ternary codes must be -1, 0 or 1, got values in "
                         f"[{codes.min()}, {codes.max()}]")
    n_in, n_out = codes.shape
    # unsigned: Numba adds a negative-index wraparound test to every signed gather
    index_dtype = np.uint16 if n_in <= np.iinfo(np.uint16).max else np.uint32
    lists = []
    for sign in (1, -1):
        cols, rows = np.nonzero(codes.T == sign)        # column-major: grouped by output j
        ptr = np.zeros(n_out + 1, dtype=np.int32)
        np.cumsum(np.bincount(cols, minlength=n_out), out=ptr[1:])
        lists += [ptr, rows.astype(index_dtype)]
    return TernaryPlan(n_in, n_out, *lists)


@numba.njit(cache=True, inline="always")
def _gather_sum(xb, index, start, stop):
    """Σ xb[index[p]] for p in [start, stop), with four partial sums: one running
    sum would make every addition wait for the previous one (add latency)."""
    a0 = a1 = a2 = a3 = xb.dtype.type(0)
    p = start
    while p + 4 <= stop:
        a0 += xb[index[p]]
        a1 += xb[index[p + 1]]
        a2 += xb[index[p + 2]]
        a3 += xb[index[p + 3]]
        p += 4
    while p < stop:
        a0 += xb[index[p]]
        p += 1
    return (a0 + a1) + (a2 + a3)


@numba.njit(cache=True)
def ternary_matmul_rows_kernel(x, plus_ptr, plus_index, minus_ptr, minus_index, scale, out):
    """out[b, j] = s·(Σ_{i∈P_j} x[b, i] − Σ_{i∈M_j} x[b, i]), one sample at a time
    (small batches: a row of x stays in L1 while all outputs gather from it)."""
    batch, n_out = out.shape
    for b in range(batch):
        xb = x[b]
        for j in range(n_out):
            plus = _gather_sum(xb, plus_index, plus_ptr[j], plus_ptr[j + 1])
            minus = _gather_sum(xb, minus_index, minus_ptr[j], minus_ptr[j + 1])
            out[b, j] = (plus - minus) * scale


@numba.njit(cache=True)
def ternary_matmul_columns_kernel(x_t, plus_ptr, plus_index, minus_ptr, minus_index, scale, out_t):
    """The same on transposed operands x_t (in, batch) → out_t (out, batch): the
    inner loop runs over the batch, contiguous, so it vectorizes (large batches)."""
    n_out, batch = out_t.shape
    acc = np.empty(batch, dtype=x_t.dtype)
    for j in range(n_out):
        acc[:] = 0
        for p in range(plus_ptr[j], plus_ptr[j + 1]):
            row = x_t[plus_index[p]]
            for b in range(batch):
                acc[b] += row[b]
        for p in range(minus_ptr[j], minus_ptr[j + 1]):
            row = x_t[minus_index[p]]
            for b in range(batch):
                acc[b] -= row[b]
        for b in range(batch):
            out_t[j, b] = acc[b] * scale


#: from this batch size on, ``ternary_matmul`` uses the batch-inner (columns) kernel
COLUMNS_FROM_BATCH = 8


def _check_x(x, n_in, what):
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != n_in:
        raise ValueError(f"{what} expects x of shape (batch, {n_in}), got {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    return np.ascontiguousarray(x)


def ternary_matmul(x: np.ndarray, plan: TernaryPlan, scale: float) -> np.ndarray:
    """s·(x c) for ternary codes given as a ``TernaryPlan``: (batch, in) → (batch, out)."""
    x = _check_x(x, plan.in_features, "ternary_matmul")
    scale = x.dtype.type(scale)
    if x.shape[0] < COLUMNS_FROM_BATCH:
        out = np.empty((x.shape[0], plan.out_features), dtype=x.dtype)
        ternary_matmul_rows_kernel(x, plan.plus_ptr, plan.plus_index, plan.minus_ptr,
                                   plan.minus_index, scale, out)
        return out
    out_t = np.empty((plan.out_features, x.shape[0]), dtype=x.dtype)
    ternary_matmul_columns_kernel(np.ascontiguousarray(x.T), plan.plus_ptr, plan.plus_index,
                                  plan.minus_ptr, plan.minus_index, scale, out_t)
    return out_t.T


# -- any int8 codes: one integer-code product, scaled once -------------------------------

@numba.njit(cache=True)
def code_matmul_kernel(x, codes, scale, out):
    """out[b] = s·Σ_i x[b, i]·codes[i] (codes int8 (in, out)); zero inputs skipped."""
    batch, n_in = x.shape
    n_out = codes.shape[1]
    acc = np.empty(n_out, dtype=x.dtype)
    for b in range(batch):
        acc[:] = 0
        for i in range(n_in):
            xi = x[b, i]
            if xi == 0:
                continue
            row = codes[i]
            for j in range(n_out):
                acc[j] += xi * row[j]
        for j in range(n_out):
            out[b, j] = acc[j] * scale


def code_matmul(x: np.ndarray, codes: np.ndarray, scale: float) -> np.ndarray:
    """s·(x c) for int8 codes c (in, out): (batch, in) → (batch, out)."""
    codes = np.asarray(codes)
    if codes.dtype != np.int8 or codes.ndim != 2:
        raise ValueError(f"code_matmul takes int8 codes (in, out), got {codes.dtype}{codes.shape}")
    x = _check_x(x, codes.shape[0], "code_matmul")
    out = np.empty((x.shape[0], codes.shape[1]), dtype=x.dtype)
    code_matmul_kernel(x, np.ascontiguousarray(codes), x.dtype.type(scale), out)
    return out

# ======================================================================================
# Technique 2 (issue #10): integer codes × integer codes, int32 accumulation
# ======================================================================================
#
# A bit-mask quantized layer (``minidnn.quantization.ptq``) holds its weights as
# signed integer codes (int8 for B ≤ 8) and, on its integer path, quantizes its
# input to integer activation codes (int16). The product of the two code
# matrices is accumulated exactly in int32; the layer scales it once at the
# output. ``int_matmul`` is the Numba kernel, ``int_matmul_numpy`` its twin.


def int_matmul_bound(a_max: int, b_max: int, inner: int) -> int:
    """The largest |Σ_k a[i,k]·b[k,j]| possible: inner · a_max · b_max."""
    return int(inner) * int(a_max) * int(b_max)


def check_int32_accumulation(a_max: int, b_max: int, inner: int, what: str) -> None:
    """Raise ValueError when an int32 accumulator could overflow."""
    bound = int_matmul_bound(a_max, b_max, inner)
    if bound > np.iinfo(np.int32).max:
        raise ValueError(f"{what}: an int32 accumulator could overflow ({inner} products of "
                         f"|codes| up to {a_max} x {b_max} reach {bound} > 2^31 - 1); use "
                         f"fewer activation bits")


def int_matmul_numpy(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """C = A·B for integer A (M, K) and B (K, N), exact, returned as int32 (M, N).

    The twin of ``int_matmul``: products in int64, then cast; callers check
    with ``check_int32_accumulation`` that the sums fit int32."""
    return (a.astype(np.int64) @ b.astype(np.int64)).astype(np.int32)


@numba.njit(cache=True, nogil=True)
def int_matmul(a, b):
    """C = A·B for integer A (M, K) and B (K, N), accumulated in int32, shape (M, N).

    Row-by-row outer products (i, k, j order) so the inner loop runs along
    contiguous rows of B and C; a zero in A (a pruned or masked weight, a ReLU
    zero) skips its whole row of B."""
    M, K = a.shape
    N = b.shape[1]
    out = np.zeros((M, N), dtype=np.int32)
    for i in range(M):
        row = out[i]
        for k in range(K):
            aik = np.int32(a[i, k])
            if aik == 0:
                continue
            bk = b[k]
            for j in range(N):
                row[j] += aik * np.int32(bk[j])
    return out

# ====================================================================== end technique 2
