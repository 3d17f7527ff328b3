"""Fused sampling kernels for RBM training (contrastive divergence).

Most of a CD step is matrix products, which stay BLAS float32 products
(``v @ W``, ``h @ W.T``, one ``[v0; vk]ᵀ [p0; -pk]`` for the statistics).
What is left is element-wise work over (batch, units) arrays that NumPy
would do in four or five passes with temporaries; each kernel here does it
in one pass, in place:

* ``sigmoid_sample(pre, bias, uniforms)``:
      p = σ(pre + bias),  s = 1[u < p]
  where ``pre`` is the product ``v W`` (batch, n_hidden) and ``u`` are
  U[0, 1) draws. ``pre`` is overwritten with p; s is returned. This is
  Bernoulli sampling of the hidden (or visible) layer of an RBM:
  P(h_j = 1 | v) = σ(c_j + Σ_i v_i W_ij) (Hinton, 2002, "Training products
  of experts by minimizing contrastive divergence").
* ``sigmoid_bias(pre, bias)``: p = σ(pre + bias) in place (mean-field
  reconstructions, no sampling).

The uniforms come from the caller's ``numpy.random.Generator``, so all
randomness stays in one seeded Generator and the kernels are pure functions.
``sigmoid_sample_numpy`` and ``sigmoid_bias_numpy`` are the plain NumPy
twins that define what the kernels compute; tests hold the kernels to them.
"""
from __future__ import annotations

import math

import numba
import numpy as np


# -- the NumPy twins (the definition) ---------------------------------------------

def _stable_sigmoid(x: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(x.dtype, copy=False)


def sigmoid_bias_numpy(pre: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """σ(pre + bias), bias broadcast over rows; (batch, units) -> (batch, units)."""
    return _stable_sigmoid(pre + bias)


def sigmoid_sample_numpy(pre: np.ndarray, bias: np.ndarray, uniforms: np.ndarray):
    """(p, s) with p = σ(pre + bias) and s = 1[uniforms < p] (same dtype as pre)."""
    p = sigmoid_bias_numpy(pre, bias)
    return p, (uniforms < p).astype(pre.dtype)


# -- the kernels ------------------------------------------------------------------

@numba.njit(cache=True, inline="always")
def _sigmoid_scalar(x):
    # exp is only taken of -|x|, so it never overflows
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


# Serial on purpose: a (100, 500) minibatch is ~0.1 ms of work, less than waking a
# thread pool, and parallel Numba threads fight OpenBLAS's threads for the cores
# between the GEMMs they alternate with (measured: 5 ms per call with parallel=True
# on 2 cores against 0.5 ms serial).
@numba.njit(cache=True)
def _sigmoid_sample_kernel(pre, bias, uniforms, states):
    rows, cols = pre.shape
    for r in range(rows):
        for c in range(cols):
            p = _sigmoid_scalar(pre[r, c] + bias[c])
            pre[r, c] = p
            states[r, c] = 1.0 if uniforms[r, c] < pre[r, c] else 0.0


@numba.njit(cache=True)
def _sigmoid_bias_kernel(pre, bias):
    rows, cols = pre.shape
    for r in range(rows):
        for c in range(cols):
            pre[r, c] = _sigmoid_scalar(pre[r, c] + bias[c])


def _check(pre, bias, uniforms=None):
    if pre.ndim != 2 or bias.shape != (pre.shape[1],):
        raise ValueError(f"rbm kernels expect pre (batch, units) and bias (units,), got "
                         f"{pre.shape} and {bias.shape}")
    if not pre.flags.c_contiguous or pre.dtype != bias.dtype:
        raise ValueError("rbm kernels need a C-contiguous pre-activation array of the bias dtype")
    if uniforms is not None and uniforms.shape != pre.shape:
        raise ValueError(f"uniforms must have shape {pre.shape}, got {uniforms.shape}")


def sigmoid_sample(pre: np.ndarray, bias: np.ndarray, uniforms: np.ndarray):
    """In place: pre ← σ(pre + bias); returns (pre, states) with states = 1[u < p]."""
    _check(pre, bias, uniforms)
    states = np.empty_like(pre)
    _sigmoid_sample_kernel(pre, bias, uniforms, states)
    return pre, states


def sigmoid_bias(pre: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """In place: pre ← σ(pre + bias); returns pre."""
    _check(pre, bias)
    _sigmoid_bias_kernel(pre, bias)
    return pre
