"""Pairs of neighbouring layers that ``Sequential`` runs as one step (ReLU fused
into the pool beside it), for every model whose layers line up so.

* ``MaxPool2D`` then ``ReLU``: relu(max x) = max(relu x), so the pool's kernel
  writes relu(max) and marks the windows whose output is 0 as routing nothing
  (``kernels.pooling.NO_ROUTE``); the backward is the pool's alone. No ReLU pass
  runs either way (the pair's output is the ReLU's, and is kept as its ``_y``): the
  same bits as the two layers.
* ``ReLU`` then ``AvgPool2D``: the pool averages relu(x) as it reads x, and its
  backward masks dx by x > 0 as it writes it (``kernels.pooling``'s separable
  average-pool kernels); equal to the two layers to float rounding (the sums
  run in another order). relu(x) is never made, so that ReLU's own backward, called
  by hand, raises a clear error (``activations.FUSED_AWAY``).

The layers keep their configs, names and file format; a pair holds no state of its
own (what the backward needs stays on the layers), and ``Sequential`` keeps its list
of steps until its layers or the switches below change. ``FUSE_PAIRS = False`` runs every layer on
its own (for A/Bs). A pair applies to exactly these classes, not subclasses,
and falls back to the two layers one by one where its kernels do not apply.

Since sitting 20 the same seam fuses a fully connected layer with the activation after
it (``layers.fusion_dense``: SparseDense → Sigmoid, Dense → Sigmoid, Dense → ReLU),
under its own switch ``FUSE_DENSE_ACTIVATION`` (on by default). Every pair leaves each
layer's state as its own forward would (so each layer's backward can be called by
hand), and a pair whose first layer has parameters has a ``backward_params`` (the net's
first trainable layer skips its input gradient). ``Sequential`` keeps the list of steps
(``plan``) and rebuilds it when its layers or these switches change.
"""
from __future__ import annotations

import numpy as np

from ..kernels import pooling as pool_kernels
from ..kernels.im2col import kernel_for
from .activations import FUSED_AWAY, ReLU
from .pooling import AvgPool2D, MaxPool2D

#: run MaxPool2D → ReLU and ReLU → AvgPool2D as one step each in ``Sequential``.
#: Off by default: on the quiet machine the fused Cifar10_quick step was no faster than
#: the same new kernels one layer at a time (2 threads, medians of 20: 102.0 fused vs
#: 100.7 ms separate; 1 thread under load 133.9 vs 135.1 ms; ``bench/pool_fusion_ab.py``,
#: ``quiet_bench_stop19.log``), so the simpler path runs; True for the A/B
FUSE_PAIRS = False

#: run SparseDense → Sigmoid, Dense → Sigmoid and Dense → ReLU as one step each
#: (``layers.fusion_dense``; the same bits as the layers one by one). False runs every
#: layer on its own (for the A/B: ``bench/fuse_epoch_ab.py``). At two threads the fused
#: sparse forward splits the sigmoid between the threads with the product's rows; kept on
#: after sitting 20's quiet run (sparse step 739.7 vs 1059.0 µs, dense within noise)
FUSE_DENSE_ACTIVATION = True


def _kernels_apply(x) -> bool:
    return isinstance(x, np.ndarray) and x.dtype in (np.float32, np.float64) and x.ndim == 4


class MaxPoolReLU:
    """relu(maxpool(x)) in one pass each way (see the module docstring)."""

    def __init__(self, pool: MaxPool2D, relu: ReLU):
        self.pool, self.relu = pool, relu

    def forward(self, x, training=False):
        pool = self.pool
        geometry = pool._geometry(np.shape(x))
        if not (_kernels_apply(x) and geometry[0] * geometry[1] <= pool_kernels.MAX_WINDOW):
            self.relu._fused = False
            return self.relu.forward(pool.forward(x, training), training)
        self.relu._fused = True
        out = pool._forward_offsets(np.ascontiguousarray(x), geometry, relu=True)
        # relu(maxpool x) is the ReLU's own output: kept as its forward would, so that its
        # backward can be called by hand (sitting 19 stored None here, and it failed)
        self.relu._y = out
        # what each layer's own forward would record for its backward's check
        pool._forward_output_shape = self.relu._forward_output_shape = out.shape
        return out

    def backward(self, grad):
        if not getattr(self.relu, "_fused", False):
            return self.pool.backward(self.relu.backward(grad))
        return self.pool.backward(grad)


