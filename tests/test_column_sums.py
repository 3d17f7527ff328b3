"""kernels.column_sums equals NumPy's sum(axis=0) bit for bit (the bias gradient of Dense)."""
import numpy as np
from hypothesis import given, settings, strategies as st

from minidnn.kernels.column_sums import column_sums, column_sums_numpy


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 300), k=st.integers(1, 40), dtype=st.sampled_from([np.float32, np.float64]),
       order=st.sampled_from("CF"), seed=st.integers(0, 2 ** 16))
def test_equals_numpy_bit_for_bit(n, k, dtype, order, seed):
    rng = np.random.default_rng(seed)
    a = (rng.standard_normal((n, k)) * rng.choice([1.0, 1e4, 1e-3], size=(n, k))).astype(dtype)
    a = np.asarray(a, order=order)
    got = column_sums(a)
    assert got.dtype == a.dtype
    assert np.array_equal(got, column_sums_numpy(a))


def test_nan_and_inf_propagate_as_numpy():
    a = np.array([[1.0, np.inf, np.nan], [2.0, -np.inf, 0.0], [3.0, 1.0, 1.0]], np.float32)
    with np.errstate(invalid="ignore"):     # inf + (-inf) is NaN by design here
        expected = a.sum(axis=0)
    assert np.array_equal(column_sums(a), expected, equal_nan=True)
