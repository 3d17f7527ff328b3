"""Restricted Boltzmann machine trained by contrastive divergence.

Energy of a joint state (v, h), v of n_visible units and h of n_hidden binary
units, W of shape (n_visible, n_hidden), visible bias b, hidden bias c:

    Bernoulli visible:  E(v, h) = -bᵀv - cᵀh - vᵀWh,                v ∈ {0,1}^n
    Gaussian visible:   E(v, h) = ½‖v - b‖² - cᵀh - vᵀWh,           v ∈ ℝ^n
                        (unit variance: standardise the data first)

p(v, h) = exp(-E(v, h)) / Z. Summing h out gives the free energy

    F(v) = -bᵀv - Σ_j softplus(c_j + (vW)_j)        (Bernoulli)
    F(v) = ½‖v - b‖² - Σ_j softplus(c_j + (vW)_j)   (Gaussian)

with p(v) = exp(-F(v)) / Z, and the conditionals factorise:

    P(h_j = 1 | v) = σ(c_j + (vW)_j)
    P(v_i = 1 | h) = σ(b_i + (Wh)_i)     or   v_i | h ~ N(b_i + (Wh)_i, 1).

The log-likelihood gradient is ∂ log p(v)/∂W = v p(h|v)ᵀ − E_model[v hᵀ];
CD-k replaces the model expectation by the end of a k-step Gibbs chain
started at the data (Hinton, 2002, "Training products of experts by
minimizing contrastive divergence"); persistent CD keeps the chains running
across updates instead (Tieleman, 2008, "Training restricted Boltzmann
machines using approximations to the likelihood gradient"). Hyperparameters
and monitoring follow Hinton, 2010, "A practical guide to training restricted
Boltzmann machines" (UTML TR 2010-003).

Training itself (epochs, minibatches, momentum schedule, checkpoints) is the
greedy layer-wise loop in ``minidnn.pretraining.dbn``; an RBM supplies one
minibatch's gradient (``train_batch``) and its per-epoch monitors.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from ..kernels.rbm_kernels import (_bernoulli_states_kernel, _hidden_pass_kernel,
                                   _sigmoid_bernoulli_kernel, _sigmoid_bias_kernel, draw_key,
                                   draw_keys, sigmoid_bernoulli, sigmoid_bias)
from ..kernels.gather import gather_rows_into
from ..layers.activations import sigmoid
from ..layers.base import ParamHolder, as_generator

#: largest number of units on the smaller side that exact enumeration will sum over
MAX_ENUMERATED_UNITS = 20

VISIBLE_TYPES = ("bernoulli", "gaussian")


def softplus(x: np.ndarray) -> np.ndarray:
    """log(1 + eˣ), stable for any x."""
    return np.logaddexp(0, x)


def logsumexp(a: np.ndarray, axis=None) -> np.ndarray:
    top = np.max(a, axis=axis, keepdims=True)
    out = top + np.log(np.exp(a - top).sum(axis=axis, keepdims=True))
    return np.squeeze(out, axis=axis) if axis is not None else out.reshape(())


def all_binary_states(n: int, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Every vector of {0,1}^n, shape (2**n, n), in counting order (first unit most
    significant); ``start``/``stop`` give only the rows of those counts."""
    stop = 2 ** n if stop is None else stop
    counts = np.arange(start, stop, dtype=np.int64)[:, None]
    return ((counts >> np.arange(n - 1, -1, -1, dtype=np.int64)) & 1).astype(np.float64)


#: float64 elements of the (states, units) temporaries of one enumeration chunk (16 MiB)
ENUMERATION_CHUNK_ELEMENTS = 2 ** 21


