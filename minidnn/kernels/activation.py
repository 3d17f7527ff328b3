"""A float32 sigmoid kernel for ``layers.activations.sigmoid`` (the layer, autoencoders, RBMs).

σ(x) = 1 / (1 + e^(−x)) in one pass over a contiguous float32 array, with the
vectorised e^t of ``rbm_kernels._sigmoid32`` (Cody–Waite range reduction and a
degree-6 polynomial, Cephes' ``expf``). The NumPy twin, ``layers.activations.sigmoid_numpy``, takes four passes
(negate, exp, add, reciprocal): on a (100, 500) batch, the hidden layer of the
784-500-10 MNIST net, the kernel took ~45 µs against ~95 µs (one thread,
interleaved A/B on the loaded machine). Since sitting 18 the polynomial and the
range reduction's products fuse into multiply-adds (``fastmath={"contract"}``, nothing
else: NaN, Inf and the order of operations stay IEEE): 54 → 40 µs on that batch
(0.8 ns an element, one thread, under load), with the same largest error against a
float64 sigmoid, 8.9e-8 absolute and 1.1e-7 relative over N(0, 16) inputs, as NumPy's
own float32 path (whose error there is 8.9e-8 too); the bits change in the last place
for some inputs. It differs from the twin by at most 1.2e-7; below x = −87 it gives 0,
where the twin gives 0 from about −87.3 on (its quotients below float32's smallest
normal, 1.18e-38, flushed; NumPy's own would be subnormal down to −88.7): neither
returns a subnormal number. NaN stays NaN, as in the twin.
"""
from __future__ import annotations

import numba
import numpy as np

from ..threads import numba_thread_count
from .rbm_kernels import _sigmoid32


@numba.njit(cache=True, error_model="numpy", fastmath={"contract"}, inline="always")
def _sigmoid_range(x, out, i0, i1):
    # the clamp inside _sigmoid32 would turn NaN into a number and give ~1.6e-38 far
    # below 0: keep NaN, and give 0 below -87 (NumPy's limit: exp(-x) overflows to inf
    # from -88.7 on; in between it gives denormals under 1.2e-38)
    zero = np.float32(0.0)
    low = np.float32(-87.0)
    for i in range(i0, i1):
        v = x[i]
        y = _sigmoid32(v)
        out[i] = v if v != v else (zero if v < low else y)


@numba.njit(cache=True, error_model="numpy", fastmath={"contract"})
def _sigmoid_flat(x, out):
    _sigmoid_range(x, out, 0, x.shape[0])


