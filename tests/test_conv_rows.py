"""The row layout behind Conv2D (im2row / row2im), its reused buffers, the
separable max-pool kernel, and the three-product seam of Conv2D."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minidnn.kernels.im2col import (RowBuffers, im2col_numpy, im2row, im2row_numpy, row2im,
                                    row2im_numpy, weight_from_rows, weight_rows)
from minidnn.layers import Conv2D, MaxPool2D
from minidnn.layers.pooling import maxpool_forward_numpy
from tests.test_conv_pool import FAST, conv_geometries, naive_conv2d


@FAST
@given(conv_geometries(), st.integers(0, 2**16))
def test_im2row_kernels_equal_their_numpy_twins_and_are_adjoint(geometry, seed):
    x_shape, kernel, stride, padding = geometry
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape)
    rows = im2row(x, kernel, stride, padding)
    np.testing.assert_array_equal(rows, im2row_numpy(x, kernel, stride, padding))
    g = rng.standard_normal(rows.shape)
    dx = row2im(g, x_shape, kernel, stride, padding)
    np.testing.assert_allclose(dx, row2im_numpy(g, x_shape, kernel, stride, padding),
                               rtol=1e-12, atol=1e-12)
    # <im2row(x), g> = <x, row2im(g)>: row2im is the adjoint
    assert np.isclose((rows * g).sum(), (x * dx).sum(), rtol=1e-10)


def test_a_row_is_the_column_of_im2col_in_channels_last_order():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 6, 7))
    rows = im2row(x, (3, 2), (2, 1), (1, 0))
    cols = im2col_numpy(x, (3, 2), (2, 1), (1, 0))
    # rows[m, (i·kw + j)·C + c] == cols[(c·kh + i)·kw + j, m]
    as_cols = rows.reshape(len(rows), 3, 2, 3).transpose(3, 1, 2, 0).reshape(len(cols), -1)
    np.testing.assert_array_equal(as_cols, cols)


def test_weight_rows_round_trip():
    W = np.arange(2 * 3 * 4 * 5, dtype=np.float64).reshape(2, 3, 4, 5)
    rows = weight_rows(W)
    assert rows.shape == (4 * 5 * 3, 2)
    assert rows[(1 * 5 + 2) * 3 + 1, 0] == W[0, 1, 1, 2]
    np.testing.assert_array_equal(weight_from_rows(rows, W.shape), W)


def test_reused_buffers_give_the_same_results_and_dx_is_never_a_view_of_them():
    rng = np.random.default_rng(1)
    buffers = RowBuffers()
    x1, x2 = rng.standard_normal((2, 1, 6, 6)), rng.standard_normal((2, 1, 6, 6))
    r1 = im2row(x1, 3, 1, 0, buffers=buffers).copy()
    np.testing.assert_array_equal(r1, im2row_numpy(x1, 3))
    np.testing.assert_array_equal(im2row(x2, 3, 1, 0, buffers=buffers), im2row_numpy(x2, 3))
    # padded buffer: the border written zero once stays zero on reuse
    np.testing.assert_array_equal(im2row(x1, 3, 1, 2, buffers=buffers), im2row_numpy(x1, 3, 1, 2))
    np.testing.assert_array_equal(im2row(x2, 3, 1, 2, buffers=buffers), im2row_numpy(x2, 3, 1, 2))
    g = rng.standard_normal(r1.shape)
    dx1 = row2im(g, x1.shape, 3, 1, 0, buffers=buffers)       # C = 1, no padding
    kept = dx1.copy()
    row2im(2 * g, x1.shape, 3, 1, 0, buffers=buffers)
    np.testing.assert_array_equal(dx1, kept)


def test_conv2d_training_steps_with_reused_buffers_match_the_direct_definition():
    rng = np.random.default_rng(2)
    layer = Conv2D(3, 4, 3, stride=1, padding=1, rng=0)
    layer.cast(np.float64)
    for step in range(3):          # the same layer, fresh data each step
        x = rng.standard_normal((2, 3, 5, 5))
        y = layer.forward(x, training=True)
        np.testing.assert_allclose(y, naive_conv2d(x, layer.params["W"], layer.params["b"],
                                                   (1, 1), (1, 1)), atol=1e-12)
        layer.backward(rng.standard_normal(y.shape))


def test_conv2d_evaluation_in_chunks_equals_one_pass():
    rng = np.random.default_rng(3)
    layer = Conv2D(2, 3, 3, padding=1, rng=0)
    x = rng.standard_normal((11, 2, 6, 6)).astype(np.float32)
    layer.EVAL_CHUNK = 4
    chunked = layer.forward(x)
    layer.EVAL_CHUNK = 100
    np.testing.assert_array_equal(chunked, layer.forward(x))


class _ScaledConv(Conv2D):
    """A conv holding W as integer codes times a scale, through the three products only."""

    def _weight_rows(self):
        return self.weight_matrix(np.round(self.params["W"] * 4) / 4)


@pytest.mark.parametrize("channels_last_min", [0, 10**6])
def test_the_three_products_are_the_seam_a_subclass_overrides(channels_last_min):
    rng = np.random.default_rng(4)
    layer = _ScaledConv(2, 3, 3, rng=0)
    layer.CHANNELS_LAST_MIN = channels_last_min
    layer.cast(np.float64)
    x = rng.standard_normal((2, 2, 5, 5))
    Wq = np.round(layer.params["W"] * 4) / 4
    np.testing.assert_allclose(layer.forward(x, training=True),
                               naive_conv2d(x, Wq, layer.params["b"], (1, 1), (0, 0)),
                               atol=1e-12)


def test_maxpool_kernel_lets_the_first_nan_win_like_its_twin():
    x = np.array([[[[1.0, np.nan, 3.0, 2.0],
                    [np.nan, 0.0, 5.0, np.nan],
                    [4.0, 4.0, 1.0, 1.0]]]], dtype=np.float32)
    for kernel, stride, ceil in ((2, 2, True), (3, 1, False), (2, 1, False)):
        layer = MaxPool2D(kernel, stride, ceil_mode=ceil)
        out = layer.forward(x, training=True)
        expected, argmax = maxpool_forward_numpy(x, layer._geometry(x.shape))
        np.testing.assert_array_equal(out, expected)
        np.testing.assert_array_equal(layer.flat_argmax(), argmax)


@pytest.mark.parametrize("shape, kernel, stride, padding", [
    ((2, 3, 7, 6), 3, 1, 1), ((2, 4, 8, 8), (3, 2), (2, 1), (1, 0)), ((1, 1, 6, 6), 5, 1, 2)])
def test_both_row_orders_give_the_same_outputs_and_gradients(shape, kernel, stride, padding):
    from tests.gradcheck import check_layer_gradients
    rng = np.random.default_rng(5)
    x = rng.standard_normal(shape)
    results = []
    for channels_last_min in (0, 10**6):        # channels_last, channels_first
        layer = Conv2D(shape[1], 3, kernel, stride, padding, rng=0)
        layer.CHANNELS_LAST_MIN = channels_last_min
        layer.cast(np.float64)
        y = layer.forward(x, training=True)
        g = np.random.default_rng(6).standard_normal(y.shape)
        dx = layer.backward(g)
        results.append((layer.row_order, y, dx, layer.grads["W"], layer.grads["b"]))
        np.testing.assert_array_equal(layer.weight_from_matrix(layer.weight_matrix(
            layer.params["W"])), layer.params["W"])
    (order_a, *a), (order_b, *b) = results
    assert (order_a, order_b) == ("channels_last", "channels_first")
    for u, v in zip(a, b):
        np.testing.assert_allclose(u, v, rtol=1e-10, atol=1e-12)


def test_first_layers_with_few_channels_use_the_column_order():
    assert Conv2D(1, 20, 5).row_order == "channels_first"       # LeNet conv1
    assert Conv2D(3, 32, 5).row_order == "channels_first"       # 3·5 = 15 < 16
    assert Conv2D(20, 50, 5).row_order == "channels_last"


@pytest.mark.parametrize("shape, ceil", [((2, 3, 8, 8), False), ((2, 2, 7, 9), False),
                                         ((1, 2, 7, 9), True)])
def test_the_2x2_maxpool_fast_path_equals_the_numpy_twin_with_ties_and_nans(shape, ceil):
    rng = np.random.default_rng(7)
    x = (np.round(rng.random(shape) * 4) / 4).astype(np.float32)    # many ties
    x.reshape(-1)[rng.choice(x.size, 5, replace=False)] = np.nan
    layer = MaxPool2D(2, ceil_mode=ceil)
    out = layer.forward(x, training=True)
    expected, argmax = maxpool_forward_numpy(x, layer._geometry(x.shape))
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(layer.flat_argmax(), argmax)
