"""Softmax cross-entropy on integer labels in few calls, bit for bit NumPy's result.

L = −1/N Σ_n log softmax(z_n)[y_n],  dL/dz = (softmax(z) − onehot(y)) / N.

The NumPy twin, ``losses.SoftmaxCrossEntropy._numpy`` (the definition), takes
about twenty small NumPy calls on a (100, 10) batch: ~110 µs a training step
of the 784-500-10 net at one thread under load, more than the 500→10 layer's
forward and backward together. This does the same arithmetic in four Numba
passes around NumPy's own ``exp`` and ``log``:

    shifted = z − max_j z            (``_shift_rows``; NaN propagates as np.max)
    e       = np.exp(shifted)        (NumPy)
    s       = Σ_j e                  (``_row_sums``: NumPy's pairwise order)
    s       = np.log(s)              (NumPy)
    logp    = shifted − s, and Σ_n logp[n, y_n] in float64 (``_logp_and_sum``:
              NumPy's pairwise order, 8192-element buffers), with the labels'
              range checked in the same pass
    g       = np.exp(logp)           (NumPy)
    g       = (g − onehot) / N       (``_finish_grad``)

The transcendental functions stay NumPy's because Numba's ``exp``/``log``
(libm's) differ from NumPy's SIMD ones in the last bit for ~40 % of float32
inputs; every other step is exact IEEE arithmetic in the twin's order, so the
value and the gradient equal the twin's bit for bit (``tests/test_losses_fast``)
and a training run is unchanged. Rows of more than ``MAX_CLASSES`` classes
(where NumPy's pairwise sum recurses) take the twin.

Since sitting 18 that bit-exact path (``softmax_cross_entropy_exact``) serves
float64 logits only. float32 logits, which is what training uses, take one pass,
``_fused_rows32``, with its own vectorisable e^t. That e^t is Cephes' ``expf``:
Cody–Waite reduction and a degree-6 polynomial, within ~2 ulps of NumPy's.
Per row the pass computes:

    m = max_j z_j,  e_j = e^(z_j − m),  s = Σ_j e_j,
    Σ_n log p = Σ_n (z_{n,y} − m) − log s,  g_j = (e_j / s − [j = y]) / N

The gradient is e_j / s rather than exp(logp). It is within 4e-7/N of the twin's
(``tests/test_losses_fast``), and every row still sums to 0. Probabilities below
e^(−87) ≈ 1.6e-38 become 0 where NumPy keeps denormals. NaN and ±Inf logits give
the twin's NaN or +Inf loss. This pass took the loss from ~29 to ~11–15 µs on a
(100, 10) batch (one thread, under load). Since sitting 19 training runs the same
arithmetic over zᵀ (``_fused_columns32``: each loop along the batch, so it vectorises;
bit for bit ``_fused_rows32``, which stays as its readable definition): the kernel
11 → 6 µs, the loss call 17 → 11 µs (one thread, under load). ``FUSED_FLOAT32 = False`` restores the
bit-exact path for A/Bs and for bit-for-bit comparisons with older trees.
"""
from __future__ import annotations

import math

import numba
import numpy as np

from .rbm_kernels import _int32_bits_as_float32

#: NumPy's pairwise sum is a plain 8-accumulator loop up to this many elements
MAX_CLASSES = 128
#: NumPy's buffered casting reduces float32 → float64 in chunks of this many elements
_BUFSIZE = 8192


