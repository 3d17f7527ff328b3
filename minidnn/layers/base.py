"""The layer contract every part of minidnn is built on.

A layer is a small object with

* ``forward(x, training)``: returns the output and caches on ``self`` what
  ``backward`` needs;
* ``backward(grad)``: takes dL/d(output), fills ``self.grads`` and returns
  dL/d(input);
* ``params`` / ``grads``: dicts with the same keys (``"W"``, ``"b"``, ...), so
  optimizers, the HDF5 writer and ``summary`` walk every layer the same way;
* ``buffers``: state that is saved but not trained (batch-norm running
  statistics, a quantized layer's gain);
* ``get_config()`` / ``from_config``: a layer can be rebuilt from its config.

Three hooks let a layer hold its weights in a form other than a float array
(integer codes on a grid, a CSR structure) without the optimizer, the model
files or the checkpoints knowing about it:

* ``apply_update(name, delta)``: the optimizer computes a float step (momentum
  and weight decay in float) and the layer applies it; the default adds it in
  place, a quantized layer rounds the result back onto its grid.
  ``param_value(name)`` is the float value weight decay acts on.
  ``in_place_param(name)`` hands the optimizer the array itself when the
  storage is the default one, so SGD steps it in one fused pass.
* ``state_for_file()`` / ``load_state(params, buffers)``: what goes into a model
  file and how it comes back; the default checks names and shapes against the
  freshly built layer, a layer whose stored arrays change shape (a random
  nnz, packed codes) overrides it and checks its own invariant.

The call-order contract is checked for every layer class, new ones included
(``Layer.__init_subclass__`` wraps each class's own ``forward``, ``backward``
and ``backward_params``): ``backward`` before any ``forward`` raises a
RuntimeError naming the layer, and a gradient whose shape differs from the
last forward output raises a ValueError saying which shape was expected. Only
the outermost call is checked, so a subclass that calls ``super().forward``
is checked once, against its own output.

No layer knows about optimizers, files or the command line.
"""
from __future__ import annotations

import functools

import numpy as np

DTYPES = {"float32": np.float32, "float64": np.float64}


def as_generator(rng) -> np.random.Generator:
    """A ``numpy.random.Generator`` from a Generator, an int seed or None."""
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


class ParamHolder:
    """What an optimizer needs of anything that holds trainable parameters:
    ``params``/``grads`` dicts with the same keys, ``decay_params`` and how an
    update lands. ``Layer`` and the pretraining blocks (RBM, autoencoder)
    share it, so ``SGD.step`` treats them alike."""

    #: names of parameters that weight decay applies to (not biases, not BN)
    decay_params: tuple[str, ...] = ()

    def apply_update(self, name: str, delta: np.ndarray) -> None:
        """Apply the optimizer's float step ``delta`` to parameter ``name``.

        The default is ``params[name] += delta`` in place. A layer that stores
        its weights in another form (integer codes on a grid) overrides this:
        the optimizer never needs to know the storage."""
        param = self.params[name]
        param += delta.astype(param.dtype, copy=False)

    def param_value(self, name: str) -> np.ndarray:
        """The float value of parameter ``name`` (what weight decay acts on)."""
        return self.params[name]

    def in_place_param(self, name: str) -> np.ndarray | None:
        """The array an optimizer may step in place, fused (``kernels.sgd_update``),
        or None: then it computes the float step and calls ``apply_update``.

        The default storage (``params[name]`` is what ``param_value`` returns and
        ``apply_update`` adds to) hands out the array itself; a class that
        overrides ``apply_update`` or ``param_value`` (codes on a grid, a mask
        re-applied after each step) gets None unless it overrides this too."""
        cls = type(self)
        if cls.apply_update is not ParamHolder.apply_update \
                or cls.param_value is not ParamHolder.param_value:
            return None
        return self.params[name]



def _layer_label(layer) -> str:
    return f"layer {layer.name} ({layer!r})" if layer.name else repr(layer)


