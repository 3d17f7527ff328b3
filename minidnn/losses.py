"""Losses: each returns the mean loss over the batch and its gradient."""
from __future__ import annotations

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log softmax along axis 1, stable for any logits (log-sum-exp trick)."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _check_batch(pred, target, name):
    if pred.shape[0] != target.shape[0]:
        raise ValueError(f"{name}: predictions have batch {pred.shape[0]} but targets have "
                         f"{target.shape[0]}")


class SoftmaxCrossEntropy:
    """L = -1/N Σ_n log softmax(z_n)[y_n]; dL/dz = (softmax(z) - onehot(y)) / N.

    Targets are integer class labels (batch,) or one-hot/probabilities
    (batch, classes)."""

    name = "softmax_cross_entropy"

    def __call__(self, logits: np.ndarray, target: np.ndarray):
        _check_batch(logits, target, "SoftmaxCrossEntropy")
        if logits.ndim != 2:
            raise ValueError(f"SoftmaxCrossEntropy expects logits (batch, classes), got {logits.shape}")
        n, k = logits.shape
        logp = log_softmax(logits)
        if target.ndim == 1:
            if target.size and (target.min() < 0 or target.max() >= k):
                raise ValueError(f"SoftmaxCrossEntropy: labels must be in [0, {k}), "
                                 f"got range [{target.min()}, {target.max()}]")
            onehot = np.zeros_like(logits)
            onehot[np.arange(n), target] = 1
        else:
            onehot = target.astype(logits.dtype)
        loss = -(onehot * logp).sum() / n
        grad = (np.exp(logp) - onehot) / logits.dtype.type(n)
        return float(loss), grad.astype(logits.dtype, copy=False)


class MSE:
    """L = 1/N Σ_n ½‖y_n - t_n‖²; dL/dy = (y - t)/N.

    The ½ and the per-sample (not per-element) mean follow the autoencoder
    papers; ``per_element=True`` averages over elements as torch's MSELoss."""

    name = "mse"

    def __init__(self, per_element: bool = False):
        self.per_element = per_element

    def __call__(self, pred: np.ndarray, target: np.ndarray):
        _check_batch(pred, target, "MSE")
        if pred.shape != target.shape:
            raise ValueError(f"MSE: prediction shape {pred.shape} != target shape {target.shape}")
        diff = pred - target.astype(pred.dtype)
        if self.per_element:
            return float((diff ** 2).mean()), (2 * diff / pred.dtype.type(diff.size))
        n = pred.shape[0]
        return float(0.5 * (diff ** 2).sum() / n), diff / pred.dtype.type(n)


LOSSES = {"softmax_cross_entropy": SoftmaxCrossEntropy, "mse": MSE}
