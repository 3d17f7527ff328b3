"""Fixed random sparse layers held in CSR (SPEC technique 3).

Matsumoto, "Computational complexity reduction technology for deep learning"
(Mitsubishi Electric Technical Report, 2017; ICONIP 2016, LNCS 9950, 397–404):
most weights of a fully connected layer can be zero from the start. W has
density γ = nonzeros / all entries, each entry is nonzero with probability γ
and then drawn from N(0, 1/γ); the pattern never changes in training. An
autoencoder with such a W reaches the same bound as a dense one, and a
784-500-10 MNIST net keeps 97.90% at γ = 0.04 (98.38% dense).

``SparseDense`` is that layer. It is a ``Dense`` (y = x W + b, W of shape
(in, out)) whose W is stored as its transpose A = Wᵀ (out, in) in CSR, one
row per output unit, so "exactly round(γ·in) inputs per unit" is a row length
and the row-parallel kernels never race:

    params["data"]       (nnz,)  the nonzero values (what SGD updates)
    params["b"]          (out,)  the bias
    buffers["indptr"]    (out + 1,) int32
    buffers["indices"]   (nnz,)  int32, sorted within each row

The three products of backprop (``Dense``'s seam) run on that structure, at a
cost Θ(nnz · batch) each (``minidnn.kernels.csr``):

    forward      y  = x W + b           = (A · xᵀ)ᵀ + b
    input grad   dx = dy Wᵀ             = (Aᵀ · dyᵀ)ᵀ
    weight grad  ∂L/∂data[p] = Σ_n dy[n, r] x[n, c]   for each stored (r, c)

In training, ``forward`` is one kernel call (the bias is added in the same
pass; a C-ordered x is transposed to the kernels' layout inside it, into a
buffer reused from step to step) and ``backward`` another
(``kernels.csr.csr_backward``: weight, bias and input gradients fused in one
pass over Aᵀ's rows, one parallel region; the first layer of a net skips the
input gradient; a C-ordered grad is transposed inside the same call). No
dense copy of W is made in training or inference; the gradient, the SGD
velocity and the weight decay all have shape (nnz,), so nothing can ever
leave the pattern. Model files store the three CSR arrays; loading runs the
full CSR check (``kernels.csr.check_csr``).

Initialisation (``init=``):

* ``"paper"``: N(0, 1/γ), the paper's choice. The variance of a unit's input
  sum, γ·in·(1/γ)·E[x²] = in·E[x²], is then the same at every γ (that of a
  dense N(0, 1) matrix), which is what the paper's bound needs; but it is
  large: on MNIST (E[x²] ≈ 0.11) a unit's pre-activation has a standard
  deviation near 9 and sigmoid units start saturated.
* ``"fan_in"``: N(0, 1/(γ·in)), variance one over the expected number of
  inputs per unit (LeCun's fan-in scaling applied to the nonzeros), so the
  pre-activation has standard deviation ≈ 0.3 at every γ.

Which trains better, measured (``bench/sparse_mnist_table.py --init-compare``;
full MNIST, 784-500-10 sigmoid, γ = 0.04, SGD lr 0.4 momentum 0.9, batch 100,
20 epochs, test accuracy at the best validation epoch; results in
``bench/results/sparse_table/``):

    =========================  =========  =========
    init                       fan_in     paper
    =========================  =========  =========
    no pretraining             96.39 %    94.47 %
    autoencoder pretraining    97.06 %    97.24 %
    =========================  =========  =========

``"fan_in"`` is the default because it trains better from scratch (+1.9
points): with N(0, 1/γ) the sigmoid units start saturated, σ'(a) ≈ 0 for
|a| ≫ 1, so almost no gradient reaches W and learning crawls. Autoencoder
pretraining erases the difference (it moves W away from the saturated start
before fine-tuning; the 0.2-point gap is about one standard error of a
10,000-image test accuracy, 0.17 points), which is
why the paper could use N(0, 1/γ).
"""
from __future__ import annotations

import numpy as np

from .kernels.csr import (INDEX_DTYPE, TrainingKernels, check_csr, csr_matmul,
                          csr_matmul_transposed, csr_transpose_structure, padded_path,
                          sampled_matmul)
from .kernels.csr import transpose as csr_transpose
from .layers import register_layer
from .layers.base import as_generator
from .layers.dense import Dense

PATTERNS = ("bernoulli", "per_unit")


