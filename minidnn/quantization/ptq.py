"""Post-training quantization onto bit-mask patterns (technique 2), and the integer layers.

The pipeline (as torch.ao.quantization splits it): *choose* a pattern per layer
(by hand, ``--pattern conv1=6_2_0_1_0``, or by ``search.search_patterns``),
*convert* each chosen Conv2D/Dense to a ``QuantizedConv2D``/``QuantizedDense``
that stores the integer codes and the pattern, and optionally *observe*
held-out data to fix the input scale of the integer path.

Rounding (``quantize_to_pattern``): each weight goes to the nearest value of
the pattern's set V (sign-magnitude, symmetric, see ``bitmask``):

    q(w) = sign(w) · argmin_{v ∈ V, v ≥ 0} | |w| − v |,

ties (|w| exactly halfway between two neighbours) go to the larger
magnitude (away from zero, as C's ``round``); |w| above the largest value
saturates at it. By default weights are not rescaled first: the paper rounds
the raw weights onto a format with one integer bit (S = 0); S ≠ 0 moves the
point. q is idempotent (q(q(w)) = q(w)), since every v ∈ V is its own nearest.

Optional rescale (``rescale="max"`` or ``"pow2"``, asked for by the user):
each layer (or, with per-channel patterns, each output channel o) gets a
float scale s_o and its weights are rounded as W ≈ s_o · q(W / s_o):

    "max":   s_o = max|W_o| / v_max(p_o)            (max|W_o| lands on the largest value)
    "pow2":  s_o = 2^round(log2(max|W_o| / v_max(p_o)))  (the nearest power of two:
             the same as a binary-point shift S, with a value set scaled exactly)

s_o is rounded to float32 (so it survives every dtype cast and the model
file exactly; an all-zero channel keeps s = 1). The codes keep the pattern;
the scale is applied once at the output: y_o = s_o · Σ code·step·x + b_o.
The weight-only path folds it into its dequantized weights code·step·s_o
(one rounding to the layer dtype); the integer path folds it into its
per-channel output scale (Δa · step_o) · s_o.

Per layer (one pattern) or per output channel (one pattern per channel:
conv W[o], Dense W[:, j]). Biases stay in float, as do unchosen layers.

Two forward paths of a quantized layer:

* **weight-only** (default, the paper's setting): the activations stay float,
  the weights are the dequantized values code · step, one float GEMM.
* **integer** (``integer=True``, after ``calibrate_inputs``): the input x is
  rounded to integer activation codes a = clip(round(x / Δa)), Δa a power of
  two (``activation_bits`` bits, unsigned when the calibration data was
  non-negative); the int8 weight codes times the int16 activation codes are
  summed in int32 (``kernels.quantized_matmul.int_matmul``), and the sum is
  scaled once at the output, y = acc · ((Δa · step_o) · s_o) + b_o, in float64,
  then cast to the layer dtype (s_o = 1 without rescale). ``simulate_integer(x)``
  computes the same layer in float64 with the unscaled dequantized weights and
  the fake-quantized input, Σ (a·Δa)·(code·step), then multiplies by s_o: every
  product and partial sum is an integer multiple of Δa·step_o below 2^53 (int32
  bounds it by 2^31), hence exact in float64, and Δa·step_o is a power of two,
  so both paths round the same real number acc·Δa·step_o·s_o once: the integer
  path equals this float simulation bit for bit, with or without a scale.
"""
from __future__ import annotations

import math

import numpy as np

from ..kernels.im2col import col2im, im2col
from ..kernels.quantized_matmul import check_int32_accumulation, int_matmul
from ..layers import Conv2D, Dense, register_layer
from .bitmask import BitMaskPattern


# -- rounding ------------------------------------------------------------------------------
def quantize_to_pattern(w, pattern) -> np.ndarray:
    """Integer codes of the nearest values of ``pattern`` to ``w`` (saturating; ties away from 0).

    Returns codes in ``pattern.code_dtype`` with the shape of ``w``;
    value = code · pattern.step. NaN or infinite weights raise ValueError."""
    pattern = BitMaskPattern.parse(pattern)
    w = np.asarray(w, dtype=np.float64)
    if not np.isfinite(w).all():
        raise ValueError("quantize_to_pattern: weights contain NaN or Inf")
    mags = pattern.magnitude_codes()                          # ascending integers
    midpoints = (mags[:-1] + mags[1:]) / 2.0                  # exact: halves of integers
    # |w| / step is exact (step is a power of two); side="right": a tie goes up
    index = np.searchsorted(midpoints, np.abs(w) / pattern.step, side="right")
    codes = mags[index] * np.where(w < 0, -1, 1)
    return codes.astype(pattern.code_dtype)