@numba.njit(cache=True, inline="always")
def _pairwise_block(a, start, n, zero):
    # numpy/_core/src/umath/loops_utils.h.src, pairwise_sum for n <= 128: a plain
    # loop below 8 elements, else 8 partial sums combined as a tree, then the rest
    if n < 8:
        res = zero
        for i in range(n):
            res += a[start + i]
        return res
    r0, r1, r2, r3 = a[start], a[start + 1], a[start + 2], a[start + 3]
    r4, r5, r6, r7 = a[start + 4], a[start + 5], a[start + 6], a[start + 7]
    i = 8
    stop = n - n % 8
    while i < stop:
        r0 += a[start + i]
        r1 += a[start + i + 1]
        r2 += a[start + i + 2]
        r3 += a[start + i + 3]
        r4 += a[start + i + 4]
        r5 += a[start + i + 5]
        r6 += a[start + i + 6]
        r7 += a[start + i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[start + i]
        i += 1
    return res


@numba.njit(cache=True)
def _pairwise64(a, start, n):
    # pairwise_sum for any n (the recursion above 128 elements), in float64
    if n <= 128:
        return _pairwise_block(a, start, n, 0.0)
    n2 = n // 2
    n2 -= n2 % 8
    return _pairwise64(a, start, n2) + _pairwise64(a, start + n2, n - n2)


@numba.njit(cache=True)
def _shift_rows(z, shifted):
    # shifted[i] = z[i] - max(z[i]); the max propagates NaN as np.maximum.reduce does
    n, k = z.shape
    for i in range(n):
        m = z[i, 0]
        for j in range(1, k):
            v = z[i, j]
            if m == m and (v > m or v != v):
                m = v
        for j in range(k):
            shifted[i, j] = z[i, j] - m


@numba.njit(cache=True)
def _row_sums(e, zero, sums):
    # sums[i, 0] = Σ_j e[i, j] in the order of np.sum(axis=1) on a C-ordered (n, k ≤ 128)
    # array: the reduction's identity 0, plus one pairwise block per row
    n, k = e.shape
    for i in range(n):
        sums[i, 0] = zero + _pairwise_block(e[i], 0, k, zero)


@numba.njit(cache=True)
def _logp_and_sum(shifted, lse, target, logp):
    # logp = shifted - lse; returns (Σ_n float64(logp[n, y_n]) in the order of NumPy's
    # buffered float32 → float64 sum, whether every label lies in [0, k))
    n, k = shifted.shape
    picked = np.empty(n, dtype=np.float64)
    ok = True
    for i in range(n):
        s = lse[i, 0]
        for j in range(k):
            logp[i, j] = shifted[i, j] - s
        t = target[i]
        if t < 0 or t >= k:
            ok = False
            picked[i] = 0.0
        else:
            picked[i] = np.float64(logp[i, t])
    total = 0.0
    for start in range(0, n, _BUFSIZE):
        total += _pairwise64(picked, start, min(_BUFSIZE, n - start))
    return total, ok


@numba.njit(cache=True)
def _finish_grad(grad, target, one, count):
    # grad = (grad - onehot(target)) / count, element by element as the twin; one and
    # count are scalars of grad's dtype (a Python 1 would promote float32 to float64)
    n, k = grad.shape
    for i in range(n):
        t = target[i]
        for j in range(k):
            g = grad[i, j]
            if j == t:
                g = g - one
            grad[i, j] = g / count


def applies(logits, target) -> bool:
    """Whether ``softmax_cross_entropy`` handles this call (else the twin does): C-ordered
    2-D float32/float64 logits with 1 to MAX_CLASSES classes, integer labels (batch,)."""
    return (isinstance(logits, np.ndarray) and isinstance(target, np.ndarray)
            and logits.ndim == 2 and target.ndim == 1
            and logits.dtype in (np.float32, np.float64) and logits.flags.c_contiguous
            and 0 < logits.shape[1] <= MAX_CLASSES and logits.shape[0] > 0
            and target.dtype.kind in "iu" and target.shape[0] == logits.shape[0])


def softmax_cross_entropy(logits: np.ndarray, target: np.ndarray):
    """(mean loss as a Python float, gradient) for ``applies``' inputs, or None when a
    label lies outside [0, k) (the caller's twin then raises its error).

    float32 logits (training's dtype) take the one-pass kernel (``FUSED_FLOAT32``;
    within a few ulps of the twin, see the module docstring); float64 logits the
    four passes around NumPy's exp and log, bit for bit the twin."""
    if FUSED_FLOAT32 and logits.dtype == np.float32:
        n = logits.shape[0]
        grad = np.empty_like(logits)
        kernel = _fused_columns32 if COLUMNS_PASS else _fused_rows32
        total, ok = kernel(logits, np.ascontiguousarray(target), grad)
        if not ok:
            return None
        return float(-total / n) + 0.0, grad
    return softmax_cross_entropy_exact(logits, target)


def softmax_cross_entropy_exact(logits: np.ndarray, target: np.ndarray):
    """``softmax_cross_entropy`` bit for bit the twin (module docstring), any
    ``applies`` dtype; None when a label lies outside [0, k)."""
    n, k = logits.shape
    dtype = logits.dtype.type
    target = np.ascontiguousarray(target)
    shifted = np.empty_like(logits)
    _shift_rows(logits, shifted)
    with np.errstate(over="ignore"):          # as the twin's log_softmax
        e = np.exp(shifted)
    lse = np.empty((n, 1), dtype=logits.dtype)
    _row_sums(e, dtype(0), lse)
    np.log(lse, out=lse)
    logp = e                                  # e is no longer needed: reuse its memory
    total, ok = _logp_and_sum(shifted, lse, target, logp)
    if not ok:
        return None
    grad = np.exp(logp)
    _finish_grad(grad, target, dtype(1), dtype(n))
    return float(-total / n) + 0.0, grad


# -- float32 in one pass ---------------------------------------------------------------

#: float32 logits take ``_fused_rows32`` (False: the bit-exact four passes; for A/Bs)
FUSED_FLOAT32 = True
#: ... through ``_fused_columns32``, its bits along the batch (False: the row pass; A/Bs)
COLUMNS_PASS = True


@numba.njit(cache=True, inline="always", error_model="numpy", fastmath={"contract"})
def _exp_nonpositive32(t):
    # e^t for t <= 0 (a logit minus its row's maximum), NaN for NaN: Cody-Waite
    # reduction t = n ln2 + r and Cephes' degree-6 expf polynomial, as the sigmoid
    # kernel's (rbm_kernels._sigmoid32); 0 below -87 (NumPy gives denormals under
    # 1.2e-38 down to -103.97, then 0)
    # selects, not branches, so that the row loop vectorises
    low = np.float32(-87.0)
    x = t if t > low else low
    # n + 128 = floor(t log2 e + 128.5), by truncation of a positive number
    n_plus_128 = numba.int32(x * np.float32(1.4426950408889634) + np.float32(128.5))
    fn = np.float32(n_plus_128) - np.float32(128.0)
    r = x - fn * np.float32(0.693359375) + fn * np.float32(2.12194440e-4)
    p = np.float32(1.9875691500e-4)
    p = p * r + np.float32(1.3981999507e-3)
    p = p * r + np.float32(8.3334519073e-3)
    p = p * r + np.float32(4.1665795894e-2)
    p = p * r + np.float32(1.6666665459e-1)
    p = p * r + np.float32(5.0000001201e-1)
    e = (p * (r * r) + r + np.float32(1.0)) * _int32_bits_as_float32(
        numba.int32((n_plus_128 - 1) << 23))
    e = e if t >= low else np.float32(0.0)
    return e if t == t else t


@numba.njit(cache=True, error_model="numpy", fastmath={"contract"})
def _fused_rows32(z, target, grad):
    # per row: m = max_j z (NaN propagates as np.max), e_j = exp(z_j - m), s = Σ_j e_j,
    # log p_t = (z_t - m) - log s summed in float64, grad_j = (e_j / s - [j = t]) / n;
    # returns (Σ_n log p, whether every label lies in [0, k))
    n, k = z.shape
    count = np.float32(n)
    total = 0.0
    ok = True
    for i in range(n):
        row = z[i]
        g = grad[i]
        m = row[0]
        for j in range(1, k):
            v = row[j]
            if m == m and (v > m or v != v):
                m = v
        s = np.float32(0.0)
        for j in range(k):
            e = _exp_nonpositive32(row[j] - m)
            g[j] = e
            s += e
        t = target[i]
        if t < 0 or t >= k:
            ok = False
            continue
        total += np.float64((row[t] - m) - np.float32(math.log(s)))
        for j in range(k):
            g[j] = g[j] / s / count
        g[t] -= np.float32(1.0) / count
    return total, ok


@numba.njit(cache=True, error_model="numpy", fastmath={"contract"})
def _fused_columns32(z, target, grad):
    # _fused_rows32's arithmetic, element by element the same operations in the same
    # order (so the same bits: tests/test_losses_fast), on zᵀ: every loop but the
    # log-and-sum one runs along the batch, where 8 rows fill a vector, instead of
    # along a row of 10 classes, which did not vectorise (~11 → ~6 µs at (100, 10))
    n, k = z.shape
    count = np.float32(n)
    zt = np.empty((k, n), dtype=np.float32)
    for i in range(n):
        for j in range(k):
            zt[j, i] = z[i, j]
    m = zt[0].copy()
    for j in range(1, k):
        column = zt[j]
        for i in range(n):
            mi = m[i]
            v = column[i]
            m[i] = v if (mi == mi and (v > mi or v != v)) else mi
    s = np.zeros(n, dtype=np.float32)
    for j in range(k):
        column = zt[j]
        for i in range(n):
            e = _exp_nonpositive32(column[i] - m[i])
            column[i] = e
            s[i] += e
    total = 0.0
    ok = True
    for i in range(n):
        t = target[i]
        if t < 0 or t >= k:
            ok = False
        else:
            total += np.float64((z[i, t] - m[i]) - np.float32(math.log(s[i])))
    if not ok:
        return total, ok
    for j in range(k):
        column = zt[j]
        for i in range(n):
            column[i] = column[i] / s[i] / count
    inverse = np.float32(1.0) / count
    for i in range(n):
        g = grad[i]
        for j in range(k):
            g[j] = zt[j, i]
        g[target[i]] -= inverse
    return total, ok


# -- the training loop's accuracy count ------------------------------------------------

@numba.njit(cache=True)
def _count_correct(outputs, labels):
    # Σ_n [argmax_j outputs[n, j] == labels[n]] with np.argmax's rule: the first
    # maximum, or the first NaN when a row holds one
    n, k = outputs.shape
    correct = 0
    for i in range(n):
        best = 0
        m = outputs[i, 0]
        if m == m:
            for j in range(1, k):
                v = outputs[i, j]
                if v != v:
                    best = j
                    break
                if v > m:
                    m = v
                    best = j
        if best == labels[i]:
            correct += 1
    return correct


def count_correct_numpy(outputs: np.ndarray, labels: np.ndarray) -> int:
    """How many rows of ``outputs`` (batch, classes) have their argmax at the label (the twin)."""
    return int((outputs.argmax(axis=1) == labels).sum())


def count_correct(outputs: np.ndarray, labels: np.ndarray) -> int:
    """``count_correct_numpy`` in one Numba pass (~1 µs where the twin's three NumPy
    calls take ~10 at batch 100) for C-ordered float logits and integer labels."""
    if (outputs.dtype in (np.float32, np.float64) and outputs.flags.c_contiguous
            and labels.dtype.kind in "iu" and outputs.shape[1] > 0
            and labels.shape == outputs.shape[:1]):
        return int(_count_correct(outputs, labels))
    return count_correct_numpy(outputs, labels)
