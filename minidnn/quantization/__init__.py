"""Weights held as integer codes on a grid (techniques 1 and 2 of SPEC.md).

Technique 1 (power-of-two grids, randomized rounding, per-layer gain):

* ``PowerOfTwoGrid``: step Δ = 2^−k on [−1, 1], int8 codes, packing (``grids``);
* ``DiscreteDense``: codes + gain, trained as Q ← RR(Q − η∂L/∂Q) with no float
  weight copy; ``ShadowDiscreteDense``: the BinaryConnect control (``discrete``);
* ``discretize(model_or_stack, grid, ...)``, ``export_discrete(model)``;
* kernels: ``minidnn.kernels.rounding`` (randomized / nearest rounding) and
  ``minidnn.kernels.quantized_matmul`` (ternary add/subtract, int-code product).
"""
from .discrete import (DiscreteDense, ShadowDiscreteDense, discretize, export_discrete,
                       weight_storage_bytes)
from .grids import PowerOfTwoGrid, parse_step

__all__ = ["PowerOfTwoGrid", "parse_step", "DiscreteDense", "ShadowDiscreteDense",
           "discretize", "export_discrete", "weight_storage_bytes"]
