"""Sitting 22: the σ kernels store no subnormal probabilities. A unit far below threshold
has σ ≈ 1e-38, and the step stores σ scaled by ±1/batch, which in float32 was subnormal;
the GEMMs that read those statistics then ran 10-20x slower (``scaled_probabilities_numpy``).
Values whose scaled σ would be subnormal are stored as 0; the draws are unchanged."""
import numpy as np
import pytest

from minidnn.kernels.rbm_kernels import (draw_key, hidden_pass, hidden_pass_numpy,
                                         scaled_probabilities_numpy, sigmoid_bernoulli,
                                         sigmoid_bernoulli_numpy, sigmoid_bias,
                                         sigmoid_bias_numpy)
from minidnn.pretraining import BernoulliRBM


def _subnormal(a):
    return int(np.count_nonzero((a != 0) & (np.abs(a) < np.finfo(a.dtype).tiny)))


def _far_below(dtype, rows=7, cols=41, seed=0):
    """Pre-activations from −800 to +5: σ from 0 (float64: ~1e-308) to ~1, with float32's
    whole subnormal band for scales 1/100 and 1/10,000."""
    rng = np.random.default_rng(seed)
    pre = rng.uniform(-800 if dtype == np.float64 else -100, 5, (rows, cols)).astype(dtype)
    return pre, rng.standard_normal(cols).astype(dtype)


def test_the_twin_stores_zero_exactly_where_the_scaled_value_would_be_subnormal():
    p = np.array([1e-37, 1.2e-36, 1.1e-36, 0.5, np.nan, 0.0], np.float32)
    got = scaled_probabilities_numpy(p, -0.01)
    naive = p * np.float32(-0.01)
    assert _subnormal(naive) == 2 and _subnormal(got) == 0
    np.testing.assert_array_equal(got[[1, 3]], naive[[1, 3]])
    assert got[0] == 0 and got[2] == 0 and got[5] == 0 and np.isnan(got[4])
    assert np.all(scaled_probabilities_numpy(p[:4], 0.0) == 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("scale", [1.0, -0.01, 0.01, 1e-4, -1.0 / 37])
def test_scaled_kernels_store_no_subnormals_and_match_their_twins(dtype, scale):
    pre, bias = _far_below(dtype)
    tol = dict(rtol=2e-6 if dtype == np.float32 else 1e-12, atol=1e-37 if dtype == np.float32
               else 1e-306)
    got = sigmoid_bias(pre.copy(), bias, scale=scale)
    assert _subnormal(got) == 0
    np.testing.assert_allclose(got, sigmoid_bias_numpy(pre, bias, scale), **tol)
    key = draw_key(np.random.default_rng(1))
    sampled, states = sigmoid_bernoulli(pre.copy(), bias, key, scale=scale)
    twin, twin_states = sigmoid_bernoulli_numpy(pre, bias, key, scale=scale)
    assert _subnormal(sampled) == 0
    np.testing.assert_array_equal(states, twin_states)          # the draws: unscaled σ
    np.testing.assert_array_equal(states, sigmoid_bernoulli(pre.copy(), bias, key)[1])
    np.testing.assert_allclose(sampled, twin, **tol)
    p = np.concatenate([pre, pre[::-1]])
    hidden_states = np.empty_like(pre)
    hidden_pass(p, bias, len(pre), key, hidden_states, -abs(scale), abs(scale))
    p0, pk, twin_hidden = hidden_pass_numpy(np.concatenate([pre, pre[::-1]]), bias, len(pre),
                                            key, -abs(scale), abs(scale))
    assert _subnormal(p) == 0
    np.testing.assert_array_equal(hidden_states, twin_hidden)
    np.testing.assert_allclose(p, np.concatenate([p0, pk]), **tol)


def test_kernels_still_store_nan():
    pre = np.array([[np.nan, -90.0, 0.0]], np.float32)
    got = sigmoid_bias(pre.copy(), np.zeros(3, np.float32), scale=-0.01)
    assert np.isnan(got[0, 0]) and got[0, 1] == 0 and got[0, 2] == np.float32(-0.005)


@pytest.mark.parametrize("persistent", [True, False])
def test_a_saturated_step_keeps_its_statistics_normal_and_equals_the_plain_numpy_step(persistent):
    """Hidden biases from −90 to −80: σ(c + vW) from 1e-39 to 2e-35, times 1/20 partly
    subnormal before sitting 22. The step's stored statistics hold none, the samples and
    gradients are the general path's bit for bit, and the gradient is the float64
    statistic of the same samples to float32 rounding (the values stored as 0 moved it
    by < 1.2e-38 an element)."""
    rng = np.random.default_rng(0)
    x = (rng.random((20, 30)) < 0.4).astype(np.float32)
    chain0 = (rng.random((20, 16)) < 0.5).astype(np.float32)
    rbm = BernoulliRBM(30, 16, rng=1)
    rbm.params["hidden_bias"][...] = np.linspace(-90, -80, 16, dtype=np.float32)
    ref = BernoulliRBM(30, 16, rng=1)
    ref.params = {k: a.copy() for k, a in rbm.params.items()}
    ref._lean_step = ref._general_step
    chain, ref_chain = (chain0.copy(), chain0.copy()) if persistent else (None, None)
    rbm.cd_gradients(x, 1, np.random.default_rng(2), chain=chain)
    ref.cd_gradients(x, 1, np.random.default_rng(2), chain=ref_chain)
    buf = rbm._lean_buffers(20, 20)
    assert _subnormal(buf.p) == 0 and np.count_nonzero(buf.p == 0) > 0
    assert all(np.array_equal(rbm.grads[k], ref.grads[k]) for k in rbm.grads)
    if persistent:
        assert np.array_equal(chain, ref_chain)
    v, W, c = (a.astype(np.float64) for a in (buf.v, rbm.params["W"], rbm.params["hidden_bias"]))
    weights = np.r_[np.full(20, -1 / 20), np.full(20, 1 / 20)][:, None]
    stats = weights / (1 + np.exp(-(v @ W + c)))
    tiny = np.finfo(np.float32).tiny
    np.testing.assert_allclose(rbm.grads["W"], v.T @ stats, rtol=1e-5, atol=20 * tiny)
    np.testing.assert_allclose(rbm.grads["hidden_bias"], stats.sum(0), rtol=1e-5, atol=40 * tiny)
