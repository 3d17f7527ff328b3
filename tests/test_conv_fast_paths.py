"""The speed paths of the convnet layers, each held to the plain definition:
the NaN-free max-pool kernels to the exact kernels and the NumPy twin, reused
scratch buffers to fresh ones, the thread switches to what they restore."""
import numba
import numpy as np
import pytest

from minidnn.kernels.im2col import RowBuffers, im2col, im2col_numpy, serial_if_small
from minidnn.layers import Conv2D, MaxPool2D
from minidnn.layers import pooling
from minidnn.layers.pooling import maxpool_forward_numpy
from minidnn.threads import serial_blas_if_small

# (x shape, kernel, stride, padding, ceil_mode): LeNet's and Cifar10_quick's
# pools, a padded 3x3, a non-square window and windows wider than their stride
POOLS = [((3, 4, 24, 24), 2, 2, 0, False), ((2, 5, 32, 32), 3, 2, 0, True),
         ((2, 3, 11, 9), 3, 2, 1, True), ((2, 2, 9, 10), (3, 2), (1, 2), (1, 0), False),
         ((1, 3, 7, 7), 2, 2, 0, True), ((2, 2, 8, 8), 3, 1, 2, False)]


def _fast_then_exact(x, layer):
    geometry = layer._geometry(x.shape)
    kh, kw, sh, sw, ph, pw, OH, OW = geometry
    shape = x.shape[:2] + (OH, OW)
    fast = np.empty(shape, x.dtype), np.empty(shape, np.int32)
    exact = np.empty(shape, x.dtype), np.empty(shape, np.int32)
    checksum = np.empty(x.shape[0])
    pooling._maxpool_fast_kernel(x, kh, kw, sh, sw, ph, pw, *fast, checksum)
    pooling._maxpool_forward_kernel(x, kh, kw, sh, sw, ph, pw, *exact)
    return fast, exact, checksum, geometry