class ReLUAvgPool:
    """avgpool(relu(x)) in one pass each way (see the module docstring)."""

    def __init__(self, relu: ReLU, pool: AvgPool2D):
        self.relu, self.pool = relu, pool

    def forward(self, x, training=False):
        pool = self.pool
        if not _kernels_apply(x):
            pool._relu_x = None
            return pool.forward(self.relu.forward(x, training), training)
        x = np.ascontiguousarray(x)
        geometry = pool._geometry(x.shape)
        kh, kw, sh, sw, ph, pw, OH, OW = geometry
        divisor = pool_kernels.avg_divisors(x.shape, geometry, x.dtype)
        out = np.empty(x.shape[:2] + (OH, OW), x.dtype)
        kernel_for(pool_kernels._avgpool_sep_forward_kernel, x.size)(
            x, kh, kw, sh, sw, ph, pw, True, divisor, out)
        pool._x_shape, pool._geometry_cache, pool._relu_x = x.shape, geometry, x
        # relu(x) is never made: the ReLU's backward by hand is refused with a clear error
        # (``activations.FUSED_AWAY``), not a failure inside its kernel
        self.relu._y = FUSED_AWAY
        self.relu._forward_output_shape, pool._forward_output_shape = x.shape, out.shape
        return out

    def backward(self, grad):
        pool = self.pool
        x = getattr(pool, "_relu_x", None)
        if x is None:
            return self.relu.backward(pool.backward(grad))
        geometry = pool._geometry_cache
        kh, kw, sh, sw, ph, pw, OH, OW = geometry
        if np.shape(grad) != x.shape[:2] + (OH, OW):
            raise ValueError(f"{pool!r} after a ReLU: backward expects a gradient of shape "
                             f"{x.shape[:2] + (OH, OW)}, got {np.shape(grad)}")
        grad = np.ascontiguousarray(grad, dtype=x.dtype)
        dx = np.empty(x.shape, x.dtype)
        kernel_for(pool_kernels._avgpool_sep_backward_kernel, dx.size)(
            grad, kh, kw, sh, sw, ph, pw, pool_kernels.avg_divisors(x.shape, geometry, x.dtype),
            True, x, dx)
        return dx


_PAIRS = {(MaxPool2D, ReLU): MaxPoolReLU, (ReLU, AvgPool2D): ReLUAvgPool}
_DENSE_PAIRS = None     # layers.fusion_dense's, found on first use (it imports minidnn.sparse)


def _pair(first, second):
    global _DENSE_PAIRS
    key = (type(first), type(second))
    if FUSE_PAIRS and key in _PAIRS:
        return _PAIRS[key]
    if FUSE_DENSE_ACTIVATION:
        if _DENSE_PAIRS is None:
            from .fusion_dense import pairs
            _DENSE_PAIRS = pairs()
        return _DENSE_PAIRS.get(key)
    return None


def switches() -> tuple:
    """The switches a list of steps depends on (``Sequential`` rebuilds it when they change)."""
    return (FUSE_PAIRS, FUSE_DENSE_ACTIVATION)


def fused_steps(layers) -> list:
    """[(index of the step's first layer, step)]: each layer itself, or a fused pair
    (an object with forward / backward) where two neighbours form one."""
    steps, i = [], 0
    while i < len(layers):
        pair = _pair(layers[i], layers[i + 1]) if i + 1 < len(layers) else None
        if pair is not None:
            steps.append((i, pair(layers[i], layers[i + 1])))
            i += 2
        else:
            steps.append((i, layers[i]))
            i += 1
    return steps
