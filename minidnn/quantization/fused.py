"""A trained ternary model compiled into one inference call (technique 1).

``FusedTernaryNet.from_model(model)`` takes a ``Sequential`` of ternary
``DiscreteDense`` layers (Δ = 2^0) with ``Sigmoid``, ``ReLU`` or ``Identity``
activations between them (a leading ``Flatten`` is allowed) and runs its whole
forward pass in one kernel call of ``minidnn.kernels.ternary_net``: additions
and subtractions of the inputs selected by the codes, one scale g·Δ per
output, no per-layer Python (below batch 16 on AVX2 CPUs through subset-sum
tables, ``minidnn.kernels.ternary_lut``); or, from batch 16 (8 without AVX2; up to
31 when the codes are sparse), one BLAS product a layer on the codes expanded into a
float32 scratch of one layer, except for a sparse input with whole-batch-zero columns
(MNIST pixels), which is added straight from the int8 codes. The model's own
``forward`` (layer by layer) is the reference it is tested against.

    net = FusedTernaryNet.from_model(model)
    logits = net.forward(x)          # float32 (batch, classes)
    labels = net.predict(x)

The net is a snapshot of the codes: rebuild it after training the model further.
"""
from __future__ import annotations

import numpy as np

from ..kernels import ternary_net as tn
from ..layers import Flatten, Identity, ReLU, Sigmoid
from .discrete import DiscreteDense

_ACTIVATION_OF = {Sigmoid: "sigmoid", ReLU: "relu", Identity: "identity"}


class FusedTernaryNet:
    """Whole-model ternary inference: f_L(s_L·(… f_1(s_1·(x c_1) + b_1) …) c_L) + b_L)."""

    def __init__(self, plan: tn.TernaryNetPlan, input_shape=None):
        self.plan = plan
        self.input_shape = input_shape
        if tn.ternary_lut.LUT_AVAILABLE:       # the lut path's code bytes, built once here
            tn.ternary_lut.lut_plan_for(plan)

    @classmethod
    def from_model(cls, model) -> "FusedTernaryNet":
        """Compile ``model`` (see the module docstring for what it may contain)."""
        layers, pending = [], None
        for k, layer in enumerate(model.layers):
            if isinstance(layer, Flatten) and k == 0:
                continue
            if isinstance(layer, DiscreteDense):
                if not layer.grid.is_ternary:
                    raise ValueError(f"FusedTernaryNet takes ternary layers (grid 2^0); layer "
                                     f"{layer.name} is on {layer.grid!r}")
                if pending is not None:
                    layers.append((*pending, "identity"))
                pending = (layer.params["codes"], layer.scale, layer.params.get("b"))
            elif type(layer) in _ACTIVATION_OF and pending is not None:
                layers.append((*pending, _ACTIVATION_OF[type(layer)]))
                pending = None
            else:
                raise ValueError(
                    f"FusedTernaryNet takes [Flatten,] ternary DiscreteDense layers each "
                    f"followed by at most one Sigmoid, ReLU or Identity; layer {k} is "
                    f"{layer!r}" + (" (an activation with no DiscreteDense before it)"
                                    if type(layer) in _ACTIVATION_OF else ""))
        if pending is not None:
            layers.append((*pending, "identity"))
        if not layers:
            raise ValueError("FusedTernaryNet: the model has no DiscreteDense layer")
        return cls(tn.ternary_net_plan(layers), getattr(model, "input_shape", None))

    def forward(self, x: np.ndarray, path: str = "auto") -> np.ndarray:
        """Output (batch, classes) float32 for x (batch, features) or images (flattened).

        ``path`` (``minidnn.kernels.ternary_net.choose_path`` when "auto"): "lut"
        (subset-sum tables, one sample at a time, batches < 16 on AVX2 CPUs), "rows"
        (one sample at a time, small batches without AVX2), "columns" (add-only, batch-inner;
        sparse codes at large batches) or "gemm" (per layer, the codes expanded into
        a float32 scratch of one layer for a BLAS product, made in the call and
        dropped after it; the other batches ≥ 8)."""
        x = np.asarray(x)
        if x.ndim > 2:
            x = x.reshape(x.shape[0], -1)
        return tn.ternary_net_forward(x, self.plan, path=path)

    def path_for(self, batch: int) -> str:
        """The path ``forward`` takes at this batch size."""
        return tn.choose_path(batch, self.plan)

    __call__ = forward

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Class labels: argmax of ``forward``."""
        return self.forward(x).argmax(axis=1)

    def __repr__(self):
        return f"FusedTernaryNet({'-'.join(str(int(n)) for n in self.plan.sizes)})"
