"""Named architectures used by the papers, and a compact MLP notation.

``build("mlp:784-500-10:relu")``  a multilayer perceptron
``build("lenet")``                Caffe's LeNet for 1×28×28 inputs
``build("cifar10-quick")``        Caffe's Cifar10_quick for 3×32×32 inputs
"""
from __future__ import annotations

from .layers import Dense, Flatten, ReLU, Sigmoid, Tanh
from .model import Sequential

ACTIVATIONS = {"relu": ReLU, "sigmoid": Sigmoid, "tanh": Tanh}


def mlp(sizes: list[int], activation: str = "relu", seed: int | None = 0,
        dtype="float32") -> Sequential:
    """Flatten → Dense → act → … → Dense (logits). ``sizes`` includes input and output."""
    if len(sizes) < 2 or any(int(s) <= 0 for s in sizes):
        raise ValueError(f"an MLP needs at least two positive layer sizes, got {sizes}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose from {sorted(ACTIVATIONS)}")
    init = "he" if activation == "relu" else "glorot"
    layers = [Flatten()]
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        last = i == len(sizes) - 2
        layers.append(Dense(n_in, n_out, init="glorot" if last else init))
        if not last:
            layers.append(ACTIVATIONS[activation]())
    return Sequential(layers, seed=seed, dtype=dtype, input_shape=(int(sizes[0]),))


def lenet(n_classes: int = 10, in_channels: int = 1, seed: int | None = 0,
          dtype="float32") -> Sequential:
    """Caffe LeNet: conv5×5×20 → maxpool2 → conv5×5×50 → maxpool2 → dense500 → ReLU → dense."""
    from .layers import Conv2D, MaxPool2D
    return Sequential([
        Conv2D(in_channels, 20, 5, init="glorot"), MaxPool2D(2),
        Conv2D(20, 50, 5, init="glorot"), MaxPool2D(2),
        Flatten(), Dense(800, 500, init="glorot"), ReLU(), Dense(500, n_classes, init="glorot"),
    ], seed=seed, dtype=dtype, input_shape=(in_channels, 28, 28))


def cifar10_quick(n_classes: int = 10, seed: int | None = 0, dtype="float32") -> Sequential:
    """Caffe Cifar10_quick: conv5×5×32 → maxpool3/2 → ReLU → conv5×5×32 → ReLU → avgpool3/2
    → conv5×5×64 → ReLU → avgpool3/2 → dense64 → dense (paddings 2, Caffe ceil-mode pools)."""
    from .layers import AvgPool2D, Conv2D, MaxPool2D
    return Sequential([
        Conv2D(3, 32, 5, padding=2), MaxPool2D(3, 2, ceil_mode=True), ReLU(),
        Conv2D(32, 32, 5, padding=2), ReLU(), AvgPool2D(3, 2, ceil_mode=True),
        Conv2D(32, 64, 5, padding=2), ReLU(), AvgPool2D(3, 2, ceil_mode=True),
        Flatten(), Dense(64 * 4 * 4, 64), Dense(64, n_classes),
    ], seed=seed, dtype=dtype, input_shape=(3, 32, 32))


def build(spec: str, n_classes: int = 10, input_shape=(1, 28, 28), seed: int | None = 0,
          dtype="float32") -> Sequential:
    """A model from a name: ``lenet``, ``cifar10-quick`` or ``mlp:784-500-10[:relu]``."""
    name, _, rest = spec.partition(":")
    if name == "lenet":
        return lenet(n_classes, in_channels=input_shape[0], seed=seed, dtype=dtype)
    if name in ("cifar10-quick", "cifar10_quick"):
        return cifar10_quick(n_classes, seed=seed, dtype=dtype)
    if name == "mlp":
        sizes_text, _, activation = rest.partition(":")
        try:
            sizes = [int(s) for s in sizes_text.split("-")] if sizes_text else []
        except ValueError:
            raise ValueError(f"bad MLP sizes {sizes_text!r}: write e.g. mlp:784-500-10:relu") from None
        if not sizes:
            n_in = 1
            for d in input_shape:
                n_in *= int(d)
            sizes = [n_in, 500, n_classes]
        return mlp(sizes, activation or "relu", seed=seed, dtype=dtype)
    raise ValueError(f"unknown architecture {spec!r}: use lenet, cifar10-quick or "
                     f"mlp:SIZES[:ACTIVATION], e.g. mlp:784-500-10:sigmoid")
