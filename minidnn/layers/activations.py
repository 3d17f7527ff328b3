"""Element-wise activations. Each caches only what its derivative needs."""
from __future__ import annotations

import numpy as np

from ..kernels.activation import relu_grad_kernel, relu_kernel, sigmoid32, sigmoid_grad32
from .base import Layer

#: ReLU through its one-pass Numba kernels (False: the NumPy twins; for A/Bs)
RELU_KERNEL = True


def relu_numpy(x: np.ndarray) -> np.ndarray:
    """max(x, 0), NaN kept (IEEE ``maximum``): the twin of ``kernels.activation.relu_kernel``."""
    return np.maximum(x, x.dtype.type(0))


def relu_grad_numpy(y: np.ndarray, grad: np.ndarray) -> np.ndarray:
    """grad where y > 0 or y is NaN, else 0: the twin of ``relu_grad_kernel``."""
    return np.where(y <= 0, grad.dtype.type(0), grad)


def sigmoid_numpy(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)), in place in one new array of x's dtype and memory order.

    Four passes over one buffer (a 100×500 float32 batch in ~0.1 ms, where a
    two-branch ``np.where`` form took ~0.7 ms). For x below about -88 (float32)
    exp(-x) overflows to inf and 1 / (1 + inf) = 0, the right limit, so that
    overflow is expected and silenced; NaN stays NaN. The twin of the float32
    kernel (``kernels.activation.sigmoid32``), and ``sigmoid`` for other input."""
    out = np.negative(x)
    with np.errstate(over="ignore"):
        np.exp(out, out=out)
    out += out.dtype.type(1)
    np.reciprocal(out, out=out)
    return out


def sigmoid(x: np.ndarray) -> np.ndarray:
    """σ(x) = 1 / (1 + exp(-x)) in one new array of x's dtype and memory order.

    A contiguous float32 x goes through one Numba pass (``kernels.activation``,
    ~2× faster than NumPy's four; within 1.2e-7 of ``sigmoid_numpy``), anything
    else through ``sigmoid_numpy``. Every sigmoid in minidnn (the layer, the
    autoencoders, the RBMs' probabilities) calls this one, so a stack and the
    MLP it initialises compute the same bits."""
    if isinstance(x, np.ndarray):
        y = sigmoid32(x)
        if y is not None:
            return y
    return sigmoid_numpy(x)


#: what a ReLU holds as its output after ``layers.fusion``'s ReLU → AvgPool2D pair ran it
#: inside the pool's kernel (relu(x) was never made): its backward then says so
FUSED_AWAY = object()


class ReLU(Layer):
    """max(0, x); NaN stays NaN, as IEEE ``maximum`` and PyTorch's relu.

    dReLU/dx = 1 where the output is not <= 0 (so a NaN position passes its
    gradient, as torch's ``threshold_backward``), else 0. Forward is one pass
    (np.maximum propagates NaN, where a mask-and-select would turn it into 0).
    Contiguous float arrays take one vectorised Numba pass each way
    (``kernels.activation``: the same bits as the NumPy twins ``relu_numpy`` /
    ``relu_grad_numpy``; the backward's ``np.where`` built a mask first and took
    ~20x longer)."""

    def forward(self, x, training=False):
        y = relu_kernel(x) if RELU_KERNEL and isinstance(x, np.ndarray) else None
        self._y = relu_numpy(x) if y is None else y
        return self._y

    def backward(self, grad):
        if self._y is FUSED_AWAY:
            raise RuntimeError(
                f"{self!r} ({self.name}) ran fused into the AvgPool2D after it "
                f"(layers.fusion.FUSE_PAIRS), which keeps no ReLU output: backpropagate "
                f"through the model (Sequential.backward), or set fusion.FUSE_PAIRS = False "
                f"to call this layer's backward by hand")
        d = relu_grad_kernel(self._y, grad) if RELU_KERNEL else None
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
