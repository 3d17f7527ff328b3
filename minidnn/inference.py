"""The inference path: a Sequential's forward pass in evaluation mode, fused and cache-free.

``Sequential.infer(x)`` (and ``predict``) run ``forward(x, training=False)``
through an ``InferencePlan`` built from the model's layers on first use (and
rebuilt when the list of layers changes). The plan reads the parameters on
every call, so training between calls needs nothing. What it does that the
layers' own evaluation forward does not:

* nothing is kept for a backward pass: no rows or columns of a convolution,
  no argmax of a max pool (``kernels.fused_inference.maxpool_values``), no
  ReLU output on the layer;
* a stride-1 direct convolution (few input channels, ``Conv2D.row_order ==
  "channels_first"``) and the 2×2 max pool after it are one kernel
  (``conv_pool2x2``), which writes the channels-last (NHWC) input of the next
  convolution directly when that one runs as im2row + GEMM (no NCHW output,
  no separate padding pass);
* a channels-last convolution (im2row + one GEMM, ``kernels.im2col``) and a
  2×2 max pool after it: the pool and the bias are applied to the product
  rows (``rows_pool2x2``), so neither the (n, a, b, o) -> NCHW pass nor the
  full-size output exists;
* a Dense layer and the ReLU after it: the bias and the ReLU in one pass over
  the product (``bias_relu``);
* at more than one thread (``numba.get_num_threads()``), a batch of at least
  ``SPLIT_MIN_SAMPLES`` (4) per thread is split into one contiguous range of
  samples per thread (``kernels.workers.split_samples``), handed out in
  ``PIECES_PER_THREAD`` pieces a thread as threads come free; each thread runs the
  whole net on its pieces with serial, GIL-free kernels and one-thread BLAS,
  so no thread pool hands work to another between layers and no thread waits
  for the slowest part of a layer. Only nets with a convolution are split
  (a dispatch rule: a dense-only net's products run on BLAS's own threads,
  which share one packed copy of W; splitting the MLP's batch of 100 took
  1.451 ms a call against 0.897 ms unsplit on the quiet machine in sitting 21,
  ``bench/results/inference_dense_columns_ab_2threads_quiet.json``, "rows").

Every array a call returns is new: the next call never overwrites it. A plan is
not reentrant (two threads calling one model's ``infer`` at once share its
buffers).

Every layer the plan does not know (a subclass, batch norm, dropout, ...)
runs as ``layer.forward(x, training=False)``; a plan holding one of those runs
in the calling thread only (layers keep scratch state on themselves).

The result equals ``forward(x, training=False)`` to float rounding: the
same products, summed in other orders where a kernel differs
(``tests/test_inference_plan.py``).
"""
from __future__ import annotations

import itertools

import numpy as np

from .kernels import fused_inference as fused
from .kernels.activation import _relu_flat
from .kernels.direct_conv import direct_conv_padded_serial
from .kernels.im2col import weight_rows
from .kernels.layout import _pad_channels_last_kernel, _rows_to_nchw_kernel
from .kernels.workers import ranges, serial_nogil, split_samples
from .layers.activations import Identity, ReLU, Sigmoid, Tanh, relu_numpy, sigmoid
from .layers.conv import Conv2D
from .layers.dense import Dense
from .layers.pooling import AvgPool2D, MaxPool2D, _avgpool_forward_kernel
from .layers.reshape import Flatten
from .threads import numba_thread_count, serial_blas_if_small

#: dispatch parameter: split a batch over threads only from this many samples per
#: thread on (sitting 18: an unsplit batch of 8-15 samples at 2 threads had thrashed
#: OpenBLAS's threads; below 4 a thread's share is too short to pay for its wake-up)
SPLIT_MIN_SAMPLES = 4
#: pieces of the batch per thread, handed out from a shared counter as threads come
#: free, so a thread that gets less of a core (another process on it) takes fewer
PIECES_PER_THREAD = 2
#: output positions (product rows) per chunk of an im2row + GEMM convolution: 512 =
#: 8 of LeNet's conv2 samples (8·8 positions × 500 values, 1 MB of float32 rows, in
#: L2); the conv2 + pool stage at batch 50 took 3.39 ms in chunks of 8 samples,
#: 3.93 ms whole, 4.22 ms one sample at a time (``bench/inference_kernels_ab.py``,
#: 1 thread, under load)
CHUNK_ROWS = 512


