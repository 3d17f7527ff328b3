"""A sparse layer and the sigmoid after it in one kernel call each way (issue #11, sitting 20).

The 784-500-10 net runs ``SparseDense`` then ``Sigmoid``. Apart, the pair costs two
more passes over the (batch, 500) activations each step, each with its Python call
and its new array, and at two threads both stay on one thread:

    forward    a = A · xᵀ + b  (the CSR kernel)      σ = 1 / (1 + e^(−a))  (a pass)
    backward   d = dσ ⊙ σ(1 − σ)  (a pass)           the CSR backward on d

Here the sigmoid is applied to each output row of A · xᵀ + b right after the row is
finished, while its k values are still in L1, inside the same parallel region as the
product (each thread its block of rows, as ``TrainingKernels.FORWARD_SPLIT = "rows"``),
and the backward writes d = ((1 − σ)·σ)·dσ straight into the padded gradᵀ buffer that
the CSR backward reads, as its fill pass (each thread its share of the samples), then
runs the column-split backward (``BACKWARD_SPLIT = "columns"``) on it.

The numbers are the separate layers' bit for bit: the product is
``kernels.csr``'s ``_forward_row_padded_avx2``, the sigmoid is
``kernels.activation._sigmoid_range`` (the same arithmetic and the same compile flags,
``fastmath={"contract"}``, as ``sigmoid32``), the derivative is ``((1 − y)·y)·g`` without
fast-math as ``activation._sigmoid_grad_flat``, and the backward is csr's column-split
kernels, which give the one-thread numbers bit for bit. So these functions apply only
where the separate path runs those kernels: float32 on a CPU with AVX2 + FMA
(``csr.SIMD_AVAILABLE``), with the default splits; ``forward_sigmoid`` /
``backward_sigmoid`` return None otherwise and the caller runs the layers one by one.

They read a ``TrainingKernels`` object's index views and padded buffers (csr.py's
internals, owned there); ``tests/test_fusion_dense_act.py`` holds them to the separate
layers bit for bit, which is what would catch a change of those internals. The NumPy
twins, ``forward_sigmoid_numpy`` and ``backward_sigmoid_numpy``, define what they
compute (to float32 rounding: another summation order).

Also here: ``bias_activation``, the bias add and the sigmoid or ReLU of a ``Dense``
layer's BLAS output in one pass over it (``layers.fusion``'s Dense pairs),
with its twin ``bias_activation_numpy``.
"""
from __future__ import annotations

import numba
import numpy as np

from . import csr
from .activation import _sigmoid_range
from .builds import njit_variant
from .csr import (FILL_COPY, FILL_NONE, FILL_TRANSPOSE, SIMD_AVAILABLE, _fill_share,
                  _forward_row_padded_avx2, _sample_share)


# -- the twins -----------------------------------------------------------------------

def forward_sigmoid_numpy(indptr, indices, data, bias, xt):
    """σ(A · xt + bias[:, None]) for A = csr(indptr, indices, data) (n_rows, n_cols),
    xt feature-major (n_cols, k): (n_rows, k). bias of length n_rows or 0."""
    from ..layers.activations import sigmoid_numpy
    a = csr.csr_matmul_numpy(indptr, indices, data, xt,
                             None if len(bias) == 0 else np.asarray(bias))
    return sigmoid_numpy(np.asarray(a, dtype=data.dtype))


def backward_sigmoid_numpy(indptr, indices, data, y, grad, xt, input_grad: bool = True):
    """(grad_data, grad_bias, dx) of the sparse layer for d = ((1 − y)·y)·grad, with y =
    σ (n_rows, k) and grad = dL/dσ (n_rows, k), both feature-major: ``csr_backward_numpy``
    on d."""
    d = ((1 - y) * y) * grad
    return csr.csr_backward_numpy(indptr, indices, data, d, xt, input_grad)


# -- the forward -----------------------------------------------------------------------

#: elements of the scratch block that the fused kernels write a block of rows into
#: before the sigmoid reads it from there (16 KiB of float32: in L1 with the rest)
SCRATCH_ELEMENTS = 4096


