"""Discrete Dense layers: weights on a power-of-two grid, trained with randomized rounding.

Technique 1 of SPEC.md (Shinagawa, Hayakawa & Nakajima, seed 000): the layer

    y = g·(x Q) + b,       Q = c·Δ ∈ [−1, 1]^(in×out),   c int8 codes

holds its weights as codes c on the grid of step Δ = 2^−k
(``PowerOfTwoGrid``) and a per-layer *gain* g: when a float layer W is
discretised, g = max|W| normalises W/g into [−1, 1] and becomes the gain of
the activation that follows, f(g·(Q x) + b). g is a buffer (saved, not
trained).

Training, in the paper's memory-saving mode (``DiscreteDense``): each step is

    Q ← RR(Q − η ∂L/∂Q),      ∂L/∂Q = g·xᵀ δ

with RR randomized rounding (Golovin et al., 2013; ``minidnn.kernels.rounding``),
done on the codes by ``apply_update``: the optimizer computes the float step
−η∂L/∂Q and the layer rounds c + step/Δ straight back onto the grid. **The
layer owns no float weight array**: its params are the int8 codes and the
bias; the only weight-sized float arrays are the per-step gradient
``grads["codes"]`` (∂L/∂Q, as in any backprop) and, if the optimizer has
momentum, its velocity (the study and the paper use none). Because RR is
unbiased, steps far smaller than Δ still move Q in expectation.
``rounding="nearest"`` is the deterministic control: a step smaller than Δ/2
is rounded away, so Q does not move.

``ShadowDiscreteDense`` is the BinaryConnect-style control (Courbariaux,
Bengio & David, 2015): a float shadow W ∈ [−1, 1] takes the updates (clipped
to [−1, 1]); every training forward uses a fresh rounding of it (randomized
or nearest), the gradient with respect to the rounded weights is applied to
W (straight-through); evaluation and export use one rounding of W in the
layer's rounding mode (randomized: the distribution it was trained under).

``discretize(model, grid, …)`` turns any trained float model (``Dense``
layers) or pretrained stack (DBN, stacked autoencoders) into a discrete one,
layer names kept; ``gain="mse"`` replaces the paper's g = max|W| by the gain
that minimises the expected randomized-rounding error (``rounding_error_gain``;
for ternary nets from a DBN about a tenth of max|W|, see its docstring).

Model files store the codes packed at ``grid.bits`` bits per weight (2 for
ternary) as ``params/codes_packed``, and the gain and step as buffers; a
file round trips exactly and codes outside the grid are refused on load.
"""
from __future__ import annotations

import copy
import hashlib

import numpy as np

from ..kernels import quantized_matmul as qmm
from ..kernels import rounding
from ..layers import register_layer
from ..layers.base import Layer, as_generator
from ..layers.dense import Dense
from ..model import Sequential
from .grids import PowerOfTwoGrid

ROUNDINGS = ("randomized", "nearest")


def _gain_of(W: np.ndarray, what: str) -> float:
    W = np.asarray(W)
    if not np.isfinite(W).all():
        raise ValueError(f"{what}: weights contain NaN or Inf; cannot discretise them")
    gain = float(np.abs(W).max(initial=0.0))
    if gain == 0.0:
        raise ValueError(f"{what}: all weights are zero, so the gain max|W| is 0 and W/gain is "
                         f"undefined; an all-zero layer cannot be discretised")
    return gain


GAIN_RULES = ("max", "mse")