class _Scratch:
    """Arrays reused from call to call, one set per worker part (shape and dtype keyed)."""

    def __init__(self):
        self._arrays = {}

    def get(self, key, shape, dtype, zero=False):
        shape = tuple(int(s) for s in shape)
        array = self._arrays.get(key)
        if array is None or array.shape != shape or array.dtype != dtype:
            # zeroed when (re)allocated: padded borders are never written afterwards
            array = np.zeros(shape, dtype) if zero else np.empty(shape, dtype)
            self._arrays[key] = array
        return array


class _PaddedNHWC:
    """A value passed between stages: x (N, C, H, W) held as the interior of a
    zero-bordered channels-last buffer x_pad (N, H + 2ph, W + 2pw, C)."""

    __slots__ = ("x_pad", "shape")

    def __init__(self, x_pad, shape):
        self.x_pad, self.shape = x_pad, shape


def _is_2x2_pool(layer) -> bool:
    return (type(layer) is MaxPool2D and layer.kernel == (2, 2) and layer.strides == (2, 2)
            and layer.pads == (0, 0))


def _pool_fits(pool, OH, OW) -> bool:
    """Every window of the 2×2 pool lies inside the (OH, OW) input (always in floor mode)."""
    geometry = pool._geometry((1, 1, OH, OW))
    return 2 * geometry[6] <= OH and 2 * geometry[7] <= OW


def _plain_conv(layer) -> bool:
    return type(layer) is Conv2D


# -- stages -------------------------------------------------------------------------
class _Stage:
    thread_safe = True
    layers: tuple = ()

    def wants_padded_nhwc(self):
        """(ph, pw) when this stage reads a channels-last padded input, else None."""
        return None


class _LayerStage(_Stage):
    """Any layer the plan does not fuse: its own evaluation forward."""
    thread_safe = False

    def __init__(self, layer):
        self.layers = (layer,)

    def run(self, x, scratch, key, target):
        return self.layers[0].forward(_as_nchw(x), False)


class _FlattenStage(_Stage):
    def __init__(self, layer):
        self.layers = (layer,)

    def run(self, x, scratch, key, target):
        x = _as_nchw(x)
        return x.reshape(x.shape[0], -1)


class _ReLUStage(_Stage):
    def __init__(self, layer):
        self.layers = (layer,)

    def run(self, x, scratch, key, target):
        x = _as_nchw(x)
        if isinstance(x, np.ndarray) and x.dtype in (np.float32, np.float64) \
                and x.flags.c_contiguous:
            y = np.empty_like(x)
            serial_nogil(_relu_flat)(x.reshape(-1), y.reshape(-1))   # relu_kernel, GIL-free
            return y
        return relu_numpy(x)


class _FunctionStage(_Stage):
    """An element-wise activation as its pure function (the layer stores its output
    for backward; two threads running the layer itself would race on that)."""

    def __init__(self, layer, function):
        self.layers, self.function = (layer,), function

    def run(self, x, scratch, key, target):
        return self.function(_as_nchw(x))


class _DenseStage(_Stage):
    """y = x W + b (and max(·, 0) when a ReLU follows), bias and ReLU in one pass."""

    def __init__(self, dense, relu=None):
        self.dense, self.relu = dense, relu is not None
        self.layers = (dense,) if relu is None else (dense, relu)

    def run(self, x, scratch, key, target):
        dense = self.dense
        x = _as_nchw(x)
        dense._check_input(x, (dense.in_features,), "")
        W = dense.params["W"]
        b = dense.params["b"] if dense.bias else None
        # (no kept output buffer: at batch 1, np.matmul(out=) into one cost ~4 us more
        # than x @ W, 52.4 vs 48.6 us a call, 1 thread, under load)
        y = x @ W
        if not (y.flags.c_contiguous and y.dtype == dense.dtype):
            y = np.ascontiguousarray(y, dtype=dense.dtype)
        if self.relu:
            if b is not None:
                fused.bias_relu(y, b)
            else:
                y = _ReLUStage.run(None, y, scratch, key, target)
        elif b is not None:
            y += b
        return y