def _same_view(x, given) -> bool:
    """Whether x is ``given`` (a view of a layer's private padded buffer handed out by
    ``input_buffer``) or a view of it with the same shape and strides (what a Flatten's
    reshape of it makes). Such views of that buffer start where ``given`` starts: nothing
    else slices it. Cheap: reading the data address (``__array_interface__``) costs
    ~10 µs."""
    return x is given or (isinstance(x, np.ndarray) and x.base is given.base
                          and x.base is not None and x.shape == given.shape
                          and x.strides == given.strides and x.dtype == given.dtype)
INITS = ("paper", "fan_in")


def check_density(density, where: str = "SparseDense") -> float:
    """γ as a float in (0, 1], or a ValueError saying what was given."""
    try:
        value = float(density)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: density must be a number in (0, 1], got {density!r}") from None
    if not (0.0 < value <= 1.0):
        raise ValueError(f"{where}: density must be in (0, 1] (the fraction of weights kept), "
                         f"got {density!r}")
    return value


def random_pattern(n_rows: int, n_cols: int, density: float, rng: np.random.Generator,
                   pattern: str = "bernoulli"):
    """(indptr, indices) of a random (n_rows, n_cols) pattern.

    ``"bernoulli"``: each entry present independently with probability γ (a row
    gets Binomial(n_cols, γ) entries, placed uniformly without replacement,
    which is the same distribution). ``"per_unit"``: exactly round(γ·n_cols)
    entries in every row. Indices come out sorted; no dense mask is drawn."""
    if pattern not in PATTERNS:
        raise ValueError(f"pattern must be one of {PATTERNS}, got {pattern!r}")
    if pattern == "bernoulli":
        counts = rng.binomial(n_cols, density, size=n_rows)
    else:
        counts = np.full(n_rows, int(round(density * n_cols)))
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    if indptr[-1] >= np.iinfo(INDEX_DTYPE).max:
        raise ValueError(f"{int(indptr[-1])} nonzeros do not fit int32 indices")
    indices = np.empty(int(indptr[-1]), dtype=INDEX_DTYPE)
    for r in range(n_rows):
        if counts[r]:
            chosen = rng.choice(n_cols, size=int(counts[r]), replace=False)
            chosen.sort()
            indices[indptr[r]:indptr[r + 1]] = chosen
    return indptr.astype(INDEX_DTYPE), indices