def dequantize(codes, pattern) -> np.ndarray:
    """Values code · step (float64, exact)."""
    return np.asarray(codes, dtype=np.float64) * BitMaskPattern.parse(pattern).step


def round_to_pattern(w, pattern) -> np.ndarray:
    """The nearest representable values themselves (float64): dequantize(quantize_to_pattern(w))."""
    return dequantize(quantize_to_pattern(w, pattern), pattern)


def quantize_activations(x, step: float, lo: int, hi: int) -> np.ndarray:
    """Activation codes clip(round(x / step), lo, hi) as int16, ties away from zero.

    ``step`` is a power of two, so x / step is exact in float64."""
    scaled = np.asarray(x, dtype=np.float64) / step
    codes = np.sign(scaled) * np.floor(np.abs(scaled) + 0.5)
    return np.clip(codes, lo, hi).astype(np.int16)


RESCALE_MODES = ("max", "pow2")


def check_rescale(rescale):
    """None (also "none"/"off"/False) or one of RESCALE_MODES; anything else raises ValueError."""
    if rescale is None or rescale is False or (isinstance(rescale, str)
                                               and rescale.lower() in ("none", "off")):
        return None
    if isinstance(rescale, str) and rescale.lower() in RESCALE_MODES:
        return rescale.lower()
    raise ValueError(f"rescale must be None, 'max' or 'pow2' (max|w| onto the pattern's "
                     f"largest value, or the nearest power of two), got {rescale!r}")


def rescale_factors(rows, patterns, mode: str) -> np.ndarray:
    """Scale s_o (float32-exact, float64 array) of each row of ``rows`` (n, K) for its pattern.

    "max": s = max|row| / v_max; "pow2": s = 2^round(log2(max|row| / v_max)).
    A row of zeros (or one whose scale would leave float32's normal range) keeps s = 1."""
    mode = check_rescale(mode)
    if mode is None:
        raise ValueError("rescale_factors needs a rescale mode ('max' or 'pow2'), got None")
    rows = np.asarray(rows, dtype=np.float64)
    out = np.ones(len(rows), dtype=np.float64)
    tiny, huge = float(np.finfo(np.float32).tiny), float(np.finfo(np.float32).max)
    for o, (row, pattern) in enumerate(zip(rows, patterns)):
        peak = float(np.abs(row).max()) if row.size else 0.0
        if peak == 0.0:
            continue
        ratio = peak / pattern.max_value
        s = 2.0 ** round(math.log2(ratio)) if mode == "pow2" else ratio
        s = float(np.float32(s))
        if tiny <= s <= huge:
            out[o] = s
    return out


def activation_range(bits: int, signed: bool) -> tuple[int, int]:
    """Code range of ``bits``-bit activations: symmetric signed, or unsigned [0, 2^bits − 1]."""
    if signed:
        top = 2 ** (bits - 1) - 1
        return -top, top
    return 0, 2 ** bits - 1


# -- the layers ------------------------------------------------------------------------------
def _as_patterns(pattern, n_channels: int):
    """(per_channel, tuple of n_channels patterns) from one pattern or a list of them."""
    if isinstance(pattern, (list, tuple)):
        patterns = tuple(BitMaskPattern.parse(p) for p in pattern)
        if len(patterns) != n_channels:
            raise ValueError(f"per-channel patterns: {n_channels} output channels need "
                             f"{n_channels} patterns, got {len(patterns)}")
        return True, patterns
    return False, (BitMaskPattern.parse(pattern),) * n_channels


