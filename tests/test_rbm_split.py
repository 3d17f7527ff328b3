"""Kernels the row-split RBM step (deleted in sitting 22: it lost its quiet A/B) used,
which stay in the package: the Bernoulli kernel's ``row_offset`` (a row block draws what
the whole call draws for those rows) and the SGD step in parts."""
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


# -- the SGD step in parts --------------------------------------------------------

@pytest.mark.parametrize("parts", [2, 3])
@pytest.mark.parametrize("momentum,weight_decay,form", [(0.0, 0.0, "caffe"), (0.9, 0.002, "caffe"),
                                                        (0.5, 0.0, "pytorch"), (0.0, 0.01, "caffe")])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_split_sgd_step_equals_the_twin_bit_for_bit(parts, momentum, weight_decay, form, dtype,
                                                    monkeypatch):
    from minidnn.kernels import sgd_update
    monkeypatch.setattr(sgd_update, "SPLIT_MIN_ELEMENTS", 1)
    rng = np.random.default_rng(parts)
    w = rng.standard_normal((37, 29)).astype(dtype)
    g = rng.standard_normal((37, 29)).astype(dtype)
    v = rng.standard_normal((37, 29)).astype(dtype) if momentum else None
    w_ref, v_ref = w.copy(), None if v is None else v.copy()
    sgd_update.sgd_update_numpy(w_ref, g, v_ref, 0.1, momentum, weight_decay, form)
    sgd_update.sgd_update_unchecked(w, g, v, 0.1, momentum, weight_decay, form, parts)
    assert np.array_equal(w, w_ref)
    if v is not None:
        assert np.array_equal(v, v_ref)