@register_layer
class SparseDense(Dense):
    """``SparseDense(784, 500, density=0.04, pattern="bernoulli", init="fan_in", rng=0)``.

    A fully connected layer whose weight matrix has a fixed random sparsity
    pattern, stored as CSR of Wᵀ (see the module docstring for the layout,
    the equations and the paper). ``pattern="per_unit"`` gives every output
    unit exactly round(γ·in) inputs. ``init`` is ``"fan_in"`` (default,
    N(0, 1/(γ·in))) or ``"paper"`` (N(0, 1/γ)).
    """

    decay_params = ("data",)
    #: a Fortran-ordered x is the kernels' layout already (``forward``)
    fortran_input = True

    def __init__(self, in_features: int, out_features: int, density: float = 0.04,
                 pattern: str = "bernoulli", init: str = "fan_in", bias: bool = True,
                 rng=None, name: str | None = None):
        self.density = check_density(density, f"SparseDense({in_features}, {out_features})")
        if pattern not in PATTERNS:
            raise ValueError(f"SparseDense pattern must be one of {PATTERNS}, got {pattern!r}")
        if init not in INITS:
            raise ValueError(f"SparseDense init must be one of {INITS}, got {init!r}")
        self.pattern = pattern
        self._value_init = init
        self._transposes: list = []
        # Dense validates sizes and calls self.initialize(rng); "zeros" only passes
        # its check of Dense's own init names
        super().__init__(in_features, out_features, bias=bias, init="zeros", rng=rng, name=name)
        self.init = init

    # -- the structure ---------------------------------------------------------------------
    def initialize(self, rng: np.random.Generator) -> None:
        """Draw a fresh pattern and fresh values from ``rng``."""
        init = self._value_init
        rng = as_generator(rng)
        indptr, indices = random_pattern(self.out_features, self.in_features, self.density,
                                         rng, self.pattern)
        variance = 1.0 / self.density if init == "paper" else \
            1.0 / (self.density * self.in_features)
        data = rng.normal(0.0, np.sqrt(variance), size=len(indices))
        self._set_structure(indptr, indices, data)

    def _set_structure(self, indptr, indices, data, bias=None) -> None:
        self.buffers = {"indptr": np.asarray(indptr, dtype=INDEX_DTYPE),
                        "indices": np.asarray(indices, dtype=INDEX_DTYPE)}
        self.params = {"data": np.asarray(data, dtype=self.dtype).copy()}
        if self.bias:
            self.params["b"] = (np.zeros(self.out_features, dtype=self.dtype) if bias is None
                                else np.asarray(bias, dtype=self.dtype).reshape(-1).copy())
        # Aᵀ's structure, derived from the pattern (never stored in files)
        self._transposed = csr_transpose_structure(self.buffers["indptr"],
                                                   self.buffers["indices"], self.in_features)
        self._transposes = []
        # the training path's feature-major operands: x's (kept for the backward
        # pass) and reusable buffers for the transposes of C-ordered x and grad
        self._xt = self._xt_buffer = self._gt_buffer = None
        self._input_given = None        # (what input_buffer handed out, its xᵀ view)
        self._kernels = TrainingKernels(self.buffers["indptr"], self.buffers["indices"],
                                        self._transposed, self.in_features)
        self.zero_grads()

    @classmethod
    def from_csr(cls, indptr, indices, data, in_features: int, out_features: int, bias=None,
                 name: str | None = None, **config) -> "SparseDense":
        """A layer holding the given CSR of Wᵀ (out_features rows, in_features columns)
        and bias (None: no bias), after the full CSR check; ``config`` gives
        ``pattern``/``init`` for the record."""
        check_csr(indptr, indices, data, (out_features, in_features),
                  f"SparseDense({in_features}, {out_features})")
        nnz = len(indices)
        density = max(nnz, 1) / (int(in_features) * int(out_features))
        layer = cls(in_features, out_features, density=min(density, 1.0),
                    bias=bias is not None, rng=0, name=name, **config)
        layer.dtype = np.asarray(data).dtype.type if np.issubdtype(np.asarray(data).dtype,
                                                                   np.floating) else layer.dtype
        layer._set_structure(indptr, indices, data, bias)
        return layer

    @property
    def nnz(self) -> int:
        return int(len(self.buffers["indices"]))

    @property
    def actual_density(self) -> float:
        return self.nnz / (self.in_features * self.out_features)

    def to_scipy(self):
        """A = Wᵀ as a ``scipy.sparse.csr_matrix`` (out, in), sharing no arrays."""
        import scipy.sparse as sp
        return sp.csr_matrix((self.params["data"].copy(), self.buffers["indices"].copy(),
                              self.buffers["indptr"].copy()),
                             shape=(self.out_features, self.in_features))

    def pattern_pairs(self) -> np.ndarray:
        """(nnz, 2) array of (input, output) positions in W, in storage order."""
        rows = np.repeat(np.arange(self.out_features), np.diff(self.buffers["indptr"]))
        return np.stack([self.buffers["indices"], rows], axis=1)

    # -- the three products ------------------------------------------------------------------
    def _feature_major(self, a: np.ndarray) -> np.ndarray:
        """aᵀ as a C-contiguous (features, batch) array, the kernels' layout.

        The transposes of the last few operands are kept (by identity), so the
        weight gradient reuses the ones the forward and input-gradient products
        made; ``forward`` clears them. A (batch, features) array in Fortran
        order (the output of another sparse layer, or a gradient computed from
        one) transposes for free."""
        for source, transposed in self._transposes:
            if source is a:
                return transposed
        transposed = csr_transpose(a, dtype=self.dtype)
        self._transposes.append((a, transposed))
        del self._transposes[:-4]
        return transposed

    def forget_operands(self) -> None:
        """Drop the kept transposes (call before reusing an array changed in place)."""
        self._transposes = []

    def _forward_product(self, x):
        # (out, batch) product, handed back as a (batch, out) Fortran-order view
        xt = self._feature_major(x)
        return csr_matmul(self.buffers["indptr"], self.buffers["indices"], self.params["data"],
                          xt, self.in_features).T

    def _input_grad(self, grad):
        gt = self._feature_major(grad)
        return csr_matmul_transposed(self._transposed, self.params["data"], gt,
                                     self.out_features).T

    def _weight_grad(self, x, grad):
        """∂L/∂data: (gradᵀ x) sampled at the stored entries, shape (nnz,)."""
        return sampled_matmul(self.buffers["indptr"], self.buffers["indices"],
                              self._feature_major(grad), self._feature_major(x),
                              self.in_features)

    # -- the training path: the same products, fused -----------------------------------------
    def forward(self, x, training=False):
        """y = x W + b in one kernel call (the bias is added in the same pass).

        A C-ordered x (a data batch) is transposed to the kernels' layout inside
        that call, into a buffer kept for the backward pass and reused from step
        to step; a Fortran-ordered x (another sparse layer's output) is used as
        it is. y comes back as a (batch, out) Fortran-ordered view."""
        if self._transposes:
            self._transposes = []
        self._check_input(x, (self.in_features,), "")
        self._x = x
        data = self.params["data"]
        bias = self.params["b"] if self.bias else self._no_bias(data.dtype)
        given = self._input_given
        if given is not None and _same_view(x, given[0]):     # written into input_buffer
            out, self._xt = self._kernels.forward(data, bias, given[1], batch_major=False)
            return out.T
        x = np.asarray(x)
        if x.ndim != 2:
            out, self._xt = self._kernels.forward(data, bias, self._feature_major(x),
                                                  batch_major=False)
        elif x.dtype == self.dtype and x.flags.f_contiguous:     # xᵀ is C-ordered: as it is
            out, self._xt = self._kernels.forward(data, bias, x.T, batch_major=False)
        else:
            if x.dtype != self.dtype or not x.flags.c_contiguous:
                x = np.ascontiguousarray(x, dtype=self.dtype)
            out, self._xt = self._kernels.forward(data, bias, x, self._xt_buffer)
            self._xt_buffer = self._xt
        return out.T

    def _no_bias(self, dtype):
        # the kernels' "no bias": a length-0 array, made once
        none = self.__dict__.get("_empty_bias")
        if none is None or none.dtype != dtype:
            none = self._empty_bias = np.zeros(0, dtype=dtype)
        return none

    def input_buffer(self, batch: int):
        """The training kernels' padded xᵀ buffer as a Fortran-ordered (batch, in) view
        (``Layer.input_buffer``): ``fit`` gathers the minibatch into it and ``forward``
        reads it where it lies, instead of copying it there. None where the kernels
        take no padded buffer (float64, no AVX2 + FMA)."""
        xt = self._kernels.input_buffer(int(batch), self.dtype)
        if xt is None:
            return None
        given = self._input_given
        if given is None or given[1] is not xt:
            given = self._input_given = (xt.T, xt)
        return given[0]

    def _backward(self, grad, input_grad: bool):
        # the weight, bias and input gradients in one kernel call (one parallel region,
        # or two when a C-ordered grad is first transposed in the same call)
        xt = self._xt if self._xt is not None else self._feature_major(self._x)
        grad = np.asarray(grad)
        data = self.params["data"]
        if grad.ndim != 2 or grad.shape[0] != xt.shape[1] or grad.shape[1] != self.out_features:
            raise ValueError(f"{self!r}.backward expects grad of shape "
                             f"{(xt.shape[1], self.out_features)}, got {grad.shape}")
        if grad.dtype == self.dtype and grad.flags.f_contiguous:   # gradᵀ is C-ordered
            grad_data, grad_bias, dx = self._kernels.backward(data, grad.T, xt, input_grad,
                                                              self.bias)
        else:
            if grad.dtype != self.dtype or not grad.flags.c_contiguous:
                grad = np.ascontiguousarray(grad, dtype=self.dtype)
            scratch = None
            if not padded_path(self.dtype):     # the padded kernels need no scratch
                shape = (self.out_features, grad.shape[0])
                if (self._gt_buffer is None or self._gt_buffer.shape != shape
                        or self._gt_buffer.dtype != self.dtype):
                    self._gt_buffer = np.empty(shape, dtype=self.dtype)
                scratch = self._gt_buffer
            grad_data, grad_bias, dx = self._kernels.backward(
                data, grad, xt, input_grad, self.bias, batch_major=True, grad_scratch=scratch)
        self.grads["data"] = grad_data
        if self.bias:
            self.grads["b"] = grad_bias
        return None if dx is None else dx.T

    def backward(self, grad):
        return self._backward(grad, input_grad=True)

    def backward_params(self, grad):
        self._backward(grad, input_grad=False)

    # -- weights in Dense's terms ---------------------------------------------------------------
    def set_weights(self, W: np.ndarray, b: np.ndarray | None = None) -> "SparseDense":
        """Take W (in, out) at this layer's pattern (entries off the pattern are ignored)."""
        W = np.asarray(W)
        if W.shape != (self.in_features, self.out_features):
            raise ValueError(f"{self!r}: W must have shape {(self.in_features, self.out_features)}, "
                             f"got {W.shape}")
        pairs = self.pattern_pairs()
        self.params["data"] = W[pairs[:, 0], pairs[:, 1]].astype(self.dtype)
        if b is not None:
            super().set_weights(None, b)
        return self

    # -- files and summaries ------------------------------------------------------------------
    def load_state(self, params: dict, buffers: dict) -> None:
        """Take a stored CSR structure (any nnz), after the full CSR check."""
        where = f"layer {self.name} (SparseDense({self.in_features}, {self.out_features}))"
        want_params = {"data", "b"} if self.bias else {"data"}
        if set(params) != want_params or set(buffers) != {"indptr", "indices"}:
            raise ValueError(f"{where} has params {sorted(params)} and buffers {sorted(buffers)}, "
                             f"expected params {sorted(want_params)} and buffers "
                             f"['indices', 'indptr']")
        indptr, indices = np.asarray(buffers["indptr"]), np.asarray(buffers["indices"])
        data = np.asarray(params["data"])
        check_csr(indptr, indices, data, (self.out_features, self.in_features), where)
        bias = None
        if self.bias:
            bias = np.asarray(params["b"])
            if bias.shape != (self.out_features,):
                raise ValueError(f"{where}: b has shape {bias.shape}, expected "
                                 f"({self.out_features},)")
        self._set_structure(indptr, indices, data.astype(self.dtype), bias)

    def storage_format(self) -> str:
        return (f"CSR {np.dtype(self.params['data'].dtype).name}, density "
                f"{self.actual_density:.4g}, {self.nnz:,} nonzeros")

    @property
    def n_params(self) -> int:
        return int(sum(p.size for p in self.params.values()))

    def get_config(self):
        return {"in_features": self.in_features, "out_features": self.out_features,
                "density": self.density, "pattern": self.pattern, "init": self.init,
                "bias": self.bias, "name": self.name}

    def __repr__(self) -> str:
        extra = "" if self.bias else ", bias=False"
        return f"SparseDense({self.in_features}, {self.out_features}, density={self.density:g}{extra})"


