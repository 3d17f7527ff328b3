"""Element-wise activations. Each caches only what its derivative needs."""
from __future__ import annotations

import numpy as np

from ..kernels.activation import relu_grad_kernel, relu_kernel, sigmoid32, sigmoid_grad32
from .base import Layer

def relu_numpy(x: np.ndarray) -> np.ndarray:
    """max(x, 0), NaN kept (IEEE ``maximum``): the twin of ``kernels.activation.relu_kernel``."""
    return np.maximum(x, x.dtype.type(0))


def relu_grad_numpy(y: np.ndarray, grad: np.ndarray) -> np.ndarray:
    """grad where y > 0 or y is NaN, else 0: the twin of ``relu_grad_kernel``."""
    return np.where(y <= 0, grad.dtype.type(0), grad)


def sigmoid_numpy(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)), in place in one new array of x's dtype and memory order,
    with results below the dtype's smallest normal number flushed to 0.

    Four passes over one buffer (a 100×500 float32 batch in ~0.1 ms, where a
    two-branch ``np.where`` form took ~0.7 ms), and one for the flush. For x below
    about -88.7 (float32) exp(-x) overflows to inf and 1 / (1 + inf) = 0, the right
    limit, so that overflow is expected and silenced; NaN stays NaN. Between about
    -88.7 and -87.3 (float32; -745 and -708 for float64) the quotient is subnormal,
    and a subnormal operand sends the next layer's GEMMs to the CPU's slow path
    (sitting 22: 20× slower with 3 % of them), so it is stored as 0 (the float32
    kernel already gives 0 below -87). The twin of the float32 kernel
    (``kernels.activation.sigmoid32``), and ``sigmoid`` for other input."""
    out = np.negative(x)
    with np.errstate(over="ignore"):
        np.exp(out, out=out)
    out += out.dtype.type(1)
    np.reciprocal(out, out=out)
    # (< is False for NaN: NaN stays)
    np.copyto(out, out.dtype.type(0), where=out < np.finfo(out.dtype).tiny)
    return out


def sigmoid(x: np.ndarray) -> np.ndarray:
    """σ(x) = 1 / (1 + exp(-x)) in one new array of x's dtype and memory order.

    A contiguous float32 x goes through one Numba pass (``kernels.activation``,
    ~2× faster than NumPy's four; within 1.2e-7 of ``sigmoid_numpy``), anything
    else through ``sigmoid_numpy``; neither returns a subnormal number (results below
    the smallest normal are 0). Every sigmoid in minidnn (the layer, the
    autoencoders, the RBMs' probabilities) calls this one, so a stack and the
    MLP it initialises compute the same bits."""
    if isinstance(x, np.ndarray):
        y = sigmoid32(x)
        if y is not None:
            return y
    return sigmoid_numpy(x)


class ReLU(Layer):
    """max(0, x); NaN stays NaN, as IEEE ``maximum`` and PyTorch's relu.

    dReLU/dx = 1 where the output is not <= 0 (so a NaN position passes its
    gradient, as torch's ``threshold_backward``), else 0. Forward is one pass
    (np.maximum propagates NaN, where a mask-and-select would turn it into 0).
    Contiguous float arrays take one vectorised Numba pass each way
    (``kernels.activation``: the same bits as the NumPy twins ``relu_numpy`` /
    ``relu_grad_numpy``; the backward's ``np.where`` built a mask first and took
    ~20x longer; in Cifar10_quick's step 0.5 against 2.1 ms after pool1, sitting 17's
    ``conv_step_ab_s17_*.json``; the A/B switch ``RELU_KERNEL`` went in sitting 23).
    Any other input takes the twins."""

    def forward(self, x, training=False):
        y = relu_kernel(x) if isinstance(x, np.ndarray) else None
        self._y = relu_numpy(x) if y is None else y
        return self._y

    def backward(self, grad):
        d = relu_grad_kernel(self._y, grad)
        return relu_grad_numpy(self._y, grad) if d is None else d


class Sigmoid(Layer):
    """σ(x) = 1/(1+e^-x); σ' = σ(1-σ)."""

    def forward(self, x, training=False):
        self._y = sigmoid(x)
        return self._y

    def backward(self, grad):
        y = self._y
        if isinstance(grad, np.ndarray):
            # float32: one Numba pass, also when y is Fortran-ordered (after a sparse
            # layer) and grad C-ordered; the result keeps y's order, which the sparse
            # layer transposes for free
            d = sigmoid_grad32(y, grad)
            if d is not None:
                return d
        if y.flags.f_contiguous and not y.flags.c_contiguous and grad.flags.c_contiguous:
            # NumPy's mixed-order passes are ~5× slower: one copy of grad into y's order
            grad = np.asfortranarray(grad)
        d = 1 - y
        d *= y
        if d.dtype == grad.dtype and d.shape == grad.shape:
            d *= grad                   # in place: one temporary instead of three
            return d
        return grad * d


class Tanh(Layer):
    """tanh(x); tanh' = 1 - tanh²."""

    def forward(self, x, training=False):
        self._y = np.tanh(x)
        return self._y

    def backward(self, grad):
        return grad * (1 - self._y * self._y)


class Identity(Layer):
    """f(x) = x: a placeholder (e.g. a linear output layer) that keeps configs explicit."""

    def forward(self, x, training=False):
        return x

    def backward(self, grad):
        return grad
