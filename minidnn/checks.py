"""Checks shared by the public entry points: batch sizes, non-finite weights.

Every function that takes a batch size (``fit``, ``evaluate``,
``Sequential.predict``, the CLI) validates it here, so each says the same
thing: what was expected and what was given.
"""
from __future__ import annotations

import numbers

import numpy as np


class NonFiniteWarning(RuntimeWarning):
    """A model holds NaN or Inf weights, or produced NaN or Inf outputs."""


def check_positive_int(value, what: str) -> int:
    """``value`` as an int >= 1; TypeError for a non-integer, ValueError for < 1."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{what} must be a positive integer, got {value!r} "
                        f"({type(value).__name__})")
    if value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value}")
    return int(value)


def nonfinite_arrays(model) -> list[tuple[str, float]]:
    """``[(layer/kind/name, fraction non-finite), ...]`` over every floating
    parameter and buffer of ``model`` (empty when all are finite)."""
    found = []
    for layer in model.layers:
        params, buffers = layer.state_for_file()
        for kind, store in (("params", params), ("buffers", buffers)):
            for key, value in store.items():
                value = np.asarray(value)
                if np.issubdtype(value.dtype, np.floating) and value.size:
                    bad = np.count_nonzero(~np.isfinite(value))
                    if bad:
                        found.append((f"{layer.name}/{key}", bad / value.size))
    return found


def describe_nonfinite(found: list[tuple[str, float]], limit: int = 4) -> str:
    """``"dense_0/W (100% NaN/Inf), dense_0/b (3%)"``, at most ``limit`` names."""
    shown = [f"{name} ({100 * fraction:.3g}% NaN/Inf)" for name, fraction in found[:limit]]
    more = f" and {len(found) - limit} more" if len(found) > limit else ""
    return ", ".join(shown) + more