@numba.njit(cache=True, error_model="numpy", fastmath={"contract"}, parallel=True)
def _sigmoid_flat_parallel(x, out, n_blocks):
    # the same arithmetic element by element (the same bits), in n_blocks ranges of a
    # multiple of 8 elements, one per thread
    n = x.shape[0]
    per = ((n + n_blocks - 1) // n_blocks + 7) // 8 * 8
    for b in numba.prange(n_blocks):
        _sigmoid_range(x, out, b * per, min(n, (b + 1) * per))


#: elements from which the sigmoid runs on every Numba thread; off by default (2**62). The
#: split was meant for a (100, 500) batch (~40 µs on one thread, the pool still spinning after
#: a sparse layer's parallel kernels), but the quiet 2-thread run of sitting 18 showed it
#: losing: the sparse step's sigmoid 178 µs split against 59 serial, and after a dense layer's
#: BLAS products (OpenBLAS's threads spinning too) the dense step 8.9 ms against 2.3 ms
#: (sigmoid 4.1 ms). Set it to 1 << 15 to try the split on another machine.
PARALLEL_MIN_ELEMENTS = 1 << 62


def sigmoid32(x: np.ndarray) -> np.ndarray | None:
    """σ(x) in a new array of x's memory order, for a C- or Fortran-contiguous float32
    x; None for any other x (the caller then uses the NumPy twin). From
    ``PARALLEL_MIN_ELEMENTS`` elements on, and with more than one Numba thread, the
    elements are split between the threads (the same bits)."""
    if x.dtype != np.float32 or not (x.flags.c_contiguous or x.flags.f_contiguous):
        return None
    out = np.empty_like(x)              # order "K": the same memory order as x
    flat_x, flat_out = x.ravel(order="K"), out.ravel(order="K")
    threads = numba_thread_count() if x.size >= PARALLEL_MIN_ELEMENTS else 1
    if threads > 1:
        _sigmoid_flat_parallel(flat_x, flat_out, threads)
    else:
        _sigmoid_flat(flat_x, flat_out)
    return out


@numba.njit(cache=True)
def _sigmoid_grad_flat(y, grad, out):
    # ((1 - y)·y)·grad in the twin's order, each product rounded as NumPy's (no
    # fastmath: no fused multiply-add), so the result is the twin's bit for bit
    one = np.float32(1.0)
    for i in range(y.shape[0]):
        v = y[i]
        out[i] = ((one - v) * v) * grad[i]


@numba.njit(cache=True)
def _sigmoid_grad_rows(y, grad, out):
    # the same product on 2-D operands: y and out C-ordered, grad of any strides (the
    # transpose of a C-ordered gradient, when y came out Fortran-ordered from a sparse
    # layer); rows of y run over the batch, so grad's strided reads stay in a few
    # cache lines per row and L1 holds them for the next row
    one = np.float32(1.0)
    n, k = y.shape
    for i in range(n):
        for j in range(k):
            v = y[i, j]
            out[i, j] = ((one - v) * v) * grad[i, j]


def sigmoid_grad32(y: np.ndarray, grad: np.ndarray) -> np.ndarray | None:
    """dσ = grad·σ(1 − σ) from σ = y, in one pass, for float32 y and grad of one shape,
    each C- or Fortran-contiguous; the result has y's memory order. None otherwise.
    The twin is ``(1 - y) * y * grad`` (``Sigmoid.backward``'s NumPy path).

    Mixed orders (a Fortran-ordered σ after a sparse layer, a C-ordered gradient from
    the Dense layer above) take one pass that reads grad through its transpose,
    where a copy of grad into y's order first cost ~18 µs a step of the 784-500-10
    net; the result stays in the order the sparse layer transposes for free."""
    if (y.dtype != np.float32 or grad.dtype != np.float32 or y.shape != grad.shape):
        return None
    y_c, y_f = y.flags.c_contiguous, y.flags.f_contiguous
    g_c, g_f = grad.flags.c_contiguous, grad.flags.f_contiguous
    if not ((y_c or y_f) and (g_c or g_f)):
        return None
    out = np.empty_like(y)          # y's memory order
    if y_c and g_c:
        _sigmoid_grad_flat(y.reshape(-1), grad.reshape(-1), out.reshape(-1))
    elif y_f and g_f:
        _sigmoid_grad_flat(y.ravel(order="F"), grad.ravel(order="F"), out.ravel(order="F"))
    elif y.ndim == 2 and y_f:       # y Fortran, grad C: work on the transposes
        _sigmoid_grad_rows(y.T, grad.T, out.T)
    elif y.ndim == 2:               # y C, grad Fortran
        _sigmoid_grad_rows(y, grad, out)
    else:
        return None
    return out


# -- ReLU ----------------------------------------------------------------------------
# One serial pass each way, which the compiler vectorises (the select is
# branch-free: bitwise | instead of a short-circuit or). The twins are the NumPy
# expressions ``ReLU`` used before (``layers.activations.relu_numpy`` /
# ``relu_grad_numpy``), and the kernels give their bits: np.maximum(x, 0) is +0
# for x = ±0 and NaN for NaN; np.where(y <= 0, 0, grad) passes grad where y is NaN.
# On a (100, 32, 16, 16) float32 batch (1 thread, under load) the backward took
# 0.2 ms against np.where's 4.5 ms (it builds a mask first); a parallel build
# lost at one thread (it hands each call to a worker thread).
@numba.njit(cache=True)
def _relu_flat(x, out):
    for i in range(x.shape[0]):
        v = x[i]
        out[i] = v if ((v > 0) | (v != v)) else 0


@numba.njit(cache=True)
def _relu_grad_flat(y, grad, out):
    for i in range(y.shape[0]):
        out[i] = 0 if y[i] <= 0 else grad[i]


def _flat_pair(*arrays):
    """The arrays as 1-D views if they are float32/float64 of one dtype, one shape and
    C-contiguous; None otherwise."""
    first = arrays[0]
    if first.dtype not in (np.float32, np.float64):
        return None
    for a in arrays:
        if not isinstance(a, np.ndarray) or a.dtype != first.dtype or a.shape != first.shape \
                or not a.flags.c_contiguous:
            return None
    return [a.reshape(-1) for a in arrays]


def relu_kernel(x: np.ndarray) -> np.ndarray | None:
    """max(x, 0) in a new array, one pass, for a C-contiguous float32/64 x;
    None for any other x (the caller then uses the NumPy twin)."""
    if _flat_pair(x) is None:
        return None
    out = np.empty_like(x)
    _relu_flat(x.reshape(-1), out.reshape(-1))
    return out


def relu_grad_kernel(y: np.ndarray, grad: np.ndarray) -> np.ndarray | None:
    """0 where y <= 0, else grad, in a new array (one pass), for y and grad of one
    shape and dtype, both C-contiguous float32/64; None otherwise."""
    if not isinstance(grad, np.ndarray) or _flat_pair(y, grad) is None:
        return None
    out = np.empty_like(grad)
    _relu_grad_flat(y.reshape(-1), grad.reshape(-1), out.reshape(-1))
    return out
