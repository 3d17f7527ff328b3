"""Kernels the row-split RBM step (deleted in sitting 22: it lost its quiet A/B) used,
which stays in the package: the Bernoulli kernel's ``row_offset`` (a row block draws what
the whole call draws for those rows). The SGD step in parts went in sitting 22 too: no
layer asked for it any more."""
import numpy as np
import pytest

from minidnn.kernels.rbm_kernels import (draw_key, sigmoid_bernoulli, sigmoid_bernoulli_numpy)


@pytest.mark.parametrize("cols", [784, 13, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_row_blocks_with_row_offset_draw_what_the_whole_call_draws(cols, dtype):
    rng = np.random.default_rng(cols)
    pre = (3 * rng.standard_normal((37, cols))).astype(dtype)
    bias = rng.standard_normal(cols).astype(dtype)
    key = draw_key(rng)
    p_whole, s_whole = sigmoid_bernoulli(pre.copy(), bias, key)
    for lo, hi in [(0, 5), (5, 6), (6, 23), (23, 37)]:
        block = pre[lo:hi].copy()
        states = np.empty_like(block)
        sigmoid_bernoulli(block, bias, key, states, row_offset=lo)
        assert np.array_equal(block, p_whole[lo:hi]) and np.array_equal(states, s_whole[lo:hi])
        p_twin, s_twin = sigmoid_bernoulli_numpy(pre[lo:hi], bias, key, row_offset=lo)
        assert np.array_equal(states, s_twin)
        np.testing.assert_allclose(block, p_twin, rtol=2e-6 if dtype == np.float32 else 1e-15)
    with pytest.raises(ValueError, match="row_offset"):
        sigmoid_bernoulli(pre.copy(), bias, key, row_offset=-1)