def enumerated_terms(n: int, width: int, term) -> np.ndarray:
    """term(S) for every chunk S of ``all_binary_states(n)``, concatenated: (2**n,).

    The chunks keep the (states, width) temporaries to ENUMERATION_CHUNK_ELEMENTS
    (a 784×16 RBM has 65,536 hidden states: whole, H Wᵀ and its softplus took 1 GB)."""
    step = max(1, ENUMERATION_CHUNK_ELEMENTS // max(n, width, 1))
    return np.concatenate([term(all_binary_states(n, i, min(i + step, 2 ** n)))
                           for i in range(0, 2 ** n, step)])


def check_array(x, n_features: int, owner: str, what: str = "input",
                with_range: bool = False):
    """A finite 2-D float array of width ``n_features``; images (N, 1, 28, 28) are flattened.

    ``with_range``: return (x, min, max) instead (the finiteness check computes them).
    Raises ValueError saying what was expected and what was given."""
    x = np.asarray(x)
    if x.ndim > 2 and int(np.prod(x.shape[1:])) == n_features:
        x = x.reshape(len(x), n_features)
    if x.ndim != 2 or x.shape[1] != n_features:
        raise ValueError(f"{owner} expects {what} of shape (batch, {n_features}), "
                         f"got {tuple(x.shape)}")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)
            or x.dtype == np.bool_):
        raise ValueError(f"{owner} expects a numeric {what}, got dtype {x.dtype}")
    # min and max propagate NaN and show ±Inf: no (N, features) temporary on the good path
    # (np.isfinite(x).all() allocated one byte per element: 37 MiB for MNIST)
    low, high = (x.min(), x.max()) if x.size else (0, 0)
    if np.issubdtype(x.dtype, np.floating) and not (np.isfinite(low) and np.isfinite(high)):
        bad = int((~np.isfinite(x)).sum())
        raise ValueError(f"{owner}: {what} contains {bad} NaN or Inf values")
    return (x, low, high) if with_range else x