class BitMaskQuantized:
    """What QuantizedConv2D and QuantizedDense share: codes + pattern(s), packing, the seams.

    ``params["W"]`` holds the integer codes (int8 for B ≤ 8, the float layer's
    weight shape); ``step_per_channel`` the step of each output channel.
    The model file stores the codes bit-packed at the effective width
    (sign + free bits per weight, channel after channel), ``W_packed``, so
    ``storage_bytes`` is what the hardware would hold; the patterns live in
    the layer config."""

    channel_axis: int = 0

    def _setup_quantization(self, pattern, activation_bits, integer, rescale=None):
        self.per_channel, self.patterns = _as_patterns(pattern, self._n_channels())
        self.rescale = check_rescale(rescale)
        if self.rescale is not None:
            # s_o per output channel (all equal for one pattern per layer); set from the
            # float weights by set_float_weights, read back from the model file
            self.buffers["weight_scale"] = np.ones(self._n_channels(), dtype=np.float64)
        if not 2 <= int(activation_bits) <= 15:
            raise ValueError(f"activation_bits must be in 2..15 (int16 activation codes), "
                             f"got {activation_bits}")
        self.activation_bits = int(activation_bits)
        self.integer = bool(integer)
        self.step_per_channel = np.array([p.step for p in self.patterns], dtype=np.float64)
        codes_dtype = np.result_type(*{p.code_dtype for p in self.patterns})
        self._codes_dtype = codes_dtype
        # input scale of the integer path: 0 until calibrate_inputs; [lo, hi] code range
        self.buffers["input_step"] = np.zeros((), dtype=np.float64)
        self.buffers["input_range"] = np.zeros(2, dtype=np.int32)

    def initialize(self, rng):
        """The float layer's initialisation, then its weights onto the patterns."""
        if not hasattr(self, "patterns"):
            self._setup_quantization(self._pattern_arg, *self._quant_args)
        super().initialize(rng)         # Dense's or Conv2D's (next in the MRO)
        self.set_float_weights(self.params["W"])

    @classmethod
    def from_float(cls, layer, pattern, activation_bits=8, integer=False, rescale=None):
        """The quantized twin of a trained float ``Dense`` / ``Conv2D``: same
        config and bias, weights rounded onto ``pattern``."""
        config = layer.get_config()
        config.update(init="zeros", pattern=pattern, activation_bits=activation_bits,
                      integer=integer, rescale=rescale)
        quantized = cls(**config)
        quantized.cast(layer.dtype)
        quantized.set_float_weights(layer.param_value("W"))
        if layer.bias:
            quantized.params["b"] = layer.params["b"].copy()
        return quantized

    # subclass hooks
    def _n_channels(self) -> int:
        raise NotImplementedError

    def _channel_view(self, array):
        """(n_channels, weights per channel) view/copy of a weight-shaped array."""
        return np.moveaxis(array, self.channel_axis, 0).reshape(array.shape[self.channel_axis], -1)

    def _from_channel_view(self, rows, shape):
        moved = list(shape)
        moved.insert(0, moved.pop(self.channel_axis))
        return np.moveaxis(rows.reshape(moved), 0, self.channel_axis)

    def _per_channel_shape(self, values):
        shape = [1] * self.params["W"].ndim
        shape[self.channel_axis] = -1
        return values.reshape(shape)

    def _step_shape(self):
        return self._per_channel_shape(self.step_per_channel)

    def weight_scale(self) -> np.ndarray:
        """s_o of each output channel, float64 (ones without rescale)."""
        if self.rescale is None:
            return np.ones(self._n_channels(), dtype=np.float64)
        return self.buffers["weight_scale"].astype(np.float64)

    def _compute_scale(self, rows) -> None:
        if self.per_channel:
            scale = rescale_factors(rows, self.patterns, self.rescale)
        else:                        # one scale for the layer, from its overall max |w|
            scale = np.full(len(rows), rescale_factors(rows.reshape(1, -1), self.patterns[:1],
                                                       self.rescale)[0])
        self.buffers["weight_scale"] = scale.astype(self.dtype)

    # -- codes <-> values ---------------------------------------------------------------------
    def set_float_weights(self, W: np.ndarray, keep_scale: bool = False) -> None:
        """Round float weights W onto the pattern(s) and keep the codes.

        With rescale, the scale s_o is first set from W (``keep_scale``: reuse the
        stored one, as a fine-tuning step does) and W_o / s_o is rounded."""
        W = np.asarray(W, dtype=np.float64)
        rows = self._channel_view(W)
        if self.rescale is not None:
            if not keep_scale:
                self._compute_scale(rows)
            rows = rows / self.weight_scale()[:, None]
        codes = np.empty(rows.shape, dtype=self._codes_dtype)
        for pattern in set(self.patterns):
            sel = np.array([p == pattern for p in self.patterns])
            codes[sel] = quantize_to_pattern(rows[sel], pattern)
        self.params["W"] = np.ascontiguousarray(self._from_channel_view(codes, W.shape))
        self._refresh()

    def _refresh(self) -> None:
        # the dequantized weights code·step·s, the float path's operand: code·step·s is
        # exact in float64 (step a power of two), then rounded once to the layer dtype
        scale = self._step_shape() * self._per_channel_shape(self.weight_scale())
        self._W_values = (self.params["W"] * scale).astype(self.dtype)
        if "W" not in self.grads or not np.issubdtype(self.grads["W"].dtype, np.floating):
            self.zero_grads()

    def weight_values(self, dtype=None) -> np.ndarray:
        """The dequantized weights code · step · s (s = 1 without rescale), in ``dtype``
        (default the layer's)."""
        if dtype is None or np.dtype(dtype) == np.dtype(self.dtype):
            return self._W_values
        scale = self._step_shape() * self._per_channel_shape(self.weight_scale())
        return (self.params["W"] * scale).astype(dtype)

    def code_values(self) -> np.ndarray:
        """code · step in float64 (exact), without the scale: the integer path's operand."""
        return self.params["W"] * self._step_shape()

    def param_value(self, name):
        return self._W_values if name == "W" else self.params[name]

    def apply_update(self, name, delta):
        """A float step on W lands on the nearest pattern value again (fine-tuning stays on the grid)."""
        if name != "W":
            return super().apply_update(name, delta)
        self.set_float_weights(self.weight_values(np.float64) + delta, keep_scale=True)

    def cast(self, dtype):
        super().cast(dtype)
        self._refresh()
        return self

    # -- storage ---------------------------------------------------------------------------------
    def _pack(self) -> np.ndarray:
        rows = self._channel_view(self.params["W"]).astype(np.int64)
        chunks = []
        for codes, pattern in zip(rows, self.patterns):
            low = max(pattern.free_positions)
            magnitude = np.abs(codes)
            fields = [(codes < 0)] + [(magnitude >> (low - q)) & 1 for q in pattern.free_positions]
            chunks.append(np.stack(fields, axis=1).astype(np.uint8).reshape(-1))
        return np.packbits(np.concatenate(chunks))

    def _unpack(self, packed: np.ndarray) -> np.ndarray:
        shape = self.params["W"].shape
        per_channel = int(np.prod(shape)) // shape[self.channel_axis]
        total = sum(per_channel * p.effective_bits for p in self.patterns)
        packed = np.asarray(packed)
        if packed.dtype != np.uint8 or packed.shape != ((total + 7) // 8,):
            raise ValueError(f"layer {self.name}: W_packed must be uint8 of shape "
                             f"({(total + 7) // 8},) for {total} bits, got {packed.dtype}"
                             f"{packed.shape}")
        bits = np.unpackbits(packed)
        if bits[total:].any():
            raise ValueError(f"layer {self.name}: W_packed has nonzero padding bits")
        rows = np.empty((shape[self.channel_axis], per_channel), dtype=self._codes_dtype)
        at = 0
        for o, pattern in enumerate(self.patterns):
            e = pattern.effective_bits
            fields = bits[at:at + per_channel * e].reshape(per_channel, e).astype(np.int64)
            at += per_channel * e
            low = max(pattern.free_positions)
            magnitude = sum(fields[:, 1 + i] << (low - q) for i, q in enumerate(pattern.free_positions))
            rows[o] = np.where(fields[:, 0] == 1, -magnitude, magnitude)
        return np.ascontiguousarray(self._from_channel_view(rows, shape))

    def state_for_file(self):
        params = {k: v for k, v in self.params.items() if k != "W"}
        params["W_packed"] = self._pack()
        return params, self.buffers

    def load_state(self, params, buffers):
        params = dict(params)
        if "W_packed" not in params:
            raise ValueError(f"layer {self.name}: a quantized layer stores W_packed, got "
                             f"{sorted(params)}")
        codes = self._unpack(params.pop("W_packed"))
        live_W = self.params.pop("W")
        try:
            super().load_state(params, buffers)
        finally:
            self.params["W"] = live_W
        self.params["W"] = codes
        if self.rescale is not None:
            scale = self.buffers["weight_scale"].astype(np.float64)
            if not (np.isfinite(scale).all() and (scale > 0).all()):
                raise ValueError(f"layer {self.name}: weight_scale must be finite and positive, "
                                 f"got min {scale.min()!r}, max {scale.max()!r}")
            if not self.per_channel and not (scale == scale[0]).all():
                raise ValueError(f"layer {self.name}: one pattern per layer has one scale, "
                                 f"but weight_scale holds {len(set(scale.tolist()))} values")
        self._refresh()

    def _scale_text(self) -> str:
        if self.rescale is None:
            return ""
        scale = self.weight_scale()
        if not self.per_channel:
            return f", rescale {self.rescale} s={scale[0]:.6g}"
        return f", rescale {self.rescale} s={scale.min():.4g}..{scale.max():.4g}"

    def storage_format(self) -> str:
        distinct = sorted({str(p) for p in self.patterns})
        bits = sorted({p.effective_bits for p in self.patterns})
        bits_text = "/".join(str(b) for b in bits)
        if not self.per_channel:
            p = self.patterns[0]
            try:
                shown = f"{p} ({p.readable()})"
            except ValueError:
                shown = str(p)
            return f"pattern {shown}, {bits_text} bits/weight{self._scale_text()}"
        return (f"per-channel patterns ({len(distinct)} distinct), {bits_text} bits/weight"
                f"{self._scale_text()}")

    def pattern_config(self):
        return [str(p) for p in self.patterns] if self.per_channel else str(self.patterns[0])

    # -- the integer path ---------------------------------------------------------------------------
    def calibrate_inputs(self, x) -> None:
        """Fix the integer path's input step Δa = 2^⌈log2(max|x| / top)⌉ from held-out inputs x.

        Unsigned codes (0..2^bits − 1) when every x ≥ 0 (images, ReLU outputs), else signed."""
        x = np.asarray(x)
        self.set_input_scale(float(np.abs(x).max()) if x.size else 0.0, bool((x < 0).any()))

    def set_input_scale(self, peak: float, signed: bool) -> None:
        """Δa = 2^⌈log2(peak / top)⌉ for inputs up to ``peak`` in magnitude (top = largest code)."""
        lo, hi = activation_range(self.activation_bits, signed)
        step = 1.0 if peak == 0 else 2.0 ** math.ceil(math.log2(peak / hi))
        self.buffers["input_step"] = np.array(step, dtype=np.float64)
        self.buffers["input_range"] = np.array([lo, hi], dtype=np.int32)

    def _input_codes(self, x):
        step = float(self.buffers["input_step"])
        if step <= 0:
            raise RuntimeError(f"{self!r}: the integer path needs calibrate_inputs(x) on "
                               f"held-out data first (input_step is not set)")
        lo, hi = (int(v) for v in self.buffers["input_range"])
        return quantize_activations(x, step, lo, hi), step, max(abs(lo), abs(hi))

    def _output_scale(self, step_a: float) -> np.ndarray:
        # Δa·step_o: powers of two, exact; times s_o: exact too (a power-of-two multiple)
        return (step_a * self.step_per_channel) * self.weight_scale()

    def _max_code(self) -> int:
        return int(max(p.max_code for p in set(self.patterns)))


@register_layer
class QuantizedDense(BitMaskQuantized, Dense):
    """A Dense layer whose W (in, out) is held as bit-mask codes: W = code · step_j per column j.

    ``pattern``: one pattern (string or BitMaskPattern) for the layer or a list
    of ``out_features`` patterns, one per output unit. See the module docstring
    for rounding and the two forward paths. ``QuantizedDense.from_float(dense,
    pattern)`` converts a trained Dense."""

    channel_axis = 1

    def __init__(self, in_features, out_features, bias=True, init="glorot", rng=None,
                 name=None, pattern="4_0_0", activation_bits=8, integer=False, rescale=None):
        self.out_features = int(out_features)
        self._pattern_arg = pattern
        self._quant_args = (activation_bits, integer, rescale)
        super().__init__(in_features, out_features, bias=bias, init=init, rng=rng, name=name)

    def _n_channels(self):
        return self.out_features

    def _forward_product(self, x):
        return x @ self._W_values

    def _input_grad(self, grad):
        return grad @ self._W_values.T

    def forward(self, x, training=False):
        if not self.integer:
            return super().forward(x, training)
        self._check_input(x, (self.in_features,), "")
        self._x = x
        return self._add_bias_exact(self._integer_product_f64(x))

    def _integer_product_f64(self, x):
        codes, step, a_max = self._input_codes(x)
        check_int32_accumulation(a_max, self._max_code(), self.in_features, repr(self))
        return int_matmul(codes, self.params["W"]) * self._output_scale(step)

    def _add_bias_exact(self, y64):
        if self.bias:
            y64 = y64 + self.params["b"].astype(np.float64)
        return y64.astype(self.dtype)

    def simulate_integer(self, x):
        """The integer path computed in float64 from dequantized weights and fake-quantized input."""
        codes, step, _ = self._input_codes(x)
        y64 = ((codes * step) @ self.code_values()) * self.weight_scale()
        return self._add_bias_exact(y64)

    def get_config(self):
        return {**Dense.get_config(self), "pattern": self.pattern_config(),
                "activation_bits": self.activation_bits, "integer": self.integer,
                "rescale": self.rescale}

    def __repr__(self):
        return "Quantized" + Dense.__repr__(self)


@register_layer
class QuantizedConv2D(BitMaskQuantized, Conv2D):
    """A Conv2D whose W (O, C, kh, kw) is held as bit-mask codes: W[o] = code[o] · step_o.

    Built on ``Conv2D`` for its configuration and shapes, with its own
    forward/backward on the public ``im2col``/``col2im`` (so it does not
    depend on Conv2D's internals):

        cols = im2col(x)  (C·kh·kw, N·OH·OW);   Y₂ = W₂ · cols + b

    with W₂ the dequantized weights (weight-only path) or, on the integer
    path, the int8 codes times int16 activation codes of cols, summed in
    int32 and scaled per output channel. ``pattern``: one pattern or a list
    of ``out_channels``."""

    channel_axis = 0

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 bias=True, init="he", rng=None, name=None, pattern="4_0_0",
                 activation_bits=8, integer=False, rescale=None):
        self.out_channels = int(out_channels)
        self._pattern_arg = pattern
        self._quant_args = (activation_bits, integer, rescale)
        super().__init__(in_channels, out_channels, kernel_size, stride=stride,
                         padding=padding, bias=bias, init=init, rng=rng, name=name)

    def _n_channels(self):
        return self.out_channels

    def _columns(self, x):
        N, C, H, W = np.shape(x)
        OH, OW = self.output_shape((C, H, W))[1:]
        return im2col(x, self.kernel, self.strides, self.pads), (N, OH, OW)

    def _to_nchw(self, y2, N, OH, OW, bias64=False):
        y = y2.reshape(self.out_channels, N, OH, OW).transpose(1, 0, 2, 3)
        if self.bias:
            b = self.params["b"].astype(np.float64) if bias64 else self.params["b"]
            y = y + b.reshape(1, -1, 1, 1)
        return np.ascontiguousarray(y, dtype=self.dtype)

    def forward(self, x, training=False):
        if np.ndim(x) != 4 or np.shape(x)[1] != self.in_channels:
            raise ValueError(f"{self!r} expects input of shape (batch, {self.in_channels}, H, W), "
                             f"got {tuple(np.shape(x))}")
        self.output_shape(np.shape(x)[1:])             # raises when the kernel does not fit
        if self.integer:
            return self._to_nchw(*self._integer_y2(x), bias64=True)
        x = np.asarray(x, dtype=self.dtype)
        cols, (N, OH, OW) = self._columns(x)
        self._x_shape, self._cols = x.shape, (cols if training else None)
        y2 = self._W_values.reshape(self.out_channels, -1) @ cols
        return self._to_nchw(y2, N, OH, OW)

    def _code_columns(self, x):
        """im2col of the input's activation codes (quantized before im2col: 25x fewer
        roundings for a 5x5 kernel; padding zeros are code 0 either way)."""
        codes, step, a_max = self._input_codes(x)
        # int16 codes are exact in float32, the dtype im2col's kernel takes
        cols, shape = self._columns(codes.astype(np.float32))
        return cols.astype(np.int16), step, a_max, shape

    def _integer_y2(self, x):
        cols, step, a_max, (N, OH, OW) = self._code_columns(x)
        W2 = self.params["W"].reshape(self.out_channels, -1)
        check_int32_accumulation(a_max, self._max_code(), W2.shape[1], repr(self))
        acc = int_matmul(W2, cols)                                     # (O, N·OH·OW) int32
        return acc * self._output_scale(step)[:, None], N, OH, OW

    def simulate_integer(self, x):
        """The integer path in float64: dequantized W times fake-quantized input columns."""
        cols, step, _, (N, OH, OW) = self._code_columns(x)
        y2 = self.code_values().reshape(self.out_channels, -1) @ (cols * step)
        y2 = y2 * self.weight_scale()[:, None]
        return self._to_nchw(y2, N, OH, OW, bias64=True)

    def backward_params(self, grad):
        if getattr(self, "_cols", None) is None:
            raise RuntimeError(f"{self!r}: backward needs a forward pass with training=True")
        N, O = grad.shape[0], self.out_channels
        g2 = np.ascontiguousarray(
            grad.reshape(N, O, -1).transpose(1, 0, 2), dtype=self.dtype).reshape(O, -1)
        self.grads["W"] = (g2 @ self._cols.T).reshape(self.weight_shape)
        if self.bias:
            self.grads["b"] = g2.sum(axis=1)
        return g2

    def backward(self, grad):
        g2 = self.backward_params(grad)
        dcols = self._W_values.reshape(self.out_channels, -1).T @ g2
        return col2im(dcols, self._x_shape, self.kernel, self.strides, self.pads)

    def get_config(self):
        return {**Conv2D.get_config(self), "pattern": self.pattern_config(),
                "activation_bits": self.activation_bits, "integer": self.integer,
                "rescale": self.rescale}

    def __repr__(self):
        return "Quantized" + Conv2D.__repr__(self)


