"""Autoencoders for layer-wise pretraining, tied weights by default.

For a minibatch x (batch, n_visible), with W of shape (n_visible, n_hidden)
(the layout of Dense, so the encoder *is* a Dense layer):

    encoder   y  = f(x W + b)                       (batch, n_hidden)
    decoder   x' = g(y Wᵀ + c)      tied            (batch, n_visible)
              x' = g(y V + c)       untied, V of shape (n_hidden, n_visible)
    loss      L  = 1/(2N) Σ_n ‖x'_n − x_n‖²          (losses.MSE)

with f, g ∈ {sigmoid, identity}. In column-vector notation this is the
y = f(Wx + b), x' = g(Wᵀy + c) of the papers (Bengio et al., 2007,
"Greedy layer-wise training of deep networks"; SPEC technique 3). Backprop:

    δz = (x' − x)/N ⊙ g'(z),  δa = (δz W) ⊙ f'(a)        (tied; δz Vᵀ untied)
    ∂L/∂W = xᵀ δa + δzᵀ y     (tied: encoder and decoder paths)
    ∂L/∂W = xᵀ δa,  ∂L/∂V = yᵀ δz                           (untied)
    ∂L/∂b = Σ_n δa,  ∂L/∂c = Σ_n δz

The whole gradient is computed in ``loss_and_gradients`` and W is a plain
array in ``params["W"]``, so a fixed sparsity pattern can be imposed by
masking there (technique 3).
"""
from __future__ import annotations

import numpy as np

from ..layers.activations import sigmoid
from ..layers.base import ParamHolder, as_generator
from .dbn import GreedyStack, parse_layer_sizes
from .rbm import check_array

ACTIVATIONS = ("sigmoid", "identity")


def _activate(kind: str, a: np.ndarray) -> np.ndarray:
    return sigmoid(a) if kind == "sigmoid" else a


def _derivative_from_output(kind: str, out: np.ndarray):
    """f'(a) written through f(a): σ' = σ(1 − σ); identity' = 1 (None: nothing to multiply)."""
    return out * (1 - out) if kind == "sigmoid" else None


