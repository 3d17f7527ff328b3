"""2-D convolution (NCHW) as im2row + one matrix product, or as implicit GEMMs."""
from __future__ import annotations

import numpy as np

from ..kernels import implicit_conv
from ..kernels import direct_conv as direct_kernels
from ..kernels.direct_conv import direct_conv, direct_conv_weight_grad
from ..kernels.im2col import (RowBuffers, as_pair, col2im, conv_output_size, im2col, im2row,
                              row2im, weight_from_rows, weight_rows)
from ..kernels.layout import nchw_to_rows, rows_to_nchw
from ..threads import serial_blas_if_small
from .base import Layer, as_generator


def _config_value(pair: tuple[int, int]):
    """An int for a square size, the (h, w) pair otherwise (kept readable in configs)."""
    return pair[0] if pair[0] == pair[1] else pair


class Conv2D(Layer):
    """y[n, o] = b[o] + Σ_c W[o, c] ⋆ x_pad[n, c], strided cross-correlation.

    Shapes: x (batch, in_channels, H, W), W (out_channels, in_channels, kh, kw),
    b (out_channels,), y (batch, out_channels, OH, OW) with
    OH = floor((H + 2·ph - kh) / sh) + 1 and OW likewise.
    ``kernel_size``, ``stride`` and ``padding`` are an int or an (h, w) pair;
    padding is zeros.

    With rows = im2row(x) of shape (batch·OH·OW, kh·kw·C) (one receptive field
    per row, channels last; see ``minidnn.kernels.im2col``) and the weight
    matrix W_r = weight_rows(W) of shape (kh·kw·C, O):

    * forward:  Y_r = rows · W_r + b                   one GEMM
    * backward: dW_r = rowsᵀ · dY_r,  db = Σ dY_r over rows,
                dx = row2im(dY_r · W_rᵀ)               two GEMMs + row2im

    where Y_r (batch·OH·OW, O) is y in (n, a, b, o) order. The three products
    live in three methods, as in ``Dense``, so a layer that holds W otherwise
    (integer codes and a scale) overrides just those:

    * ``_forward_product(rows)``        = rows · W_r          (batch·OH·OW, O)
    * ``_input_grad(grad_rows)``        = grad_rows · W_rᵀ    (batch·OH·OW, kh·kw·C)
    * ``_weight_grad(rows, grad_rows)`` = rowsᵀ · grad_rows as W (O, C, kh, kw)

    Why rows and not columns: in channels-last order a window row is kw·C
    contiguous values, so im2row copies long runs and its adjoint adds them
    back (3-5x less time than the column layout's runs of OW), and the
    scratch arrays (padded input, rows, their gradient) are reused from step
    to step rather than allocated (~80 MB a step for Cifar10_quick's conv2).
    Inference runs at most ``EVAL_CHUNK`` samples at a time, so evaluating
    with batch 1000 never holds a gigabyte of rows.

    Few input channels (``in_channels · kw < CHANNELS_LAST_MIN``, e.g. LeNet's
    and Cifar10_quick's first layers): a window row is then only kw·C values
    long, and the column layout's runs of OW are longer, so the layer uses
    rows = im2col(x)ᵀ (a transposed view: the columns in (c, i, j) order, BLAS
    reads it without a copy) and W_r = W.reshape(O, C·kh·kw)ᵀ. ``row_order``
    says which ("channels_last" or "channels_first"); ``weight_matrix`` and
    ``weight_from_matrix`` convert W in either, so an override of the three
    products never needs to know.

    Stride-1 channels-last layers with 8-128 input and output channels (multiples
    of 8; Cifar10_quick's conv2 and conv3) and outputs of at least 4×4 skip the rows altogether where Numba's
    target has AVX2 + FMA: the three products run as implicit GEMMs from the
    zero-padded channels-last input (``kernels.implicit_conv``; the dispatch rule is
    ``_implicit_applies``), the same values to float32 rounding.

    Initialisation: ``init="he"`` (default) draws W ~ N(0, 2 / fan_in),
    fan_in = in_channels·kh·kw (He et al., 2015), for ReLU nets;
    ``init="glorot"`` draws U(-a, a) with a = sqrt(6 / (fan_in + fan_out)),
    fan_out = out_channels·kh·kw (Glorot & Bengio, 2010); ``"zeros"`` for tests.
    Biases start at zero.
    """

    #: dispatch parameter: evaluation runs at most this many samples at a time. A memory
    #: bound, not a timed optimum: Cifar10_quick's conv2 rows are 800 KB a sample
    #: (16·16 positions × 5·5·32 float32), so a chunk's rows stay near 100 MB at any batch
    EVAL_CHUNK = 128
    #: dispatch parameter: layers with in_channels · kw below this use the column order
    #: (``row_order``). Measured per layer (``bench/conv_row_order_ab.py``, CPU clock):
    #: channels-last rows won by 25-35 % on every layer with C·kw >= 16 (LeNet's conv2,
    #: Cifar10_quick's conv2/conv3), the column order on the first layers (C·kw = 5, 15)
    CHANNELS_LAST_MIN = 16
    #: the implicit path's channel bound (in and out): measured faster than im2row +
    #: BLAS in all three passes together from 16 to 128 channels
    #: (``bench/implicit_conv_geometry.py``); wider layers are unmeasured
    IMPLICIT_MAX_CHANNELS = 128
    #: ... and its smallest output (height and width): on 2×2 outputs (VGG's stage 5)
    #: the tiles are too short for their set-up, and im2row + BLAS is faster
    IMPLICIT_MIN_OUTPUT = 4

    decay_params = ("W",)

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1,
                 padding=0, bias: bool = True, init: str = "he", rng=None,
                 name: str | None = None):
        super().__init__(name)
        if int(in_channels) <= 0 or int(out_channels) <= 0:
            raise ValueError(f"Conv2D needs positive channel counts, got in_channels="
                             f"{in_channels}, out_channels={out_channels}")
        self.kernel = as_pair(kernel_size, "Conv2D kernel_size")
        self.strides = as_pair(stride, "Conv2D stride")
        self.pads = as_pair(padding, "Conv2D padding")
        if min(self.kernel) <= 0 or min(self.strides) <= 0 or min(self.pads) < 0:
            raise ValueError(f"Conv2D needs kernel_size > 0, stride > 0 and padding >= 0, got "
                             f"kernel_size={kernel_size!r}, stride={stride!r}, padding={padding!r}")
        if init not in ("he", "glorot", "zeros"):
            raise ValueError(f"Conv2D init must be 'he', 'glorot' or 'zeros', got {init!r}")
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.bias = bool(bias)
        self.init = init
        self.initialize(as_generator(rng))

    # -- parameters -----------------------------------------------------------
    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        return (self.out_channels, self.in_channels) + self.kernel

    def initialize(self, rng: np.random.Generator) -> None:
        kh, kw = self.kernel
        fan_in = self.in_channels * kh * kw
        fan_out = self.out_channels * kh * kw
        if self.init == "he":
            W = rng.normal(0.0, np.sqrt(2.0 / fan_in), size=self.weight_shape)
        elif self.init == "glorot":
            limit = np.sqrt(6.0 / (fan_in + fan_out))
            W = rng.uniform(-limit, limit, size=self.weight_shape)
        else:
            W = np.zeros(self.weight_shape)
        self.params["W"] = W.astype(self.dtype)
        if self.bias:
            self.params["b"] = np.zeros(self.out_channels, dtype=self.dtype)
        self.zero_grads()

    # -- shapes ---------------------------------------------------------------------
    def _spatial_out(self, H: int, W: int) -> tuple[int, int]:
        OH = conv_output_size(H, self.kernel[0], self.strides[0], self.pads[0])
        OW = conv_output_size(W, self.kernel[1], self.strides[1], self.pads[1])
        return OH, OW

    def _check_conv_input(self, shape: tuple[int, ...],
                          per_sample: bool = False) -> tuple[int, int]:
        lead = () if per_sample else ("batch",)
        ok_rank = len(shape) == (3 if per_sample else 4)
        if not ok_rank or shape[-3] != self.in_channels:
            expected = ", ".join(list(lead) + [str(self.in_channels), "H", "W"])
            raise ValueError(f"{self!r} expects input of shape ({expected}), got {tuple(shape)}")
        OH, OW = self._spatial_out(shape[-2], shape[-1])
        if OH <= 0 or OW <= 0:
            raise ValueError(f"{self!r} needs H + 2*padding >= {self.kernel[0]} and "
                             f"W + 2*padding >= {self.kernel[1]}, got input of shape "
                             f"{tuple(shape)}")
        return OH, OW

    def output_shape(self, input_shape):
        OH, OW = self._check_conv_input(tuple(input_shape), per_sample=True)
        return (self.out_channels, OH, OW)

    # -- the three products (override these to hold W differently) -----------------
    @property
    def row_order(self) -> str:
        """The order of a row's kh·kw·C entries: (i, j, c) or (c, i, j)."""
        small = self.in_channels * self.kernel[1] < self.CHANNELS_LAST_MIN
        return "channels_first" if small else "channels_last"

    def weight_matrix(self, W: np.ndarray) -> np.ndarray:
        """W (O, C, kh, kw) -> W_r (kh·kw·C, O) in this layer's row order."""
        if self.row_order == "channels_first":
            return W.reshape(W.shape[0], -1).T
        return weight_rows(W)

    def weight_from_matrix(self, W_r: np.ndarray) -> np.ndarray:
        """Inverse of ``weight_matrix``: (kh·kw·C, O) -> (O, C, kh, kw)."""
        if self.row_order == "channels_first":
            return np.ascontiguousarray(W_r.T).reshape(self.weight_shape)
        return weight_from_rows(W_r, self.weight_shape)

    def _weight_rows(self) -> np.ndarray:
        return self.weight_matrix(self.params["W"])

    def _forward_product(self, rows):
        """rows (batch·OH·OW, kh·kw·C) -> rows · W_r (batch·OH·OW, O)."""
        W_r = self._weight_rows()
        if self.row_order == "channels_first":
            # as (O, batch·OH·OW) = W_rᵀ · rowsᵀ (both contiguous), returned as its view
            return np.matmul(W_r.T, rows.T).T
        return rows @ W_r

    def _input_grad(self, grad_rows):
        """dY_r (batch·OH·OW, O) -> dY_r · W_rᵀ (batch·OH·OW, kh·kw·C)."""
        W_r = self._weight_rows()
        dtype = np.result_type(grad_rows, W_r)
        if self.row_order == "channels_first":
            # computed as (C·kh·kw, batch·OH·OW), the layout col2im reads; returned as its view
            out = self._scratch.get("dcols", (W_r.shape[0], grad_rows.shape[0]), dtype)
            return np.matmul(W_r, grad_rows.T, out=out).T
        out = self._scratch.get("drows", (grad_rows.shape[0], W_r.shape[0]), dtype)
        return np.matmul(grad_rows, W_r.T, out=out)

    def _weight_grad(self, rows, grad_rows):
        """rowsᵀ · dY_r, returned in W's own shape (O, C, kh, kw)."""
        return self.weight_from_matrix(rows.T @ grad_rows)

    # -- forward / backward -----------------------------------------------------------
    @property
    def _scratch(self) -> RowBuffers:
        buffers = self.__dict__.get("_buffers")
        if buffers is None:
            buffers = self._buffers = RowBuffers()
        return buffers

    @property
    def _eval_scratch(self) -> RowBuffers:
        buffers = self.__dict__.get("_eval_buffers")
        if buffers is None:
            buffers = self._eval_buffers = RowBuffers()
        return buffers

    def _forward_columns_into_nchw(self, cols, N, OH, OW):
        """y = W_m · cols written straight into the NCHW output, one product per
        sample (y[n] = W_m · cols[:, n·OH·OW:(n+1)·OH·OW], the column block of
        sample n read in place), then the bias added in place: no (O, N·OH·OW)
        temporary and no strided copy out of it (~30 % less time for LeNet's and
        Cifar10_quick's first layers). Same products as ``_forward_product``."""
        O, K = self.out_channels, cols.shape[0]
        W_m = self._weight_rows().T                 # (O, C·kh·kw), as _forward_product's
        out = np.empty((N, O, OH, OW), dtype=np.result_type(cols, W_m))
        with serial_blas_if_small(cols.size * O):
            np.matmul(W_m, cols.reshape(K, N, OH * OW).transpose(1, 0, 2),
                      out=out.reshape(N, O, OH * OW))
        if self.bias:
            out += self.params["b"].reshape(1, -1, 1, 1)
        return out

    def _forward_rows(self, x, buffers):
        N = x.shape[0]
        OH, OW = self._spatial_out(x.shape[2], x.shape[3])
        if self.row_order == "channels_first":
            cols = im2col(x, self.kernel, self.strides, self.pads, buffers=buffers)
            if type(self)._forward_product is Conv2D._forward_product:
                return self._forward_columns_into_nchw(cols, N, OH, OW), cols.T
            rows = cols.T
        else:
            rows = im2row(x, self.kernel, self.strides, self.pads, buffers=buffers)
        with serial_blas_if_small(rows.shape[0] * rows.shape[1] * self.out_channels):
            y_rows = self._forward_product(rows)                      # (N·OH·OW, O)
        # (n, a, b, o) -> (n, o, a, b) while adding the bias: one pass over y
        if y_rows.flags.c_contiguous and y_rows.dtype == self.dtype:
            # the parallel kernel of that pass (NumPy's strided add runs on one thread)
            return rows_to_nchw(y_rows, N, OH, OW, self.params["b"] if self.bias else None), rows
        if y_rows.flags.c_contiguous:
            y_view = y_rows.reshape(N, OH, OW, self.out_channels).transpose(0, 3, 1, 2)
        else:   # the (O, N·OH·OW) product seen transposed: swap N and O, runs of OH·OW
            y_view = y_rows.T.reshape(self.out_channels, N, OH, OW).transpose(1, 0, 2, 3)
        out = np.empty((N, self.out_channels, OH, OW), dtype=y_rows.dtype)
        if self.bias:
            np.add(y_view, self.params["b"].reshape(1, -1, 1, 1), out=out)
        else:
            np.copyto(out, y_view)
        return out, rows

    def forward(self, x, training=False):
        self._check_conv_input(np.shape(x))
        x = np.asarray(x, dtype=self.dtype)
        self._x_shape = x.shape
        self._direct_x_pad = None
        self._implicit_x_pad = None
        if training:
            if self._implicit_applies(x.shape):
                out, self._implicit_x_pad = self._implicit_forward(x, self._scratch)
                self._rows = None
                return out
            if self._direct_train_applies():
                out, self._direct_x_pad = self._direct_forward(x, self._scratch)
                self._rows = None
                return out
            out, self._rows = self._forward_rows(x, self._scratch)
            return out
        self._rows = None           # evaluation holds no rows for backward
        # its own reused scratch (not the training one, whose rows a pending
        # backward may still need): repeated inference allocates no rows
        buffers = self._eval_scratch
        if self._direct_eval_applies():
            if len(x) <= self.EVAL_CHUNK:
                return self._direct_forward(x, buffers)[0]
            # in chunks too, each written into its part of y: the padded-input
            # scratch then holds EVAL_CHUNK samples, not the whole batch
            OH, OW = self._spatial_out(x.shape[2], x.shape[3])
            y = np.empty((len(x), self.out_channels, OH, OW), dtype=x.dtype)
            for i in range(0, len(x), self.EVAL_CHUNK):
                self._direct_forward(x[i:i + self.EVAL_CHUNK], buffers,
                                     out=y[i:i + self.EVAL_CHUNK])
            return y
        forward_part = (self._implicit_forward if self._implicit_applies(x.shape)
                        else self._forward_rows)
        if len(x) <= self.EVAL_CHUNK:
            return forward_part(x, buffers)[0]
        return np.concatenate([forward_part(x[i:i + self.EVAL_CHUNK], buffers)[0]
                               for i in range(0, len(x), self.EVAL_CHUNK)])

    # -- the implicit-GEMM products ----------------------------------------------------
    def _implicit_applies(self, x_shape) -> bool:
        """Stride-1 channels-last layers with 8 to ``IMPLICIT_MAX_CHANNELS`` input and
        output channels, both multiples of 8, float32, padding at most kernel - 1, an
        output of at least ``IMPLICIT_MIN_OUTPUT`` × ``IMPLICIT_MIN_OUTPUT``, and the
        plain products, run all three products as implicit GEMMs from the
        zero-padded channels-last input (``kernels.implicit_conv``, AVX2 + FMA):

        * forward:  Y_r = conv(x_pad, W_r)                     no im2row, no rows kept
        * backward: dW_r = Σ window(x_pad)ᵀ · dY,  db = Σ dY,
                    dx = conv(dY_pad, W_t)                     no row2im scatter

        with dY_pad = dY zero-padded by (kh-1-ph, kw-1-pw), channels last, and W_t
        the flipped, transposed weights (``implicit_conv.flipped_weight_rows``).
        Where it is used, by geometry: one-process A/B of each pass against
        im2row + BLAS, one thread, CPU time, medians, under load
        (``python bench/implicit_conv_geometry.py --repeats 9``,
        ``bench/results/implicit_conv_geometry_1t_load.json``; forward, input
        gradient, weight gradient in ms):

        ==================  ===================  ===================
        geometry            implicit             im2row + BLAS
        ==================  ===================  ===================
        32→32 5×5 16×16     15.6, 15.5, 17.7     36.0, 32.2, 28.2     (Cifar10_quick conv2)
        32→64 5×5 8×8       8.1, 8.1, 10.5       12.8, 13.6, 11.2     (conv3)
        16→16 3×3 32×32     5.8, 5.8, 6.4        21.6, 25.7, 14.3
        64→64 3×3 16×16     22.0, 23.1, 27.1     35.5, 36.4, 29.8
        128→128 3×3 8×8     23.3, 24.0, 30.0     28.8, 31.9, 27.5
        ==================  ===================  ===================

        (the rows path's weight gradient is timed on the rows its forward kept.)
        (``bench/conv_step_ab.py``, cited below, was deleted in sitting 23 with its
        last toggles; its results stay in ``bench/results/``.)
        The weight gradient alone is slower from 128 channels, the sum of the
        three is faster everywhere measured, so the rule is by channel count
        (``IMPLICIT_MAX_CHANNELS``). By output size, in the VGG-style net
        (``python bench/conv_step_ab.py --arch vgg-cifar --toggle implicit``,
        width 8, one thread, under load): 8→8 on 32×32 4.3 + 6.1 against
        9.0 + 18.5 ms, 64→64 on 4×4 about even (6.3-6.8 against 6.9-7.1 ms),
        on 2×2 slower (3.0-3.3 against 2.1-2.3 ms), so outputs smaller than
        ``IMPLICIT_MIN_OUTPUT`` keep im2row + BLAS. The first layers (3 or 1 input channels)
        keep the direct path, other channel counts im2row + BLAS, as do CPUs
        without AVX2/FMA, other dtypes, NUMBA_DISABLE_JIT and subclasses that
        hold W otherwise (override a product).

        By thread count: the rule is the same at one and two threads. Sitting 18
        saw conv3's backward lose at two threads (quiet, ``bench/conv_step_ab.py
        --threads 2``: 22.9 ms implicit against 17.4 im2row) and conv2 not scale
        (20.5 + 40.9 ms at two threads against 18.1 + 38.1 at one): the kernels'
        parallel builds had shared Numba's on-disk cache entry with their serial
        builds, so after any one-thread run both loaded the serial code and all the
        work ran on the calling thread (``implicit_conv._build``, fixed in sitting
        19, and the A/B of the fix, ``bench/conv_step_ab.py --toggle parallel``, quiet,
        2 threads: 83.0 against 118.6 ms the Cifar10_quick step). That A/B also ran the im2row side's
        BLAS at two threads between implicit steps, and OpenBLAS's spinning threads
        then took a core from the next implicit kernels (CPU time of the implicit
        forward after a two-thread GEMM: 17.9 against 9.3 ms; the implicit-only step
        has no multi-threaded BLAS call left, its layers' CPU time is the same at
        one and two threads). Fixed, each kernel call splits evenly (per-thread CPU
        ms of one call on the two workers, under load, ``python
        bench/implicit_conv_threads.py --threads 2 --repeats 9 --rounds 2``,
        ``bench/results/implicit_conv_threads_2t_load.json``): conv2 forward 9.8 +
        9.6, dx 8.5 + 8.5, dW 10.2 + 10.0; conv3 forward 4.5 + 4.3, dx 4.6 + 4.4, dW
        5.7 + 5.7; the calling thread 0.3-0.5 ms; and the step's CPU time is the same
        with and without the split (sitting 19, ``--toggle parallel``, deleted with
        the switch in sitting 22)."""
        if self.strides != (1, 1) or self.row_order != "channels_last":
            return False
        if self.dtype != np.float32:
            return False
        limit = self.IMPLICIT_MAX_CHANNELS
        if not (self.in_channels <= limit and self.out_channels <= limit
                and implicit_conv.available(self.dtype, self.out_channels)
                and implicit_conv.available(self.dtype, self.in_channels)):
            return False
        if any(p > k - 1 for p, k in zip(self.pads, self.kernel)):
            return False
        if min(self._spatial_out(x_shape[-2], x_shape[-1])) < self.IMPLICIT_MIN_OUTPUT:
            return False
        kind = type(self)
        return (kind._forward_product is Conv2D._forward_product
                and kind._input_grad is Conv2D._input_grad
                and kind._weight_grad is Conv2D._weight_grad
                and kind._weight_rows is Conv2D._weight_rows)

    def _implicit_forward(self, x, buffers):
        """(y, x_pad): the implicit-GEMM forward and the padded channels-last input."""
        N, C, H, W = x.shape
        (ph, pw) = self.pads
        shape = (N, H + 2 * ph, W + 2 * pw, C)
        fresh = buffers._arrays.get("implicit_x_pad")
        # zeroed when (re)allocated only: the interior is overwritten each call
        x_pad = buffers.get("implicit_x_pad", shape, x.dtype,
                            zero=fresh is None or fresh.shape != shape or fresh.dtype != x.dtype)
        # each pass is ONE parallel region over ranges of samples, NCHW in and out: the
        # padding, the tiles and the NCHW copy of a sample done by one thread while the
        # sample is in cache (sitting 20; the separate passes it replaced, a padding
        # pass, the kernels and a copy pass over the whole batch, gave the same bits)
        y = implicit_conv.conv_nchw(x, self.params["W"], self.params["b"] if self.bias else None,
                                    self.pads, x_pad)
        return y, x_pad

    def _implicit_backward(self, grad, input_grad: bool):
        """Fill ``grads`` from the kept padded input; return dx if ``input_grad``."""
        x_pad = self._implicit_x_pad
        N, C, H, W = self._x_shape
        (kh, kw), (ph, pw) = self.kernel, self.pads
        OH, OW = self._spatial_out(H, W)
        O = self.out_channels
        grad = np.asarray(grad, dtype=self.dtype)
        if grad.shape != (N, O, OH, OW):
            raise ValueError(f"{self!r}: backward expects a gradient of shape "
                             f"{(N, O, OH, OW)}, got {grad.shape}")
        qh, qw = kh - 1 - ph, kw - 1 - pw
        buffers = self._scratch
        shape = (N, OH + 2 * qh, OW + 2 * qw, O)
        fresh = buffers._arrays.get("implicit_g_pad")
        g_pad = buffers.get("implicit_g_pad", shape, self.dtype,
                            zero=fresh is None or fresh.shape != shape or fresh.dtype != self.dtype)
        dW, db, dx = implicit_conv.backward_nchw(grad, x_pad, self.params["W"], self.pads,
                                                 g_pad, bias=self.bias, input_grad=input_grad)
        self.grads["W"] = dW
        if self.bias:
            self.grads["b"] = db
        return dx

    def _direct_eval_applies(self) -> bool:
        """Evaluation with few input channels (``row_order == "channels_first"``,
        LeNet's and Cifar10_quick's first layers) runs the direct convolution
        (``kernels.direct_conv``): no columns are kept in evaluation, and with
        an inner dimension of only C·kh·kw the product runs at memory speed
        (LeNet's conv1 at batch 100: 2.2x faster, Cifar10_quick's 1.6x, 1
        thread, under load). A subclass that holds W otherwise (overrides a
        product) keeps its own path."""
        return (self.row_order == "channels_first"
                and type(self)._forward_product is Conv2D._forward_product
                and type(self)._weight_rows is Conv2D._weight_rows)

    def _direct_train_applies(self) -> bool:
        """Training takes the direct path too at stride 1: the forward as in
        evaluation, and the weight gradient as direct correlations of x_pad
        with dY (``direct_conv_weight_grad``), so no columns are built at all
        (Cifar10_quick's conv1: ~7.7M values a step). Only where the weight
        gradient is the plain product as well."""
        return (self.strides == (1, 1) and self._direct_eval_applies()
                and type(self)._weight_grad is Conv2D._weight_grad)

    def _direct_tiled_applies(self, x_shape) -> bool:
        """The direct path at stride 1 in float32 runs register-tiled where Numba's
        target has AVX2 + FMA and the output rows hold at least 8 pixels
        (``direct_conv.tiled_applies``): the output block of 6 channels × 16 pixels
        stays in registers over all C·kh·kw taps, read from the padded input in
        rows (N, Hp, C, Wp) (``direct_conv.window_rows``); the weight gradient and the
        bias gradient come from one walk over those rows and dY. One thread, under
        load (``python bench/conv1_ab.py --threads 1 --repeats 30``,
        ``bench/results/conv1_ab_1t_load.json``), forward and dW + db in ms:
        Cifar10_quick's conv1 8.35 and 10.28 against 13.27 and 12.52 plane by plane,
        LeNet's 1.17 and 1.06 against 1.54 and 1.67 (quiet, 2 threads, the whole
        step: 0.99x and 0.97x). A dispatch rule: float64, output rows under 8
        pixels, strides other than 1 and CPUs without AVX2 + FMA keep the
        plane-by-plane kernels (``direct_conv``, ``direct_conv_weight_grad``). Where the
        target also has AVX-512F, row blocks of 32 pixels run on 16-lane tiles
        (``direct_conv.WIDE_AVAILABLE``; the forward's bits unchanged)."""
        OW = self._spatial_out(x_shape[-2], x_shape[-1])[1]
        return (self.dtype == np.float32
                and direct_kernels.tiled_applies(self.dtype, self.strides, OW))

    def _direct_forward(self, x, buffers, out=None):
        """(y, x_pad): the direct convolution and the zero-padded input it read
        (the rows (N, Hp, C, Wp) of the tiled kernels where ``_direct_tiled_applies``,
        recorded in ``_direct_rows``; NCHW x_pad otherwise)."""
        N, C, H, W = x.shape
        (ph, pw) = self.pads
        self._direct_rows = self._direct_tiled_applies(x.shape)
        if self._direct_rows:
            rows = buffers.get("direct_x_rows", (N, H + 2 * ph, C, W + 2 * pw), x.dtype)
            return direct_kernels.direct_conv_tiled(x, self.params["W"], self.params.get("b"),
                                                    self.pads, rows_buffer=rows, out=out)
        if not (ph or pw):
            x_pad = x
        else:
            shape = (N, C, H + 2 * ph, W + 2 * pw)
            fresh = buffers._arrays.get("direct_x_pad")
            # zeroed when (re)allocated only: the interior is overwritten each call
            x_pad = buffers.get("direct_x_pad", shape, x.dtype,
                                zero=fresh is None or fresh.shape != shape or fresh.dtype != x.dtype)
        y = direct_conv(x, self.params["W"], self.params.get("b"), self.strides, self.pads,
                        x_pad_buffer=x_pad if (ph or pw) else None, out=out)
        return y, x_pad

    def backward_params(self, grad):
        """Fill ``grads`` only; returns dY_r (batch·OH·OW, O) for ``backward``
        (None after a direct or implicit forward, whose ``backward`` builds it itself)."""
        if getattr(self, "_implicit_x_pad", None) is not None:
            self._implicit_backward(grad, input_grad=False)
            return None
        x_pad = getattr(self, "_direct_x_pad", None)
        if x_pad is not None:
            grad = np.asarray(grad, dtype=self.dtype)
            if getattr(self, "_direct_rows", False):
                dW, db = direct_kernels.direct_conv_weight_grad_tiled(x_pad, grad, self.kernel)
                self.grads["W"] = dW
                if self.bias:
                    self.grads["b"] = db
                return None
            self.grads["W"] = direct_conv_weight_grad(x_pad, grad, self.kernel)
            if self.bias:
                self.grads["b"] = grad.sum(axis=(0, 2, 3))
            return None
        if getattr(self, "_rows", None) is None:
            raise RuntimeError(f"{self!r}: backward needs a forward pass with training=True")
        return self._grad_rows(grad)

    def _grad_rows(self, grad):
        """dY (N, O, OH, OW) -> dY_r (N·OH·OW, O), in the layout of the products."""
        N, O = grad.shape[0], self.out_channels
        M = grad.shape[0] * grad.shape[2] * grad.shape[3]
        if self.row_order == "channels_first":
            # (n, o, a, b) -> (o, n, a, b): runs of OH·OW; the products see its transpose
            grad_cols = self._scratch.get("grad_cols", (O, M), self.dtype)
            np.copyto(grad_cols.reshape(O, N, -1), grad.reshape(N, O, -1).transpose(1, 0, 2))
            grad_rows = grad_cols.T
        else:
            grad_rows = self._scratch.get("grad_rows", (M, O), self.dtype)
            # (n, o, a, b) -> (n, a, b, o), the layout of the forward product
            nchw_to_rows(grad, out=grad_rows)
        if self._rows is not None:
            self.grads["W"] = self._weight_grad(self._rows, grad_rows)
            if self.bias:
                self.grads["b"] = grad_rows.sum(axis=0)
        return grad_rows

    def _transposed_input_grad_applies(self) -> bool:
        """Whether dx is cheaper as a convolution of dY than as row2im(dY_r · W_rᵀ).

        At stride 1 the input gradient is itself a convolution:
        dx[n, c] = Σ_o W'[c, o] ⋆ dY_pad[n, o], with W' = W with in and out
        channels swapped and the window flipped, dY padded by kh-1-ph (kw-1-pw),
        so it is one im2row of dY and one GEMM, and the scattering row2im (the
        slowest kernel of the step) goes. Its rows hold N·H·W·kh·kw·O values
        against N·OH·OW·kh·kw·C for the products' path: taken only when that
        is not larger (a "same" convolution with O <= C, e.g. Cifar10_quick's
        conv2) and the layer keeps the plain product (a subclass that
        overrides ``_input_grad`` keeps its own)."""
        if self.strides != (1, 1) or self.row_order != "channels_last":
            return False
        if type(self)._input_grad is not Conv2D._input_grad or \
                type(self)._weight_rows is not Conv2D._weight_rows:
            return False
        if any(p > k - 1 for p, k in zip(self.pads, self.kernel)):
            return False
        N, C, H, W = self._x_shape
        OH, OW = self._spatial_out(H, W)
        return H * W * self.out_channels <= OH * OW * C

    def _transposed_input_grad(self, grad):
        """dx (N, C, H, W) as the stride-1 convolution of dY (see above)."""
        (kh, kw), (ph, pw) = self.kernel, self.pads
        W = self.params["W"]
        # W'_r[(i·kw + j)·O + o, c] = W[o, c, kh-1-i, kw-1-j]
        W_t = np.ascontiguousarray(W[:, :, ::-1, ::-1].transpose(2, 3, 0, 1)).reshape(
            -1, self.in_channels)
        buffers = self.__dict__.get("_transposed_buffers")
        if buffers is None:
            buffers = self._transposed_buffers = RowBuffers()
        rows_t = im2row(np.asarray(grad, dtype=self.dtype), self.kernel, 1,
                        (kh - 1 - ph, kw - 1 - pw), buffers=buffers)
        dx_rows = rows_t @ W_t                                        # (N·H·W, C)
        N, C, H, Wd = self._x_shape
        return rows_to_nchw(dx_rows, N, H, Wd)

    def backward(self, grad):
        if getattr(self, "_implicit_x_pad", None) is not None:
            return self._implicit_backward(grad, input_grad=True)
        grad_rows = self.backward_params(grad)
        if grad_rows is None:                       # after a direct forward
            grad_rows = self._grad_rows(grad)
        if self._transposed_input_grad_applies():
            return self._transposed_input_grad(grad)
        drows = self._input_grad(grad_rows)
        if self.row_order == "channels_first":
            return col2im(drows.T, self._x_shape, self.kernel, self.strides, self.pads)
        return row2im(drows, self._x_shape, self.kernel, self.strides, self.pads,
                      buffers=self._scratch)

    # -- config -------------------------------------------------------------------------
    def get_config(self):
        return {"in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": _config_value(self.kernel),
                "stride": _config_value(self.strides),
                "padding": _config_value(self.pads),
                "bias": self.bias, "init": self.init, "name": self.name}

    def __repr__(self) -> str:
        args = [str(self.in_channels), str(self.out_channels),
                f"kernel_size={_config_value(self.kernel)!r}"]
        if self.strides != (1, 1):
            args.append(f"stride={_config_value(self.strides)!r}")
        if self.pads != (0, 0):
            args.append(f"padding={_config_value(self.pads)!r}")
        if not self.bias:
            args.append("bias=False")
        return f"Conv2D({', '.join(args)})"
