"""Named architectures used by the papers, and a compact MLP notation.

``build("mlp:784-500-10:relu")``  a multilayer perceptron
``build("lenet")``                Caffe's LeNet for 1×28×28 inputs
``build("cifar10-quick")``        Caffe's Cifar10_quick for 3×32×32 inputs
``build("vgg-cifar:width=8,fc=512,bn=conv")``  VGG-16's stages on 3×32×32 (``vgg_cifar``)
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


#: VGG-16's conv stages (Simonyan & Zisserman, 2015, configuration D), channels as
#: multiples of the first stage's width (64 in VGG-16); "M" is a 2×2 max pool
VGG16_STAGES = ((1, 1, "M"), (2, 2, "M"), (4, 4, 4, "M"), (8, 8, 8, "M"), (8, 8, 8, "M"))


def vgg_cifar(n_classes: int = 10, width: int = 8, fc: int = 512, dropout: float = 0.0,
              bn_conv: bool = False, bn_fc: bool = False, in_channels: int = 3,
              seed: int | None = 0, dtype="float32") -> Sequential:
    """VGG-16 (configuration D) for 3×32×32 inputs with fewer channels.

    13 3×3 convolutions (padding 1) in VGG-16's five stages of
    width·(1, 1 | 2, 2 | 4, 4, 4 | 8, 8, 8 | 8, 8, 8) channels, each stage
    ending in a 2×2 max pool (32×32 → 1×1), then fc6: 8·width → fc,
    fc7: fc → fc (the two square FC layers of the paper), fc8: fc → classes.
    VGG-16 itself is width=64, fc=4096 on 224×224 inputs. Options, as in the
    comparisons of Hori et al. (technique 4): ``dropout`` after fc6 and fc7
    (rate; 0 = none), ``bn_conv`` (BatchNorm between each conv and its ReLU),
    ``bn_fc`` (BatchNorm between fc6/fc7 and their ReLU). Layers carry VGG's
    names (conv1_1 … conv5_3, fc6, fc7, fc8) so ``--semi-sync fc6,fc7`` reads.
    """
    from .layers import BatchNorm, Conv2D, Dropout, MaxPool2D
    if int(width) < 1 or int(fc) < 1:
        raise ValueError(f"vgg_cifar needs width >= 1 and fc >= 1, got width={width}, fc={fc}")
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"vgg_cifar dropout must be in [0, 1), got {dropout}")
    layers, channels = [], in_channels
    for s, stage in enumerate(VGG16_STAGES, start=1):
        for c, mult in enumerate(stage[:-1], start=1):
            out = int(width) * mult
            layers.append(Conv2D(channels, out, 3, padding=1, name=f"conv{s}_{c}"))
            if bn_conv:
                layers.append(BatchNorm(out, name=f"bn{s}_{c}"))
            layers.append(ReLU(name=f"relu{s}_{c}"))
            channels = out
        layers.append(MaxPool2D(2, name=f"pool{s}"))
    layers.append(Flatten(name="flatten"))
    n_in = channels
    for name in ("fc6", "fc7"):
        layers.append(Dense(n_in, int(fc), init="he", name=name))
        if bn_fc:
            layers.append(BatchNorm(int(fc), name=f"bn_{name}"))
        layers.append(ReLU(name=f"relu_{name}"))
        if dropout:
            layers.append(Dropout(float(dropout), name=f"drop_{name}"))
        n_in = int(fc)
    layers.append(Dense(n_in, n_classes, init="glorot", name="fc8"))
    return Sequential(layers, seed=seed, dtype=dtype, input_shape=(in_channels, 32, 32))


def _vgg_options(text: str) -> dict:
    """``width=8,fc=512,dropout=0.5,bn=conv|fc|both|none`` → vgg_cifar keywords."""
    options = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        key, eq, value = item.partition("=")
        try:
            if key in ("width", "fc") and eq:
                options[key] = int(value)
            elif key == "dropout":
                options["dropout"] = float(value) if eq else 0.5
            elif key == "bn" and value in ("conv", "fc", "both", "none"):
                options["bn_conv"] = value in ("conv", "both")
                options["bn_fc"] = value in ("fc", "both")
            else:
                raise ValueError
        except ValueError:
            raise ValueError(f"bad vgg-cifar option {item!r}: write e.g. "
                             f"vgg-cifar:width=8,fc=512,dropout=0.5,bn=conv "
                             f"(bn is conv, fc, both or none)") from None
    return options


def build(spec: str, n_classes: int = 10, input_shape=(1, 28, 28), seed: int | None = 0,
          dtype="float32") -> Sequential:
    """A model from a name: ``lenet``, ``cifar10-quick``, ``vgg-cifar[:OPTIONS]`` or
    ``mlp:784-500-10[:relu]``."""
    name, _, rest = spec.partition(":")
    if name == "lenet":
        return lenet(n_classes, in_channels=input_shape[0], seed=seed, dtype=dtype)
    if name in ("cifar10-quick", "cifar10_quick"):
        return cifar10_quick(n_classes, seed=seed, dtype=dtype)
    if name in ("vgg-cifar", "vgg_cifar"):
        if tuple(input_shape)[1:] != (32, 32):
            raise ValueError(f"vgg-cifar expects 32×32 inputs, got input shape {tuple(input_shape)}")
        return vgg_cifar(n_classes, in_channels=input_shape[0], seed=seed, dtype=dtype,
                         **_vgg_options(rest))
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
    raise ValueError(f"unknown architecture {spec!r}: use lenet, cifar10-quick, "
                     f"vgg-cifar[:width=8,fc=512,dropout=0.5,bn=conv] or "
                     f"mlp:SIZES[:ACTIVATION], e.g. mlp:784-500-10:sigmoid")
