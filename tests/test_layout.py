"""The layout kernels around the row-layout convolution (``kernels.layout``),
held to their NumPy twins: the Numba kernels themselves on small and odd
shapes, the public functions above and below PARALLEL_MIN, reused outputs."""
import numpy as np
import pytest

from minidnn.kernels import layout
from minidnn.kernels.layout import (PARALLEL_MIN, nchw_to_rows, nchw_to_rows_numpy,
                                    pad_channels_last, pad_channels_last_numpy, rows_to_nchw,
                                    rows_to_nchw_numpy)

SHAPES = [(1, 1, 1, 1), (2, 3, 5, 7), (3, 5, 4, 4), (2, 8, 6, 3)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_kernels_equal_their_twins(shape, dtype):
    rng = np.random.default_rng(0)
    N, C, H, W = shape
    x = rng.standard_normal(shape).astype(dtype)
    for ph, pw in ((0, 0), (2, 1)):
        out = np.zeros((N, H + 2 * ph, W + 2 * pw, C), dtype)
        layout._pad_channels_last_kernel(x, ph, pw, out)
        np.testing.assert_array_equal(out, pad_channels_last_numpy(x, ph, pw))
    O, P = C, H * W
    y_rows = rng.standard_normal((N * P, O)).astype(dtype)
    bias = rng.standard_normal(O).astype(dtype)
    for has_bias in (True, False):
        out = np.empty((N, O, P), dtype)
        layout._rows_to_nchw_kernel(y_rows, bias, has_bias, out)
        np.testing.assert_array_equal(out.reshape(N, O, H, W), rows_to_nchw_numpy(
            y_rows, N, H, W, bias if has_bias else None))
    grad = rng.standard_normal((N, O, H, W)).astype(dtype)
    out = np.empty((N * P, O), dtype)
    layout._nchw_to_rows_kernel(grad.reshape(N, O, P), out)
    np.testing.assert_array_equal(out, nchw_to_rows_numpy(grad))


@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (40, 32, 18, 18)])   # twin / parallel kernel
def test_public_functions_on_both_sides_of_the_threshold(shape):
    rng = np.random.default_rng(1)
    N, C, H, W = shape
    x = rng.standard_normal(shape).astype(np.float32)
    assert (x.size >= PARALLEL_MIN) == (shape[0] == 40)
    buffer = np.zeros((N, H + 4, W + 2, C), np.float32)
    for _ in range(2):                          # a reused output keeps its zero border
        assert pad_channels_last(x, 2, 1, out=buffer) is buffer
        np.testing.assert_array_equal(buffer, pad_channels_last_numpy(x, 2, 1))
        x = rng.standard_normal(shape).astype(np.float32)
    y_rows = rng.standard_normal((N * H * W, C)).astype(np.float32)
    bias = rng.standard_normal(C).astype(np.float32)
    np.testing.assert_array_equal(rows_to_nchw(y_rows, N, H, W, bias),
                                  rows_to_nchw_numpy(y_rows, N, H, W, bias))
    np.testing.assert_array_equal(rows_to_nchw(y_rows, N, H, W),
                                  rows_to_nchw_numpy(y_rows, N, H, W))
    np.testing.assert_array_equal(nchw_to_rows(x), nchw_to_rows_numpy(x))
