"""The column-scatter kernels of semi-sync with random groups, held to their NumPy twins."""
import numpy as np
import pytest

from minidnn.kernels.column_scatter import (add_columns, add_columns_numpy, write_columns,
                                            write_columns_numpy)


def _case(rng, rows, n, k_clear, k, dtype):
    buf = rng.standard_normal((rows, n)).astype(dtype)
    clear = np.sort(rng.choice(n, k_clear, replace=False))
    cols = np.sort(rng.choice(n, k, replace=False))
    values = rng.standard_normal((rows, k)).astype(dtype)
    return buf, clear, cols, values


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows,n,k_clear,k", [(17, 40, 6, 7), (5, 9, 0, 3), (3, 8, 8, 8), (4, 6, 2, 0)])
def test_write_columns_equals_its_numpy_twin(dtype, rows, n, k_clear, k):
    rng = np.random.default_rng(rows * n + k)
    buf, clear, cols, values = _case(rng, rows, n, k_clear, k, dtype)
    expected = write_columns_numpy(buf.copy(), clear, cols, values)
    got = buf.copy()
    assert write_columns(got, clear, cols, values) is got  # in place
    assert np.array_equal(got, expected)
    # what the twin means: cleared columns are zero unless rewritten, the others untouched
    assert np.array_equal(got[:, cols], values)
    assert np.all(got[:, np.setdiff1d(clear, cols)] == 0)
    untouched = np.setdiff1d(np.arange(n), np.union1d(clear, cols))
    assert np.array_equal(got[:, untouched], buf[:, untouched])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows,n,k", [(17, 40, 7), (5, 9, 9), (4, 6, 0)])
def test_add_columns_equals_its_numpy_twin_bit_for_bit(dtype, rows, n, k):
    rng = np.random.default_rng(rows + n + k)
    dst, _, cols, values = _case(rng, rows, n, 0, k, dtype)
    expected = add_columns_numpy(dst.copy(), cols, values, -0.05)
    got = dst.copy()
    assert add_columns(got, cols, values, -0.05) is got
    assert np.array_equal(got, expected)
    # and the optimizer's form v[:, g] -= η·step gives the same bits
    ref = dst.copy()
    ref[:, cols] -= dtype(0.05) * values
    assert np.array_equal(got, ref)


def test_wrong_shapes_are_clear_errors():
    buf = np.zeros((4, 6), np.float32)
    with pytest.raises(ValueError, match=r"values of shape \(rows, len\(cols\)\) = \(4, 2\)"):
        write_columns(buf, np.array([0]), np.array([1, 2]), np.zeros((4, 3), np.float32))
    with pytest.raises(ValueError, match="add_columns"):
        add_columns(buf, np.array([1, 2]), np.zeros((3, 2), np.float32), 1.0)