def _recording_forward(forward):
    """Wrap ``forward`` to remember the shape of its output for ``backward``'s check."""
    @functools.wraps(forward)
    def recorded(self, x, *args, **kwargs):
        depth = self.__dict__.get("_call_depth", 0)
        self._call_depth = depth + 1
        try:
            out = forward(self, x, *args, **kwargs)
        finally:
            self._call_depth = depth
        if depth == 0:
            self._forward_output_shape = np.shape(out)
        return out
    return recorded


def _checked_backward(backward):
    """Wrap ``backward``/``backward_params``: refuse a call before forward or a
    gradient of another shape than the last forward output."""
    @functools.wraps(backward)
    def checked(self, grad, *args, **kwargs):
        depth = self.__dict__.get("_call_depth", 0)
        if depth == 0:
            expected = self.__dict__.get("_forward_output_shape")
            if expected is None:
                raise RuntimeError(f"{_layer_label(self)}: {backward.__name__} was called before "
                                   f"forward; call forward(x, training=True) first")
            if np.shape(grad) != expected:
                raise ValueError(f"{_layer_label(self)}: {backward.__name__} expects a gradient "
                                 f"of shape {expected} (the shape of its last forward output), "
                                 f"got {np.shape(grad)}")
        self._call_depth = depth + 1
        try:
            return backward(self, grad, *args, **kwargs)
        finally:
            self._call_depth = depth
    return checked