def rounding_error_gain(W: np.ndarray, grid, candidates: int = 200) -> float:
    """The gain g that minimises the expected squared error of randomized rounding,

        E‖W − g·RR(W/g)‖² = Σ_{|w|≤g} g²Δ²·f_w(1 − f_w) + Σ_{|w|>g} (|w| − g)²,

    f_w the fraction of |w|/(gΔ) above its grid point below (RR is unbiased, so
    only its variance and the clipping of |w| > g count); searched over the
    quantiles 0.5 … 1 of |W| (``candidates`` of them, max|W| included).

    Why (technique 1, ternary): with the paper's g = max|W| a pretrained
    layer's typical |w|/g is ~0.05, so RR makes ~95 % of the codes 0 and a few
    ±g: unbiased, but with a rounding variance ~10× this gain's (measured on the
    DBNs of the depth study), and every later code flip moves a weight by the
    whole max|W|. Values above g are clipped to ±g."""
    a = np.abs(np.asarray(W, dtype=np.float64)).ravel()
    step = float(grid.step)
    gains = np.unique(np.quantile(a, np.linspace(0.5, 1.0, candidates)))
    gains = gains[gains > 0]
    if gains.size == 0:
        return _gain_of(W, "rounding_error_gain")
    best, best_err = float(a.max()), np.inf
    for g in gains:
        s = np.minimum(a / (g * step), 1.0 / step)
        f = s - np.floor(s)
        err = (g * step) ** 2 * (f * (1 - f)).sum() + (np.maximum(a - g, 0.0) ** 2).sum()
        if err < best_err:
            best, best_err = float(g), err
    return best


def _check_gain(gain, what):
    gain = float(gain)
    if not np.isfinite(gain) or gain <= 0:
        raise ValueError(f"{what}: gain must be a finite number > 0, got {gain}")
    return gain


def _round(values, grid, how, rng):
    if how == "randomized":
        return rounding.randomized_round(values, grid, rng)
    return rounding.round_to_nearest(values, grid)


class _GridLayer(Layer):
    """What both discrete layers share: sizes, grid, gain/step buffers, bias, config."""

    def __init__(self, in_features, out_features, grid, rounding_mode, bias, rng, name):
        super().__init__(name)
        if int(in_features) <= 0 or int(out_features) <= 0:
            raise ValueError(f"{type(self).__name__} needs positive sizes, got "
                             f"in_features={in_features}, out_features={out_features}")
        if rounding_mode not in ROUNDINGS:
            raise ValueError(f"{type(self).__name__} rounding must be one of {ROUNDINGS}, "
                             f"got {rounding_mode!r}")
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.grid = PowerOfTwoGrid.from_config(grid)
        self.rounding = rounding_mode
        self.bias = bool(bias)
        self.rng = as_generator(rng)

    @property
    def gain(self) -> float:
        return float(self.buffers["gain"][0])

    @property
    def scale(self) -> float:
        """g·Δ: what the integer-code product is multiplied by, once."""
        return self.gain * self.grid.step

    def _set_buffers(self, gain: float):
        self.buffers["gain"] = np.array([gain], dtype=self.dtype)
        self.buffers["step"] = np.array([self.grid.step], dtype=self.dtype)

    def _set_bias(self, b):
        if self.bias:
            b = np.zeros(self.out_features) if b is None else np.asarray(b).reshape(-1)
            if b.shape != (self.out_features,):
                raise ValueError(f"{self!r}: bias must have shape ({self.out_features},), "
                                 f"got {b.shape}")
            self.params["b"] = b.astype(self.dtype, copy=True)

    def _check_float_weights(self, W):
        W = np.asarray(W)
        if W.shape != (self.in_features, self.out_features):
            raise ValueError(f"{self!r}: W must have shape ({self.in_features}, "
                             f"{self.out_features}), got {W.shape}")
        return W

    def _check_buffers(self, buffers, where):
        if set(buffers) != {"gain", "step"}:
            raise ValueError(f"{where} has buffers {sorted(buffers)}, expected ['gain', 'step']")
        gain = np.asarray(buffers["gain"], dtype=np.float64).reshape(-1)
        step = np.asarray(buffers["step"], dtype=np.float64).reshape(-1)
        if gain.shape != (1,) or not np.isfinite(gain[0]) or gain[0] <= 0:
            raise ValueError(f"{where}: gain must be one finite number > 0, got {gain.tolist()} "
                             f"(a gain of 0 is an all-zero layer)")
        if step.shape != (1,) or step[0] != self.grid.step:
            raise ValueError(f"{where}: stored step {step.tolist()} does not match the "
                             f"layer's grid {self.grid!r} (step {self.grid.step:g})")
        return float(gain[0])

    def _load_bias(self, params, where):
        if self.bias:
            b = np.asarray(params["b"])
            if b.shape != (self.out_features,):
                raise ValueError(f"{where}/b has shape {b.shape}, expected ({self.out_features},)")
            self.params["b"] = b.astype(self.dtype, copy=True)

    def initialize(self, rng):
        """Glorot-uniform float weights, discretised (as a float layer would start)."""
        limit = np.sqrt(6.0 / (self.in_features + self.out_features))
        self.rng = np.random.default_rng(rng.integers(2**63))
        self.set_weights(rng.uniform(-limit, limit, (self.in_features, self.out_features)))

    def output_shape(self, input_shape):
        return (self.out_features,)

    def get_config(self):
        return {"in_features": self.in_features, "out_features": self.out_features,
                "grid": self.grid.label(), "rounding": self.rounding, "bias": self.bias,
                "name": self.name}

    def storage_format(self) -> str:
        kind = "ternary" if self.grid.is_ternary else f"grid {self.grid.label()}"
        return f"{kind}, {self.grid.bits} bits/weight"

    def __repr__(self):
        extra = "" if self.bias else ", bias=False"
        return (f"{type(self).__name__}({self.in_features}, {self.out_features}, "
                f"grid={self.grid.label()}, rounding={self.rounding}{extra})")


