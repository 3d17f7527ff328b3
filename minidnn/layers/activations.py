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
    """max(0, x)."""

    def forward(self, x, training=False):
        self._mask = x > 0
        return np.where(self._mask, x, 0).astype(x.dtype, copy=False)

    def backward(self, grad):
        return np.where(self._mask, grad, 0).astype(grad.dtype, copy=False)


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
