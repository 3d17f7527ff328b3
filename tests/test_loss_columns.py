"""The float32 softmax cross-entropy pass over zᵀ (``_fused_columns32``, what training
calls) gives ``_fused_rows32``'s bits: the same operations per element, reordered only
across elements."""
import math

import numpy as np
from hypothesis import given, settings, strategies as st

from minidnn.kernels import softmax_xent


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 140), k=st.integers(1, 24), scale=st.sampled_from([1.0, 10.0, 100.0]),
       special=st.sampled_from([None, np.nan, np.inf, -np.inf]), bad_label=st.booleans(),
       seed=st.integers(0, 2 ** 31))
def test_columns_pass_equals_rows_pass_bit_for_bit(n, k, scale, special, bad_label, seed):
    rng = np.random.default_rng(seed)
    z = (rng.standard_normal((n, k)) * scale).astype(np.float32)
    if special is not None:
        z[rng.integers(0, n), rng.integers(0, k)] = special
    t = rng.integers(0, k, n)
    if bad_label:
        t[rng.integers(0, n)] = rng.choice([-1, k])
    g_rows, g_cols = np.empty_like(z), np.empty_like(z)
    total_rows, ok_rows = softmax_xent._fused_rows32(z, t, g_rows)
    total_cols, ok_cols = softmax_xent._fused_columns32(z, t, g_cols)
    assert ok_rows == ok_cols == (not bad_label)
    if ok_rows:
        assert total_rows == total_cols or (math.isnan(total_rows) and math.isnan(total_cols))
        assert np.array_equal(g_rows, g_cols, equal_nan=True)


def test_training_calls_the_columns_pass():
    z = np.random.default_rng(0).standard_normal((100, 10)).astype(np.float32)
    t = np.arange(100) % 10
    loss, grad = softmax_xent.softmax_cross_entropy(z, t)
    g = np.empty_like(z)
    total, _ = softmax_xent._fused_rows32(z, t, g)
    assert loss == float(-total / 100) + 0.0 and np.array_equal(grad, g)