class Layer(ParamHolder):
    """Base class: a layer without parameters (activations, pooling, ...)."""

    #: True: ``forward`` reads a Fortran-ordered (batch, features) input as it is and
    #: a C-ordered one costs it a transpose (a CSR layer's feature-major kernels), so
    #: ``fit`` gathers the minibatches of a net that starts with it in that order
    #: (``kernels.gather``); the values are the same either way
    fortran_input = False

    def input_buffer(self, batch: int):
        """A Fortran-ordered (batch, features) array to write the next training input
        into, which this layer's ``forward`` then reads in place (``fit`` gathers each
        minibatch into it: ``kernels.gather``), or None (the default): no such buffer.
        Only for a ``fortran_input`` layer; the array is reused from step to step, so
        it holds a valid input only until the next ``forward``."""
        return None

    def __init_subclass__(cls, **kwargs):
        # The call-order contract (module docstring), for every layer class.
        super().__init_subclass__(**kwargs)
        for method, wrap in (("forward", _recording_forward), ("backward", _checked_backward),
                             ("backward_params", _checked_backward)):
            if method in cls.__dict__:
                setattr(cls, method, wrap(cls.__dict__[method]))

    def __init__(self, name: str | None = None):
        self.name = name
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}
        self.dtype = np.float32

    # -- the contract -----------------------------------------------------
    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        raise NotImplementedError

    def backward(self, grad: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def backward_params(self, grad: np.ndarray) -> None:
        """Fill ``grads`` without computing the input gradient.

        Training calls this on the first trainable layer, whose input (the
        data) needs no gradient; layers override it to skip that product."""
        self.backward(grad)

    def initialize(self, rng: np.random.Generator) -> None:
        """Draw fresh parameters from ``rng`` (no-op for parameter-free layers)."""

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of one sample's output given one sample's input shape."""
        return tuple(input_shape)

    def get_config(self) -> dict:
        return {"name": self.name}

    @classmethod
    def from_config(cls, config: dict) -> "Layer":
        return cls(**config)

    def set_weights(self, W: np.ndarray, b: np.ndarray | None = None) -> "Layer":
        """Load weights (and optionally the bias), shape-checked: the seam
        through which pretrained (RBM, autoencoder) weights enter a model."""
        for key, value in (("W", W), ("b", b)):
            if value is None:
                continue
            if key not in self.params:
                raise ValueError(f"{self!r} has no {key} to set")
            value = np.asarray(value)
            expected = self.params[key].shape
            if key == "b":
                value = value.reshape(-1)
            if value.shape != expected:
                raise ValueError(f"{self!r}: {key} must have shape {expected}, got {value.shape}")
            self.params[key] = value.astype(self.dtype, copy=True)
        return self

    # -- how state is stored ------------------------------------------------------
    def state_for_file(self) -> tuple[dict, dict]:
        """The ``(params, buffers)`` arrays a model file stores for this layer."""
        return self.params, self.buffers

    def storage_format(self) -> str:
        """How the weights are held, in words, for ``summary`` and ``minidnn info``.

        The default names the parameters' dtypes (``"float32"``); a compressed
        layer says what it stores instead (``"ternary, 2 bits/weight"``,
        ``"CSR, density 0.04"``, ``"pattern 6_2_0_1_0"``)."""
        dtypes = sorted({np.dtype(v.dtype).name for v in self.params.values()})
        return "/".join(dtypes) if dtypes else "-"

    def storage_bytes(self) -> int:
        """Bytes of the arrays a model file stores for this layer (params and buffers)."""
        params, buffers = self.state_for_file()
        return int(sum(np.asarray(v).nbytes for v in params.values()) +
                   sum(np.asarray(v).nbytes for v in buffers.values()))

    def load_state(self, params: dict, buffers: dict) -> None:
        """Take the arrays read from a file (or checkpoint) into this layer.

        The layer was just rebuilt from its config, so its own arrays say which
        names and shapes to expect. Floating arrays are cast to the layer's
        dtype; others (integer codes, indices) keep their exact dtype.
        Raises ValueError naming the array that does not fit."""
        for kind, stored, live in (("params", params, self.params),
                                   ("buffers", buffers, self.buffers)):
            if set(stored) != set(live):
                raise ValueError(f"layer {self.name} has {kind} {sorted(stored)}, "
                                 f"its architecture expects {sorted(live)}")
            for key, value in stored.items():
                value = np.asarray(value)
                if value.shape != live[key].shape:
                    raise ValueError(f"{self.name}/{kind}/{key} has shape {value.shape}, "
                                     f"expected {live[key].shape}")
                if np.issubdtype(live[key].dtype, np.floating):
                    live[key] = value.astype(self.dtype, copy=True)
                elif value.dtype != live[key].dtype:
                    raise ValueError(f"{self.name}/{kind}/{key} has dtype {value.dtype}, "
                                     f"expected {live[key].dtype}")
                else:
                    live[key] = value.copy()
        self.zero_grads()

    # -- shared helpers -----------------------------------------------------
    def cast(self, dtype) -> "Layer":
        """Convert parameters, gradients and float buffers to ``dtype``."""
        self.dtype = np.dtype(dtype).type
        for store in (self.params, self.grads, self.buffers):
            for key, value in store.items():
                if np.issubdtype(value.dtype, np.floating):
                    store[key] = value.astype(self.dtype)
        return self

    def zero_grads(self) -> None:
        """Zero gradients, always floating (a parameter held as integer codes
        has a float gradient with respect to its value)."""
        for key, value in self.params.items():
            dtype = value.dtype if np.issubdtype(value.dtype, np.floating) else self.dtype
            self.grads[key] = np.zeros(value.shape, dtype=dtype)

    @property
    def n_params(self) -> int:
        return int(sum(p.size for p in self.params.values()))

    def _check_input(self, x: np.ndarray, trailing: tuple[int, ...], what: str) -> None:
        """Raise a ValueError naming the layer when x's trailing dims differ."""
        if x.ndim != len(trailing) + 1 or tuple(x.shape[1:]) != tuple(trailing):
            expected = ", ".join(["batch"] + [str(d) for d in trailing])
            raise ValueError(
                f"{self!r} expects input of shape ({expected}){what}, got {tuple(x.shape)}"
            )

    def __repr__(self) -> str:
        args = ", ".join(
            f"{k}={v!r}" for k, v in self.get_config().items() if k != "name" and v is not None
        )
        return f"{type(self).__name__}({args})"