@numba.njit(cache=True, error_model="numpy", fastmath={"contract"})
def _sigmoid_block(scratch, sig, out, c0, c1):
    # out[c0:c1] = σ(scratch[:c1 − c0]) through ``sig``, two whole scratch blocks read
    # and written from index 0, then row copies (see ``_forward_sigmoid_row_range``)
    k = out.shape[1]
    _sigmoid_range(scratch.reshape(-1), sig.reshape(-1), 0, (c1 - c0) * k)
    for r in range(c0, c1):
        dst, src = out[r], sig[r - c0]
        for j in range(k):
            dst[j] = src[j]


@numba.njit(cache=True, error_model="numpy", fastmath={"contract"})
def _forward_sigmoid_row_range(indptr, indices, data, bias, dense_pad, out, r0, r1):
    # rows r0..r1 of out = σ(A · xᵀ + b) for every sample: the product by csr's padded row
    # kernel (explicit FMAs, whatever this function's flags), the bias added and the
    # sigmoid applied, block of rows by block of rows while the block is in L1; compiled
    # with sigmoid32's flags so that the inlined sigmoid gives its bits.
    # How the loops are written matters (one thread, under load, 784→500 batch 100; the
    # product alone 112 µs, plus sigmoid32's pass 161): the sigmoid in place (source and
    # destination one array: LLVM's run-time alias check fails, the scalar loop runs)
    # 569 µs; row by row into out (each row's scalar remainder) 227; from a scratch block
    # into a slice of out, with the bias added through flat indices (wrap-around checks
    # on signed indices) 220; this form, every loop from index 0 over whole arrays or
    # row views, 166.
    k, ld, nnz = out.shape[1], dense_pad.shape[1], len(indices)
    if k == 0 or r1 <= r0:
        return
    dense_flat = dense_pad.reshape(-1)
    rows = max(1, SCRATCH_ELEMENTS // k)
    scratch = np.empty((rows, k), dtype=out.dtype)
    sig = np.empty((rows, k), dtype=out.dtype)
    scratch_flat = scratch.reshape(-1)
    has_bias = len(bias) > 0
    for c0 in range(r0, r1, rows):
        c1 = min(c0 + rows, r1)
        for r in range(c0, c1):
            _forward_row_padded_avx2(scratch_flat, dense_flat, indices, data, indptr[r],
                                     indptr[r + 1], r - c0, k, ld, k, nnz)
            if has_bias:
                acc, br = scratch[r - c0], bias[r]
                for b in range(k):
                    acc[b] += br
        _sigmoid_block(scratch, sig, out, c0, c1)


def _forward_sigmoid_rows(indptr, indices, data, bias, source, dense_pad, out, fill, n_blocks):
    # the fill of xᵀ (each block its share of the samples, as csr's row split), then
    # block c computes σ of rows [c·n/B, (c+1)·n/B) for every sample
    k, n_rows = out.shape[1], out.shape[0]
    if fill != FILL_NONE:
        for c in numba.prange(n_blocks):
            v0, v1, s0, s1 = _sample_share(c, n_blocks, k)
            _fill_share(source, dense_pad, fill, s0, s1)
    for c in numba.prange(n_blocks):
        _forward_sigmoid_row_range(indptr, indices, data, bias, dense_pad, out,
                                   c * n_rows // n_blocks, (c + 1) * n_rows // n_blocks)


# -- the backward ----------------------------------------------------------------------

@numba.njit(cache=True)
def _sigmoid_grad_fill(source, y, pad, batch_major, s0, s1):
    # pad[j, s] = ((1 − y[j, s])·y[j, s])·g[j, s] for the samples s0 ≤ s < s1, every row j,
    # with g = source (feature-major (n, k)) or its transpose (batch-major (k, n)); no
    # fast-math, so each product is rounded as activation._sigmoid_grad_flat's
    one = np.float32(1.0)
    n = s1 - s0
    for j in range(pad.shape[0]):
        yr, dst = y[j, s0:s1], pad[j, s0:s1]
        if batch_major:
            for i in range(n):
                v = yr[i]
                dst[i] = ((one - v) * v) * source[s0 + i, j]
        else:
            src = source[j, s0:s1]
            for i in range(n):
                v = yr[i]
                dst[i] = ((one - v) * v) * src[i]


def _backward_sigmoid_columns(t_indptr, t_indices, perm, data, source, y, grad_pad, x_pad, k,
                              zero, grad_data, grad_bias, dx, batch_major, n_blocks):
    # d into gradᵀ's padded buffer (each block its share of the samples), then csr's
    # column split on it: block c does A's columns [c·n/B, (c+1)·n/B) (their dx rows and
    # weight-gradient entries, every sample) and the same share of the bias rows
    n_rows, n_cols = grad_pad.shape[0], len(t_indptr) - 1
    want_dx = dx.shape[0] > 0
    for c in numba.prange(n_blocks):
        v0, v1, s0, s1 = _sample_share(c, n_blocks, k)
        _sigmoid_grad_fill(source, y, grad_pad, batch_major, s0, s1)
    for c in numba.prange(n_blocks):
        r0, r1 = c * n_rows // n_blocks, (c + 1) * n_rows // n_blocks
        if len(grad_bias) > 0:
            csr._row_sums_share(grad_pad[r0:r1], zero, grad_bias[r0:r1], 0, k)
        c0, c1 = c * n_cols // n_blocks, (c + 1) * n_cols // n_blocks
        if k == 0:
            for q in range(t_indptr[c0], t_indptr[c1]):
                grad_data[perm[q]] = zero
        elif want_dx:
            csr._backward_dx_column_range(t_indptr, t_indices, perm, data, grad_pad, x_pad,
                                          grad_data, dx, c0, c1)
        else:
            csr._backward_params_column_range(t_indptr, t_indices, perm, data, grad_pad, x_pad,
                                              grad_data, dx, k, c0, c1)


_KERNELS = {}
for _name, _fn in (("forward_sigmoid", _forward_sigmoid_rows),
                   ("backward_sigmoid", _backward_sigmoid_columns)):
    # a serial and a parallel build, each with its own cache entry (``kernels.builds``)
    _KERNELS[_name] = (njit_variant(_fn, "_serial", error_model="numpy",
                                    fastmath={"contract"}),
                       njit_variant(_fn, "_parallel", error_model="numpy",
                                    fastmath={"contract"}, parallel=True))


def _applies(kernels, data) -> bool:
    return SIMD_AVAILABLE and data.dtype == np.float32


def _pick(kernels, name, work):
    # the thread count that ``TrainingKernels`` would take for this work
    _, blocks = kernels._pick("matmul_padded", work)
    serial, parallel = _KERNELS[name]
    return (parallel, blocks) if blocks > 1 else (serial, 1)


def forward_sigmoid(kernels, data, bias, x, batch_major: bool):
    """(σ(A · xᵀ + bias), xᵀ) as ``kernels.forward(data, bias, x, batch_major=...)``
    followed by the sigmoid of ``layers.activations.sigmoid`` on its output, bit for bit,
    in one call: out (n_rows, k) C-ordered, xᵀ the (n_cols, k) view of the padded buffer.
    None where the padded float32 kernels do not apply (the caller then runs the
    layers one by one). ``kernels`` is a ``csr.TrainingKernels``."""
    if not _applies(kernels, data):
        return None
    k = x.shape[0] if batch_major else x.shape[1]
    pad = kernels._padded("_x_pad", kernels.n_cols, k)
    out = np.empty((kernels.n_rows, k), dtype=data.dtype)
    kernel, blocks = _pick(kernels, "forward_sigmoid", (kernels.nnz + kernels.n_cols) * k)
    own = not batch_major and x is kernels._x_view
    fill = FILL_TRANSPOSE if batch_major else (FILL_NONE if own else FILL_COPY)
    kernel(kernels.indptr, kernels.indices, data, bias, x, pad, out, fill, blocks)
    if not own:
        kernels._x_view = pad[:, :k]
    return out, kernels._x_view


def backward_sigmoid(kernels, data, y, grad, xt, input_grad: bool, want_bias: bool = True,
                     batch_major: bool = False):
    """(grad_data, grad_bias or None, dx or None) of the sparse layer for the gradient
    ((1 − y)·y)·grad, as ``Sigmoid.backward`` then ``kernels.backward`` would give them,
    bit for bit, in one call. y = σ (n_rows, k) C-ordered, as ``forward_sigmoid`` gave
    it; grad = dL/dσ (n_rows, k) C-ordered, or (k, n_rows) with ``batch_major``; xt the
    view ``forward_sigmoid`` handed back. None where the fused kernels do not apply:
    not the padded float32 kernels, another xᵀ than the last forward's, or a non-default
    backward split (whose numbers differ) at more than one thread."""
    if not _applies(kernels, data) or not kernels._owns_x(xt):
        return None
    k = xt.shape[1]
    work = kernels.nnz * k * (2 if input_grad else 1) + (kernels.n_rows * k if batch_major else 0)
    kernel, blocks = _pick(kernels, "backward_sigmoid", work)
    if blocks > 1 and kernels.BACKWARD_SPLIT != "columns":
        return None
    grad_data = np.empty(kernels.nnz, dtype=data.dtype)
    grad_bias = np.empty(kernels.n_rows if want_bias else 0, dtype=data.dtype)
    dx = np.empty((kernels.n_cols if input_grad else 0, k), dtype=data.dtype)
    g_pad = kernels._padded("_grad_pad", kernels.n_rows, k)
    kernel(kernels.t_indptr, kernels.t_indices, kernels.perm, data, grad, y, g_pad,
           kernels._x_pad, k, data.dtype.type(0), grad_data, grad_bias, dx, batch_major, blocks)
    return grad_data, (grad_bias if want_bias else None), (dx if input_grad else None)


# -- Dense + activation ---------------------------------------------------------------------

def bias_activation_numpy(out, bias, activation: str):
    """activation(out + bias) in a new array: the twin of ``bias_activation``
    (``"sigmoid"``: ``layers.activations.sigmoid_numpy``; ``"relu"``: ``relu_numpy``)."""
    from ..layers.activations import relu_numpy, sigmoid_numpy
    a = out + bias if bias is not None else out.copy()
    return sigmoid_numpy(a) if activation == "sigmoid" else relu_numpy(a)


@numba.njit(cache=True, error_model="numpy", fastmath={"contract"})
def _bias_sigmoid_rows(a, bias, has_bias, out):
    # out = σ(a + b), a block of rows at a time through scratch blocks in L1 (the add
    # alone before the sigmoid, as NumPy's ``a += b`` then sigmoid32), written as
    # ``_forward_sigmoid_row_range`` for its loops to vectorise
    n, m = a.shape
    if m == 0 or n == 0:
        return
    rows = max(1, SCRATCH_ELEMENTS // m)
    scratch = np.empty((rows, m), dtype=a.dtype)
    sig = np.empty((rows, m), dtype=a.dtype)
    for i0 in range(0, n, rows):
        i1 = min(i0 + rows, n)
        for i in range(i0, i1):
            src, dst = a[i], scratch[i - i0]
            if has_bias:
                for j in range(m):
                    dst[j] = src[j] + bias[j]
            else:
                for j in range(m):
                    dst[j] = src[j]
        _sigmoid_block(scratch, sig, out, i0, i1)


@numba.njit(cache=True)
def _bias_relu_rows(a, bias, has_bias, out):
    # out = max(a + b, 0), NaN kept, as ``a += b`` then activation._relu_flat
    n, m = a.shape
    for i in range(n):
        src, dst = a[i], out[i]
        for j in range(m):
            v = src[j] + bias[j] if has_bias else src[j]
            dst[j] = v if ((v > 0) | (v != v)) else 0


def bias_activation(a, bias, activation: str):
    """activation(a + bias) in a new array, one pass over a, for a C-contiguous 2-D
    float32 a (sigmoid; float32 or float64 for ReLU) and bias (its columns, a's dtype) or
    None; the bits of NumPy's ``a += bias`` followed by ``layers.activations.sigmoid`` /
    ``ReLU``'s kernel. None (nothing done) for any other a."""
    if not (isinstance(a, np.ndarray) and a.ndim == 2 and a.flags.c_contiguous):
        return None
    if bias is not None and (bias.dtype != a.dtype or bias.shape != (a.shape[1],)):
        return None
    b = bias if bias is not None else np.zeros(0, a.dtype)
    if activation == "sigmoid" and a.dtype == np.float32:
        out = np.empty_like(a)
        _bias_sigmoid_rows(a, b, bias is not None, out)
        return out
    if activation == "relu" and a.dtype in (np.float32, np.float64):
        out = np.empty_like(a)
        _bias_relu_rows(a, b, bias is not None, out)
        return out
    return None
