"""Autoencoders for layer-wise pretraining, tied weights by default.

For a minibatch x (batch, n_visible), with W of shape (n_visible, n_hidden)
(the layout of Dense, so the encoder *is* a Dense layer):

    encoder   y  = f(x W + b)                       (batch, n_hidden)
    decoder   x' = g(y Wᵀ + c)      tied            (batch, n_visible)
              x' = g(y V + c)       untied, V of shape (n_hidden, n_visible)
    loss      L  = 1/(2N) Σ_n ‖x'_n − x_n‖²          (losses.MSE)

with f, g ∈ {sigmoid, identity}. A denoising autoencoder (Vincent et al., 2008;
``PretrainConfig(corruption=p)``) encodes x̃ = x ⊙ m, m_ij ~ Bernoulli(1 − p),
and reconstructs the clean x: L = 1/(2N) Σ_n ‖g(f(x̃_n W + b) Wᵀ + c) − x_n‖²,
the same backprop with x̃ in the encoder's ∂L/∂W term. In column-vector notation this is the
y = f(Wx + b), x' = g(Wᵀy + c) of the papers (Bengio et al., 2007,
"Greedy layer-wise training of deep networks"; SPEC technique 3). Backprop:

    δz = (x' − x)/N ⊙ g'(z),  δa = (δz W) ⊙ f'(a)        (tied; δz Vᵀ untied)
    ∂L/∂W = xᵀ δa + δzᵀ y     (tied: encoder and decoder paths)
    ∂L/∂W = xᵀ δa,  ∂L/∂V = yᵀ δz                           (untied)
    ∂L/∂b = Σ_n δa,  ∂L/∂c = Σ_n δz

Every product with W goes through an encoder layer's three products (the
seam of ``Dense``), so the same code runs a dense W or a fixed random sparse
one held in CSR (``density=γ``, SPEC technique 3, ``minidnn.sparse``):

    encode        x W        = layer._forward_product(x)
    decode (tied) y Wᵀ       = layer._input_grad(y)
    δz W                     = layer._forward_product(δz)
    ∂L/∂W  (tied) xᵀδa + δzᵀy = layer._weight_grad(x, δa) + layer._weight_grad(δz, y)

With a ``SparseDense`` encoder all four are CSR kernels at cost Θ(nnz·batch),
the gradient lives on the pattern only (``params["data"]``, shape (nnz,)), and
``to_layers`` hands that layer itself to the MLP: pretraining and fine-tuning
run sparse end to end, with no dense W anywhere.
"""
from __future__ import annotations

import numpy as np