class _DirectConvStage(_Stage):
    """A direct convolution (``Conv2D._direct_eval_applies``), fused with a 2×2
    max pool after it at stride 1; the result is written into the next stage's
    padded channels-last buffer when that one asks for it."""

    def __init__(self, conv, pool=None):
        self.conv, self.pool = conv, pool
        self.layers = (conv,) if pool is None else (conv, pool)

    def run(self, x, scratch, key, target):
        conv = self.conv
        x = _as_nchw(x)
        OH, OW = conv._check_conv_input(x.shape)
        x = np.asarray(x, dtype=conv.dtype)
        N, C, H, W = x.shape
        ph, pw = conv.pads
        if ph or pw:
            x_pad = scratch.get((key, "x_pad"), (N, C, H + 2 * ph, W + 2 * pw), x.dtype,
                                zero=True)
            x_pad[:, :, ph:ph + H, pw:pw + W] = x
        else:
            x_pad = np.ascontiguousarray(x)
        Wt = np.ascontiguousarray(conv.params["W"], dtype=x.dtype)
        bias = (conv.params["b"] if conv.bias else np.zeros(conv.out_channels, x.dtype))
        O = conv.out_channels
        if self.pool is not None and conv.strides == (1, 1) and _pool_fits(self.pool, OH, OW):
            PH, PW = OH // 2, OW // 2
            out, value = _output_for(target, scratch, key, (N, O, PH, PW), x.dtype)
            fused.conv_pool2x2(x_pad, Wt, bias, out)
            return value
        y = np.empty((N, O, OH, OW), x.dtype)
        direct_conv_padded_serial(x_pad, Wt, bias, conv.strides, y)
        if self.pool is not None:
            return _MaxPoolStage(self.pool).run(y, scratch, key, target)
        return y