@pytest.mark.parametrize("shape, kernel, stride, padding, ceil", POOLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_maxpool_kernel_equals_the_exact_kernel_and_the_twin_with_ties(
        shape, kernel, stride, padding, ceil, dtype):
    rng = np.random.default_rng(3)
    x = (np.round(rng.standard_normal(shape) * 2) / 2).astype(dtype)     # many ties
    layer = MaxPool2D(kernel, stride, padding, ceil)
    (out, argmax), (out_exact, argmax_exact), checksum, geometry = _fast_then_exact(x, layer)
    np.testing.assert_array_equal(out, out_exact)
    np.testing.assert_array_equal(argmax, argmax_exact)
    twin_out, twin_argmax = maxpool_forward_numpy(x, geometry)
    np.testing.assert_array_equal(out, twin_out)
    np.testing.assert_array_equal(argmax, twin_argmax)
    assert np.isfinite(checksum).all()          # no NaN read: the fast result stands
    np.testing.assert_array_equal(layer.forward(x, training=True), twin_out)


@pytest.mark.parametrize("shape, kernel, stride, padding, ceil", POOLS)
def test_a_nan_anywhere_sends_maxpool_to_the_exact_first_nan_rule(shape, kernel, stride,
                                                                     padding, ceil):
    rng = np.random.default_rng(4)
    x = rng.standard_normal(shape).astype(np.float32)
    x.reshape(-1)[rng.choice(x.size, 4, replace=False)] = np.nan
    layer = MaxPool2D(kernel, stride, padding, ceil)
    _, _, checksum, geometry = _fast_then_exact(x, layer)
    assert np.isnan(checksum).any()             # the flag that triggers the rerun
    out = layer.forward(x, training=True)
    twin_out, twin_argmax = maxpool_forward_numpy(x, geometry)
    np.testing.assert_array_equal(out, twin_out)
    np.testing.assert_array_equal(layer.flat_argmax(), twin_argmax)
    grad = rng.standard_normal(out.shape).astype(np.float32)
    np.testing.assert_allclose(layer.backward(grad),
                               pooling.maxpool_backward_numpy(grad, twin_argmax, x.shape))


def test_im2col_into_reused_buffers_equals_the_twin_and_reuses_the_array():
    rng = np.random.default_rng(5)
    buffers = RowBuffers()
    first = None
    for _ in range(2):
        x = rng.standard_normal((3, 2, 7, 6)).astype(np.float32)
        cols = im2col(x, 3, 1, 1, buffers=buffers)
        np.testing.assert_array_equal(cols, im2col_numpy(x, 3, 1, 1))
        first = cols if first is None else first
    assert cols is first


@pytest.mark.parametrize("in_channels", [1, 8])         # column order, channels-last rows
def test_reused_scratch_never_leaks_into_outputs_or_gradients(in_channels):
    """Evaluation and training each reuse their own scratch arrays: an output
    returned earlier is never overwritten by a later call, and a training step
    after any number of evaluations gives the fresh layer's gradients."""
    rng = np.random.default_rng(6)
    a, b, x = (rng.standard_normal((4, in_channels, 9, 9)) for _ in range(3))
    grad = rng.standard_normal((4, 3, 9, 9))
    layer = Conv2D(in_channels, 3, 3, padding=1, rng=0).cast(np.float64)
    fresh = lambda: Conv2D(in_channels, 3, 3, padding=1, rng=0).cast(np.float64)  # noqa: E731
    y_a = layer.forward(a)
    y_b = layer.forward(b)
    np.testing.assert_allclose(y_a, fresh().forward(a), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(y_b, fresh().forward(b), rtol=1e-12, atol=1e-12)
    reference = fresh()
    reference.forward(x, training=True)
    dx_ref = reference.backward(grad)
    for _ in range(2):                  # the second time round, every buffer is reused
        layer.forward(a)
        y = layer.forward(x, training=True)
        dx = layer.backward(grad)
        np.testing.assert_allclose(dx, dx_ref, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(layer.grads["W"], reference.grads["W"], rtol=1e-12)
    np.testing.assert_allclose(y_a, fresh().forward(a), rtol=1e-12, atol=1e-12)
    assert not np.shares_memory(y, dx)


def test_thread_switches_restore_the_thread_counts():
    from threadpoolctl import threadpool_info, threadpool_limits
    with threadpool_limits(limits=2, user_api="blas"):
        before = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
        a = np.ones((8, 8), np.float32)
        with serial_blas_if_small(8 * 8 * 8):
            inside = [lib["num_threads"] for lib in threadpool_info()
                      if lib["user_api"] == "blas" and "numpy" in lib["filepath"]]
            product = a @ a
        after = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
    assert after == before
    assert not inside or max(inside) == 1
    np.testing.assert_array_equal(product, np.full((8, 8), 8, np.float32))
    with serial_blas_if_small(1 << 40):                 # a large product: nothing changes
        pass
    n = numba.get_num_threads()
    with serial_if_small(10):
        assert numba.get_num_threads() == 1
    assert numba.get_num_threads() == n


@pytest.mark.parametrize("shape, out_channels, kernel, padding", [
    ((2, 6, 7, 7), 6, 3, 1), ((2, 4, 6, 5), 3, (5, 3), (2, 1)), ((1, 5, 6, 6), 2, 3, 0)])
def test_input_gradient_as_a_convolution_of_dy_equals_row2im(shape, out_channels, kernel,
                                                             padding):
    from tests.gradcheck import check_layer_gradients
    rng = np.random.default_rng(8)
    x = rng.standard_normal(shape)
    layer = Conv2D(shape[1], out_channels, kernel, padding=padding, rng=0)
    layer.CHANNELS_LAST_MIN = 0                         # channels-last rows at any size
    layer.cast(np.float64)
    y = layer.forward(x, training=True)
    assert layer._transposed_input_grad_applies()
    grad = rng.standard_normal(y.shape)
    dx = layer.backward(grad)
    layer._transposed_input_grad_applies = lambda: False     # the products' path
    layer.forward(x, training=True)
    np.testing.assert_allclose(dx, layer.backward(grad), rtol=1e-10, atol=1e-12)
    del layer._transposed_input_grad_applies
    check_layer_gradients(layer, x, np.random.default_rng(9))


def test_the_transposed_input_gradient_is_taken_only_where_it_is_cheaper():
    def applies(layer, shape):
        layer.forward(np.zeros(shape, np.float32), training=True)
        return layer._transposed_input_grad_applies()
    assert applies(Conv2D(32, 32, 5, padding=2), (1, 32, 16, 16))     # Cifar10_quick conv2
    assert not applies(Conv2D(32, 64, 5, padding=2), (1, 32, 8, 8))   # more out channels
    assert not applies(Conv2D(20, 50, 5), (1, 20, 12, 12))            # LeNet conv2: valid
    assert not applies(Conv2D(32, 32, 3, stride=2, padding=1), (1, 32, 8, 8))


def test_first_layer_products_written_into_nchw_equal_the_general_path():
    class _GeneralPath(Conv2D):             # overriding the product turns the fast path off
        def _forward_product(self, rows):
            return super()._forward_product(rows)

    rng = np.random.default_rng(10)
    for shape, kernel, padding, bias in (((3, 1, 9, 8), 3, 0, True), ((2, 3, 8, 8), 5, 2, False)):
        x = rng.standard_normal(shape)
        fast = Conv2D(shape[1], 4, kernel, padding=padding, bias=bias, rng=0).cast(np.float64)
        general = _GeneralPath(shape[1], 4, kernel, padding=padding, bias=bias,
                               rng=0).cast(np.float64)
        if bias:
            fast.params["b"][:] = general.params["b"][:] = rng.standard_normal(4)
        assert fast.row_order == "channels_first"
        np.testing.assert_allclose(fast.forward(x, training=True),
                                   general.forward(x, training=True), rtol=1e-12, atol=1e-12)
        grad = rng.standard_normal(fast._forward_output_shape)
        np.testing.assert_allclose(fast.backward(grad), general.backward(grad), rtol=1e-12)
        np.testing.assert_allclose(fast.grads["W"], general.grads["W"], rtol=1e-12)
        np.testing.assert_allclose(fast.forward(x), general.forward(x), rtol=1e-12, atol=1e-12)


def test_large_inputs_take_the_parallel_kernels_and_agree_with_the_twins():
    """Small inputs run the serial builds (``kernel_for``), which the other
    tests check; here every layer kernel runs parallel (>= SERIAL_BELOW elements)."""
    from minidnn.kernels.im2col import SERIAL_BELOW, im2row, im2row_numpy, kernel_for
    from minidnn.kernels.im2col import _im2row_kernel, row2im, row2im_numpy
    from minidnn.layers import AvgPool2D
    from minidnn.layers.pooling import avgpool_backward_numpy, avgpool_forward_numpy
    rng = np.random.default_rng(11)
    x = np.round(rng.standard_normal((4, 8, 48, 48)), 1).astype(np.float32)   # 73,728 values
    assert x.size >= SERIAL_BELOW and kernel_for(_im2row_kernel, x.size) is _im2row_kernel
    assert kernel_for(_im2row_kernel, 10) is not _im2row_kernel
    for kernel, stride, ceil in ((2, 2, False), (3, 2, True)):
        layer = MaxPool2D(kernel, stride, ceil_mode=ceil)
        out = layer.forward(x, training=True)
        twin_out, twin_argmax = maxpool_forward_numpy(x, layer._geometry(x.shape))
        np.testing.assert_array_equal(out, twin_out)
        np.testing.assert_array_equal(layer.flat_argmax(), twin_argmax)
        grad = rng.standard_normal(out.shape).astype(np.float32)
        np.testing.assert_allclose(layer.backward(grad), pooling.maxpool_backward_numpy(
            grad, twin_argmax, x.shape), rtol=1e-6)
    avg = AvgPool2D(3, 2, ceil_mode=True)
    geometry = avg._geometry(x.shape)
    out = avg.forward(x, training=True)
    np.testing.assert_allclose(out, avgpool_forward_numpy(x, geometry), rtol=1e-5, atol=1e-6)
    grad = rng.standard_normal(out.shape).astype(np.float32)
    np.testing.assert_allclose(avg.backward(grad), avgpool_backward_numpy(grad, geometry, x.shape),
                               rtol=1e-5, atol=1e-6)
    rows = im2row(x, 3, 1, 1)
    np.testing.assert_array_equal(rows, im2row_numpy(x, 3, 1, 1))
    np.testing.assert_allclose(row2im(rows, x.shape, 3, 1, 1), row2im_numpy(rows, x.shape, 3, 1, 1),
                               rtol=1e-5, atol=1e-5)