from ..layers.activations import sigmoid
from ..layers.base import ParamHolder, as_generator
from ..layers.dense import Dense
from ..sparse import SparseDense
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
    tied=True, rng=0)``. W starts Glorot-uniform, biases at 0.

    ``density=γ`` makes W a fixed random sparse matrix in CSR (a ``SparseDense``
    encoder with ``pattern`` and ``init`` as there; tied weights only): its
    nonzero values are ``params["data"]`` and its pattern ``buffers``."""

    def __init__(self, n_visible: int, n_hidden: int, encoder: str = "sigmoid",
                 decoder: str = "sigmoid", tied: bool = True, rng=None, name: str | None = None,
                 dtype=np.float32, density: float | None = None, pattern: str = "bernoulli",
                 init: str = "fan_in"):
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
        self.density, self.pattern, self.init = density, pattern, init
        if density is None:
            limit = np.sqrt(6.0 / (self.n_visible + self.n_hidden))
            self.layer = Dense(self.n_visible, self.n_hidden, bias=False, init="zeros")
            self.layer.params["W"] = rng.uniform(
                -limit, limit, (self.n_visible, self.n_hidden)).astype(self.dtype)
            self.weight_key = "W"
        else:
            if not self.tied:
                raise ValueError(f"a sparse autoencoder (density={density}) needs tied weights: "
                                 f"its decoder is Wᵀ on the same CSR structure")
            self.layer = SparseDense(self.n_visible, self.n_hidden, density=density,
                                     pattern=pattern, init=init, bias=False, rng=rng)
            self.layer.cast(self.dtype)
            self.weight_key = "data"
        self.params = {
            self.weight_key: self.layer.params[self.weight_key],
            "hidden_bias": np.zeros(self.n_hidden, dtype=self.dtype),
            "visible_bias": np.zeros(self.n_visible, dtype=self.dtype),
        }
        if not self.tied:
            limit = np.sqrt(6.0 / (self.n_visible + self.n_hidden))
            self.params["W_decoder"] = rng.uniform(
                -limit, limit, (self.n_hidden, self.n_visible)).astype(self.dtype)
        self.decay_params = (self.weight_key,) if self.tied else ("W", "W_decoder")
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}

    def get_config(self) -> dict:
        config = {"n_visible": self.n_visible, "n_hidden": self.n_hidden,
                  "encoder": self.encoder, "decoder": self.decoder, "tied": self.tied,
                  "name": self.name}
        if self.density is not None:
            config.update(density=self.density, pattern=self.pattern, init=self.init)
        return config

    def cast(self, dtype) -> "Autoencoder":
        self.dtype = np.dtype(dtype).type
        self.params = {k: v.astype(self.dtype) for k, v in self.params.items()}
        self.grads = {k: v.astype(self.dtype) for k, v in self.grads.items()}
        self.layer.cast(self.dtype)
        return self

    def __repr__(self) -> str:
        sparse = f", density={self.density:g}" if self.density is not None else ""
        return (f"Autoencoder({self.n_visible}, {self.n_hidden}, encoder={self.encoder!r}, "
                f"decoder={self.decoder!r}, tied={self.tied}{sparse})")

    # -- the encoder layer's state ------------------------------------------------------------
    def _encoder_layer(self):
        """The encoder layer, holding this unit's current weight array.

        ``params`` may be replaced wholesale (a resumed checkpoint, a test
        perturbing weights), so the layer is pointed at it before every use."""
        self.layer.params[self.weight_key] = self.params[self.weight_key]
        self.layer.dtype = self.dtype
        if hasattr(self.layer, "forget_operands"):
            self.layer.forget_operands()
        return self.layer

    @property
    def buffers(self) -> dict:
        """Arrays saved but not trained: the CSR pattern of a sparse W (none when dense)."""
        return self.layer.buffers

    def load_state(self, params: dict, buffers: dict) -> None:
        """Take arrays read from a file: a sparse W's pattern goes through the layer's
        full CSR check; names and shapes must otherwise match this unit."""
        if set(params) != set(self.params):
            raise ValueError(f"{self.name} has params {sorted(params)}, expected "
                             f"{sorted(self.params)}")
        if self.density is not None:
            self.layer.load_state({"data": params["data"]}, buffers)
        elif buffers:
            raise ValueError(f"{self.name}: a dense autoencoder has no buffers, got "
                             f"{sorted(buffers)}")
        for key, value in params.items():
            value = np.asarray(value)
            if key != "data" and value.shape != self.params[key].shape:
                raise ValueError(f"{self.name} {key} has shape {value.shape}, expected "
                                 f"{self.params[key].shape}")
        self.params = {key: (self.layer.params["data"] if key == "data"
                             else np.asarray(value).astype(self.dtype))
                       for key, value in params.items()}
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}

    def _input(self, x):
        return check_array(x, self.n_visible, repr(self)).astype(self.dtype, copy=False)

    @property
    def W(self) -> np.ndarray:
        """The encoder weight (n_visible, n_hidden), a plain array (``params["W"]``)."""
        if self.density is not None:
            raise AttributeError(f"{self!r} holds W in CSR (params['data'] on buffers "
                                 f"'indptr'/'indices'); use .layer.to_scipy()")
        return self.params["W"]

    @W.setter
    def W(self, value: np.ndarray) -> None:
        if self.density is not None:
            raise AttributeError(f"{self!r} holds W in CSR; use .layer.set_weights(W)")
        value = np.asarray(value, dtype=self.dtype)
        if value.shape != self.params["W"].shape:
            raise ValueError(f"{self!r}: W must have shape {self.params['W'].shape}, got {value.shape}")
        self.params["W"] = value

    # -- the model -----------------------------------------------------------------------
    def encode(self, x: np.ndarray) -> np.ndarray:
        """y = f(xW + b), computed exactly as the MLP's encoder layer + activation."""
        x = self._input(x)
        a = self._encoder_layer()._forward_product(x)
        a += self.params["hidden_bias"]
        return _activate(self.encoder, a)

    def _decode_product(self, y):
        """y Wᵀ (tied: the encoder layer's input-gradient product) or y V."""
        if self.tied:
            return self.layer._input_grad(y)
        return y @ self.params["W_decoder"]

    def decode(self, y: np.ndarray) -> np.ndarray:
        """x' = g(y Wᵀ + c) (tied) or g(y V + c)."""
        y = check_array(y, self.n_hidden, repr(self), "code").astype(self.dtype, copy=False)
        self._encoder_layer()
        z = self._decode_product(y)
        z += self.params["visible_bias"]
        return _activate(self.decoder, z)

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        return self.decode(self.encode(x))

    def reconstruction_error(self, x: np.ndarray) -> float:
        """Mean over samples and units of (x' − x)² (the MSE of SPEC technique 3's table)."""
        x = self._input(x)
        return float(((self.reconstruct(x) - x) ** 2).mean())

    def loss_and_gradients(self, x: np.ndarray, target: np.ndarray | None = None) -> float:
        """L = 1/(2N) Σ‖x' − t‖² for the batch, t = ``target`` (default x: a denoising
        autoencoder passes the corrupted x and the clean target); fills ``self.grads``
        (see module docstring)."""
        n = len(x)
        target = x if target is None else target
        layer = self._encoder_layer()
        a = layer._forward_product(x)
        a += self.params["hidden_bias"]
        y = _activate(self.encoder, a)
        z = self._decode_product(y)
        z += self.params["visible_bias"]
        out = _activate(self.decoder, z)
        diff = out - target
        loss = 0.5 * float(np.einsum("ij,ij->", diff, diff)) / n
        delta_z = diff / self.dtype(n)
        g_prime = _derivative_from_output(self.decoder, out)
        if g_prime is not None:
            delta_z *= g_prime
        # δz W (tied) or δz Vᵀ
        delta_y = layer._forward_product(delta_z) if self.tied else \
            delta_z @ self.params["W_decoder"].T
        f_prime = _derivative_from_output(self.encoder, y)
        delta_a = delta_y * f_prime if f_prime is not None else delta_y
        grad_W = layer._weight_grad(x, delta_a)
        if self.tied:
            grad_W += layer._weight_grad(delta_z, y)
        else:
            self.grads["W_decoder"] = y.T @ delta_z
        self.grads[self.weight_key] = grad_W
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
        corruption = getattr(config, "corruption", 0.0)
        if corruption:   # masking noise; no draw at 0, so plain runs keep their RNG stream
            keep = rng.random(xb.shape) >= corruption
            loss = self.loss_and_gradients(xb * keep, target=xb)
        else:
            loss = self.loss_and_gradients(xb)
        return {"loss": loss, "reconstruction_error": 2 * loss / self.n_visible}

    def monitor(self, x_monitor: np.ndarray, rng) -> dict:
        return {"monitor_reconstruction_error": self.reconstruction_error(x_monitor)}

    def to_layers(self):
        """Dense(W, b) (or SparseDense on the same CSR pattern) + Sigmoid (or Identity):
        the MLP layers this encoder initialises, holding copies of its arrays."""
        from ..layers import Identity, Sigmoid
        if self.density is None:
            layer = Dense(self.n_visible, self.n_hidden, init="zeros")
            layer.set_weights(self.params["W"], self.params["hidden_bias"])
        else:
            layer = SparseDense.from_csr(self.layer.buffers["indptr"],
                                         self.layer.buffers["indices"], self.params["data"],
                                         self.n_visible, self.n_hidden,
                                         bias=self.params["hidden_bias"], pattern=self.pattern,
                                         init=self.init)
            layer.density = self.density
        return [layer, Sigmoid() if self.encoder == "sigmoid" else Identity()]

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
                 tied: bool = True, rng=None, density=None, pattern: str = "bernoulli",
                 init: str = "fan_in"):
        """``density``: None (dense), one γ for every unit, or a list with one γ (or
        None) per unit; sparse units use ``pattern`` and ``init`` (``SparseDense``)."""
        sizes = parse_layer_sizes(layer_sizes)
        rng = as_generator(rng)
        densities = density if isinstance(density, (list, tuple)) else \
            [density] * (len(sizes) - 1)
        if len(densities) != len(sizes) - 1:
            raise ValueError(f"StackedAutoencoder{tuple(sizes)}: got {len(densities)} densities "
                             f"for {len(sizes) - 1} units")
        super().__init__([Autoencoder(n_in, n_out, encoder=encoder, decoder=decoder, tied=tied,
                                      rng=rng, density=d, pattern=pattern, init=init)
                          for (n_in, n_out), d in zip(zip(sizes, sizes[1:]), densities)])
