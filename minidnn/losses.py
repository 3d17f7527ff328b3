"""Losses: each returns the mean loss over the batch and its gradient."""
from __future__ import annotations

import numpy as np

from .kernels import softmax_xent


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log softmax along axis 1, stable for any logits (log-sum-exp trick).

    Logits further apart than the float range give -inf for the far ones (the
    exact limit; exp(-inf) = 0), never NaN, so the overflow is not warned about."""
    with np.errstate(over="ignore"):
        shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _check_batch(pred, target, name):
    if pred.shape[0] != target.shape[0]:
        raise ValueError(f"{name}: predictions have batch {pred.shape[0]} but targets have "
                         f"{target.shape[0]}")


class SoftmaxCrossEntropy:
    """L = -1/N Σ_n log softmax(z_n)[y_n]; dL/dz = (softmax(z) - onehot(y)) / N.

    Targets are integer class labels (batch,) or one-hot/probabilities
    (batch, classes). Only the classes a target puts weight on enter the sum,
    so a class whose log-probability is -inf (logits further apart than the
    float range) adds 0, not 0·(-inf) = NaN, as PyTorch's cross_entropy."""

    name = "softmax_cross_entropy"

    def __call__(self, logits: np.ndarray, target: np.ndarray):
        _check_batch(logits, target, "SoftmaxCrossEntropy")
        if logits.ndim != 2:
            raise ValueError(f"SoftmaxCrossEntropy expects logits (batch, classes), got {logits.shape}")
        # integer labels: four Numba passes around NumPy's exp/log, the same bits as
        # the NumPy path below in a fraction of its ~20 small calls (a tenth of a
        # training step of the 784-500-10 net); a bad label falls through to its error
        if softmax_xent.applies(logits, target):
            result = softmax_xent.softmax_cross_entropy(logits, target)
            if result is not None:
                return result
        return self._numpy(logits, target)

    def _numpy(self, logits: np.ndarray, target: np.ndarray):
        """The definition (and the twin of ``kernels.softmax_xent``)."""
        n, k = logits.shape
        logp = log_softmax(logits)
        if target.ndim == 1:
            if not np.issubdtype(target.dtype, np.integer):
                raise ValueError(f"SoftmaxCrossEntropy: class labels must be integers, got "
                                 f"dtype {target.dtype}; convert them with y.astype(np.int64), "
                                 f"or pass one-hot/probability targets of shape (batch, {k})")
            if target.size and (target.min() < 0 or target.max() >= k):
                raise ValueError(f"SoftmaxCrossEntropy: labels must be in [0, {k}), "
                                 f"got range [{target.min()}, {target.max()}]")
            onehot = np.zeros_like(logits)
            onehot[np.arange(n), target] = 1
            # summed in float64: a float32 sum of finite per-sample losses may overflow
            loss = -logp[np.arange(n), target].sum(dtype=np.float64) / n
        else:
            if target.shape != logits.shape:
                raise ValueError(f"SoftmaxCrossEntropy: targets of shape {target.shape} for "
                                 f"logits of shape {logits.shape}; give class labels (batch,) "
                                 f"or probabilities (batch, {k})")
            onehot = target.astype(logits.dtype)
            loss = -(onehot * np.where(onehot != 0, logp, 0)).sum(dtype=np.float64) / n
        grad = (np.exp(logp) - onehot) / logits.dtype.type(n)
        return float(loss) + 0.0, grad.astype(logits.dtype, copy=False)  # + 0.0: no -0.0


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