QUANTIZED_TYPES = {Conv2D: QuantizedConv2D, Dense: QuantizedDense}


# -- whole models ----------------------------------------------------------------------------------
def quantizable_layers(model) -> list:
    """The model's Conv2D and Dense layers (float or already quantized), in order."""
    return [layer for layer in model.layers if isinstance(layer, (Conv2D, Dense))]


def resolve_layers(model, key: str) -> list:
    """Layers named by ``key``: an exact layer name; ``convK``/``ipK``/``fcK``/``denseK``
    (Caffe style, the K-th Conv2D / Dense, counted from 1); ``conv``, ``dense`` or ``all``."""
    names = {layer.name: layer for layer in model.layers}
    if key in names:
        return [names[key]]
    convs = [l for l in model.layers if isinstance(l, Conv2D)]
    denses = [l for l in model.layers if isinstance(l, Dense)]
    groups = {"conv": convs, "dense": denses,
              "all": [l for l in model.layers if isinstance(l, (Conv2D, Dense))]}
    if key in groups:
        return list(groups[key])
    for prefix, pool in (("conv", convs), ("ip", denses), ("fc", denses), ("dense", denses)):
        if key.startswith(prefix) and key[len(prefix):].isdigit():
            k = int(key[len(prefix):])
            if 1 <= k <= len(pool):
                return [pool[k - 1]]
    raise ValueError(f"no layer {key!r}: use a layer name ({', '.join(names)}), conv1..conv"
                     f"{len(convs)}, ip1..ip{len(denses)}, or conv/dense/all")


