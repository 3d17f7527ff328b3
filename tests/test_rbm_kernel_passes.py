"""The Bernoulli kernel makes its Philox words a block of rows at a time
(``WORDS_PER_PASS``) and works two rows per loop; across pass boundaries, odd
passes, rows longer than a pass and row lengths that are not multiples of 4,
its draws are the twin's, bit for bit."""
import numpy as np
import pytest

from minidnn.kernels import rbm_kernels
from minidnn.kernels.rbm_kernels import (draw_key, philox_bits_numpy, sigmoid_bernoulli,
                                         sigmoid_sample, uniforms_from_bits_numpy)


# (15, 2340): passes of 7 rows (odd), so the two-rows loop ends each pass on a single row
@pytest.mark.parametrize("shape", [(120, 785), (3, rbm_kernels.WORDS_PER_PASS + 3), (7, 3),
                                   (1, 1), (15, rbm_kernels.WORDS_PER_PASS // 7)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bernoulli_kernel_equals_sampling_with_the_twins_uniforms(shape, dtype):
    rng = np.random.default_rng(shape[1])
    pre = (3 * rng.standard_normal(shape)).astype(dtype)
    bias = rng.standard_normal(shape[1]).astype(dtype)
    key = draw_key(rng)
    u = uniforms_from_bits_numpy(philox_bits_numpy(pre.size, key), dtype).reshape(shape)
    p_ref, s_ref = sigmoid_sample(pre.copy(), bias, u)
    p, s = sigmoid_bernoulli(pre.copy(), bias, key)
    assert np.array_equal(p, p_ref) and np.array_equal(s, s_ref)


@pytest.mark.parametrize("shape", [(120, 785), (3, rbm_kernels.WORDS_PER_PASS + 3), (7, 3),
                                   (1, 1), (15, rbm_kernels.WORDS_PER_PASS // 7)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_states_only_kernel_draws_the_bernoulli_kernels_states(shape, dtype):
    """``_bernoulli_states_kernel`` (sitting 23: the passes whose σ nobody reads) draws the
    states of ``sigmoid_bernoulli`` and of its twin, bit for bit, whole or as a row block
    (``row_offset``), and leaves the pre-activations as they were."""
    from minidnn.kernels.rbm_kernels import _bernoulli_states_kernel, sigmoid_bernoulli_numpy
    rng = np.random.default_rng(shape[1] + 1)
    pre = (3 * rng.standard_normal(shape)).astype(dtype)
    bias = rng.standard_normal(shape[1]).astype(dtype)
    key = draw_key(rng)
    _, s_ref = sigmoid_bernoulli(pre.copy(), bias, key)
    kept = pre.copy()
    states = np.full(shape, 7, dtype)
    _bernoulli_states_kernel(kept, bias, key, states, 0)
    assert np.array_equal(states, s_ref) and np.array_equal(kept, pre)
    assert np.array_equal(states, sigmoid_bernoulli_numpy(pre, bias, key)[1])
    lo = shape[0] // 2
    block = np.full((shape[0] - lo, shape[1]), 7, dtype)
    _bernoulli_states_kernel(pre[lo:].copy(), bias, key, block, lo)
    assert np.array_equal(block, s_ref[lo:])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("scale", [-1.0 / 100, 1.0 / 37, 1.0])
def test_scaled_kernels_store_the_product_a_separate_pass_would(dtype, scale):
    """``scale`` folds CD's row weights into the σ pass: the stored values are bit for bit
    σ(·) then ``p *= scale``, the draws compare u with the unscaled p, and the NumPy
    twins say the same."""
    from minidnn.kernels.rbm_kernels import (sigmoid_bernoulli_numpy, sigmoid_bias,
                                             sigmoid_bias_numpy)
    rng = np.random.default_rng(7)
    pre = (3 * rng.standard_normal((23, 131))).astype(dtype)
    bias = rng.standard_normal(131).astype(dtype)
    key = draw_key(rng)
    s = dtype(scale)
    p_plain, s_plain = sigmoid_bernoulli(pre.copy(), bias, key)
    p_scaled, s_scaled = sigmoid_bernoulli(pre.copy(), bias, key, scale=scale)
    assert np.array_equal(s_scaled, s_plain)
    assert np.array_equal(p_scaled, p_plain * s)
    p_twin, s_twin = sigmoid_bernoulli_numpy(pre, bias, key, scale=scale)
    assert np.array_equal(s_twin, s_plain)
    np.testing.assert_allclose(p_scaled, p_twin, rtol=2e-6 if dtype == np.float32 else 1e-12,
                               atol=1e-30)
    q_plain = sigmoid_bias(pre.copy(), bias)
    q_scaled = sigmoid_bias(pre.copy(), bias, scale=scale)
    assert np.array_equal(q_scaled, q_plain * s)
    np.testing.assert_allclose(q_scaled, sigmoid_bias_numpy(pre, bias, scale),
                               rtol=2e-6 if dtype == np.float32 else 1e-12, atol=1e-30)


@pytest.mark.parametrize("persistent", [False, True])
def test_train_rows_gathers_into_the_buffer_with_the_bits_of_train_batch(persistent):
    """The one-thread step takes (x, idx) and gathers x[idx] into its own buffer (float32
    x by np.take, other dtypes by a cast): the same gradients, chain and error, bit for
    bit, as ``train_batch(x[idx])``."""
    from minidnn.pretraining import BernoulliRBM, PretrainConfig
    config = PretrainConfig(epochs=1, batch_size=10, k=1, persistent=persistent)
    x32 = (np.random.default_rng(3).random((50, 12)) < 0.4).astype(np.float32)
    idx = np.sort(np.random.default_rng(4).permutation(50)[:10])
    for x in (x32, x32.astype(np.float64), x32[:, ::-1].copy()[:, ::-1]):
        results = []
        for rows in (True, False):
            rbm = BernoulliRBM(12, 7, rng=0)
            rng = np.random.default_rng(5)
            state = rbm.new_train_state(x32, config, np.random.default_rng(6))
            stats = rbm.train_rows(x, idx, rng, config, state) if rows else \
                rbm.train_batch(x[idx], rng, config, state)
            results.append((stats, {k: g.copy() for k, g in rbm.grads.items()},
                            state.get("chain")))
        (s1, g1, c1), (s2, g2, c2) = results
        assert s1 == s2
        assert all(np.array_equal(g1[k], g2[k]) for k in g1)
        assert (c1 is None and c2 is None) or np.array_equal(c1, c2)


def test_gather_rows_is_np_take():
    """``kernels.gather.gather_rows_into`` (the RBM's minibatch; sitting 23: four rows copied side by side) gives np.take's rows for
    any count (not only multiples of 4), repeated and unsorted indices, and np.take's
    answer (or error) for negative and out-of-range ones."""
    from minidnn.kernels.gather import gather_rows_into as gather_rows
    rng = np.random.default_rng(3)
    x = rng.random((50, 13), dtype=np.float32)
    for idx in (np.arange(0), np.array([49]), rng.integers(0, 50, 7),
                np.sort(rng.permutation(50)[:20]),
                rng.integers(0, 50, 9).astype(np.int32), np.array([-1, 3, -50, 0])):
        out = np.full((len(idx), 13), np.nan, np.float32)
        assert gather_rows(x, idx, out) is out
        assert np.array_equal(out, np.take(x, idx, axis=0))
    with pytest.raises(IndexError):
        gather_rows(x, np.array([0, 50]), np.empty((2, 13), np.float32))
    with pytest.raises(TypeError):                  # another dtype: np.take's refusal
        gather_rows(x, np.array([1, 2, 3]), np.empty((3, 13), np.float64))
