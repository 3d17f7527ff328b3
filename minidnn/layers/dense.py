"""Fully connected layer."""
from __future__ import annotations

import contextlib

import numpy as np

from ..kernels.column_sums import column_sums
from ..threads import serial_blas_if_small
from .base import Layer, as_generator

#: the context of a training product that keeps BLAS's thread count (reused: the
#: ``serial_blas_if_small`` object made and entered per product cost ~2 µs, three times
#: a layer step)
_KEEP_THREADS = contextlib.nullcontext()


class Dense(Layer):
    """y = x W + b, with W of shape (in_features, out_features).

    Initialisation is Glorot/Xavier uniform, U(-a, a) with
    a = sqrt(6 / (in + out)) (Glorot & Bengio, 2010), the usual choice for
    sigmoid and tanh nets; ``init="he"`` gives N(0, 2/in) for ReLU nets.

    The three products of backprop live in three small methods so that a
    layer holding its weights differently (a fixed CSR pattern, integer codes
    plus a scale) overrides just those and keeps everything else:

    * ``_forward_product(x)``      = x W                (batch, out)
    * ``_input_grad(grad)``        = grad Wᵀ            (batch, in)
    * ``_weight_grad(x, grad)``    = xᵀ grad            (in, out)

    Semi-synchronous updates (technique 4, Hori, Sekiya & Takenaka; see
    ``minidnn.semisync``) set ``active_units`` before a minibatch: a slice
    or sorted index array of output units (columns of W). Then
    ``_weight_grad`` computes only those columns, xᵀ grad[:, active], and
    leaves zeros in the others; the columns that were active at the last
    step are re-zeroed, so the buffer is not cleared whole. With G groups
    the product costs 2·batch·in·(out/G) flops instead of 2·batch·in·out
    (for 1024 units in 32 groups, 1/32 of the FC weight gradient). The
    forward pass and the input gradient still use every unit. With random
    groups (an index array) the clear-and-write of the scattered columns is
    one Numba sweep over the rows (``kernels.column_scatter.write_columns``);
    it still touches most cache lines of the buffer, so random groups save
    less than contiguous ones.
    ``active_units = None`` (the default) computes the full product.
    """

    decay_params = ("W",)
    #: output units (columns of W) whose weight gradient is computed; None: all
    active_units = None
    #: dispatch rule: training products (forward with training=True, backward) of
    #: SERIAL_TRAINING_FROM to SERIAL_TRAINING_BELOW multiply-adds (batch·in·out) run
    #: BLAS on one thread. At two threads OpenBLAS's second thread spins for a while
    #: after each call and holds a core the next layers' Numba kernels need: in one
    #: process (CPU time, under load) Cifar10_quick's Dense(1024, 64) backward took
    #: 17.5 ms of CPU for 0.7 on one thread, and the conv3 backward after it 30.9
    #: against 22.6 ms. Smaller products are left as they were (OpenBLAS threads
    #: them from 2^18; switching its thread count around the MLP's 500→10 layer, a
    #: neighbour of BLAS-only layers, cost CPU time and saved no wall time), as is
    #: evaluation (a batch-1 784×500 GEMV is faster on two threads). With the window,
    #: under load, 2 threads, CPU clock, the Cifar10_quick step took 144.2 against
    #: 190.4 ms (``results/conv_step_ab_s18_dense_2threads_cpu.json``); its A/B toggle
    #: in ``bench/conv_step_ab.py`` went in sitting 23. (Sitting 20's per-call switch
    #: for the smaller ones, ``SMALL_TRAINING_THREADS``, is gone since sitting 22: NumPy's OpenBLAS here, 0.3.31, runs the 784-500-10 head's
    #: (100, 500) x (500, 10) products on one thread at any thread count: 1.0 CPU per
    #: wall second and the same wall time at 1 and 2 threads, where a 100x784x500
    #: product takes 1.27 CPU per wall second at 2)
    SERIAL_TRAINING_BELOW = 1 << 23
    SERIAL_TRAINING_FROM = 1 << 20

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 init: str = "glorot", rng=None, name: str | None = None):
        super().__init__(name)
        if int(in_features) <= 0 or int(out_features) <= 0:
            raise ValueError(
                f"Dense needs positive sizes, got in_features={in_features}, "
                f"out_features={out_features}")
        if init not in ("glorot", "he", "zeros"):
            raise ValueError(f"Dense init must be 'glorot', 'he' or 'zeros', got {init!r}")
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.bias = bool(bias)
        self.init = init
        self.initialize(as_generator(rng))

    def initialize(self, rng: np.random.Generator) -> None:
        shape = (self.in_features, self.out_features)
        if self.init == "glorot":
            limit = np.sqrt(6.0 / (self.in_features + self.out_features))
            W = rng.uniform(-limit, limit, size=shape)
        elif self.init == "he":
            W = rng.normal(0.0, np.sqrt(2.0 / self.in_features), size=shape)
        else:
            W = np.zeros(shape)
        self.params["W"] = W.astype(self.dtype)
        if self.bias:
            self.params["b"] = np.zeros(self.out_features, dtype=self.dtype)
        self.zero_grads()

    def _forward_product(self, x):
        return x @ self.params["W"]

    def _input_grad(self, grad):
        x = getattr(self, "_x", None)
        if (isinstance(x, np.ndarray) and x.ndim == 2 and x.flags.f_contiguous
                and not x.flags.c_contiguous):
            # dx in the memory order of x: after a sparse layer (whose output is a
            # Fortran-ordered view) the sigmoid below then takes one flat pass over
            # σ and dx (~15 µs) instead of reading a C-ordered dx through its
            # transpose (~43 µs, 784-500-10 at batch 100). (W gᵀ)ᵀ holds the same
            # sums as g Wᵀ; BLAS may add their k terms in another order (last bits)
            return (self.params["W"] @ grad.T).T
        return grad @ self.params["W"].T

    def _weight_grad(self, x, grad):
        cols = self.active_units
        if cols is None:
            return x.T @ grad
        shape = (self.in_features, self.out_features)
        buf = self.grads.get("W")
        if (buf is None or buf is not getattr(self, "_partial_grad", None)
                or buf.shape != shape or buf.dtype != grad.dtype):
            buf = np.zeros(shape, dtype=grad.dtype)
            prev = slice(0, 0)
        else:
            # only the columns written last time are non-zero
            prev = self._partial_cols
        if isinstance(cols, slice) or isinstance(prev, slice):
            buf[:, prev] = 0
            buf[:, cols] = x.T @ grad[:, cols]
        else:
            # random groups: NumPy's 2-D fancy assignment costs more than the
            # product it saves; one Numba sweep over the rows clears and writes
            from ..kernels.column_scatter import write_columns
            write_columns(buf, prev, cols, x.T @ np.take(grad, cols, axis=1))
        self._partial_grad, self._partial_cols = buf, cols
        return buf

    def forward(self, x, training=False):
        self._check_input(x, (self.in_features,), "")
        self._x = x
        # no serial_blas_if_small in evaluation (conv uses it): a batch-1 784x500 GEMV
        # is faster on two threads on a quiet machine, and the switch costs ~5 us a call
        if training:
            with self._training_blas(x):
                out = self._forward_product(x)
        else:
            out = self._forward_product(x)
        if self.bias:
            out += self.params["b"]
        return out

    def _training_blas(self, batch):
        """One BLAS thread for the small training products of the plain products
        (a layer with its own products, e.g. CSR kernels, calls no BLAS: left alone)."""
        kind = type(self)
        small = (kind._weight_grad is Dense._weight_grad and kind._input_grad is Dense._input_grad
                 and kind._forward_product is Dense._forward_product
                 and self.SERIAL_TRAINING_FROM
                 <= len(batch) * self.in_features * self.out_features
                 < self.SERIAL_TRAINING_BELOW)
        if small:
            return serial_blas_if_small(0)
        return _KEEP_THREADS

    def backward_params(self, grad):
        with self._training_blas(grad):
            self.grads["W"] = self._weight_grad(self._x, grad)
        if self.bias:
            # grad.sum(axis=0), bit for bit, without NumPy's ~7 µs reduction call
            self.grads["b"] = column_sums(grad)

    def backward(self, grad):
        with self._training_blas(grad):
            self.backward_params(grad)
            return self._input_grad(grad)

    def output_shape(self, input_shape):
        return (self.out_features,)

    def get_config(self):
        return {"in_features": self.in_features, "out_features": self.out_features,
                "bias": self.bias, "init": self.init, "name": self.name}

    def __repr__(self) -> str:
        extra = "" if self.bias else ", bias=False"
        return f"Dense({self.in_features}, {self.out_features}{extra})"
