"""minidnn: a from-scratch deep-learning engine on NumPy and Numba."""
__version__ = "0.1.0"

# Importing minidnn changes nothing in the host process (no environment
# variables, thread pools or seeds); minidnn.configure_threads(n) is the one
# explicit, documented process-wide set-up (see minidnn/threads.py).
from .layers import (AvgPool2D, BatchNorm, Conv2D, Dense, Dropout, Flatten,  # noqa: E402
                     Identity, Layer, MaxPool2D, ReLU, Sigmoid, Tanh)
from .losses import MSE, SoftmaxCrossEntropy  # noqa: E402
from .model import Sequential  # noqa: E402
from .optimizers import SGD, ConstantLR, StepLR  # noqa: E402
from .io import load, save  # noqa: E402
from .training import History, TrainingDiverged, evaluate, fit  # noqa: E402
from .threads import configure_threads  # noqa: E402
from . import quantization  # noqa: E402,F401  (registers the discrete and bit-mask quantized layers for model files)
from .sparse import SparseDense, prune_to_density  # noqa: E402  (registers the layer)

__all__ = ["__version__", "Layer", "Dense", "Conv2D", "MaxPool2D", "AvgPool2D", "ReLU", "Sigmoid", "Tanh", "Identity", "Flatten",
           "Dropout", "BatchNorm", "MSE", "SoftmaxCrossEntropy", "Sequential", "SGD",
           "ConstantLR", "StepLR", "save", "load", "fit", "evaluate", "History",
           "TrainingDiverged", "configure_threads", "SparseDense", "prune_to_density"]
