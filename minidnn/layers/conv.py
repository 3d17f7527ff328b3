"""2-D convolution (NCHW) as im2col + one matrix product."""
from __future__ import annotations

import numpy as np

from ..kernels.im2col import as_pair, col2im, conv_output_size, im2col
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

    With cols = im2col(x) of shape (C·kh·kw, batch·OH·OW) and
    W₂ = W.reshape(O, C·kh·kw) (see ``minidnn.kernels.im2col``):

    * forward:  Y₂ = W₂ · cols + b                     one GEMM
    * backward: dW₂ = dY₂ · colsᵀ,  db = Σ dY₂ over columns,
                dx = col2im(W₂ᵀ · dY₂)                 two GEMMs + col2im

    where Y₂ (O, batch·OH·OW) is y with the batch and channel axes swapped.

    Initialisation: ``init="he"`` (default) draws W ~ N(0, 2 / fan_in),
    fan_in = in_channels·kh·kw (He et al., 2015), for ReLU nets;
    ``init="glorot"`` draws U(-a, a) with a = sqrt(6 / (fan_in + fan_out)),
    fan_out = out_channels·kh·kw (Glorot & Bengio, 2010); ``"zeros"`` for tests.
    Biases start at zero.
    """

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

    # -- forward / backward -----------------------------------------------------------
    def forward(self, x, training=False):
        OH, OW = self._check_conv_input(np.shape(x))
        x = np.asarray(x, dtype=self.dtype)
        N = x.shape[0]
        cols = im2col(x, self.kernel, self.strides, self.pads)      # (C·kh·kw, N·OH·OW)
        # the columns are backward's input; evaluation need not hold them
        self._x_shape, self._cols = x.shape, (cols if training else None)
        W2 = self.params["W"].reshape(self.out_channels, -1)
        y2 = W2 @ cols                                                # (O, N·OH·OW)
        # swap batch and channel axes while adding the bias: one pass over y
        out = np.empty((N, self.out_channels, OH, OW), dtype=y2.dtype)
        y_nchw = y2.reshape(self.out_channels, N, OH, OW).transpose(1, 0, 2, 3)
        if self.bias:
            np.add(y_nchw, self.params["b"].reshape(1, -1, 1, 1), out=out)
        else:
            np.copyto(out, y_nchw)
        return out

    def backward_params(self, grad):
        """Fill ``grads`` only; returns the (O, N·OH·OW) gradient for ``backward``."""
        if self._cols is None:
            raise RuntimeError(f"{self!r}: backward needs a forward pass with training=True")
        N, O = grad.shape[0], self.out_channels
        # (N, O, OH, OW) -> (O, N·OH·OW), the layout of the forward product
        g2 = np.ascontiguousarray(
            grad.reshape(N, O, -1).transpose(1, 0, 2), dtype=self.dtype).reshape(O, -1)
        self.grads["W"] = (g2 @ self._cols.T).reshape(self.weight_shape)
        if self.bias:
            self.grads["b"] = g2.sum(axis=1)
        return g2

    def backward(self, grad):
        g2 = self.backward_params(grad)
        dcols = self.params["W"].reshape(self.out_channels, -1).T @ g2   # (C·kh·kw, N·OH·OW)
        return col2im(dcols, self._x_shape, self.kernel, self.strides, self.pads)

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
