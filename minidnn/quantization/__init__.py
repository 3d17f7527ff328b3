"""Weights held as integer codes (techniques 1 and 2 of SPEC.md): one package for grids,
patterns, rounding, quantized layers and their integer kernels.

Technique 1 (power-of-two grids, randomized rounding, per-layer gain):

* ``PowerOfTwoGrid``: step Δ = 2^−k on [−1, 1], int8 codes, packing (``grids``);
* ``DiscreteDense``: codes + gain, trained as Q ← RR(Q − η∂L/∂Q) with no float
  weight copy; ``ShadowDiscreteDense``: the BinaryConnect control (``discrete``);
* ``discretize(model_or_stack, grid, ...)``, ``export_discrete(model)``;
* ``FusedTernaryNet.from_model(model)``: a ternary model's whole forward in one
  kernel call (``fused``; kernels in ``minidnn.kernels.ternary_net``);
* kernels: ``minidnn.kernels.rounding`` (randomized / nearest rounding) and
  ``minidnn.kernels.quantized_matmul`` (ternary add/subtract, int-code product).

Technique 2 (post-training fixed point with bit masks): ``BitMaskPattern``
(``bitmask``), rounding and the quantized Conv2D/Dense layers with an integer
inference path (``ptq``), and the automatic pattern search on validation data
(``search``); its int32-accumulating kernels are in
``minidnn.kernels.quantized_matmul`` too.
"""
from .bitmask import BitMaskPattern, enumerate_patterns
from .discrete import (DiscreteDense, ShadowDiscreteDense, discretize, export_discrete,
                       weight_storage_bytes)
from .fused import FusedTernaryNet
from .grids import PowerOfTwoGrid, parse_step
from .ptq import (QuantizedConv2D, QuantizedDense, calibrate, dequantize, quantize_layer,
                  quantize_model, quantize_to_pattern, round_to_pattern, set_integer,
                  weight_bytes)
from .search import SearchResult, search_patterns

__all__ = ["PowerOfTwoGrid", "parse_step", "DiscreteDense", "ShadowDiscreteDense",
           "discretize", "export_discrete", "weight_storage_bytes", "FusedTernaryNet",
           "BitMaskPattern", "enumerate_patterns", "QuantizedConv2D", "QuantizedDense",
           "calibrate", "dequantize", "quantize_layer", "quantize_model", "quantize_to_pattern",
           "round_to_pattern", "set_integer", "weight_bytes", "SearchResult", "search_patterns"]
