"""RBMs small enough to enumerate every state are checked against exact sums.

Tolerances of the statistical tests are stated next to each assertion; every
Generator is seeded, so each test is deterministic."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate

from minidnn.kernels import rbm_kernels
from minidnn.kernels.rbm_kernels import (draw_key, philox4x32_numpy, philox_bits,
                                         philox_bits_numpy, sigmoid_bernoulli,
                                         sigmoid_bernoulli_numpy, sigmoid_bias, sigmoid_bias_numpy,
                                         sigmoid_sample, sigmoid_sample_numpy,
                                         uniforms_from_bits_numpy)
from minidnn.pretraining import BernoulliRBM, PretrainConfig
from minidnn.pretraining import rbm as rbm_module
from minidnn.pretraining.rbm import all_binary_states, logsumexp


def random_rbm(n_visible, n_hidden, seed, scale=1.0, visible="bernoulli", dtype=np.float64):
    rng = np.random.default_rng(seed)
    rbm = BernoulliRBM(n_visible, n_hidden, visible=visible, rng=rng, dtype=dtype)
    rbm.params["W"] = (scale * rng.standard_normal((n_visible, n_hidden))).astype(dtype)
    rbm.params["visible_bias"] = (0.5 * scale * rng.standard_normal(n_visible)).astype(dtype)
    rbm.params["hidden_bias"] = (0.5 * scale * rng.standard_normal(n_hidden)).astype(dtype)
    return rbm


def exact_joint(rbm):
    """(V, H, p) with p[a, b] = p(V[a], H[b]) by brute force over all 2^(n_v + n_h) states."""
    V, H = all_binary_states(rbm.n_visible), all_binary_states(rbm.n_hidden)
    energies = np.array([rbm.energy(np.repeat(v[None], len(H), 0), H) for v in V])
    log_p = -energies - logsumexp(-energies)
    return V, H, np.exp(log_p)


def exact_nll_gradient(rbm, data):
    """−∂ mean log p(v)/∂θ by enumeration: −(<v p(h|v)ᵀ>_data − <v p(h|v)ᵀ>_model)."""
    V = all_binary_states(rbm.n_visible)
    p_model = np.exp(-rbm.free_energy(V) - rbm.log_partition())
    ph_data, ph_model = rbm.hidden_probs(data), rbm.hidden_probs(V)
    return {"W": -(data.T @ ph_data / len(data) - (V * p_model[:, None]).T @ ph_model),
            "visible_bias": -(data.mean(0) - p_model @ V),
            "hidden_bias": -(ph_data.mean(0) - p_model @ ph_model)}


# -- kernels against their NumPy twins ----------------------------------------------------

@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 40), cols=st.integers(1, 40), seed=st.integers(0, 2 ** 31),
       scale=st.sampled_from([0.1, 3.0, 100.0]), dtype=st.sampled_from([np.float32, np.float64]))
def test_sampling_kernels_match_their_numpy_twins(rows, cols, seed, scale, dtype):
    rng = np.random.default_rng(seed)
    pre = (scale * rng.standard_normal((rows, cols))).astype(dtype)
    bias = rng.standard_normal(cols).astype(dtype)
    uniforms = rng.random((rows, cols), dtype=dtype)
    p_twin, s_twin = sigmoid_sample_numpy(pre, bias, uniforms)
    p_kernel, s_kernel = sigmoid_sample(pre.copy(), bias, uniforms)
    tol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(p_kernel, p_twin, rtol=tol, atol=tol)
    assert np.isfinite(p_kernel).all() and ((p_kernel >= 0) & (p_kernel <= 1)).all()
    decided = np.abs(uniforms - p_twin) > 2 * tol  # a draw within rounding of p may go either way
    np.testing.assert_array_equal(s_kernel[decided], s_twin[decided])
    np.testing.assert_allclose(sigmoid_bias(pre.copy(), bias), sigmoid_bias_numpy(pre, bias),
                               rtol=tol, atol=tol)


# Random123's known-answer vectors for Philox4x32-10 (kat_vectors: counter, key -> output)
PHILOX_KAT = [((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
              ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
              ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
               (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1))]


def test_philox_matches_the_published_known_answers_and_the_kernel_matches_its_twin():
    for counter, key, expected in PHILOX_KAT:
        out = philox4x32_numpy(np.array([counter], dtype=np.uint32), key)[0]
        assert [int(w) for w in out] == list(expected)
    # the kernel's block 0 under key (0, 0) with c2 = c3 = 0 is the first vector
    assert [int(w) for w in philox_bits(4, np.zeros(4, np.uint32))] == list(PHILOX_KAT[0][2])
    rng = np.random.default_rng(5)
    for n in (1, 3, 4, 5, 1001):
        key = draw_key(rng)
        np.testing.assert_array_equal(philox_bits(n, key), philox_bits_numpy(n, key))


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 30), cols=st.integers(1, 41), seed=st.integers(0, 2 ** 31),
       scale=st.sampled_from([0.1, 3.0, 100.0]), dtype=st.sampled_from([np.float32, np.float64]))
def test_fused_bernoulli_kernel_matches_its_numpy_twin(rows, cols, seed, scale, dtype):
    """Same probabilities to rounding, the same draws (Philox words bit for bit), for any
    row length (blocks of 4 words straddle rows) and into a row block of a bigger buffer."""
    rng = np.random.default_rng(seed)
    pre = (scale * rng.standard_normal((rows, cols))).astype(dtype)
    bias = rng.standard_normal(cols).astype(dtype)
    key = draw_key(rng)
    p_twin, s_twin = sigmoid_bernoulli_numpy(pre, bias, key)
    buffer = np.full((rows + 2, cols), 7, dtype=dtype)
    p_kernel, s_kernel = sigmoid_bernoulli(pre.copy(), bias, key, buffer[1:-1])
    tol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(p_kernel, p_twin, rtol=tol, atol=tol)
    u = uniforms_from_bits_numpy(philox_bits_numpy(pre.size, key), dtype).reshape(pre.shape)
    decided = np.abs(u - p_twin) > 2 * tol
    np.testing.assert_array_equal(s_kernel[decided], s_twin[decided])
    assert (buffer[0] == 7).all() and (buffer[-1] == 7).all()
    assert set(np.unique(s_kernel)) <= {0.0, 1.0}


def test_float32_sigmoid_is_accurate_over_the_whole_range():
    x = np.concatenate([np.linspace(-100, 100, 200001), [0.0, -87.0, 87.0, -88.5, 88.5, 1e4, -1e4]])
    x = x.astype(np.float32)
    from scipy.special import expit
    exact = expit(x.astype(np.float64))
    got = sigmoid_bias(x.reshape(1, -1).copy(), np.zeros(len(x), np.float32))[0]
    assert np.abs(got - exact).max() < 1e-7
    normal = exact > 1e-30                    # below, the exponent is clamped (σ ≈ 1e-38)
    assert (np.abs(got - exact)[normal] / exact[normal]).max() < 1e-6
    assert ((got >= 0) & (got <= 1)).all()


def test_fused_bernoulli_draws_have_the_right_frequencies_and_no_correlation():
    """400,000 draws at each of five probabilities: every frequency within 5 binomial
    standard errors, and neighbouring draws (same block of 4 words and across blocks)
    uncorrelated to within 5/sqrt(N)."""
    probs = np.array([0.001, 0.1, 0.5, 0.9, 0.999], dtype=np.float32)
    logits = np.log(probs / (1 - probs)).astype(np.float32)
    rows = 80000
    pre = np.tile(logits, (rows, 1))
    _, states = sigmoid_bernoulli(pre, np.zeros(5, np.float32), draw_key(np.random.default_rng(0)))
    se = np.sqrt(probs * (1 - probs) / rows)
    assert (np.abs(states.mean(0) - probs) < 5 * se).all(), states.mean(0)
    flat = states[:, 2].astype(np.float64)     # p = 0.5: neighbours in element order
    z = flat - flat.mean()
    for lag in (1, 4, 5):
        corr = (z[:-lag] * z[lag:]).mean() / z.var()
        assert abs(corr) < 5 / np.sqrt(len(z)), (lag, corr)
    other = sigmoid_bernoulli(np.tile(logits, (rows, 1)), np.zeros(5, np.float32),
                              draw_key(np.random.default_rng(1)))[1]
    assert (other != states).mean() > 0.05       # another key, another stream


@pytest.mark.parametrize("persistent,batch", [(False, 7), (True, 7), (True, 4)])
def test_cd_gradients_equal_a_plain_numpy_cd_step(persistent, batch):
    """cd_gradients (reused buffers, stacked GEMMs, fused kernels) against CD-1 / PCD-1
    written out with the NumPy twins and the same keys; PCD with 7 chains and a short
    batch of 4 rows too. float64, so the draws agree exactly."""
    rbm = random_rbm(9, 6, seed=4, scale=1.0)
    W, b, c = (rbm.params[k] for k in ("W", "visible_bias", "hidden_bias"))
    rng = np.random.default_rng(0)
    v0 = (rng.random((batch, 9)) < 0.4).astype(np.float64)
    chain = (rng.random((7, 6)) < 0.5).astype(np.float64) if persistent else None
    start = None if chain is None else chain.copy()
    stats = rbm.cd_gradients(v0, 1, np.random.default_rng(3), chain=chain)
    keys = np.random.default_rng(3)
    if persistent:
        _, vk = sigmoid_bernoulli_numpy(start @ W.T, b, draw_key(keys))
        p0 = sigmoid_bias_numpy(v0 @ W, c)
        pk, next_chain = sigmoid_bernoulli_numpy(vk @ W, c, draw_key(keys))
        np.testing.assert_array_equal(chain, next_chain)
        assert stats == {}
    else:
        p0, h0 = sigmoid_bernoulli_numpy(v0 @ W, c, draw_key(keys))
        vk = sigmoid_bias_numpy(h0 @ W.T, b)
        pk = sigmoid_bias_numpy(vk @ W, c)
        assert stats["reconstruction_error"] == pytest.approx(((v0 - vk) ** 2).mean(), rel=1e-12)
    m = len(vk)
    np.testing.assert_allclose(rbm.grads["W"], -(v0.T @ p0 / batch - vk.T @ pk / m), atol=1e-13)
    np.testing.assert_allclose(rbm.grads["visible_bias"], -(v0.mean(0) - vk.mean(0)), atol=1e-13)
    np.testing.assert_allclose(rbm.grads["hidden_bias"], -(p0.mean(0) - pk.mean(0)), atol=1e-13)


# -- exact quantities -------------------------------------------------------------------------

@settings(max_examples=25, deadline=None)
@given(n_visible=st.integers(1, 6), n_hidden=st.integers(1, 6), seed=st.integers(0, 10 ** 6))
def test_free_energy_equals_brute_force_sum_over_hidden_states(n_visible, n_hidden, seed):
    for visible in ("bernoulli", "gaussian"):
        rbm = random_rbm(n_visible, n_hidden, seed, scale=2.0, visible=visible)
        rng = np.random.default_rng(seed)
        v = all_binary_states(n_visible) if visible == "bernoulli" else \
            rng.standard_normal((7, n_visible))
        H = all_binary_states(n_hidden)
        brute = np.array([-logsumexp(-rbm.energy(np.repeat(row[None], len(H), 0), H)) for row in v])
        np.testing.assert_allclose(rbm.free_energy(v), brute, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("n_visible,n_hidden", [(5, 7), (7, 5), (6, 6)])
def test_exact_marginals_match_the_enumerated_joint(n_visible, n_hidden):
    """p(v) = exp(−F(v) − log Z), with log Z enumerated on either side, equals Σ_h p(v, h)."""
    rbm = random_rbm(n_visible, n_hidden, seed=3, scale=1.5)
    V, _, joint = exact_joint(rbm)
    marginal = np.exp(-rbm.free_energy(V) - rbm.log_partition())
    np.testing.assert_allclose(marginal, joint.sum(axis=1), rtol=1e-10, atol=1e-14)
    assert marginal.sum() == pytest.approx(1.0, abs=1e-12)
    assert rbm.log_likelihood(V[:3]) == pytest.approx(np.log(joint.sum(axis=1)[:3]).mean(), abs=1e-10)


def test_gaussian_visible_log_partition_matches_numerical_integration():
    rbm = random_rbm(1, 3, seed=5, visible="gaussian")
    density_sum, _ = integrate.quad(lambda v: np.exp(-rbm.free_energy(np.array([[v]]))[0]),
                                    -np.inf, np.inf)
    assert rbm.log_partition() == pytest.approx(np.log(density_sum), abs=1e-8)


# -- contrastive divergence against the exact gradient -------------------------------------------

def test_cd_k_estimate_approaches_the_exact_gradient_as_k_grows():
    """A 6×4 RBM with large weights (std 2.5) mixes slowly, so CD-1 is visibly biased.

    Each CD-k gradient averages 40,000 chains (8 patterns × 5,000 copies).
    With these seeds the relative error ‖CD_k − exact‖ / ‖exact‖ measured
    0.34, 0.13, 0.03 for k = 1, 2, 4 (bias) and 0.001–0.003 for k = 30 and
    100 (Monte Carlo noise). Stated tolerances: the error falls strictly
    over k = 1, 2, 4, 30; CD-30 is within 0.01 of the exact gradient
    (relative), while CD-1 is off by more than 0.2."""
    rbm = random_rbm(6, 4, seed=11, scale=2.5)
    data = all_binary_states(6)[np.random.default_rng(0).choice(64, 8, replace=False)]
    exact = exact_nll_gradient(rbm, data)
    exact_flat = np.concatenate([exact[k].ravel() for k in sorted(exact)])
    chains = np.repeat(data, 5000, axis=0)
    errors = {}
    for k in (1, 2, 4, 30):
        rbm.cd_gradients(chains, k, np.random.default_rng(100 + k), sample_reconstruction=True)
        estimate = np.concatenate([rbm.grads[key].ravel() for key in sorted(exact)])
        errors[k] = np.linalg.norm(estimate - exact_flat) / np.linalg.norm(exact_flat)
    assert errors[1] > errors[2] > errors[4] > errors[30], errors
    assert errors[30] < 0.01, errors
    assert errors[1] > 0.2, errors


def test_gibbs_chains_converge_to_the_enumerated_distribution():
    """20,000 chains of a 4×3 RBM after 100 Gibbs steps: the histogram of the 16 visible
    states is within total-variation distance 0.02 of exact p(v) (sampling noise alone
    gives about 0.01), and a chi-square statistic stays below the 0.999 quantile."""
    from scipy import stats
    rbm = random_rbm(4, 3, seed=7, scale=1.0)
    V = all_binary_states(4)
    exact = np.exp(-rbm.free_energy(V) - rbm.log_partition())
    rng = np.random.default_rng(1)
    start = (rng.random((20000, 4)) < 0.5).astype(np.float64)
    samples = rbm.gibbs(start, steps=100, rng=rng)
    index = samples @ (2 ** np.arange(3, -1, -1))
    counts = np.bincount(index.astype(int), minlength=16)
    tv = 0.5 * np.abs(counts / counts.sum() - exact).sum()
    assert tv < 0.02, tv
    chi2 = ((counts - 20000 * exact) ** 2 / (20000 * exact)).sum()
    assert chi2 < stats.chi2.ppf(0.999, df=15), chi2


def test_sample_hidden_draws_with_the_hidden_probabilities():
    rbm = random_rbm(5, 4, seed=2)
    v = np.repeat(all_binary_states(5)[[3, 17]], 20000, axis=0)
    probs, states = rbm.sample_hidden(v, np.random.default_rng(0))
    assert set(np.unique(states)) <= {0.0, 1.0}
    for block in (slice(0, 20000), slice(20000, 40000)):
        # binomial standard error <= 0.0036; 5 sigma
        np.testing.assert_allclose(states[block].mean(0), probs[block][0], atol=0.018)


# -- training -------------------------------------------------------------------------------------

def toy_data(n=2000, seed=0):
    """Three 8-bit prototypes, each bit flipped with probability 0.05."""
    rng = np.random.default_rng(seed)
    prototypes = np.array([[1, 1, 1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 1, 1, 1, 1],
                           [1, 0, 1, 0, 1, 0, 1, 0]], dtype=np.float32)
    x = prototypes[rng.integers(0, 3, n)]
    return np.abs(x - (rng.random(x.shape) < 0.05)).astype(np.float32)


# PCD with few chains is noisy at a large learning rate and momentum 0.9 (Tieleman,
# 2008, used small ones): with 20 chains at lr 0.05 the exact log-likelihood jumps
# between -2.8 and -5.4 from epoch to epoch. It runs with 100 chains, lr 0.05 and
# momentum 0.5 throughout.
@pytest.mark.parametrize("persistent,lr,final_momentum,batch_size",
                         [(False, 0.1, 0.9, 20), (True, 0.05, 0.5, 100)])
def test_training_raises_the_exact_log_likelihood(persistent, lr, final_momentum, batch_size):
    """The toy data's own entropy is ≈ 2.9 nats per vector (log 3 + 8·H(0.05)); a
    model with zero weights and data-fitted biases scores ≈ −5.1. Stated tolerance:
    30 epochs must gain at least 1.5 nats."""
    x = toy_data()
    rbm = BernoulliRBM(8, 6, rng=0)
    rbm.init_from_data(x)
    before = rbm.log_likelihood(x)
    history = rbm.fit(x, epochs=30, lr=lr, weight_decay=0.0002, batch_size=batch_size,
                      persistent=persistent, final_momentum=final_momentum, seed=1)
    after = rbm.log_likelihood(x)
    assert after > before + 1.5, (before, after)
    assert history[-1]["log_likelihood"] > history[0]["log_likelihood"]
    assert history[-1]["reconstruction_error"] < history[0]["reconstruction_error"]
    assert [h["momentum"] for h in history[:20]] == [0.5] * 20
    assert history[20]["momentum"] == final_momentum


def test_pseudo_likelihood_is_reported_when_enumeration_is_too_large():
    rng = np.random.default_rng(0)
    x = (rng.random((300, 30)) < 0.3).astype(np.float32)
    rbm = BernoulliRBM(30, 25, rng=0)
    history = rbm.fit(x, epochs=2, batch_size=50)
    assert "pseudo_log_likelihood" in history[-1] and "log_likelihood" not in history[-1]
    assert np.isfinite(history[-1]["pseudo_log_likelihood"])


def test_gaussian_visible_rbm_trains_on_real_valued_data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 6)).astype(np.float32) + np.array([2, -1, 0, 0, 1, 0.5], np.float32)
    rbm = BernoulliRBM(6, 4, visible="gaussian", rng=0)
    history = rbm.fit(x, epochs=5, lr=0.01, batch_size=50)
    assert np.isfinite(history[-1]["log_likelihood"])
    np.testing.assert_allclose(rbm.params["visible_bias"], x.mean(0), atol=0.3)


def test_training_is_reproducible_from_the_seed():
    x = toy_data(400)
    a, b = BernoulliRBM(8, 5, rng=3), BernoulliRBM(8, 5, rng=3)
    a.fit(x, epochs=2, seed=9, k=2)
    b.fit(x, epochs=2, seed=9, k=2)
    for key in a.params:
        np.testing.assert_array_equal(a.params[key], b.params[key])


# -- bad inputs --------------------------------------------------------------------------------------

def test_bad_inputs_raise_clear_value_errors():
    rbm = BernoulliRBM(8, 4, rng=0)
    with pytest.raises(ValueError, match=r"expects visible input of shape \(batch, 8\), got \(3, 7\)"):
        rbm.hidden_probs(np.zeros((3, 7)))
    with pytest.raises(ValueError, match="NaN or Inf"):
        rbm.free_energy(np.full((2, 8), np.nan))
    with pytest.raises(ValueError, match=r"expects training data of shape \(batch, 8\)"):
        rbm.fit(np.zeros((10, 9)), epochs=1)
    with pytest.raises(ValueError, match="NaN or Inf"):
        x = toy_data(50)
        x[3, 2] = np.nan
        rbm.fit(x, epochs=1)
    with pytest.raises(ValueError, match=r"expects data in \[0, 1\].*visible='gaussian'"):
        rbm.fit(toy_data(50) * 3, epochs=1)
    with pytest.raises(ValueError, match="k >= 1"):
        rbm.fit(toy_data(50), epochs=1, k=0)
    with pytest.raises(ValueError, match="momentum must be < 1"):
        PretrainConfig(final_momentum=1.5)
    with pytest.raises(ValueError, match="visible must be one of"):
        BernoulliRBM(8, 4, visible="poisson")
    with pytest.raises(ValueError, match="exact log Z needs"):
        BernoulliRBM(30, 30).log_partition()


# -- memory and monitors -----------------------------------------------------------------------------

def test_exact_log_partition_is_enumerated_in_bounded_chunks(monkeypatch):
    """A 784×16 RBM's log Z (65,536 hidden states) used to build (65,536, 784) float64
    temporaries, 793 MiB of NumPy peak (the speed benchmark's warm-up RBM). Here 784×14
    (16,384 states): 198 MiB before, 33 MiB chunked (tracemalloc); it must stay under
    64 MiB, and the value must not depend on the chunk size."""
    import tracemalloc
    rbm = BernoulliRBM(784, 14, rng=0)
    tracemalloc.start()
    try:
        value = rbm.log_partition()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2 ** 20, peak / 2 ** 20
    small = random_rbm(7, 9, seed=2)
    whole = small.log_partition()
    monkeypatch.setattr(rbm_module, "ENUMERATION_CHUNK_ELEMENTS", 10)
    assert small.log_partition() == pytest.approx(whole, abs=1e-12)
    assert np.isfinite(value)
    np.testing.assert_array_equal(all_binary_states(5, 7, 19), all_binary_states(5)[7:19])


def test_monitor_size_zero_skips_the_monitors_and_leaves_training_unchanged():
    x = toy_data(300)
    a, b = BernoulliRBM(8, 5, rng=3), BernoulliRBM(8, 5, rng=3)
    with_monitor = a.fit(x, epochs=2, seed=9, persistent=True)
    without = b.fit(x, epochs=2, seed=9, persistent=True, monitor_size=0)
    for key in a.params:
        np.testing.assert_array_equal(a.params[key], b.params[key])
    assert "log_likelihood" in with_monitor[-1] and "log_likelihood" not in without[-1]
    with pytest.raises(ValueError, match="monitor_size >= 0"):
        PretrainConfig(monitor_size=-1)
    with pytest.raises(ValueError, match="NaN or Inf"):
        bad = x.copy()
        bad[5, 1] = -np.inf
        b.fit(bad, epochs=1)
