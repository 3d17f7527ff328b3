"""Finite-difference gradient checking, shared by the layer tests.

For a layer f and a random projection r, L(x) = Σ r·f(x) has
dL/dx = backward(r); central differences of L must match it."""
from __future__ import annotations

import numpy as np


def numerical_grad(fn, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central-difference gradient of scalar fn() w.r.t. array x (modified in place)."""
    grad = np.zeros_like(x, dtype=np.float64)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        plus = fn()
        flat[i] = old - eps
        minus = fn()
        flat[i] = old
        gflat[i] = (plus - minus) / (2 * eps)
    return grad


def check_layer_gradients(layer, x: np.ndarray, rng: np.random.Generator,
                          training: bool = True, rtol: float = 1e-5, atol: float = 1e-7):
    """Assert the layer's input and parameter gradients match finite differences.

    ``layer`` must be float64 (``layer.cast(np.float64)``); any randomness in
    forward must be fixed (e.g. dropout masks reset from a saved rng state).
    """
    x = np.array(x, dtype=np.float64)
    out = layer.forward(x, training)
    r = rng.standard_normal(out.shape)
    layer.forward(x, training)
    dx = layer.backward(r.copy())
    analytic = {"x": dx, **{k: v.copy() for k, v in layer.grads.items()}}

    def loss():
        return float((layer.forward(x, training) * r).sum())

    numeric = {"x": numerical_grad(loss, x)}
    for name, param in layer.params.items():
        numeric[name] = numerical_grad(loss, param)
    for name in numeric:
        np.testing.assert_allclose(analytic[name], numeric[name], rtol=rtol, atol=atol,
                                   err_msg=f"{layer!r}: gradient of {name} is wrong")
