"""Quantization: bit-mask fixed-point patterns, post-training rounding, integer layers, search.

Technique 2 (issue #10): ``BitMaskPattern`` (``bitmask``), rounding and the
quantized Conv2D/Dense layers with an integer inference path (``ptq``), and
the automatic pattern search on validation data (``search``).
"""
from .bitmask import BitMaskPattern, enumerate_patterns
from .ptq import (QuantizedConv2D, QuantizedDense, calibrate, dequantize, quantize_layer,
                  quantize_model, quantize_to_pattern, round_to_pattern, set_integer,
                  weight_bytes)
from .search import SearchResult, search_patterns

__all__ = ["BitMaskPattern", "enumerate_patterns", "QuantizedConv2D", "QuantizedDense",
           "calibrate", "dequantize", "quantize_layer", "quantize_model", "quantize_to_pattern",
           "round_to_pattern", "set_integer", "weight_bytes", "SearchResult", "search_patterns"]