class BernoulliRBM(ParamHolder):
    """RBM with binary hidden units and Bernoulli (or Gaussian) visible units.

    Parameters live in ``params`` (``W`` (n_visible, n_hidden),
    ``visible_bias`` (n_visible,), ``hidden_bias`` (n_hidden,)) and the last
    minibatch gradient of the *negative* log-likelihood in ``grads``, so the
    engine's SGD (momentum, weight decay on ``W`` only) updates an RBM as it
    updates a Dense layer. W starts as N(0, 0.01²), biases at 0 (Hinton, 2010).
    """

    decay_params = ("W",)

    def __init__(self, n_visible: int, n_hidden: int, visible: str = "bernoulli",
                 rng=None, init_std: float = 0.01, name: str | None = None, dtype=np.float32):
        if int(n_visible) <= 0 or int(n_hidden) <= 0:
            raise ValueError(f"BernoulliRBM needs positive sizes, got n_visible={n_visible}, "
                             f"n_hidden={n_hidden}")
        if visible not in VISIBLE_TYPES:
            raise ValueError(f"BernoulliRBM visible must be one of {VISIBLE_TYPES}, got {visible!r}")
        self.n_visible, self.n_hidden = int(n_visible), int(n_hidden)
        self.visible = visible
        self.init_std = float(init_std)
        self.name = name or "rbm"
        self.dtype = np.dtype(dtype).type
        rng = as_generator(rng)
        self.params = {
            "W": (self.init_std * rng.standard_normal((self.n_visible, self.n_hidden))).astype(self.dtype),
            "visible_bias": np.zeros(self.n_visible, dtype=self.dtype),
            "hidden_bias": np.zeros(self.n_hidden, dtype=self.dtype),
        }
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}

    # -- bookkeeping ----------------------------------------------------------------
    @property
    def W(self) -> np.ndarray:
        return self.params["W"]

    def get_config(self) -> dict:
        return {"n_visible": self.n_visible, "n_hidden": self.n_hidden, "visible": self.visible,
                "init_std": self.init_std, "name": self.name}

    def cast(self, dtype) -> "BernoulliRBM":
        self.dtype = np.dtype(dtype).type
        self.params = {k: v.astype(self.dtype) for k, v in self.params.items()}
        self.grads = {k: v.astype(self.dtype) for k, v in self.grads.items()}
        self.__dict__.pop("_scratch", None)
        return self

    def __repr__(self) -> str:
        extra = "" if self.visible == "bernoulli" else f", visible={self.visible!r}"
        return f"BernoulliRBM({self.n_visible}, {self.n_hidden}{extra})"

    def _visible_input(self, v, what="visible input"):
        return check_array(v, self.n_visible, repr(self), what).astype(self.dtype, copy=False)

    def _hidden_input(self, h):
        return check_array(h, self.n_hidden, repr(self), "hidden input").astype(self.dtype, copy=False)

    # -- conditionals and sampling ----------------------------------------------------
    def hidden_probs(self, v: np.ndarray) -> np.ndarray:
        """P(h = 1 | v) = σ(vW + c), (batch, n_visible) -> (batch, n_hidden).

        Computed exactly as Dense(W, c) followed by Sigmoid, so the MLP a DBN
        becomes has bit-identical hidden activations."""
        v = self._visible_input(v)
        pre = v @ self.params["W"]
        pre += self.params["hidden_bias"]
        return sigmoid(pre)

    def visible_mean(self, h: np.ndarray) -> np.ndarray:
        """E[v | h]: σ(hWᵀ + b) for Bernoulli units, hWᵀ + b for Gaussian ones."""
        h = self._hidden_input(h)
        pre = h @ self.params["W"].T
        pre += self.params["visible_bias"]
        return sigmoid(pre) if self.visible == "bernoulli" else pre

    def sample_hidden(self, v: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
        """(P(h=1|v), a sample h ~ P(h|v)), both (batch, n_hidden)."""
        v = self._visible_input(v)
        return self._sample_hidden(np.ascontiguousarray(v), as_generator(rng))

    def sample_visible(self, h: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
        """(E[v|h], a sample v ~ p(v|h)), both (batch, n_visible)."""
        h = self._hidden_input(h)
        return self._sample_visible(np.ascontiguousarray(h), as_generator(rng))

    def gibbs(self, v: np.ndarray, steps: int, rng) -> np.ndarray:
        """Run ``steps`` full Gibbs steps v → h → v from each row of v; return the last v."""
        if int(steps) < 0:
            raise ValueError(f"gibbs steps must be >= 0, got {steps}")
        rng = as_generator(rng)
        v = np.ascontiguousarray(self._visible_input(v))
        for _ in range(int(steps)):
            _, h = self._sample_hidden(v, rng)
            _, v = self._sample_visible(h, rng)
        return v

    # the unchecked fast paths used by training; Bernoulli draws use the kernels' Philox
    # uniforms under a key drawn from rng (minidnn.kernels.rbm_kernels)
    def _sample_hidden(self, v, rng, states=None):
        pre = v @ self.params["W"]
        return sigmoid_bernoulli(pre, self.params["hidden_bias"], draw_key(rng), states)

    def _sample_visible(self, h, rng):
        pre = h @ self.params["W"].T
        if self.visible == "bernoulli":
            return sigmoid_bernoulli(pre, self.params["visible_bias"], draw_key(rng))
        pre += self.params["visible_bias"]
        return pre, pre + rng.standard_normal(pre.shape, dtype=self.dtype)

    def _visible_step_into(self, h, rng, pre, out, sample: bool):
        """out ← a visible step from h: a sample (``sample``) or the mean E[v|h].

        ``pre`` (rows, n_visible) is scratch; returns the mean (``pre`` or ``out``)."""
        np.matmul(h, self.params["W"].T, out=pre if sample else out)
        mean = pre if sample else out
        if self.visible == "bernoulli":
            if sample:
                sigmoid_bernoulli(pre, self.params["visible_bias"], draw_key(rng), out)
            else:
                sigmoid_bias(out, self.params["visible_bias"])
        else:
            mean += self.params["visible_bias"]
            if sample:
                np.add(pre, rng.standard_normal(pre.shape, dtype=self.dtype), out=out)
        return mean

    def _cd_buffers(self, n: int, m: int) -> SimpleNamespace:
        """Reused scratch for a minibatch of n rows and m negative-phase rows: [v0; vk]
        (n+m, n_visible), [p0; pk] (n+m, n_hidden), visible pre-activations (m, n_visible)
        and hidden states (n, n_hidden). A few shapes are kept (the short last batch)."""
        cache = self.__dict__.setdefault("_scratch", {})
        key = (n, m, np.dtype(self.dtype).str)
        if key not in cache:
            if len(cache) >= 4:
                cache.clear()
            dtype = self.dtype
            weights = np.empty(n + m, dtype)

            def row_scale(pos, neg):
                weights[:n], weights[n:] = pos, neg
                return weights
            cache[key] = SimpleNamespace(
                v=np.empty((n + m, self.n_visible), dtype), p=np.empty((n + m, self.n_hidden), dtype),
                pre_v=np.empty((m, self.n_visible), dtype), h=np.empty((n, self.n_hidden), dtype),
                ones=np.ones(n + m, dtype), row_scale=row_scale)
        return cache[key]

    # -- energies and likelihoods --------------------------------------------------------
    def energy(self, v: np.ndarray, h: np.ndarray) -> np.ndarray:
        """E(v, h) per row, (batch,), in float64."""
        v = self._visible_input(v).astype(np.float64)
        h = self._hidden_input(h).astype(np.float64)
        W, b, c = (self.params[k].astype(np.float64)
                   for k in ("W", "visible_bias", "hidden_bias"))
        interaction = np.einsum("ni,ij,nj->n", v, W, h)
        if self.visible == "bernoulli":
            visible_term = -v @ b
        else:
            visible_term = 0.5 * ((v - b) ** 2).sum(axis=1)
        return visible_term - h @ c - interaction

    def free_energy(self, v: np.ndarray) -> np.ndarray:
        """F(v) = -log Σ_h exp(-E(v, h)) per row, (batch,), in float64."""
        v = self._visible_input(v).astype(np.float64)
        W, b, c = (self.params[k].astype(np.float64)
                   for k in ("W", "visible_bias", "hidden_bias"))
        hidden_term = softplus(v @ W + c).sum(axis=1)
        if self.visible == "bernoulli":
            return -v @ b - hidden_term
        return 0.5 * ((v - b) ** 2).sum(axis=1) - hidden_term

    def log_partition(self) -> float:
        """log Z by exact enumeration of the smaller layer (≤ MAX_ENUMERATED_UNITS units).

        Bernoulli: log Z = logsumexp over v of -F(v), or over h of
        cᵀh + Σ_i softplus(b_i + (Wh)_i). Gaussian visible (h side only):
        log Z = logsumexp_h [cᵀh + ½‖b + Wh‖² − ½‖b‖²] + (n_visible/2) log 2π."""
        W, b, c = (self.params[k].astype(np.float64)
                   for k in ("W", "visible_bias", "hidden_bias"))
        if self.visible == "gaussian":
            if self.n_hidden > MAX_ENUMERATED_UNITS:
                raise ValueError(f"{self!r}: exact log Z needs n_hidden <= "
                                 f"{MAX_ENUMERATED_UNITS}, got {self.n_hidden}")
            terms = enumerated_terms(self.n_hidden, self.n_visible, lambda H: (
                H @ c + 0.5 * ((H @ W.T + b) ** 2).sum(axis=1) - 0.5 * (b ** 2).sum()))
            return float(logsumexp(terms)) + 0.5 * self.n_visible * np.log(2 * np.pi)
        if min(self.n_visible, self.n_hidden) > MAX_ENUMERATED_UNITS:
            raise ValueError(f"{self!r}: exact log Z needs min(n_visible, n_hidden) <= "
                             f"{MAX_ENUMERATED_UNITS}; use pseudo_log_likelihood instead")
        if self.n_visible <= self.n_hidden:
            return float(logsumexp(enumerated_terms(self.n_visible, self.n_hidden,
                                                    lambda V: -self.free_energy(V))))
        return float(logsumexp(enumerated_terms(self.n_hidden, self.n_visible, lambda H: (
            H @ c + softplus(H @ W.T + b).sum(axis=1)))))

    @property
    def can_enumerate(self) -> bool:
        side = self.n_hidden if self.visible == "gaussian" else min(self.n_visible, self.n_hidden)
        return side <= MAX_ENUMERATED_UNITS

    def log_likelihood(self, v: np.ndarray) -> float:
        """Exact mean log p(v) = −mean F(v) − log Z (small RBMs only)."""
        return float(-self.free_energy(v).mean() - self.log_partition())

    def pseudo_log_likelihood(self, v: np.ndarray, rng) -> float:
        """Stochastic pseudo-log-likelihood, mean over rows (Bernoulli visible only).

        log PL(v) = Σ_i log P(v_i | v_-i) ≈ n · log σ(F(ṽ) − F(v)), ṽ = v with
        one uniformly drawn unit flipped (Besag, 1975; as in scikit-learn)."""
        if self.visible != "bernoulli":
            raise ValueError("pseudo-likelihood is defined here for Bernoulli visible units only")
        v = self._visible_input(v).astype(np.float64)
        rng = as_generator(rng)
        idx = rng.integers(0, self.n_visible, size=len(v))
        rows = np.arange(len(v))
        # ṽ differs from v in unit i only, by d = 1 − 2v_i, so ṽW + c = (vW + c) + d·W_i
        # and F(ṽ) − F(v) = −d·b_i − Σ_j [softplus(x_j + d·W_ij) − softplus(x_j)]:
        # one (rows, n_visible) x (n_visible, n_hidden) product instead of two
        W, b, c = (self.params[k].astype(np.float64)
                   for k in ("W", "visible_bias", "hidden_bias"))
        pre = v @ W
        pre += c
        d = 1.0 - 2.0 * v[rows, idx]
        flipped_pre = pre + d[:, None] * W[idx]
        delta = -d * b[idx] - (softplus(flipped_pre).sum(axis=1) - softplus(pre).sum(axis=1))
        return float((self.n_visible * -softplus(-delta)).mean())

    # one float64 product v·W instead of F(ṽ) and F(v) from two (sitting 21: 1,000 rows, 1
    # thread, 71 -> 45-51 ms); equal to the two-free-energy form up to float64 rounding
    # (tests/test_rbm_step21.py; sitting 22 deleted its switch, PLL_ONE_PRODUCT)

    def reconstruction_error(self, v: np.ndarray) -> float:
        """Mean over samples and units of (v − E[v | P(h|v)])², the deterministic reconstruction."""
        v = self._visible_input(v)
        return float(((v - self.visible_mean(self.hidden_probs(v))) ** 2).mean())

    # -- contrastive divergence ----------------------------------------------------------
    def cd_gradients(self, v0: np.ndarray, k: int, rng, chain: np.ndarray | None = None,
                     sample_reconstruction: bool = False) -> dict:
        """One minibatch's CD-k (or PCD-k) estimate of −∂ mean log p(v)/∂θ into ``self.grads``.

        positive phase: v0, p0 = P(h|v0), h ~ P(h|v0)
        negative phase: k Gibbs steps from h (CD) or from the hidden states
        of the persistent chains ``chain`` (PCD, (chains, n_hidden), advanced
        in place, as scikit-learn's ``h_samples_``); vk, pk = P(h|vk)

            grads["W"]            = −(v0ᵀp0 − vkᵀpk) / batch
            grads["visible_bias"] = −mean(v0 − vk)
            grads["hidden_bias"]  = −mean(p0 − pk)

        Hidden *probabilities* enter the statistics (Rao-Blackwellised). In
        plain CD the last visible step uses the mean E[v|h] instead of a
        sample unless ``sample_reconstruction`` (Hinton, 2010, §3.2); the
        persistent chain is always sampled. Returns {"reconstruction_error"}:
        mean squared difference between v0 and its one-step reconstruction
        (CD only: PCD's chains do not reconstruct the batch, so for PCD the
        epoch's reconstruction error comes from ``monitor``).
        """
        if int(k) < 1:
            raise ValueError(f"CD-k needs k >= 1, got {k}")
        k = int(k)
        # (x, idx): the rows x[idx], gathered straight into the step's buffer (train_rows)
        rows = v0 if isinstance(v0, tuple) else None
        v0 = np.asarray(v0) if rows is None else None
        n = len(v0) if rows is None else len(rows[1])
        if chain is not None and (chain.ndim != 2 or chain.shape[1] != self.n_hidden):
            raise ValueError(f"{self!r}: persistent chain must hold hidden states "
                             f"(chains, {self.n_hidden}), got {chain.shape}")
        # the persistent chain may hold more rows than a short last minibatch
        m = n if chain is None else len(chain)
        if self.visible == "bernoulli":
            error = self._lean_step(v0, rows, n, m, k, rng, chain, sample_reconstruction)
        else:
            error = self._general_step(v0, rows, n, m, k, rng, chain, sample_reconstruction)
        return {} if error is None else {"reconstruction_error": error}

    def _general_step(self, v0, rows, n: int, m: int, k: int, rng, chain,
                      sample_reconstruction: bool):
        """``cd_gradients`` through the wrappers (``sigmoid_bernoulli``, ``sigmoid_bias``)
        for any visible type: the step of Gaussian visible units, and for Bernoulli ones
        the reference the lean step equals bit for bit (tests); returns the
        reconstruction error (CD) or None (PCD)."""
        W, b, c = self.params["W"], self.params["visible_bias"], self.params["hidden_bias"]
        buf = self._cd_buffers(n, m)
        # rows [:n] of buf.v / buf.p are the positive phase (v0, p0), rows [n:] the negative
        # (vk, pk), so one GEMM gives both statistics (and, for PCD, both hidden products)
        if rows is None:
            buf.v[:n] = v0
        elif rows[0].dtype == buf.v.dtype:
            np.take(rows[0], rows[1], axis=0, out=buf.v[:n])   # no x[idx] copy in between
        else:
            buf.v[:n] = rows[0][rows[1]]
        vk, pk = buf.v[n:], buf.p[n:]
        # the statistics [v0; vk]ᵀ [−p0/n; pk/m]: the σ kernels store p0 and the last pk
        # already scaled (``scale``), bit for bit a separate pass p *= scale
        pos, neg = self.dtype(-1.0 / n), self.dtype(1.0 / m)
        reconstruction_error = None
        if chain is None:   # CD-k: the chain starts at h ~ P(h | v0)
            np.matmul(buf.v[:n], W, out=buf.p[:n])
            h = sigmoid_bernoulli(buf.p[:n], c, draw_key(rng), buf.h, scale=pos)[1]
            for step in range(k):
                last = step == k - 1
                mean = self._visible_step_into(h, rng, buf.pre_v, vk,
                                               sample=not last or sample_reconstruction)
                if step == 0:
                    diff = buf.v[:n] - mean
                    reconstruction_error = float(np.einsum("ij,ij->", diff, diff) / diff.size)
                np.matmul(vk, W, out=pk)
                if last:
                    sigmoid_bias(pk, c, scale=neg)
                else:
                    sigmoid_bernoulli(pk, c, draw_key(rng), h)
        else:               # PCD-k: the chain's hidden states are advanced in place
            own = chain.dtype == self.dtype and chain.flags.c_contiguous
            h = chain if own else np.ascontiguousarray(chain, dtype=self.dtype)
            for step in range(k):
                self._visible_step_into(h, rng, buf.pre_v, vk, sample=True)
                if step < k - 1:
                    np.matmul(vk, W, out=pk)
                    sigmoid_bernoulli(pk, c, draw_key(rng), h)
            np.matmul(buf.v, W, out=buf.p)          # p0 and pk in one product
            sigmoid_bias(buf.p[:n], c, scale=pos)
            # the chain's next state h ~ P(h | vk)
            sigmoid_bernoulli(pk, c, draw_key(rng), h, scale=neg)
            if not own:
                chain[...] = h
        # [v0; vk]ᵀ [−p0/n; pk/m] = −(v0ᵀp0/n − vkᵀpk/m)
        grad_W = self.grads.get("W")
        if grad_W is None or grad_W.shape != W.shape or grad_W.dtype != W.dtype \
                or not grad_W.flags.c_contiguous:
            grad_W = self.grads["W"] = np.empty_like(W)
        np.matmul(buf.v.T, buf.p, out=grad_W)
        # the bias gradients as two GEMVs with the row weights (pos … pos, neg … neg) and ones
        # (half the time of three axis-0 sums)
        self.grads["visible_bias"] = buf.row_scale(pos, neg) @ buf.v
        self.grads["hidden_bias"] = buf.ones @ buf.p
        return reconstruction_error      # None for PCD: see monitor()

    # -- the Bernoulli step in few calls (sitting 20) -----------------------------------------
    # Sitting 22 deleted the switches that lost their quiet A/Bs (on vs off, an epoch at 2
    # threads): SIGMA_SPLIT (the σ passes on a helper thread; 2.590 vs 2.585 s, sitting 21),
    # OVERLAP_V0_PRODUCT (PCD's v0·W beside the last visible pass; 3.145 vs 2.457 s,
    # sitting 21) and SPLIT_ROWS (the rows split over worker threads; 3.11 vs 2.41 s,
    # sitting 18), and LEAN_STEP, whose other branch was
    # ``_general_step``, which Gaussian units still take.

    def _lean_buffers(self, n: int, m: int) -> SimpleNamespace:
        """``_cd_buffers`` plus what the lean step reuses: the statistics' row weights,
        the scalars and the bias gradients."""
        buf = self._cd_buffers(n, m)
        if getattr(buf, "lean", None) is None:
            t = self.dtype
            pos, neg = t(-1.0 / n), t(1.0 / m)
            weights = np.empty(n + m, t)
            weights[:n], weights[n:] = pos, neg
            buf.lean = SimpleNamespace(
                pos=pos, neg=neg, one=t(1.0), weights=weights,
                grad_b=np.empty(self.n_visible, t), grad_c=np.empty(self.n_hidden, t))
        return buf

    def _lean_step(self, v0, rows, n: int, m: int, k: int, rng, chain,
                   sample_reconstruction: bool):
        """``cd_gradients`` for Bernoulli visible units: the products into reused buffers,
        each σ pass between them one kernel call (no wrapper checks), the keys of a step
        in one draw (``draw_keys``), the bias gradients into reused arrays; the same
        products, kernels, draws and statistics in the same order as ``_general_step``,
        so the same bits. Returns the reconstruction error (CD) or None (PCD)."""
        W, b, c = self.params["W"], self.params["visible_bias"], self.params["hidden_bias"]
        buf = self._lean_buffers(n, m)
        lean = buf.lean
        pos, neg, one = lean.pos, lean.neg, lean.one
        if rows is None:
            buf.v[:n] = v0
        elif rows[0].dtype == buf.v.dtype:
            gather_rows_into(rows[0], rows[1], buf.v[:n])    # np.take's rows, four at a time
        else:
            buf.v[:n] = rows[0][rows[1]]
        v_pos, p_pos, vk, pk, pre_v = buf.v[:n], buf.p[:n], buf.v[n:], buf.p[n:], buf.pre_v
        reconstruction_error = None
        if chain is None:   # CD-k, the keys in the general path's order
            samples = [step < k - 1 or sample_reconstruction for step in range(k)]
            keys = iter(draw_keys(rng, 1 + sum(samples) + (k - 1)))
            np.matmul(v_pos, W, out=p_pos)
            h = buf.h
            _sigmoid_bernoulli_kernel(p_pos, c, next(keys), h, 0, pos)
            for step in range(k):
                last = step == k - 1
                if samples[step] and step > 0:     # a sample whose mean nobody reads
                    np.matmul(h, W.T, out=pre_v)
                    _bernoulli_states_kernel(pre_v, b, next(keys), vk, 0)
                elif samples[step]:
                    np.matmul(h, W.T, out=pre_v)
                    _sigmoid_bernoulli_kernel(pre_v, b, next(keys), vk, 0, one)
                    mean = pre_v
                else:
                    np.matmul(h, W.T, out=vk)
                    _sigmoid_bias_kernel(vk, b, one)
                    mean = vk
                if step == 0:
                    diff = v_pos - mean
                    reconstruction_error = float(np.einsum("ij,ij->", diff, diff) / diff.size)
                np.matmul(vk, W, out=pk)
                if last:
                    _sigmoid_bias_kernel(pk, c, neg)
                else:               # the next product overwrites pk: the states only
                    _bernoulli_states_kernel(pk, c, next(keys), h, 0)
        else:               # PCD-k: 2k keys, visible then hidden, step by step
            own = chain.dtype == self.dtype and chain.flags.c_contiguous
            h = chain if own else np.ascontiguousarray(chain, dtype=self.dtype)
            keys = draw_keys(rng, 2 * k)
            # the chain's samples only: their probabilities are read by nobody
            # (the states-only kernel draws the same states without storing σ)
            for step in range(k):
                np.matmul(h, W.T, out=pre_v)
                _bernoulli_states_kernel(pre_v, b, keys[2 * step], vk, 0)
                if step < k - 1:
                    np.matmul(vk, W, out=pk)
                    _bernoulli_states_kernel(pk, c, keys[2 * step + 1], h, 0)
            np.matmul(buf.v, W, out=buf.p)      # p0 and pk in one product
            # p0 ← −σ/n and pk ← σ/m with the chain's next state h ~ P(h | vk), one call
            _hidden_pass_kernel(buf.p, c, n, keys[2 * k - 1], h, pos, neg, 0, n, 0, m)
            if not own:
                chain[...] = h
        # the general path's two GEMVs, written into reused arrays, before the gradient
        # GEMM (they only read what it reads, so the same bits): [p0; pk] is still in
        # the caller's cache from the σ pass that wrote it
        self.grads["visible_bias"] = np.matmul(lean.weights, buf.v, out=lean.grad_b)
        self.grads["hidden_bias"] = np.matmul(buf.ones, buf.p, out=lean.grad_c)
        grad_W = self.grads.get("W")
        if grad_W is None or grad_W.shape != W.shape or grad_W.dtype != W.dtype \
                or not grad_W.flags.c_contiguous:
            grad_W = self.grads["W"] = np.empty_like(W)
        np.matmul(buf.v.T, buf.p, out=grad_W)
        return reconstruction_error

    # -- the hooks the greedy trainer calls ------------------------------------------------
    def init_from_data(self, x: np.ndarray) -> None:
        """Visible biases from the data: log(p/(1−p)) for Bernoulli units (Hinton, 2010,
        §8.1), the mean for Gaussian ones."""
        mean = x.mean(axis=0, dtype=np.float64)
        if self.visible == "bernoulli":
            p = np.clip(mean, 1e-3, 1 - 1e-3)
            self.params["visible_bias"] = np.log(p / (1 - p)).astype(self.dtype)
        else:
            self.params["visible_bias"] = mean.astype(self.dtype)

    def new_train_state(self, x: np.ndarray, config, rng) -> dict:
        """State carried across minibatches: the persistent chains for PCD."""
        if not config.persistent:
            return {}
        rows = rng.integers(0, len(x), size=min(config.batch_size, len(x)))
        visible = np.ascontiguousarray(x[rows], dtype=self.dtype)
        return {"chain": self._sample_hidden(visible, rng)[1]}

    def train_rows(self, x: np.ndarray, idx: np.ndarray, rng, config, state: dict) -> dict:
        """``train_batch(x[idx], ...)``, the same bits, with x[idx] gathered straight into
        the step's [v0; vk] buffer (no minibatch copy in between)."""
        chain = state.get("chain")
        if x.ndim == 2 and x.shape[1] == self.n_visible and int(config.k) >= 1:
            return self.cd_gradients((x, idx), config.k, rng, chain=chain,
                                     sample_reconstruction=config.sample_reconstruction)
        return self.train_batch(x[idx], rng, config, state)

    def train_batch(self, xb: np.ndarray, rng, config, state: dict) -> dict:
        return self.cd_gradients(xb, config.k, rng, chain=state.get("chain"),
                                 sample_reconstruction=config.sample_reconstruction)

    def monitor(self, x_monitor: np.ndarray, rng) -> dict:
        """Per-epoch monitors on a fixed subset: exact log-likelihood when the RBM is small
        enough to enumerate, else pseudo-log-likelihood (Bernoulli visible)."""
        out = {"monitor_reconstruction_error": self.reconstruction_error(x_monitor)}
        if self.can_enumerate:
            out["log_likelihood"] = self.log_likelihood(x_monitor)
        elif self.visible == "bernoulli":
            out["pseudo_log_likelihood"] = self.pseudo_log_likelihood(x_monitor, rng)
        return out

    def encode(self, x: np.ndarray) -> np.ndarray:
        """What the next layer of a DBN is trained on: P(h = 1 | x)."""
        return self.hidden_probs(x)

    def to_layers(self):
        """Dense(W, hidden_bias) + Sigmoid: the MLP layers this RBM initialises."""
        from ..layers import Dense, Sigmoid
        dense = Dense(self.n_visible, self.n_hidden, init="zeros")
        dense.set_weights(self.params["W"], self.params["hidden_bias"])
        return [dense, Sigmoid()]

    # -- files -------------------------------------------------------------------------------
    def save(self, path) -> None:
        from .dbn import DBN
        DBN.from_units([self]).save(path)

    @classmethod
    def load(cls, path) -> "BernoulliRBM":
        from .dbn import load_single_unit
        return load_single_unit(path, cls)

    def fit(self, x, config=None, seed: int = 0, checkpoint=None, resume: bool = False,
            progress: bool = False, log=None, **overrides) -> list:
        """Train this RBM on x with CD-k: ``fit(x, epochs=10, lr=0.1, k=1, persistent=False, ...)``.

        Keyword overrides are fields of ``PretrainConfig``; returns the per-epoch history."""
        from .dbn import DBN, PretrainConfig
        config = PretrainConfig.make(config, **overrides)
        return DBN.from_units([self]).pretrain(x, config, seed=seed, checkpoint=checkpoint,
                                               resume=resume, progress=progress, log=log)[0]
