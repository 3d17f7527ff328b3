"""The direct convolution of few-input-channel layers (``kernels.direct_conv``),
held to its NumPy twin and to the layer's product path: both builds of the
kernel (parallel and serial), the unrolled 5-tap and 3-tap rows, the
4-channel blocks and their remainder, strides, paddings, and the fallback."""
import numpy as np
import pytest

from minidnn.kernels.direct_conv import _direct_conv_kernel, direct_conv, direct_conv_numpy
from minidnn.kernels.im2col import SERIAL_BELOW, kernel_for
from minidnn.layers import Conv2D

# (x shape, out channels, kernel, stride, padding): LeNet's and Cifar10_quick's
# first layers, channel counts that leave a remainder after blocks of 4, 3-tap,
# 2-tap and non-square windows, strides (the general loop) and odd sizes
CASES = [((2, 1, 28, 28), 20, 5, 1, 0), ((2, 3, 12, 12), 32, 5, 1, 2),
         ((3, 2, 9, 11), 7, 5, 1, 1), ((2, 3, 7, 8), 5, 3, 1, 1), ((1, 2, 6, 7), 3, 2, 1, 0),
         ((2, 1, 9, 10), 6, (5, 3), 1, (2, 1)), ((2, 3, 11, 9), 4, 3, 2, 1),
         ((1, 2, 10, 13), 5, 5, (1, 2), (0, 2)), ((2, 1, 5, 5), 4, 5, 1, 0)]


@pytest.mark.parametrize("shape, out_channels, kernel, stride, padding", CASES)
@pytest.mark.parametrize("dtype, tol", [(np.float32, 2e-5), (np.float64, 1e-12)])
def test_direct_conv_equals_the_twin(shape, out_channels, kernel, stride, padding, dtype, tol):
    rng = np.random.default_rng(0)
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    x = rng.standard_normal(shape).astype(dtype)
    W = rng.standard_normal((out_channels, shape[1], kh, kw)).astype(dtype)
    b = rng.standard_normal(out_channels).astype(dtype)
    twin = direct_conv_numpy(x, W, b, stride, padding)
    np.testing.assert_allclose(direct_conv(x, W, b, stride, padding), twin, rtol=tol, atol=tol)
    np.testing.assert_allclose(direct_conv(x, W, None, stride, padding),
                               direct_conv_numpy(x, W, None, stride, padding), rtol=tol, atol=tol)


def test_both_builds_of_the_kernel_run_and_agree():
    """Large outputs take the parallel kernel, small ones its serial build."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((40, 3, 20, 20)).astype(np.float32)
    W = rng.standard_normal((6, 3, 5, 5)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    assert 40 * 6 * 20 * 20 >= SERIAL_BELOW
    assert kernel_for(_direct_conv_kernel, 10) is not _direct_conv_kernel
    big = direct_conv(x, W, b, 1, 2)                                    # parallel
    # float32 sums of 75 products of N(0, 1) values (|y| up to ~30): 1e-4 absolute
    np.testing.assert_allclose(big, direct_conv_numpy(x, W, b, 1, 2), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(direct_conv(x[:1], W, b, 1, 2), big[:1], rtol=1e-4, atol=1e-4)
    x64, W64, b64 = x.astype(np.float64), W.astype(np.float64), b.astype(np.float64)
    np.testing.assert_allclose(direct_conv(x64, W64, b64, 1, 2),
                               direct_conv_numpy(x64, W64, b64, 1, 2), rtol=1e-12, atol=1e-12)


def test_the_padded_buffer_is_reused_and_its_border_stays_zero():
    rng = np.random.default_rng(2)
    W = rng.standard_normal((4, 2, 3, 3))
    buffer = np.zeros((2, 2, 8, 8))
    for _ in range(2):
        x = rng.standard_normal((2, 2, 6, 6))
        np.testing.assert_allclose(direct_conv(x, W, None, 1, 1, x_pad_buffer=buffer),
                                   direct_conv_numpy(x, W, None, 1, 1), rtol=1e-12, atol=1e-12)
    assert not buffer[:, :, 0].any() and not buffer[:, :, :, -1].any()
    with pytest.raises(ValueError, match="x_pad_buffer must have shape"):
        direct_conv(x, W, None, 1, 1, x_pad_buffer=np.zeros((2, 2, 7, 8)))
    with pytest.raises(ValueError, match="expects x of shape"):
        direct_conv(x[:, :1], W)


@pytest.mark.parametrize("shape, out_channels, kernel, stride, padding", CASES[:6])
def test_layer_evaluation_takes_the_direct_path_and_equals_the_products(
        shape, out_channels, kernel, stride, padding):
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape)
    layer = Conv2D(shape[1], out_channels, kernel, stride, padding, rng=0).cast(np.float64)
    layer.params["b"][:] = rng.standard_normal(out_channels)
    assert layer._direct_eval_applies()
    product = layer.forward(x, training=True)              # im2col and one product
    for _ in range(2):                                       # the second reuses the buffer
        np.testing.assert_allclose(layer.forward(x), product, rtol=1e-12, atol=1e-12)


def test_the_direct_path_falls_back_where_it_does_not_apply():
    class _OwnProduct(Conv2D):             # a layer holding W otherwise keeps its products
        def _forward_product(self, rows):
            return super()._forward_product(rows)

    assert not _OwnProduct(1, 4, 3)._direct_eval_applies()
    assert not Conv2D(8, 4, 3)._direct_eval_applies()       # channels-last rows: im2row path
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 1, 9, 9))
    own, plain = _OwnProduct(1, 4, 3, rng=0).cast(np.float64), Conv2D(1, 4, 3, rng=0).cast(
        np.float64)
    np.testing.assert_allclose(own.forward(x), plain.forward(x), rtol=1e-12, atol=1e-12)
