"""Sequential: a list of layers run forward in order and backward in reverse."""
from __future__ import annotations

import numpy as np

from .layers.base import DTYPES, Layer
from .table import format_table


_fusion = None


def _fusion_switches() -> tuple:
    global _fusion
    if _fusion is None:
        from .layers import fusion
        _fusion = fusion
    return (_fusion.FUSE_DENSE_ACTIVATION,)   # fusion.switches(), without the call


class Sequential:
    """A feed-forward network.

    ``Sequential(layers, seed=0, dtype="float32")`` names the layers
    (``dense_0``, ``relu_1``, ...) where no name was given, draws every
    layer's initial parameters from one Generator seeded by ``seed`` and casts
    them to ``dtype``. Pass ``seed=None`` to keep the parameters the layers
    already hold (for example pretrained ones).

    Random layers (Dropout, anything with an ``rng`` Generator) are seeded by
    ``seed`` as well. With ``seed=None`` (and so for every model rebuilt from
    a file) ``layer_rngs_seeded`` is False and ``fit(seed=)`` seeds them from
    its own seed before training; ``seed_random_layers(seed)`` does it by hand.
    """

    def __init__(self, layers: list[Layer], seed: int | None = 0, dtype="float32",
                 input_shape: tuple[int, ...] | None = None):
        if not layers:
            raise ValueError("Sequential needs at least one layer")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential: item {i} is a {type(layer).__name__}, not a Layer")
        self.layers = list(layers)
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        taken = set()
        for i, layer in enumerate(self.layers):
            if layer.name is None:
                layer.name = f"{type(layer).__name__.lower()}_{i}"
            if layer.name in taken:
                raise ValueError(f"Sequential: two layers are named {layer.name!r}")
            taken.add(layer.name)
        self.dtype = DTYPES[dtype] if isinstance(dtype, str) else np.dtype(dtype).type
        self.layer_rngs_seeded = seed is not None
        if seed is not None:
            self.initialize(seed)
        self.cast(self.dtype)

    def initialize(self, seed) -> None:
        rng = np.random.default_rng(seed)
        for layer in self.layers:
            layer.initialize(rng)

    def seed_random_layers(self, seed) -> None:
        """Give every layer that draws random numbers (a Generator ``rng``) a
        fresh Generator: layer i gets SeedSequence(seed, spawn_key=(i,)), so
        the streams are independent and depend on the seed only."""
        for i, layer in enumerate(self.layers):
            if isinstance(getattr(layer, "rng", None), np.random.Generator):
                layer.rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(i,)))
        self.layer_rngs_seeded = True

    def cast(self, dtype) -> "Sequential":
        self.dtype = np.dtype(dtype).type
        for layer in self.layers:
            layer.cast(self.dtype)
        return self

    # -- running the net ----------------------------------------------------
    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        x = np.asarray(x)
        if x.dtype != self.dtype:       # self.dtype is a float type: this is the cast rule
            x = x.astype(self.dtype)
        for _, step in self.plan():
            x = step.forward(x, training)
        return x

    def plan(self) -> list:
        """[(index of the step's first layer, step)]: the layers, with neighbouring
        pairs fused into one step where ``layers.fusion`` has a pair for them (a Dense
        or SparseDense and its activation). Kept between calls, so
        that backward runs the steps forward ran (a pair remembers whether its fused
        kernels ran); rebuilt when the list of layers or fusion's switches change."""
        cached = self.__dict__.get("_plan")
        # (the switches, a copy of the list of layers, the steps); comparing the lists
        # compares the layers by identity (~0.2 µs; called twice a training step)
        if cached is not None and cached[0] == _fusion_switches() and cached[1] == self.layers:
            return cached[2]
        from .layers import fusion
        self._plan = (fusion.switches(), list(self.layers), fusion.fused_steps(self.layers))
        return self._plan[2]

    __call__ = forward

    def backward(self, grad: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        """Backpropagate dL/d(output); fills every layer's ``grads``.

        Returns dL/d(input), or None with ``input_grad=False``: training needs
        no gradient for the data, so the layers before the first trainable one
        are skipped and that one computes its parameter gradients only."""
        steps = self.plan()                          # the steps forward ran
        if input_grad:
            for _, step in reversed(steps):
                grad = step.backward(grad)
            return grad
        first = next((i for i, l in enumerate(self.layers) if l.params), len(self.layers))
        if first == len(self.layers):
            return None
        for i, step in reversed(steps):
            if i == first:          # the first trainable layer (or a pair it begins)
                step.backward_params(grad)
                return None
            if i < first:           # first lies inside this fused step: its whole backward
                step.backward(grad)
                return None
            grad = step.backward(grad)
        return None

    def infer(self, x: np.ndarray) -> np.ndarray:
        """``forward(x, training=False)`` through the fused, cache-free inference
        plan (``minidnn.inference``): the same outputs to float rounding, nothing
        kept on the layers for a backward pass. Built on first use and rebuilt
        when the list of layers changes; it reads the parameters on every call."""
        x = np.asarray(x)
        if not np.issubdtype(x.dtype, np.floating) or x.dtype != self.dtype:
            x = x.astype(self.dtype)
        plan = self.__dict__.get("_inference_plan")
        if plan is None or not plan.matches(self.layers):
            from .inference import InferencePlan
            plan = self._inference_plan = InferencePlan(self.layers)
        return plan(x)

    def predict(self, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        """Outputs (logits) for all of ``x`` in evaluation mode, in batches
        (through ``infer``)."""
        from .checks import check_positive_int
        batch_size = check_positive_int(batch_size, "predict: batch_size")
        if len(x) == 0:
            raise ValueError("predict: x is empty (0 samples)")
        outs = [self.infer(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
        return outs[0] if len(outs) == 1 else np.concatenate(outs, axis=0)

    # -- introspection ------------------------------------------------------
    @property
    def n_params(self) -> int:
        return sum(layer.n_params for layer in self.layers)

    def named_params(self):
        for layer in self.layers:
            for pname, value in layer.params.items():
                yield f"{layer.name}/{pname}", value

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no layer named {name!r}; layers: {[l.name for l in self.layers]}")

    def summary(self, input_shape: tuple[int, ...] | None = None) -> str:
        """A table of layers, output shapes, parameter counts and bytes."""
        shape = tuple(input_shape or self.input_shape or ()) or None
        rows = [("layer", "type", "output shape", "params", "storage", "bytes")]
        total_bytes = 0
        for layer in self.layers:
            if shape is not None:
                try:
                    shape = layer.output_shape(shape)
                    shown = "(batch, " + ", ".join(map(str, shape)) + ")"
                except Exception:  # a layer that cannot infer shapes
                    shape, shown = None, "?"
            else:
                shown = "?"
            nbytes = layer.storage_bytes()
            total_bytes += nbytes
            rows.append((layer.name, repr(layer), shown, f"{layer.n_params:,}",
                         layer.storage_format(), f"{nbytes:,}"))
        return format_table(rows, f"total parameters: {self.n_params:,}   bytes: {total_bytes:,}   "
                                  f"dtype: {np.dtype(self.dtype).name}")

    def get_config(self) -> dict:
        return {"dtype": np.dtype(self.dtype).name,
                "input_shape": list(self.input_shape) if self.input_shape else None,
                "layers": [{"class": type(l).__name__, "config": l.get_config()}
                           for l in self.layers]}

    @classmethod
    def from_config(cls, config: dict) -> "Sequential":
        from .layers import layer_from_config
        layers = [layer_from_config(item["class"], item["config"]) for item in config["layers"]]
        model = cls(layers, seed=None, dtype=config.get("dtype", "float32"),
                    input_shape=config.get("input_shape"))
        # A model file holds no RNG state: seed 0 here, so that no draw ever
        # comes from OS entropy, and leave the flag False so that fit(seed=)
        # reseeds the random layers from its own seed.
        model.seed_random_layers(0)
        model.layer_rngs_seeded = False
        return model