@register_layer
class DiscreteDense(_GridLayer):
    """y = g·Δ·(x c) + b with int8 codes c on a power-of-two grid (memory-saving mode).

    Args:
        in_features, out_features: sizes.
        grid: the step Δ = 2^−k (``"2^-2"``, 0.25, a ``PowerOfTwoGrid``); ``"2^0"`` is ternary.
        rounding: ``"randomized"`` (the paper) or ``"nearest"`` (deterministic
            control), used by every update and by the first discretisation.
        inference: ``"kernel"`` runs evaluation through the code kernels of
            ``minidnn.kernels.quantized_matmul`` (ternary: additions and
            subtractions only); ``"float"`` through the BLAS float simulation
            (what training uses; faster for big batches).
        rng: seed or Generator of the rounding stream (checkpointed by ``fit``).

    ``params["codes"]`` (int8) and ``params["b"]``; ``grads["codes"]`` is
    ∂L/∂Q with respect to the grid values Q = c·Δ; ``buffers`` hold the gain
    g and the step Δ. ``gain_grad`` (∂L/∂g, not applied: g is fixed) is set
    by ``backward`` for inspection and tests.
    """

    decay_params = ("codes",)

    def __init__(self, in_features: int, out_features: int, grid="2^0",
                 rounding: str = "randomized", bias: bool = True, inference: str = "kernel",
                 rng=None, name: str | None = None):
        super().__init__(in_features, out_features, grid, rounding, bias, rng, name)
        if inference not in ("kernel", "float"):
            raise ValueError(f"DiscreteDense inference must be 'kernel' or 'float', got {inference!r}")
        self.inference = inference
        self._plan = None
        self.initialize(np.random.default_rng(self.rng.integers(2**63)))

    # -- building ----------------------------------------------------------------------
    @classmethod
    def from_float(cls, W, b=None, grid="2^0", rounding="randomized", rng=None,
                   name=None, inference="kernel", gain=None) -> "DiscreteDense":
        """Discretise float weights W (in, out): g = max|W| (or ``gain``), c = round(W/g)."""
        W = np.asarray(W)
        if W.ndim != 2:
            raise ValueError(f"DiscreteDense.from_float needs W of shape (in, out), got {W.shape}")
        layer = cls(W.shape[0], W.shape[1], grid=grid, rounding=rounding,
                    bias=b is not None, inference=inference, rng=rng, name=name)
        return layer.set_weights(W, b, gain=gain)

    def set_weights(self, W, b=None, gain=None) -> "DiscreteDense":
        """Discretise float W: gain g = max|W| (the paper) unless ``gain`` is given,
        codes = RR(W/g) (or nearest; values beyond ±g clip to ±1), bias as is."""
        W = self._check_float_weights(W)
        gain = _gain_of(W, repr(self)) if gain is None else _check_gain(gain, repr(self))
        self._set_buffers(gain)
        self.params["codes"] = _round(W / gain, self.grid, self.rounding, self.rng)
        if b is not None or "b" not in self.params:
            self._set_bias(b)
        self._plan = None
        self.zero_grads()
        return self

    def set_codes(self, codes, gain: float, b=None) -> "DiscreteDense":
        """Set the codes (checked to lie on the grid) and the gain directly."""
        codes = self.grid.check_codes(codes, f"{self!r} codes")
        if codes.shape != (self.in_features, self.out_features):
            raise ValueError(f"{self!r}: codes must have shape ({self.in_features}, "
                             f"{self.out_features}), got {codes.shape}")
        if not np.isfinite(gain) or gain <= 0:
            raise ValueError(f"{self!r}: gain must be a finite number > 0, got {gain}")
        self.params["codes"] = np.ascontiguousarray(codes, dtype=np.int8).copy()
        self._set_buffers(float(gain))
        if b is not None:
            self._set_bias(b)
        self._plan = None
        self.zero_grads()
        return self

    def weight_values(self) -> np.ndarray:
        """Q = c·Δ as a new float array (the layer keeps only the codes)."""
        return self.grid.decode(self.params["codes"], self.dtype)

    def float_weights(self) -> np.ndarray:
        """g·Q: the float W this layer computes with (a new array)."""
        return self.weight_values() * self.dtype(self.gain)

    # -- the products ---------------------------------------------------------------------
    def _forward_product(self, x):
        return qmm.float_simulation(x, self.params["codes"], self.scale)

    def _kernel_product(self, x):
        if self.grid.is_ternary:
            if self._plan is None:
                self._plan = qmm.ternary_plan(self.params["codes"])
            return qmm.ternary_matmul(x, self._plan, self.scale)
        return qmm.code_matmul(x, self.params["codes"], self.scale)

    def _input_grad(self, grad):
        out = grad @ self.params["codes"].T.astype(grad.dtype)
        out *= grad.dtype.type(self.scale)
        return out

    def _weight_grad(self, x, grad):
        """∂L/∂Q = g·xᵀδ (with respect to the grid values, not the codes)."""
        out = x.T @ grad
        out *= grad.dtype.type(self.gain)
        return out

    def forward(self, x, training=False):
        self._check_input(x, (self.in_features,), "")
        self._x = x
        if training or self.inference == "float":
            out = self._forward_product(x)
        else:
            out = self._kernel_product(x)
        self._product = out.copy() if training else None   # g·(xQ), for ∂L/∂g
        if self.bias:
            out += self.params["b"]
        return out

    def backward_params(self, grad):
        self.grads["codes"] = self._weight_grad(self._x, grad)
        if self.bias:
            self.grads["b"] = grad.sum(axis=0)
        if self._product is not None:
            self.gain_grad = float((grad * self._product).sum()) / self.gain

    def backward(self, grad):
        self.backward_params(grad)
        return self._input_grad(grad)

    # -- how an update lands ----------------------------------------------------------------
    def apply_update(self, name, delta):
        """Codes: c ← RR(c + delta/Δ) (or nearest), in place on the int8 array;
        the bias: the default in-place add."""
        if name != "codes":
            return super().apply_update(name, delta)
        if self.rounding == "randomized":
            rounding.randomized_update(self.params["codes"], delta, self.grid, self.rng)
        else:
            rounding.nearest_update(self.params["codes"], delta, self.grid)
        self._plan = None

    def param_value(self, name):
        return self.weight_values() if name == "codes" else self.params[name]

    # -- how state is stored ----------------------------------------------------------------
    def state_for_file(self):
        params = {"codes_packed": self.grid.pack(self.params["codes"])}
        if self.bias:
            params["b"] = self.params["b"]
        return params, self.buffers

    def load_state(self, params, buffers):
        where = f"layer {self.name}"
        expected = {"codes_packed"} | ({"b"} if self.bias else set())
        if set(params) != expected:
            raise ValueError(f"{where} has params {sorted(params)}, a {self!r} stores "
                             f"{sorted(expected)}")
        gain = self._check_buffers(buffers, where)
        codes = self.grid.unpack(params["codes_packed"], (self.in_features, self.out_features),
                                 what=f"{where}/params/codes_packed")
        self._load_bias(params, where)
        self.params["codes"] = codes
        self._set_buffers(gain)
        self._plan = None
        self.zero_grads()

    def get_config(self):
        return {**super().get_config(), "inference": self.inference}