def prune_to_density(layer: Dense, density: float, per_unit: bool = False) -> SparseDense:
    """A SparseDense keeping the largest-magnitude weights of a trained ``Dense``.

    Keeps the round(γ·in·out) entries of largest |W| over the whole matrix
    (``per_unit=True``: the round(γ·in) largest of each output unit), with
    their values and the bias, under the same name: magnitude pruning (Han et
    al., 2015, "Learning both weights and connections"), to compare against a
    random pattern. Fine-tune the result as usual: its pattern stays fixed."""
    if not isinstance(layer, Dense) or isinstance(layer, SparseDense):
        raise ValueError(f"prune_to_density expects a Dense layer, got {layer!r}")
    density = check_density(density, "prune_to_density")
    A = np.abs(layer.params["W"].T)           # (out, in): one row per output unit
    n_out, n_in = A.shape
    if per_unit:
        keep = int(round(density * n_in))
        order = np.argsort(-A, axis=1, kind="stable")[:, :keep]
        mask_rows = np.repeat(np.arange(n_out), keep)
        mask_cols = order.reshape(-1)
    else:
        keep = int(round(density * A.size))
        flat = np.argsort(-A, axis=None, kind="stable")[:keep]
        mask_rows, mask_cols = np.divmod(flat, n_in)
    order = np.lexsort((mask_cols, mask_rows))
    rows, cols = mask_rows[order], mask_cols[order]
    indptr = np.zeros(n_out + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_out), out=indptr[1:])
    data = layer.params["W"].T[rows, cols]
    return SparseDense.from_csr(indptr.astype(INDEX_DTYPE), cols.astype(INDEX_DTYPE), data,
                                n_in, n_out, bias=layer.params.get("b"), name=layer.name,
                                pattern="per_unit" if per_unit else "bernoulli")