def float_layer(layer):
    """A quantized layer's float twin (dequantized weights); a float layer as it is."""
    if isinstance(layer, BitMaskQuantized):
        base = Conv2D if isinstance(layer, Conv2D) else Dense
        config = {k: v for k, v in layer.get_config().items()
                  if k not in ("pattern", "activation_bits", "integer", "rescale")}
        config["init"] = "zeros"
        twin = base(**config)
        twin.cast(layer.dtype)
        twin.params["W"] = layer.weight_values().copy()
        if layer.bias:
            twin.params["b"] = layer.params["b"].copy()
        return twin
    return layer


def quantize_layer(layer, pattern, activation_bits=8, integer=False, rescale=None):
    """A QuantizedConv2D/QuantizedDense from a trained Conv2D/Dense (rounded to ``pattern``;
    ``rescale``: None, "max" or "pow2", see the module docstring)."""
    base = float_layer(layer)
    for float_type, quantized_type in QUANTIZED_TYPES.items():
        if type(base) is float_type:
            return quantized_type.from_float(base, pattern, activation_bits, integer, rescale)
    raise TypeError(f"only Conv2D and Dense layers can be quantized, got {layer!r}")


def quantize_model(model, assignment: dict, activation_bits: int = 8, rescale=None):
    """A copy of ``model`` with the layers in ``assignment`` quantized.

    ``assignment``: layer key (see ``resolve_layers``) → pattern, or list of
    per-channel patterns. ``rescale``: None (default: the raw weights are
    rounded), "max" or "pow2" for every quantized layer. Other layers are
    shared with ``model`` (not copied)."""
    from ..model import Sequential
    rescale = check_rescale(rescale)
    chosen = {}
    for key, pattern in assignment.items():
        for layer in resolve_layers(model, key):
            chosen[layer.name] = pattern
    layers = []
    for layer in model.layers:
        if layer.name in chosen:
            layers.append(quantize_layer(layer, chosen[layer.name], activation_bits,
                                         rescale=rescale))
        else:
            layers.append(layer)
    return Sequential(layers, seed=None, dtype=model.dtype, input_shape=model.input_shape)


