"""Conv2D, MaxPool2D, AvgPool2D and the im2col kernels behind them."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minidnn.kernels.im2col import col2im, col2im_numpy, im2col, im2col_numpy
from minidnn.layers import (LAYER_TYPES, AvgPool2D, Conv2D, Dense, Flatten, MaxPool2D, ReLU,
                            layer_from_config)
from minidnn.layers.pooling import (avgpool_backward_numpy, avgpool_forward_numpy,
                                    maxpool_backward_numpy, maxpool_forward_numpy,
                                    pool_output_size)
from tests.gradcheck import check_layer_gradients

FAST = settings(max_examples=20, deadline=None)


@st.composite
def conv_geometries(draw, max_kernel=3, max_stride=3, max_pad=2):
    """(x_shape, kernel, stride, padding) with at least one output position."""
    kh, kw = draw(st.integers(1, max_kernel)), draw(st.integers(1, max_kernel))
    sh, sw = draw(st.integers(1, max_stride)), draw(st.integers(1, max_stride))
    ph, pw = draw(st.integers(0, max_pad)), draw(st.integers(0, max_pad))
    H = draw(st.integers(max(1, kh - 2 * ph), kh - 2 * ph + 4))
    W = draw(st.integers(max(1, kw - 2 * pw), kw - 2 * pw + 4))
    N, C = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    return (N, C, H, W), (kh, kw), (sh, sw), (ph, pw)


@st.composite
def pool_geometries(draw):
    """(x_shape, kernel, stride, padding, ceil_mode) with 0 <= padding < kernel."""
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, kh - 1)), draw(st.integers(0, kw - 1))
    H = draw(st.integers(max(1, kh - 2 * ph), 7))
    W = draw(st.integers(max(1, kw - 2 * pw), 7))
    N, C = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    return (N, C, H, W), (kh, kw), (sh, sw), (ph, pw), draw(st.booleans())


def distinct_values(shape, rng):
    """Values at least 0.01 apart, so a max never flips under a finite-difference step."""
    size = int(np.prod(shape))
    return (rng.permutation(size) * 0.01 + 0.005).reshape(shape) * rng.choice([-1, 1])


def naive_conv2d(x, W, b, stride, padding):
    """Direct definition: y[n,o,a,c] = b[o] + Σ W[o,c,i,j] x_pad[n,c,a·sh+i,b·sw+j]."""
    (sh, sw), (ph, pw) = stride, padding
    N, C, H, Wd = x.shape
    O, _, kh, kw = W.shape
    x_pad = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    OH, OW = (H + 2 * ph - kh) // sh + 1, (Wd + 2 * pw - kw) // sw + 1
    y = np.zeros((N, O, OH, OW))
    for n in range(N):
        for o in range(O):
            for a in range(OH):
                for c in range(OW):
                    patch = x_pad[n, :, a * sh:a * sh + kh, c * sw:c * sw + kw]
                    y[n, o, a, c] = (patch * W[o]).sum() + b[o]
    return y


# -- im2col / col2im ----------------------------------------------------------------
@FAST
@given(conv_geometries(), st.integers(0, 2**31 - 1))
def test_im2col_and_col2im_are_adjoint(geometry, seed):
    x_shape, kernel, stride, padding = geometry
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape)
    cols = im2col(x, kernel, stride, padding)
    c = rng.standard_normal(cols.shape)
    lhs = float((cols * c).sum())
    rhs = float((x * col2im(c, x_shape, kernel, stride, padding)).sum())
    assert lhs == pytest.approx(rhs, rel=1e-10, abs=1e-10)


@FAST
@given(conv_geometries(), st.sampled_from([np.float32, np.float64]), st.integers(0, 2**31 - 1))
def test_im2col_kernels_equal_their_numpy_twins(geometry, dtype, seed):
    x_shape, kernel, stride, padding = geometry
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)
    cols = im2col(x, kernel, stride, padding)
    assert cols.dtype == dtype
    np.testing.assert_array_equal(cols, im2col_numpy(x, kernel, stride, padding))
    c = rng.standard_normal(cols.shape).astype(dtype)
    dx = col2im(c, x_shape, kernel, stride, padding)
    assert dx.dtype == dtype
    np.testing.assert_allclose(dx, col2im_numpy(c, x_shape, kernel, stride, padding),
                               rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-6)


def test_im2col_column_is_one_receptive_field():
    x = np.arange(2 * 2 * 4 * 5, dtype=np.float64).reshape(2, 2, 4, 5)
    cols = im2col(x, (2, 3), stride=(2, 1), padding=(0, 1))   # OH = 2, OW = 5
    # column (n=1, a=1, b=0) is x_pad[1, :, 2:4, -1:2] with a zero left column
    field = cols[:, (1 * 2 + 1) * 5 + 0].reshape(2, 2, 3)
    expected = np.pad(x[1, :, 2:4, 0:2], ((0, 0), (0, 0), (1, 0)))
    np.testing.assert_array_equal(field, expected)


# -- Conv2D -----------------------------------------------------------------------------
@FAST
@given(conv_geometries(), st.integers(1, 3), st.booleans(), st.integers(0, 2**31 - 1))
def test_conv2d_gradients_match_finite_differences(geometry, out_channels, bias, seed):
    x_shape, kernel, stride, padding = geometry
    rng = np.random.default_rng(seed)
    layer = Conv2D(x_shape[1], out_channels, kernel, stride, padding, bias=bias, rng=rng)
    layer.cast(np.float64)
    if bias:
        layer.params["b"] = rng.standard_normal(out_channels)
    check_layer_gradients(layer, rng.standard_normal(x_shape), rng)


@FAST
@given(conv_geometries(), st.integers(1, 3), st.integers(0, 2**31 - 1))
def test_conv2d_forward_equals_direct_convolution(geometry, out_channels, seed):
    x_shape, kernel, stride, padding = geometry
    rng = np.random.default_rng(seed)
    layer = Conv2D(x_shape[1], out_channels, kernel, stride, padding, rng=rng).cast(np.float64)
    layer.set_weights(layer.params["W"], rng.standard_normal(out_channels))
    x = rng.standard_normal(x_shape)
    expected = naive_conv2d(x, layer.params["W"], layer.params["b"], stride, padding)
    np.testing.assert_allclose(layer.forward(x), expected, rtol=1e-10, atol=1e-12)


def test_conv2d_stays_float32():
    rng = np.random.default_rng(0)
    layer = Conv2D(3, 4, 3, padding=1, rng=rng)
    x = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    y = layer.forward(x, training=True)
    dx = layer.backward(np.ones_like(y))
    assert y.dtype == dx.dtype == np.float32
    assert all(g.dtype == np.float32 for g in layer.grads.values())
    assert y.flags.c_contiguous


def test_conv2d_initialisation_scales():
    rng = np.random.default_rng(0)
    he = Conv2D(20, 50, 5, rng=rng).params["W"]
    assert he.shape == (50, 20, 5, 5) and he.std() == pytest.approx(np.sqrt(2 / 500), rel=0.05)
    glorot = Conv2D(20, 50, 5, init="glorot", rng=rng).params["W"]
    assert np.abs(glorot).max() <= np.sqrt(6 / (500 + 1250))
    assert Conv2D(1, 2, 3).params["b"].tolist() == [0, 0]
    assert Conv2D(1, 2, 3, bias=False).params.keys() == {"W"}
    assert Conv2D.decay_params == ("W",)


def test_conv2d_set_weights_checks_shapes():
    layer = Conv2D(2, 3, (2, 1))
    layer.set_weights(np.ones((3, 2, 2, 1)), np.arange(3))
    assert layer.params["b"].dtype == np.float32 and layer.params["b"][2] == 2
    with pytest.raises(ValueError, match=r"W must have shape \(3, 2, 2, 1\)"):
        layer.set_weights(np.ones((3, 2, 1, 2)))
    with pytest.raises(ValueError, match="b must have shape"):
        layer.set_weights(np.ones((3, 2, 2, 1)), np.ones(4))


def test_conv2d_config_rebuilds_the_layer():
    layer = Conv2D(3, 8, (3, 5), stride=2, padding=(1, 2), bias=False, init="glorot", name="c")
    rebuilt = layer_from_config("Conv2D", layer.get_config())
    assert rebuilt.get_config() == layer.get_config()
    assert rebuilt.output_shape((3, 9, 9)) == layer.output_shape((3, 9, 9)) == (8, 5, 5)
    assert LAYER_TYPES["Conv2D"] is Conv2D


def test_conv2d_rejects_bad_input_shapes():
    layer = Conv2D(1, 20, kernel_size=5)
    with pytest.raises(ValueError, match=r"Conv2D\(1, 20, kernel_size=5\) expects input of shape "
                                         r"\(batch, 1, H, W\), got \(32, 784\)"):
        layer.forward(np.zeros((32, 784), np.float32))
    with pytest.raises(ValueError, match=r"got \(2, 3, 28, 28\)"):
        layer.forward(np.zeros((2, 3, 28, 28), np.float32))
    with pytest.raises(ValueError, match="H \\+ 2\\*padding >= 5"):
        layer.forward(np.zeros((2, 1, 4, 28), np.float32))
    with pytest.raises(ValueError):
        layer.output_shape((1, 28))
    with pytest.raises(ValueError):
        Conv2D(1, 2, 3, stride=0)
    with pytest.raises(ValueError):
        Conv2D(1, 2, 3, init="uniform")


# -- pooling ----------------------------------------------------------------------------
@FAST
@given(pool_geometries(), st.integers(0, 2**31 - 1))
def test_maxpool_gradients_match_finite_differences(geometry, seed):
    x_shape, kernel, stride, padding, ceil_mode = geometry
    rng = np.random.default_rng(seed)
    layer = MaxPool2D(kernel, stride, padding, ceil_mode).cast(np.float64)
    check_layer_gradients(layer, distinct_values(x_shape, rng), rng)


@FAST
@given(pool_geometries(), st.integers(0, 2**31 - 1))
def test_avgpool_gradients_match_finite_differences(geometry, seed):
    x_shape, kernel, stride, padding, ceil_mode = geometry
    rng = np.random.default_rng(seed)
    layer = AvgPool2D(kernel, stride, padding, ceil_mode).cast(np.float64)
    check_layer_gradients(layer, rng.standard_normal(x_shape), rng)


@FAST
@given(pool_geometries(), st.sampled_from([np.float32, np.float64]), st.integers(0, 2**31 - 1))
def test_pooling_kernels_equal_their_numpy_twins(geometry, dtype, seed):
    x_shape, kernel, stride, padding, ceil_mode = geometry
    rng = np.random.default_rng(seed)
    # rounded values make ties common, so the tie rule is exercised too
    x = np.round(rng.standard_normal(x_shape), 1).astype(dtype)
    maxpool = MaxPool2D(kernel, stride, padding, ceil_mode)
    g = maxpool._geometry(x_shape)
    out = maxpool.forward(x)
    twin_out, twin_argmax = maxpool_forward_numpy(x, g)
    np.testing.assert_array_equal(out, twin_out)
    np.testing.assert_array_equal(maxpool.flat_argmax(), twin_argmax)
    grad = rng.standard_normal(out.shape).astype(dtype)
    np.testing.assert_allclose(maxpool.backward(grad),
                               maxpool_backward_numpy(grad, twin_argmax, x_shape), rtol=1e-6)

    avgpool = AvgPool2D(kernel, stride, padding, ceil_mode)
    out = avgpool.forward(x)
    assert out.dtype == dtype
    np.testing.assert_allclose(out, avgpool_forward_numpy(x, g), rtol=1e-5, atol=1e-6)
    dx = avgpool.backward(grad)
    assert dx.dtype == dtype
    np.testing.assert_allclose(dx, avgpool_backward_numpy(grad, g, x_shape), rtol=1e-5, atol=1e-6)


def test_maxpool_routes_gradient_only_to_the_argmax():
    x = np.array([[[[1., 5., 2., 0.],
                    [3., 4., 7., 7.],
                    [0., 0., 9., 1.],
                    [0., 0., 1., 8.]]]], dtype=np.float32)
    layer = MaxPool2D(2)
    np.testing.assert_array_equal(layer.forward(x), [[[[5, 7], [0, 9]]]])
    dx = layer.backward(np.array([[[[10., 20.], [30., 40.]]]], dtype=np.float32))
    expected = np.zeros_like(x)
    expected[0, 0, 0, 1] = 10      # the 5
    expected[0, 0, 1, 2] = 20      # the first of the two tied 7s
    expected[0, 0, 2, 0] = 30      # the first of four tied zeros
    expected[0, 0, 2, 2] = 40      # the 9
    np.testing.assert_array_equal(dx, expected)


def test_overlapping_maxpool_adds_gradients_at_a_shared_argmax():
    x = np.zeros((1, 1, 1, 5), np.float32)
    x[0, 0, 0, 2] = 1
    layer = MaxPool2D((1, 3), stride=1)            # windows [0:3], [1:4], [2:5] all pick x[2]
    layer.forward(x)
    dx = layer.backward(np.ones((1, 1, 1, 3), np.float32))
    np.testing.assert_array_equal(dx[0, 0, 0], [0, 0, 3, 0, 0])


def test_avgpool_ceil_mode_divides_by_the_window_inside_the_padded_input():
    x = np.arange(25, dtype=np.float64).reshape(1, 1, 5, 5)
    layer = AvgPool2D(3, stride=2, ceil_mode=True)  # 5 -> ceil(2/2)+1 = 2, last window 3x3 fits
    np.testing.assert_allclose(layer.forward(x)[0, 0], [[6, 8], [16, 18]])
    x = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4)
    # 4 -> ceil(1/2)+1 = 2: the second window [2, 5) hangs over the edge and
    # averages only rows/cols 2..3 (Caffe; PyTorch with count_include_pad=True)
    out = AvgPool2D(3, stride=2, ceil_mode=True).forward(x)[0, 0]
    np.testing.assert_allclose(out, [[5, 6.5], [11, 12.5]])
    # with padding, padded zeros count in the divisor
    out = AvgPool2D(2, stride=2, padding=1).forward(np.ones((1, 1, 2, 2)))[0, 0]
    np.testing.assert_allclose(out, [[0.25, 0.25], [0.25, 0.25]])
    constant = AvgPool2D(3, 2, ceil_mode=True).forward(np.full((1, 2, 6, 6), 7.0))
    np.testing.assert_allclose(constant, 7.0)


def test_pool_output_size_follows_caffe_in_ceil_mode():
    assert pool_output_size(32, 3, 2, 0) == 15
    assert pool_output_size(32, 3, 2, 0, ceil_mode=True) == 16
    assert pool_output_size(6, 2, 2, 1, ceil_mode=True) == 4
    # ceil gives 5 windows, but the 5th would start at 8 = H + pad: dropped
    assert pool_output_size(7, 2, 2, 1, ceil_mode=True) == 4
    assert pool_output_size(6, 3, 3, 1, ceil_mode=True) == 3   # (3-1)*3=6 < 6+1 keeps it
    assert pool_output_size(5, 2, 3, 1, ceil_mode=True) == 2   # the 3rd would start at 6 >= 5+1


def test_caffe_lenet_sizes():
    layers = [Conv2D(1, 20, 5), MaxPool2D(2), Conv2D(20, 50, 5), MaxPool2D(2)]
    shape, sizes = (1, 28, 28), [28]
    for layer in layers:
        shape = layer.output_shape(shape)
        sizes.append(shape[-1])
    assert sizes == [28, 24, 12, 8, 4] and shape == (50, 4, 4)
    x = np.zeros((2, 1, 28, 28), np.float32)
    for layer in layers:
        x = layer.forward(x)
    assert x.shape == (2, 50, 4, 4)


def test_cifar10_quick_sizes_with_ceil_mode_pooling():
    layers = [Conv2D(3, 32, 5, padding=2), MaxPool2D(3, 2, ceil_mode=True), ReLU(),
              Conv2D(32, 32, 5, padding=2), ReLU(), AvgPool2D(3, 2, ceil_mode=True),
              Conv2D(32, 64, 5, padding=2), ReLU(), AvgPool2D(3, 2, ceil_mode=True),
              Flatten(), Dense(64 * 4 * 4, 64), Dense(64, 10)]
    pooled = []
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    for layer in layers:
        x = layer.forward(x)
        if isinstance(layer, (MaxPool2D, AvgPool2D)):
            pooled.append(x.shape[-2:])
    assert pooled == [(16, 16), (8, 8), (4, 4)]
    assert x.shape == (2, 10) and x.dtype == np.float32
    # floor mode would give 15 -> 7 -> 3
    assert MaxPool2D(3, 2).output_shape((32, 32, 32)) == (32, 15, 15)


def test_pooling_rejects_bad_input_shapes_and_arguments():
    with pytest.raises(ValueError, match=r"MaxPool2D\(kernel_size=2\) expects input of shape "
                                         r"\(batch, C, H, W\), got \(32, 784\)"):
        MaxPool2D(2).forward(np.zeros((32, 784), np.float32))
    with pytest.raises(ValueError, match=r"got \(1, 2, 2\)"):
        AvgPool2D(3, 2, ceil_mode=True).forward(np.zeros((1, 2, 2), np.float32))
    with pytest.raises(ValueError, match="H \\+ 2\\*padding >= 3"):
        AvgPool2D(3).forward(np.zeros((1, 1, 2, 5), np.float32))
    with pytest.raises(ValueError, match="padding < kernel_size"):
        MaxPool2D(2, padding=2)
    with pytest.raises(ValueError):
        AvgPool2D(0)


def test_pooling_config_rebuilds_the_layer():
    for layer in (MaxPool2D(3, 2, ceil_mode=True, name="p"), AvgPool2D((2, 3), padding=(1, 0)),
                  MaxPool2D(2)):
        rebuilt = layer_from_config(type(layer).__name__, layer.get_config())
        assert rebuilt.get_config() == layer.get_config()
        assert rebuilt.output_shape((3, 11, 11)) == layer.output_shape((3, 11, 11))
    assert MaxPool2D(2).get_config()["stride"] is None
    assert LAYER_TYPES["MaxPool2D"] is MaxPool2D and LAYER_TYPES["AvgPool2D"] is AvgPool2D


def test_lenet_forward_backward_stays_float32():
    rng = np.random.default_rng(0)
    layers = [Conv2D(1, 20, 5, rng=rng), MaxPool2D(2), Conv2D(20, 50, 5, rng=rng), MaxPool2D(2),
              Flatten(), Dense(800, 500, rng=rng), ReLU(), Dense(500, 10, rng=rng)]
    x = rng.standard_normal((4, 1, 28, 28)).astype(np.float32)
    for layer in layers:
        x = layer.forward(x, training=True)
        assert x.dtype == np.float32, layer
    g = np.ones_like(x)
    for layer in reversed(layers):
        g = layer.backward(g)
        assert g.dtype == np.float32, layer
    assert g.shape == (4, 1, 28, 28)