@register_layer
class ShadowDiscreteDense(_GridLayer):
    """BinaryConnect-style control: float shadow W ∈ [−1, 1], grid weights in the forward pass.

    Training forward: Q = round(W) on the grid (a fresh randomized rounding
    per step, or nearest), y = g·(x Q) + b. Backward: ∂L/∂Q = g·xᵀδ is used as
    the gradient of W (straight-through estimator), and updates land on W,
    clipped to [−1, 1]. Evaluation (and ``to_discrete``) uses one rounding of W
    in the layer's rounding mode, keyed by a hash of W (deterministic). Unlike ``DiscreteDense`` this layer keeps a full-precision
    copy of every weight, which is what the paper's memory-saving mode avoids.
    """

    decay_params = ("W",)
    #: the W gradient is the straight-through estimate ∂L/∂Q, not ∂L/∂W (zero a.e.)
    straight_through_params = ("W",)

    def __init__(self, in_features: int, out_features: int, grid="2^0",
                 rounding: str = "randomized", bias: bool = True, rng=None,
                 name: str | None = None):
        super().__init__(in_features, out_features, grid, rounding, bias, rng, name)
        self.initialize(np.random.default_rng(self.rng.integers(2**63)))

    @classmethod
    def from_float(cls, W, b=None, grid="2^0", rounding="randomized", rng=None,
                   name=None, gain=None) -> "ShadowDiscreteDense":
        W = np.asarray(W)
        layer = cls(W.shape[0], W.shape[1], grid=grid, rounding=rounding,
                    bias=b is not None, rng=rng, name=name)
        return layer.set_weights(W, b, gain=gain)

    def set_weights(self, W, b=None, gain=None) -> "ShadowDiscreteDense":
        """Shadow W/g clipped to [−1, 1], gain g = max|W| unless ``gain`` is given
        (no rounding: the shadow stays float)."""
        W = self._check_float_weights(W)
        gain = _gain_of(W, repr(self)) if gain is None else _check_gain(gain, repr(self))
        self._set_buffers(gain)
        self.params["W"] = np.clip(W / gain, -1.0, 1.0).astype(self.dtype)
        if b is not None or "b" not in self.params:
            self._set_bias(b)
        self.zero_grads()
        return self

    def _codes(self, training):
        """Training: a fresh rounding of W per step. Evaluation and export: one
        rounding drawn from a copy of the stream (the same codes at every call
        until W changes, keyed by a hash of W; the training stream is not consumed). Randomized
        training makes the net work under RR draws of W; rounding it to nearest
        instead would zero most ternary weights (|W| < ½)."""
        W = self.params["W"]
        if training:
            rng = self.rng
        else:   # a function of W alone: the same after a file round trip or a resume
            digest = hashlib.blake2b(W.astype(np.float32).tobytes(), digest_size=8).digest()
            rng = np.random.default_rng(int.from_bytes(digest, "little"))
        return _round(W, self.grid, self.rounding, rng)

    def forward(self, x, training=False):
        self._check_input(x, (self.in_features,), "")
        self._x = x
        self._q_codes = self._codes(training)
        out = qmm.float_simulation(x, self._q_codes, self.scale)
        if self.bias:
            out += self.params["b"]
        return out

    def backward_params(self, grad):
        self.grads["W"] = (self._x.T @ grad) * grad.dtype.type(self.gain)
        if self.bias:
            self.grads["b"] = grad.sum(axis=0)

    def backward(self, grad):
        self.backward_params(grad)
        return (grad @ self._q_codes.T.astype(grad.dtype)) * grad.dtype.type(self.scale)

    def apply_update(self, name, delta):
        super().apply_update(name, delta)
        if name == "W":
            np.clip(self.params["W"], -1.0, 1.0, out=self.params["W"])

    def to_discrete(self, inference="kernel") -> DiscreteDense:
        """The exported layer: the evaluation codes (see ``_codes``), same gain, bias and name."""
        layer = DiscreteDense(self.in_features, self.out_features, grid=self.grid,
                              rounding=self.rounding, bias=self.bias, inference=inference,
                              rng=copy.deepcopy(self.rng), name=self.name)   # this rng untouched
        layer.cast(self.dtype)
        return layer.set_codes(self._codes(False), self.gain, self.params.get("b"))

    def load_state(self, params, buffers):
        gain = self._check_buffers(buffers, f"layer {self.name}")
        super().load_state(params, {"gain": np.array([gain]),
                                    "step": np.array([self.grid.step])})

    def storage_format(self) -> str:
        return f"float shadow of {super().storage_format()}"


