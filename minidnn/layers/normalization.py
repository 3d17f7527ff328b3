"""Batch normalization (Ioffe & Szegedy, 2015) for dense and conv inputs."""
from __future__ import annotations

import numpy as np

from .base import Layer


class BatchNorm(Layer):
    """y = γ (x - μ_B) / sqrt(σ²_B + eps) + β per feature.

    Features are axis 1: a dense input (batch, C) or a conv input
    (batch, C, H, W), whose statistics are taken over batch, H and W.
    Training uses the batch statistics and updates the running ones,
    running ← (1-momentum)·running + momentum·batch (the unbiased batch
    variance, as PyTorch); evaluation uses the running ones.

    A training batch must give more than one value per feature (PyTorch
    refuses it too): one sample of a dense input has zero batch variance, and
    its running-variance update would pull the statistics that evaluation uses
    towards 0. ``fit`` therefore drops a short last batch by default when a
    model has batch norm (``drop_last``).
    """

    def __init__(self, num_features: int, momentum: float = 0.1, eps: float = 1e-5,
                 name: str | None = None):
        super().__init__(name)
        if int(num_features) <= 0:
            raise ValueError(f"BatchNorm needs num_features > 0, got {num_features}")
        self.num_features = int(num_features)
        self.momentum = float(momentum)
        self.eps = float(eps)
        self.initialize(None)

    def initialize(self, rng):
        C = self.num_features
        self.params = {"gamma": np.ones(C, self.dtype), "beta": np.zeros(C, self.dtype)}
        self.buffers = {"running_mean": np.zeros(C, self.dtype),
                        "running_var": np.ones(C, self.dtype)}
        self.zero_grads()

    def _axes(self, x):
        if x.ndim not in (2, 4) or x.shape[1] != self.num_features:
            raise ValueError(
                f"{self!r} expects input of shape (batch, {self.num_features}) or "
                f"(batch, {self.num_features}, H, W), got {tuple(x.shape)}")
        return (0,) if x.ndim == 2 else (0, 2, 3)

    def _per_feature(self, v, ndim):
        return v if ndim == 2 else v.reshape(1, -1, 1, 1)

    def forward(self, x, training=False):
        axes = self._axes(x)
        if training:
            if x.size <= self.num_features:
                label = f"layer {self.name} ({self!r})" if self.name else repr(self)
                raise ValueError(
                    f"{label} needs more than one value per feature in training, got input of "
                    f"shape {tuple(x.shape)}: the batch variance of one sample is 0. Use "
                    f"batches of 2 or more (fit(drop_last=True) drops a short last batch), "
                    f"or evaluation mode (training=False)")
            mean = x.mean(axis=axes)
            var = x.var(axis=axes)
            n = x.size // self.num_features
            m = self.momentum
            self.buffers["running_mean"] = ((1 - m) * self.buffers["running_mean"] + m * mean).astype(self.dtype)
            unbiased = var * (n / max(n - 1, 1))
            self.buffers["running_var"] = ((1 - m) * self.buffers["running_var"] + m * unbiased).astype(self.dtype)
        else:
            mean, var = self.buffers["running_mean"], self.buffers["running_var"]
        inv_std = 1.0 / np.sqrt(var + self.eps)
        x_hat = (x - self._per_feature(mean, x.ndim)) * self._per_feature(inv_std, x.ndim)
        self._cache = (x_hat, inv_std, axes, training)
        return (self._per_feature(self.params["gamma"], x.ndim) * x_hat
                + self._per_feature(self.params["beta"], x.ndim)).astype(x.dtype, copy=False)

    def backward(self, grad):
        # Compact form of the batch-statistics derivative:
        # dx = γ/σ · (g - mean(g) - x̂ · mean(g·x̂)), means over the reduced axes.
        x_hat, inv_std, axes, training = self._cache
        self.grads["gamma"] = (grad * x_hat).sum(axis=axes)
        self.grads["beta"] = grad.sum(axis=axes)
        n = grad.size // self.num_features
        pf = lambda v: self._per_feature(v, grad.ndim)  # noqa: E731
        if not training:  # running statistics are constants
            return (pf(self.params["gamma"] * inv_std) * grad).astype(grad.dtype, copy=False)
        mean_g = pf(self.grads["beta"] / n)
        mean_gx = pf(self.grads["gamma"] / n)
        return (pf(self.params["gamma"] * inv_std) * (grad - mean_g - x_hat * mean_gx)).astype(grad.dtype, copy=False)

    def get_config(self):
        return {"num_features": self.num_features, "momentum": self.momentum,
                "eps": self.eps, "name": self.name}
