"""Inverted dropout (Srivastava et al., 2014)."""
from __future__ import annotations

import numpy as np

from .base import Layer, as_generator


class Dropout(Layer):
    """In training, zero each unit with probability ``rate`` and scale the
    survivors by 1/(1-rate) so that E[output] = input; in evaluation, the
    identity. The mask comes from the layer's own Generator, whose state the
    checkpoint saves, so a resumed run draws the same masks."""

    def __init__(self, rate: float = 0.5, rng=None, name: str | None = None):
        super().__init__(name)
        if not 0.0 <= float(rate) < 1.0:
            raise ValueError(f"Dropout rate must be in [0, 1), got {rate}")
        self.rate = float(rate)
        self.rng = as_generator(rng)

    def initialize(self, rng):
        self.rng = np.random.default_rng(rng.integers(2**63))

    def forward(self, x, training=False):
        if not training or self.rate == 0.0:
            self._mask = None
            return x
        keep = 1.0 - self.rate
        self._mask = (self.rng.random(x.shape) < keep).astype(x.dtype) / x.dtype.type(keep)
        return x * self._mask

    def backward(self, grad):
        return grad if self._mask is None else grad * self._mask

    def get_config(self):
        return {"rate": self.rate, "name": self.name}