# -- conversion ------------------------------------------------------------------------------

def discretize(model, grid="2^0", rounding="randomized", shadow: bool = False, rng=0,
               layers=None, n_classes: int | None = None, inference: str = "kernel",
               gain: str = "max") -> Sequential:
    """A copy of ``model`` whose Dense layers are discrete, names kept.

    Args:
        model: a ``Sequential`` or a pretrained stack (``DBN``,
            ``StackedAutoencoder``: its MLP with a fresh Dense(last, n_classes)
            output layer, seeded by ``rng`` when it is an int).
        grid: step Δ; rounding: ``"randomized"`` or ``"nearest"``.
        shadow: ``ShadowDiscreteDense`` (BinaryConnect control) instead of
            ``DiscreteDense``.
        rng: seed or Generator of the first rounding and of each layer's
            rounding stream.
        layers: names of the Dense layers to convert (default: all).
        gain: the per-layer gain rule: ``"max"`` (the paper: g = max|W|, nothing
            clipped) or ``"mse"`` (``rounding_error_gain``: the g minimising the
            expected squared rounding error, weights beyond ±g clipped).

    Each converted layer gets its gain from its own weights.
    """
    if gain not in GAIN_RULES:
        raise ValueError(f"discretize gain must be one of {GAIN_RULES}, got {gain!r}")
    if not isinstance(model, Sequential):
        if not hasattr(model, "to_mlp"):
            raise TypeError(f"discretize takes a Sequential or a pretrained stack, got "
                            f"{type(model).__name__}")
        if n_classes is None:
            raise ValueError("discretize(stack) needs n_classes for the output layer")
        model = model.to_mlp(n_classes, seed=rng if isinstance(rng, int) else 0)
    grid = PowerOfTwoGrid.from_config(grid)
    rng = as_generator(rng)
    dense_names = [l.name for l in model.layers if type(l) is Dense]
    chosen = dense_names if layers is None else list(layers)
    unknown = [n for n in chosen if n not in dense_names]
    if unknown:
        raise ValueError(f"discretize: {unknown} are not Dense layers of the model; "
                         f"Dense layers: {dense_names}")
    new_layers = []
    for layer in model.layers:
        if layer.name in chosen:
            W, b = layer.params["W"], layer.params.get("b")
            layer_rng = np.random.default_rng(rng.integers(2**63))
            g = rounding_error_gain(W, grid) if gain == "mse" else None
            if shadow:
                new = ShadowDiscreteDense.from_float(W, b, grid, rounding, layer_rng, layer.name,
                                                     gain=g)
            else:
                new = DiscreteDense.from_float(W, b, grid, rounding, layer_rng, layer.name,
                                               inference=inference, gain=g)
            new_layers.append(new.cast(model.dtype))
        else:
            new_layers.append(copy.deepcopy(layer))
    return Sequential(new_layers, seed=None, dtype=model.dtype, input_shape=model.input_shape)


