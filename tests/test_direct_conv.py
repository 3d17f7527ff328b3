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


# -- training: direct forward and direct weight gradient (stride 1) -----------------
STRIDE1 = [c for c in CASES if c[3] == 1]


@pytest.mark.parametrize("shape, out_channels, kernel, stride, padding", STRIDE1)
@pytest.mark.parametrize("dtype, tol", [(np.float32, 1e-4), (np.float64, 1e-12)])
def test_direct_weight_gradient_equals_the_twin(shape, out_channels, kernel, stride, padding,
                                                dtype, tol):
    from minidnn.kernels.direct_conv import direct_conv_weight_grad, \
        direct_conv_weight_grad_numpy
    rng = np.random.default_rng(5)
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    x = rng.standard_normal(shape).astype(dtype)
    grad = rng.standard_normal((shape[0], out_channels, shape[2] + 2 * ph - kh + 1,
                                shape[3] + 2 * pw - kw + 1)).astype(dtype)
    x_pad = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    np.testing.assert_allclose(direct_conv_weight_grad(x_pad, grad, (kh, kw)),
                               direct_conv_weight_grad_numpy(x, grad, (kh, kw), 1, (ph, pw)),
                               rtol=tol, atol=tol)
    with pytest.raises(ValueError, match="dY must have shape"):
        direct_conv_weight_grad(x_pad, grad[:, :, 1:], (kh, kw))


class _ProductPath(Conv2D):
    """The same layer with the weight gradient as its product: the plain path."""
    def _weight_grad(self, rows, grad_rows):
        return super()._weight_grad(rows, grad_rows)


@pytest.mark.parametrize("shape, out_channels, kernel, stride, padding", STRIDE1)
def test_a_direct_training_step_equals_the_product_path(shape, out_channels, kernel, stride,
                                                        padding):
    rng = np.random.default_rng(6)
    x = rng.standard_normal(shape)
    direct = Conv2D(shape[1], out_channels, kernel, stride, padding, rng=0).cast(np.float64)
    plain = _ProductPath(shape[1], out_channels, kernel, stride, padding, rng=0).cast(np.float64)
    direct.params["b"][:] = plain.params["b"][:] = rng.standard_normal(out_channels)
    assert direct._direct_train_applies() and not plain._direct_train_applies()
    for _ in range(2):                                  # the second step reuses every buffer
        y = direct.forward(x, training=True)
        np.testing.assert_allclose(y, plain.forward(x, training=True), rtol=1e-12, atol=1e-12)
        grad = rng.standard_normal(y.shape)
        np.testing.assert_allclose(direct.backward(grad), plain.backward(grad), rtol=1e-12,
                                   atol=1e-12)
        for key in ("W", "b"):
            np.testing.assert_allclose(direct.grads[key], plain.grads[key], rtol=1e-12,
                                       atol=1e-12)
        direct.forward(x, training=True)
        plain.forward(x, training=True)
        direct.backward_params(grad)                    # the first layer of a model: no dx
        np.testing.assert_allclose(direct.grads["W"], plain.grads["W"], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape, out_channels, kernel, padding", [
    ((2, 1, 7, 7), 4, 5, 0), ((2, 3, 6, 5), 5, 3, 1), ((1, 2, 5, 6), 3, (5, 3), (2, 1))])
def test_direct_training_gradients_match_finite_differences(shape, out_channels, kernel, padding):
    from tests.gradcheck import check_layer_gradients
    layer = Conv2D(shape[1], out_channels, kernel, padding=padding, rng=0).cast(np.float64)
    assert layer._direct_train_applies()
    check_layer_gradients(layer, np.random.default_rng(7).standard_normal(shape),
                          np.random.default_rng(8))


def test_training_falls_back_to_columns_at_stride_2_and_after_evaluation_backward_refuses():
    layer = Conv2D(2, 3, 3, stride=2, padding=1, rng=0)
    assert layer._direct_eval_applies() and not layer._direct_train_applies()
    x = np.random.default_rng(9).standard_normal((2, 2, 7, 7)).astype(np.float32)
    y = layer.forward(x, training=True)
    assert layer._rows is not None and layer._direct_x_pad is None
    layer.backward(np.ones_like(y))
    first = Conv2D(1, 3, 3, rng=0)
    first.forward(x[:, :1], training=True)
    first.forward(x[:, :1])                               # evaluation keeps nothing
    with pytest.raises(RuntimeError, match="training=True"):
        first.backward_params(np.ones((2, 3, 5, 5), np.float32))


def test_evaluation_of_a_large_batch_runs_in_chunks_into_one_output():
    rng = np.random.default_rng(10)
    layer = Conv2D(3, 4, 5, padding=2, rng=0).cast(np.float64)
    layer.EVAL_CHUNK = 3
    x = rng.standard_normal((8, 3, 6, 6))                 # chunks of 3, 3 and 2
    y = layer.forward(x)
    np.testing.assert_allclose(y, direct_conv_numpy(x, layer.params["W"], layer.params["b"], 1,
                                                    2), rtol=1e-12, atol=1e-12)
    assert layer._eval_scratch._arrays["direct_x_pad"].shape[0] <= 3
    with pytest.raises(ValueError, match="out must be"):
        direct_conv(x, layer.params["W"], None, 1, 2, out=np.empty((8, 4, 6, 5)))