class _RowsConvStage(_Stage):
    """A channels-last convolution as im2row + one GEMM; a 2×2 max pool after it
    and the bias are applied to the product rows (``rows_pool2x2``)."""

    def __init__(self, conv, pool=None):
        self.conv, self.pool = conv, pool
        self.layers = (conv,) if pool is None else (conv, pool)

    def wants_padded_nhwc(self):
        return self.conv.pads

    def run(self, x, scratch, key, target):
        conv = self.conv
        (kh, kw), (sh, sw), (ph, pw) = conv.kernel, conv.strides, conv.pads
        if isinstance(x, _PaddedNHWC):
            shape, x_pad = x.shape, x.x_pad
            OH, OW = conv._check_conv_input(shape)
        else:
            OH, OW = conv._check_conv_input(np.shape(x))
            x = np.ascontiguousarray(x, dtype=conv.dtype)
            shape = x.shape
            N, C, H, W = shape
            x_pad = scratch.get((key, "x_pad"), (N, H + 2 * ph, W + 2 * pw, C), x.dtype,
                                zero=True)
            serial_nogil(_pad_channels_last_kernel)(x, ph, pw, x_pad)
        N, C = shape[:2]
        O, K, P = conv.out_channels, kh * kw * C, OH * OW
        dtype = x_pad.dtype
        W_r = weight_rows(np.asarray(conv.params["W"], dtype=dtype))
        bias = conv.params["b"] if conv.bias else None
        pooled = self.pool is not None and _pool_fits(self.pool, OH, OW)
        if pooled:
            out, value = _output_for(target, scratch, key, (N, O, OH // 2, OW // 2), dtype)
        else:
            value = out = np.empty((N, O, OH, OW), dtype)
            zeros = np.zeros(O, dtype)
        # a chunk of S samples at a time: its rows (S·P × K) are built, multiplied and
        # pooled while in L2 (LeNet's conv2: 8 samples, 1 MB; ~10 % less time than
        # one product over the whole batch, 1 thread, under load)
        S = max(1, CHUNK_ROWS // P)
        rows = scratch.get((key, "rows"), (min(S, N) * P, K), dtype)
        y_rows = scratch.get((key, "y_rows"), (min(S, N) * P, O), dtype)
        im2row_ = serial_nogil(fused._im2row_nhwc_kernel)
        # BLAS on one thread always: the chunk products are small (LeNet's conv2: 12.8M
        # multiply-adds), and at 2 threads, under load, a batch of 100 left unsplit, whose
        # chunks each woke OpenBLAS's second thread, took several times forward's wall
        # time; the threads come from the batch split instead
        with serial_blas_if_small(0):
            for s in range(0, N, S):
                e = min(s + S, N)
                chunk, y_chunk = rows[:(e - s) * P], y_rows[:(e - s) * P]
                im2row_(x_pad[s:e], kh, kw, sh, sw, OH, OW, chunk)
                np.matmul(chunk, W_r, out=y_chunk)
                if pooled:
                    fused.rows_pool2x2(y_chunk, e - s, OH, OW, bias, out[s:e])
                else:
                    serial_nogil(_rows_to_nchw_kernel)(
                        y_chunk, zeros if bias is None else bias, bias is not None,
                        out[s:e].reshape(e - s, O, P))
        if self.pool is not None and not pooled:
            return _MaxPoolStage(self.pool).run(value, scratch, key, target)
        return value


class _MaxPoolStage(_Stage):
    def __init__(self, pool):
        self.pool = pool
        self.layers = (pool,)

    def run(self, x, scratch, key, target):
        x = _as_nchw(x)
        geometry = self.pool._geometry(np.shape(x))
        return fused.maxpool_values(x, geometry)


class _AvgPoolStage(_Stage):
    def __init__(self, pool):
        self.pool = pool
        self.layers = (pool,)

    def run(self, x, scratch, key, target):
        x = np.ascontiguousarray(_as_nchw(x))
        kh, kw, sh, sw, ph, pw, OH, OW = self.pool._geometry(x.shape)
        out = np.empty(x.shape[:2] + (OH, OW), x.dtype)
        serial_nogil(_avgpool_forward_kernel)(x, kh, kw, sh, sw, ph, pw, out)
        return out


def _as_nchw(x):
    """A stage value as an NCHW array (a padded channels-last one is copied out)."""
    if isinstance(x, _PaddedNHWC):
        N, C, H, W = x.shape
        hp = (x.x_pad.shape[1] - H) // 2
        wp = (x.x_pad.shape[2] - W) // 2
        return np.ascontiguousarray(x.x_pad[:, hp:hp + H, wp:wp + W, :].transpose(0, 3, 1, 2))
    return x


def _output_for(target, scratch, key, shape, dtype):
    """(out, value): where a stage writes its NCHW result of ``shape``. With a
    ``target`` padding (ph, pw) from the next stage: the interior of a zero-bordered
    channels-last buffer, seen as NCHW, and the value passed on wraps that buffer."""
    if target is None:
        out = np.empty(shape, dtype)
        return out, out
    ph, pw = target
    N, C, H, W = shape
    x_pad = scratch.get((key, "out_nhwc"), (N, H + 2 * ph, W + 2 * pw, C), dtype, zero=True)
    out = x_pad[:, ph:ph + H, pw:pw + W, :].transpose(0, 3, 1, 2)
    return out, _PaddedNHWC(x_pad, shape)


def build_stages(layers) -> list:
    """The stages of a plan: known layers fused in pairs where a kernel exists."""
    stages, i, layers = [], 0, list(layers)
    while i < len(layers):
        layer = layers[i]
        following = layers[i + 1] if i + 1 < len(layers) else None
        kind = type(layer)
        if _plain_conv(layer):
            pool = following if _is_2x2_pool(following) else None
            if layer._direct_eval_applies():
                stages.append(_DirectConvStage(layer, pool))
            elif layer.row_order == "channels_last":
                stages.append(_RowsConvStage(layer, pool))
            else:
                stages.append(_LayerStage(layer))
                pool = None
            i += 2 if pool is not None else 1
        elif kind is Dense:
            relu = following if type(following) is ReLU else None
            stages.append(_DenseStage(layer, relu))
            i += 2 if relu is not None else 1
        elif kind is MaxPool2D:
            stages.append(_MaxPoolStage(layer))
            i += 1
        elif kind is AvgPool2D:
            stages.append(_AvgPoolStage(layer))
            i += 1
        elif kind is ReLU:
            stages.append(_ReLUStage(layer))
            i += 1
        elif kind in (Sigmoid, Tanh, Identity):
            function = {Sigmoid: sigmoid, Tanh: np.tanh, Identity: lambda v: v}[kind]
            stages.append(_FunctionStage(layer, function))
            i += 1
        elif kind is Flatten:
            stages.append(_FlattenStage(layer))
            i += 1
        else:
            stages.append(_LayerStage(layer))
            i += 1
    return stages


class InferencePlan:
    """Evaluation-mode forward of a list of layers (see the module docstring).

    >>> plan = InferencePlan(model.layers)     # what Sequential.infer builds
    >>> y = plan(x)                            # == model.forward(x, training=False)
    """

    def __init__(self, layers):
        self.layers = tuple(layers)
        self.stages = build_stages(self.layers)
        self.thread_safe = all(s.thread_safe for s in self.stages)
        self.has_conv = any(isinstance(s, (_DirectConvStage, _RowsConvStage))
                            for s in self.stages)
        self._scratch = {}
        # the padded channels-last buffer a stage writes for the next one
        self._targets = [None] * len(self.stages)
        for k in range(len(self.stages) - 1):
            if isinstance(self.stages[k], _DirectConvStage):
                self._targets[k] = self.stages[k + 1].wants_padded_nhwc()

    def matches(self, layers) -> bool:
        """Whether this plan was built for exactly these layer objects."""
        return len(layers) == len(self.layers) and all(
            a is b for a, b in zip(layers, self.layers))

    def threads_for(self, N: int) -> int:
        """How many parts a batch of N is split into."""
        if not (self.thread_safe and self.has_conv):     # dense-only nets: BLAS threads
            return 1
        threads = numba_thread_count()      # numba.get_num_threads() without its locks
        return max(1, min(threads, N // SPLIT_MIN_SAMPLES))

    def _scratch_for(self, part):
        scratch = self._scratch.get(part)
        if scratch is None:
            scratch = self._scratch[part] = _Scratch()
        return scratch

    def _run(self, x, part):
        scratch = self._scratch_for(part)
        for k, stage in enumerate(self.stages):
            x = stage.run(x, scratch, k, self._targets[k])
        return _as_nchw(x)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        N = len(x)
        parts = self.threads_for(N)
        if parts == 1:
            return self._run(x, 0)
        # PIECES_PER_THREAD pieces a thread, taken from a shared counter: a thread
        # that gets less of a core (another process on it) takes fewer pieces
        spans = ranges(N, min(N // SPLIT_MIN_SAMPLES, parts * PIECES_PER_THREAD))
        outs = [None] * len(spans)
        counter = itertools.count()

        def work(lo, hi, part):
            while True:
                i = next(counter)           # atomic under the GIL
                if i >= len(spans):
                    return
                a, b = spans[i]
                outs[i] = self._run(x[a:b], part)
        split_samples(work, parts, parts)
        return np.concatenate(outs, axis=0)


__all__ = ["InferencePlan", "build_stages", "SPLIT_MIN_SAMPLES", "CHUNK_ROWS"]