def export_discrete(model: Sequential, inference: str = "kernel") -> Sequential:
    """``model`` with every ``ShadowDiscreteDense`` replaced by its nearest-rounded
    ``DiscreteDense`` (what a shadow-trained model ships as); others copied."""
    layers = [l.to_discrete(inference) if isinstance(l, ShadowDiscreteDense) else copy.deepcopy(l)
              for l in model.layers]
    return Sequential(layers, seed=None, dtype=model.dtype, input_shape=model.input_shape)


def weight_storage_bytes(model: Sequential) -> int:
    """Bytes the weight matrices take in a model file: packed codes for discrete
    layers, W for float Dense layers (biases, gains and other arrays excluded)."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, DiscreteDense):
            total += layer.grid.packed_bytes(layer.params["codes"].size)
        elif "W" in layer.params:
            total += layer.params["W"].nbytes
    return total


# -- command line -------------------------------------------------------------------------------

def info_lines(model: Sequential) -> list:
    """``minidnn info``'s lines for a model with discrete layers (none otherwise): the weight
    matrices' bytes as packed codes against the same weights in float32."""
    discrete = [l for l in model.layers if isinstance(l, DiscreteDense)]
    if not discrete:
        return []
    packed = weight_storage_bytes(model)
    as_float32 = sum(l.params["codes"].size * 4 if isinstance(l, DiscreteDense)
                     else l.params["W"].size * 4 for l in model.layers if "W" in l.params
                     or isinstance(l, DiscreteDense))
    bits = sorted({l.grid.bits for l in discrete})
    return [f"weights: {packed:,} bytes as codes ({'/'.join(map(str, bits))} bits/weight) "
            f"against {as_float32:,} in float32 (1/{as_float32 / packed:.1f}); "
            f"biases and gains excluded"]