# -- the command line ------------------------------------------------------------------------

def parse_densities(text: str):
    """``"0.04"`` → 0.04 (every Dense but the output layer); ``"dense_1=0.04,dense_3=0.5"``
    → {"dense_1": 0.04, "dense_3": 0.5} (layers by name). ValueError otherwise."""
    text = str(text).strip()
    if "=" not in text:
        return check_density(text, "--density")
    densities = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--density: write one number (0.04) or LAYER=γ pairs "
                             f"(dense_1=0.04,dense_3=0.5), got {text!r}")
        densities[name.strip()] = check_density(value, f"--density {name.strip()}")
    return densities


def sparsify(model, densities, seed: int = 0, pattern: str = "bernoulli",
             init: str = "fan_in"):
    """Replace Dense layers of ``model`` (in place) by SparseDense layers of the same
    name and shape, with fresh random patterns and values drawn from ``seed``.

    ``densities`` is one γ (every Dense layer except the last one, the output,
    as in the paper, where only the 784×500 matrix is sparse) or a dict
    {layer name: γ}. Returns the model."""
    dense = [i for i, layer in enumerate(model.layers)
             if isinstance(layer, Dense) and not isinstance(layer, SparseDense)]
    if isinstance(densities, dict):
        names = {model.layers[i].name: i for i in dense}
        unknown = sorted(set(densities) - set(names))
        if unknown:
            raise ValueError(f"--density names {unknown}, but the Dense layers of this model "
                             f"are {sorted(names)}")
        chosen = {names[name]: gamma for name, gamma in densities.items()}
    else:
        gamma = check_density(densities, "sparsify")
        chosen = {i: gamma for i in dense[:-1]}
        if not chosen:
            raise ValueError("sparsify: this model has a single Dense layer (the output); "
                             "name it to make it sparse, e.g. --density dense_1=0.5")
    rng = np.random.default_rng(seed)
    for i in sorted(chosen):
        old = model.layers[i]
        new = SparseDense(old.in_features, old.out_features, density=chosen[i],
                          pattern=pattern, init=init, bias=old.bias, rng=rng, name=old.name)
        model.layers[i] = new.cast(model.dtype)
    return model


