"""A fully connected layer and the activation after it as one step of ``Sequential``
(``layers.fusion``'s pairs, switch ``fusion.FUSE_DENSE_ACTIVATION``; issue #11).

* ``SparseDense`` then ``Sigmoid`` (``SparseSigmoid``): σ(A · xᵀ + b) in the CSR forward
  kernel's parallel region, row by row, and the backward's fill of gradᵀ multiplies by
  σ' = σ(1 − σ) as it reads dσ (``kernels.csr_fused``). Two passes over the (batch, out)
  activations, their Python calls and arrays, fewer per step; at two threads the
  sigmoid is split between the threads with the rows of the product.
* ``Dense`` then ``Sigmoid`` or ``ReLU`` (``DenseActivation``): the bias add and the
  activation in one pass over the BLAS product (``csr_fused.bias_activation``);
  the backward is the two layers' own.

The results are the two layers' bit for bit (tests/test_fusion_dense_act.py). After a
fused forward each layer holds what its own forward would have left: the sparse
layer its input and xᵀ, the activation its output ``_y`` and both the output shape
their backward checks. So each layer's ``backward`` can still be called by hand,
and the pair's backward falls back to calling them one after the other wherever the
fused kernels do not apply (another dtype, no AVX2 + FMA, a gradient of another
layout, a non-default thread split of ``TrainingKernels``).
"""
from __future__ import annotations

import numpy as np

from ..kernels import csr_fused
from .activations import ReLU, Sigmoid
from .dense import Dense


def _record_shapes(y, *layers):
    # what each layer's own forward records for its backward's shape check
    for layer in layers:
        layer._forward_output_shape = y.shape


class SparseSigmoid:
    """σ(SparseDense(x)) in one kernel call each way (see the module docstring)."""

    def __init__(self, sparse, sigmoid: Sigmoid):
        self.sparse, self.sigmoid = sparse, sigmoid
        self._fused = False

    def _apart(self, x, training):
        self._fused = False
        return self.sigmoid.forward(self.sparse.forward(x, training), training)

    def forward(self, x, training=False):
        from ..sparse import _same_view
        sparse, sig = self.sparse, self.sigmoid
        data = sparse.params["data"]
        if data.dtype != np.float32 or not csr_fused.SIMD_AVAILABLE:
            return self._apart(x, training)
        sparse._check_input(x, (sparse.in_features,), "")
        given = sparse._input_given
        if given is not None and _same_view(x, given[0]):     # written into input_buffer
            operand, batch_major = given[1], False
        else:
            a = np.asarray(x)
            if a.ndim != 2:
                return self._apart(x, training)
            if a.dtype == np.float32 and a.T.flags.c_contiguous:
                operand, batch_major = a.T, False
            else:
                operand, batch_major = np.ascontiguousarray(a, dtype=np.float32), True
        bias = sparse.params["b"] if sparse.bias else np.zeros(0, dtype=data.dtype)
        result = csr_fused.forward_sigmoid(sparse._kernels, data, bias, operand, batch_major)
        if result is None:
            return self._apart(x, training)
        out, xt = result
        # the sparse layer's own state after its forward (SparseDense.forward's)
        sparse._transposes, sparse._x, sparse._xt = [], x, xt
        y = out.T
        sig._y = y
        _record_shapes(y, sparse, sig)
        self._fused = True
        return y

    def _backward(self, grad, input_grad: bool):
        sparse, sig = self.sparse, self.sigmoid
        y = getattr(sig, "_y", None)
        result = None
        if self._fused and isinstance(grad, np.ndarray) and y is not None \
                and grad.shape == y.shape and grad.dtype == np.float32 and y.T.flags.c_contiguous:
            if grad.T.flags.c_contiguous:
                result = csr_fused.backward_sigmoid(sparse._kernels, sparse.params["data"], y.T,
                                                    grad.T, sparse._xt, input_grad, sparse.bias)
            elif grad.flags.c_contiguous:
                result = csr_fused.backward_sigmoid(sparse._kernels, sparse.params["data"], y.T,
                                                    grad, sparse._xt, input_grad, sparse.bias,
                                                    batch_major=True)
        if result is None:              # the two layers' own backward passes
            d = sig.backward(grad)
            if input_grad:
                return sparse.backward(d)
            sparse.backward_params(d)
            return None
        grad_data, grad_bias, dx = result
        sparse.grads["data"] = grad_data
        if sparse.bias:
            sparse.grads["b"] = grad_bias
        return None if dx is None else dx.T

    def backward(self, grad):
        return self._backward(grad, True)

    def backward_params(self, grad):
        self._backward(grad, False)


class DenseActivation:
    """activation(Dense(x)) with the bias and the activation in one pass (see above)."""

    def __init__(self, dense: Dense, activation):
        self.dense, self.activation = dense, activation
        self.kind = "sigmoid" if isinstance(activation, Sigmoid) else "relu"

    def forward(self, x, training=False):
        dense, act = self.dense, self.activation
        a = x if isinstance(x, np.ndarray) else None
        if (a is None or a.ndim != 2 or dense.active_units is not None
                or a.dtype != dense.params["W"].dtype
                or a.dtype not in ((np.float32,) if self.kind == "sigmoid"
                                   else (np.float32, np.float64))):
            return act.forward(dense.forward(x, training), training)
        dense._check_input(x, (dense.in_features,), "")
        dense._x = x
        if training:
            with dense._training_blas(x):
                out = dense._forward_product(x)
        else:
            out = dense._forward_product(x)
        y = csr_fused.bias_activation(out, dense.params["b"] if dense.bias else None, self.kind)
        if y is None:
            if dense.bias:
                out += dense.params["b"]
            _record_shapes(out, dense)
            return act.forward(out, training)
        out = act._y = y
        _record_shapes(out, dense, act)
        return out

    def backward(self, grad):
        return self.dense.backward(self.activation.backward(grad))

    def backward_params(self, grad):
        self.dense.backward_params(self.activation.backward(grad))


def pairs() -> dict:
    """{(first layer class, second layer class): pair class} of this module."""
    from ..sparse import SparseDense
    return {(SparseDense, Sigmoid): SparseSigmoid, (Dense, Sigmoid): DenseActivation,
            (Dense, ReLU): DenseActivation}