def add_train_options(parser) -> None:
    """``minidnn train`` options of technique 1 (``--grid-step``, ``--rounding``)."""
    group = parser.add_argument_group("discrete weights (technique 1)")
    group.add_argument("--grid-step", default=None, metavar="STEP",
                       help="discretise every Dense layer onto the power-of-two grid of step "
                            "STEP on [-1, 1] (2^0 = ternary, 2^-1, ..., 2^-6) with a per-layer "
                            "gain (--grid-gain), then train on the grid (after --init-from, if "
                            "given)")
    group.add_argument("--rounding", choices=("randomized", "nearest", "shadow"),
                       default="randomized",
                       help="with --grid-step: 'randomized' (the paper: W <- RR(W - lr*grad), "
                            "no float copy), 'nearest' (deterministic control) or 'shadow' "
                            "(BinaryConnect: float shadow weights, randomized rounding in the "
                            "forward pass, exported rounded to nearest). Default: %(default)s")
    group.add_argument("--grid-gain", choices=GAIN_RULES, default="max",
                       help="with --grid-step: per-layer gain rule, 'max' (the paper: max|W|) "
                            "or 'mse' (the gain minimising the expected randomized-rounding "
                            "error; weights beyond it clipped). Default: %(default)s")


def model_from_args(args, model: Sequential, log=print) -> Sequential:
    """The model to train: ``model`` discretised when ``--grid-step`` was given."""
    if getattr(args, "grid_step", None) is None:
        return model
    shadow = args.rounding == "shadow"
    grid = PowerOfTwoGrid.parse(args.grid_step)
    if args.momentum and not shadow:
        log(f"note: momentum {args.momentum} keeps a float velocity per weight; the paper's "
            f"memory-saving mode uses --momentum 0")
    model = discretize(model, grid, rounding="randomized" if shadow else args.rounding,
                       shadow=shadow, rng=args.seed, gain=getattr(args, "grid_gain", "max"))
    log(f"discretised onto {grid!r} ({grid.bits} bits/weight), rounding {args.rounding}, "
        f"gain {getattr(args, 'grid_gain', 'max')}")
    return model


def training_info(args) -> dict:
    """What ``minidnn train`` records of technique 1 in the model file's training info
    (the grid step, the rounding and the gain rule), so ``minidnn info`` says how the
    codes were trained; empty without ``--grid-step``."""
    if getattr(args, "grid_step", None) is None:
        return {}
    return {"discrete": {"grid_step": PowerOfTwoGrid.parse(args.grid_step).label(),
                         "rounding": args.rounding, "gain": getattr(args, "grid_gain", "max")}}


def model_to_save(args, model: Sequential) -> Sequential:
    """What ``minidnn train`` writes: shadow-trained layers exported to codes."""
    if getattr(args, "grid_step", None) is not None and args.rounding == "shadow":
        return export_discrete(model)
    return model