def calibrate(model, x, batch_size: int = 500) -> None:
    """Set every quantized layer's integer-path input step from held-out inputs ``x``
    (the peak |input| each layer sees, with the model as it runs, weight-only)."""
    peaks, negative = {}, {}
    modes = {layer.name: getattr(layer, "integer", False) for layer in model.layers}
    set_integer(model, False)
    for start in range(0, len(x), batch_size):
        h = np.asarray(x[start:start + batch_size], dtype=model.dtype)
        for layer in model.layers:
            if isinstance(layer, BitMaskQuantized):
                peaks[layer.name] = max(peaks.get(layer.name, 0.0), float(np.abs(h).max()))
                negative[layer.name] = negative.get(layer.name, False) or bool((h < 0).any())
            h = layer.forward(h, False)
    for layer in model.layers:
        if isinstance(layer, BitMaskQuantized):
            layer.set_input_scale(peaks[layer.name], negative[layer.name])
            layer.integer = modes[layer.name]


def set_integer(model, on: bool = True) -> None:
    """Switch every quantized layer of ``model`` to the integer path (or back)."""
    for layer in model.layers:
        if isinstance(layer, BitMaskQuantized):
            layer.integer = bool(on)


def weight_bytes(model) -> dict:
    """Bytes of the weights (W only) as stored: packed codes (plus the float32 scales of a
    rescaled layer: 4 bytes, or 4 per channel) for quantized layers, float otherwise."""
    out = {}
    for layer in quantizable_layers(model):
        if isinstance(layer, BitMaskQuantized):
            scales = 0 if layer.rescale is None else (layer._n_channels() if layer.per_channel else 1)
            out[layer.name] = int(layer._pack().nbytes) + 4 * scales
        else:
            out[layer.name] = int(layer.params["W"].nbytes)
    return out


__all__ = ["quantize_to_pattern", "dequantize", "round_to_pattern", "quantize_activations",
           "activation_range", "RESCALE_MODES", "check_rescale", "rescale_factors", "BitMaskQuantized", "QuantizedDense", "QuantizedConv2D",
           "quantizable_layers", "resolve_layers", "float_layer", "quantize_layer",
           "quantize_model", "calibrate", "set_integer", "weight_bytes"]