class Autoencoder(ParamHolder):
    """One autoencoder layer: ``Autoencoder(784, 500, encoder="sigmoid", decoder="sigmoid",
    tied=True, rng=0)``. W starts Glorot-uniform, biases at 0."""

    def __init__(self, n_visible: int, n_hidden: int, encoder: str = "sigmoid",
                 decoder: str = "sigmoid", tied: bool = True, rng=None, name: str | None = None,
                 dtype=np.float32):
        if int(n_visible) <= 0 or int(n_hidden) <= 0:
            raise ValueError(f"Autoencoder needs positive sizes, got n_visible={n_visible}, "
                             f"n_hidden={n_hidden}")
        for label, kind in (("encoder", encoder), ("decoder", decoder)):
            if kind not in ACTIVATIONS:
                raise ValueError(f"Autoencoder {label} must be one of {ACTIVATIONS}, got {kind!r}")
        self.n_visible, self.n_hidden = int(n_visible), int(n_hidden)
        self.encoder, self.decoder, self.tied = encoder, decoder, bool(tied)
        self.name = name or "autoencoder"
        self.dtype = np.dtype(dtype).type
        rng = as_generator(rng)
        limit = np.sqrt(6.0 / (self.n_visible + self.n_hidden))
        self.params = {
            "W": rng.uniform(-limit, limit, (self.n_visible, self.n_hidden)).astype(self.dtype),
            "hidden_bias": np.zeros(self.n_hidden, dtype=self.dtype),
            "visible_bias": np.zeros(self.n_visible, dtype=self.dtype),
        }
        if not self.tied:
            self.params["W_decoder"] = rng.uniform(
                -limit, limit, (self.n_hidden, self.n_visible)).astype(self.dtype)
        self.decay_params = ("W",) if self.tied else ("W", "W_decoder")
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}

    def get_config(self) -> dict:
        return {"n_visible": self.n_visible, "n_hidden": self.n_hidden, "encoder": self.encoder,
                "decoder": self.decoder, "tied": self.tied, "name": self.name}

    def cast(self, dtype) -> "Autoencoder":
        self.dtype = np.dtype(dtype).type
        self.params = {k: v.astype(self.dtype) for k, v in self.params.items()}
        self.grads = {k: v.astype(self.dtype) for k, v in self.grads.items()}
        return self

    def __repr__(self) -> str:
        return (f"Autoencoder({self.n_visible}, {self.n_hidden}, encoder={self.encoder!r}, "
                f"decoder={self.decoder!r}, tied={self.tied})")

    def _input(self, x):
        return check_array(x, self.n_visible, repr(self)).astype(self.dtype, copy=False)

    @property
    def W(self) -> np.ndarray:
        """The encoder weight (n_visible, n_hidden), a plain array (``params["W"]``)."""
        return self.params["W"]

    @W.setter
    def W(self, value: np.ndarray) -> None:
        value = np.asarray(value, dtype=self.dtype)
        if value.shape != self.params["W"].shape:
            raise ValueError(f"{self!r}: W must have shape {self.params['W'].shape}, got {value.shape}")
        self.params["W"] = value

    @property
    def decoder_weight(self) -> np.ndarray:
        """(n_hidden, n_visible): Wᵀ when tied, V otherwise."""
        return self.params["W"].T if self.tied else self.params["W_decoder"]

    # -- the model -----------------------------------------------------------------------
    def encode(self, x: np.ndarray) -> np.ndarray:
        """y = f(xW + b), computed exactly as Dense(W, b) + activation."""
        x = self._input(x)
        a = x @ self.params["W"]
        a += self.params["hidden_bias"]
        return _activate(self.encoder, a)

    def decode(self, y: np.ndarray) -> np.ndarray:
        """x' = g(y Wᵀ + c) (tied) or g(y V + c)."""
        y = check_array(y, self.n_hidden, repr(self), "code").astype(self.dtype, copy=False)
        z = y @ self.decoder_weight
        z += self.params["visible_bias"]
        return _activate(self.decoder, z)

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        return self.decode(self.encode(x))

    def reconstruction_error(self, x: np.ndarray) -> float:
        """Mean over samples and units of (x' − x)² (the MSE of SPEC technique 3's table)."""
        x = self._input(x)
        return float(((self.reconstruct(x) - x) ** 2).mean())

    def loss_and_gradients(self, x: np.ndarray) -> float:
        """L = 1/(2N) Σ‖x' − x‖² for the batch; fills ``self.grads`` (see module docstring)."""
        n = len(x)
        W = self.params["W"]
        a = x @ W
        a += self.params["hidden_bias"]
        y = _activate(self.encoder, a)
        z = y @ self.decoder_weight
        z += self.params["visible_bias"]
        out = _activate(self.decoder, z)
        diff = out - x
        loss = 0.5 * float(np.einsum("ij,ij->", diff, diff)) / n
        delta_z = diff / self.dtype(n)
        g_prime = _derivative_from_output(self.decoder, out)
        if g_prime is not None:
            delta_z *= g_prime
        delta_y = delta_z @ self.decoder_weight.T
        f_prime = _derivative_from_output(self.encoder, y)
        delta_a = delta_y * f_prime if f_prime is not None else delta_y
        grad_W = x.T @ delta_a
        if self.tied:
            grad_W += delta_z.T @ y
        else:
            self.grads["W_decoder"] = y.T @ delta_z
        self.grads["W"] = grad_W
        self.grads["hidden_bias"] = delta_a.sum(axis=0)
        self.grads["visible_bias"] = delta_z.sum(axis=0)
        return loss

    # -- the hooks the greedy trainer calls ------------------------------------------------
    def init_from_data(self, x: np.ndarray) -> None:
        """Autoencoders start from their random init; nothing is taken from the data."""

    def new_train_state(self, x, config, rng) -> dict:
        return {}

    def train_batch(self, xb: np.ndarray, rng, config, state: dict) -> dict:
        xb = np.asarray(xb, dtype=self.dtype)
        loss = self.loss_and_gradients(xb)
        return {"loss": loss, "reconstruction_error": 2 * loss / self.n_visible}

    def monitor(self, x_monitor: np.ndarray, rng) -> dict:
        return {"monitor_reconstruction_error": self.reconstruction_error(x_monitor)}

    def to_layers(self):
        """Dense(W, b) + Sigmoid (or Identity): the MLP layers this encoder initialises."""
        from ..layers import Dense, Identity, Sigmoid
        dense = Dense(self.n_visible, self.n_hidden, init="zeros")
        dense.set_weights(self.params["W"], self.params["hidden_bias"])
        return [dense, Sigmoid() if self.encoder == "sigmoid" else Identity()]

    def fit(self, x, config=None, seed: int = 0, checkpoint=None, resume: bool = False,
            progress: bool = False, log=None, **overrides) -> list:
        """Train on x: ``fit(x, epochs=10, lr=0.1, momentum=0.5, ...)``; returns the history."""
        from .dbn import PretrainConfig
        config = PretrainConfig.make(config, **overrides)
        return StackedAutoencoder.from_units([self]).pretrain(
            x, config, seed=seed, checkpoint=checkpoint, resume=resume, progress=progress,
            log=log)[0]

    def save(self, path) -> None:
        StackedAutoencoder.from_units([self]).save(path)

    @classmethod
    def load(cls, path) -> "Autoencoder":
        from .dbn import load_single_unit
        return load_single_unit(path, cls)


class StackedAutoencoder(GreedyStack):
    """``StackedAutoencoder([784, 300, 300], encoder="sigmoid", decoder="sigmoid", tied=True,
    rng=0)``: autoencoders trained greedily, each on the codes of the one below."""

    unit_prefix = "autoencoder"

    def __init__(self, layer_sizes, encoder: str = "sigmoid", decoder: str = "sigmoid",
                 tied: bool = True, rng=None):
        sizes = parse_layer_sizes(layer_sizes)
        rng = as_generator(rng)
        super().__init__([Autoencoder(n_in, n_out, encoder=encoder, decoder=decoder, tied=tied,
                                      rng=rng)
                          for n_in, n_out in zip(sizes, sizes[1:])])
