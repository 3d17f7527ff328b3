"""Layers: one small class each, with ``forward`` and ``backward``."""
from .activations import Identity, ReLU, Sigmoid, Tanh, sigmoid
from .base import Layer
from .conv import Conv2D
from .dense import Dense
from .dropout import Dropout
from .normalization import BatchNorm
from .pooling import AvgPool2D, MaxPool2D
from .reshape import Flatten

#: class name -> class, for rebuilding a model from its saved architecture.
LAYER_TYPES = {cls.__name__: cls for cls in
               (Dense, ReLU, Sigmoid, Tanh, Identity, Flatten, Dropout, BatchNorm,
                Conv2D, MaxPool2D, AvgPool2D)}


def register_layer(cls):
    """Make a Layer subclass loadable from model files (usable as a decorator)."""
    LAYER_TYPES[cls.__name__] = cls
    return cls


def layer_from_config(class_name: str, config: dict) -> Layer:
    try:
        cls = LAYER_TYPES[class_name]
    except KeyError:
        raise ValueError(f"unknown layer type {class_name!r}; known: {sorted(LAYER_TYPES)}") from None
    return cls.from_config(config)


__all__ = ["Layer", "Dense", "ReLU", "Sigmoid", "Tanh", "Identity", "Flatten", "Dropout",
           "BatchNorm", "Conv2D", "MaxPool2D", "AvgPool2D", "sigmoid", "LAYER_TYPES",
           "register_layer", "layer_from_config"]
