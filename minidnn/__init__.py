"""minidnn: a from-scratch deep-learning engine on NumPy and Numba."""
__version__ = "0.1.0"

import os as _os

# Numba's OpenMP threads busy-wait after each parallel kernel by default,
# stealing the cores that the next BLAS call (OpenBLAS's own threads) needs:
# on 2 cores a LeNet step took 55 ms instead of 21 ms. Passive waiting hands
# the cores back. setdefault keeps a user's own choice.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .layers import (AvgPool2D, BatchNorm, Conv2D, Dense, Dropout, Flatten,  # noqa: E402
                     Identity, Layer, MaxPool2D, ReLU, Sigmoid, Tanh)
from .losses import MSE, SoftmaxCrossEntropy  # noqa: E402
from .model import Sequential  # noqa: E402
from .optimizers import SGD, ConstantLR, StepLR  # noqa: E402
from .io import load, save  # noqa: E402
from .training import History, TrainingDiverged, evaluate, fit  # noqa: E402
from .sparse import SparseDense, prune_to_density  # noqa: E402  (registers the layer)

__all__ = ["__version__", "Layer", "Dense", "Conv2D", "MaxPool2D", "AvgPool2D", "ReLU", "Sigmoid", "Tanh", "Identity", "Flatten",
           "Dropout", "BatchNorm", "MSE", "SoftmaxCrossEntropy", "Sequential", "SGD",
           "ConstantLR", "StepLR", "save", "load", "fit", "evaluate", "History",
           "TrainingDiverged", "SparseDense", "prune_to_density"]
