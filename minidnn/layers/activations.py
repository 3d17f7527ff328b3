"""Element-wise activations. Each caches only what its derivative needs."""
from __future__ import annotations

import numpy as np

from .base import Layer


def sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)) without overflow for large |x|.

    exp is only ever taken of -|x|, so it stays in (0, 1]."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(x.dtype, copy=False)


class ReLU(Layer):
    """max(0, x); NaN stays NaN, as IEEE ``maximum`` and PyTorch's relu.

    dReLU/dx = 1 where the output is not <= 0 (so a NaN position passes its
    gradient, as torch's ``threshold_backward``), else 0. Forward is one pass
    (np.maximum propagates NaN, where a mask-and-select would turn it into 0)."""

    def forward(self, x, training=False):
        self._y = np.maximum(x, x.dtype.type(0))
        return self._y

    def backward(self, grad):
        return np.where(self._y <= 0, grad.dtype.type(0), grad)


class Sigmoid(Layer):
    """σ(x) = 1/(1+e^-x); σ' = σ(1-σ)."""

    def forward(self, x, training=False):
        self._y = sigmoid(x)
        return self._y

    def backward(self, grad):
        return grad * self._y * (1 - self._y)


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