def add_train_options(parser) -> None:
    """``--density``, ``--sparse-pattern`` and ``--sparse-init`` for ``minidnn train``."""
    parser.add_argument("--density", default=None, metavar="γ|LAYER=γ,...",
                        help="fixed random sparse weights in CSR (SPEC technique 3): one density "
                             "for every Dense layer but the output (e.g. 0.04), or per layer "
                             "by name (dense_1=0.04,dense_3=0.5)")
    parser.add_argument("--sparse-pattern", choices=PATTERNS, default="bernoulli",
                        help="bernoulli: each weight kept with probability γ; per_unit: exactly "
                             "round(γ·inputs) per unit (default %(default)s)")
    parser.add_argument("--sparse-init", choices=INITS, default="fan_in",
                        help="nonzero values N(0, 1/(γ·inputs)) (fan_in) or N(0, 1/γ) (paper) "
                             "(default %(default)s)")


def configure_from_args(args, model):
    """Apply ``--density`` (if given) to a freshly built model; returns the model."""
    if getattr(args, "density", None) is None:
        return model
    return sparsify(model, parse_densities(args.density), seed=args.seed,
                    pattern=args.sparse_pattern, init=args.sparse_init)


def add_pretrain_options(parser) -> None:
    """``--density`` (one γ, or one per unit: 0.04,0.5) and friends for
    ``minidnn pretrain autoencoder``."""
    parser.add_argument("--density", default=None, metavar="γ[,γ...]",
                        help="fixed random sparse W in CSR for every unit (0.04) or one density "
                             "per unit (0.04,1); the MLP it initialises stays sparse")
    parser.add_argument("--sparse-pattern", choices=PATTERNS, default="bernoulli",
                        help="bernoulli or per_unit (default %(default)s)")
    parser.add_argument("--sparse-init", choices=INITS, default="fan_in",
                        help="fan_in: N(0, 1/(γ·inputs)); paper: N(0, 1/γ) (default %(default)s)")


def autoencoder_options(args, n_units: int) -> dict:
    """The StackedAutoencoder keyword arguments that ``add_pretrain_options`` parsed."""
    if getattr(args, "density", None) is None:
        return {}
    parts = [part for part in str(args.density).split(",") if part.strip()]
    densities = [check_density(part, "--density") for part in parts]
    if len(densities) == 1:
        densities = densities * n_units
    if len(densities) != n_units:
        raise ValueError(f"--density gives {len(densities)} densities for {n_units} "
                         f"autoencoders; give one, or one per unit")
    return {"density": densities, "pattern": args.sparse_pattern, "init": args.sparse_init}
