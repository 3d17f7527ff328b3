"""The float32 sigmoid kernel equals its NumPy twin, in every memory order, NaN and ±inf included."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import minidnn as md
from minidnn.kernels.activation import sigmoid32, sigmoid_grad32
from minidnn.layers.activations import sigmoid, sigmoid_numpy


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 19), st.integers(1, 19), st.floats(0.1, 200), st.booleans(),
       st.integers(0, 2 ** 16))
def test_sigmoid_kernel_equals_the_numpy_twin(rows, cols, scale, fortran, seed):
    x = (np.random.default_rng(seed).standard_normal((rows, cols)) * scale).astype(np.float32)
    if fortran:
        x = np.asfortranarray(x)
    got, want = sigmoid32(x), sigmoid_numpy(x)
    assert got.dtype == np.float32 and got.flags.f_contiguous == x.flags.f_contiguous
    # the twin's denormals between x = -88.7 and -87 become 0: an absolute tolerance
    np.testing.assert_allclose(got, want, rtol=2e-7, atol=2e-7)


def test_sigmoid_kernel_keeps_nan_and_saturates_at_infinity():
    x = np.array([[np.nan, np.inf, -np.inf, 0.0, -100.0, 100.0, 88.0, -88.0]], np.float32)
    y = sigmoid32(x)
    assert np.isnan(y[0, 0]) and not np.isnan(y[0, 1:]).any()
    np.testing.assert_array_equal(y[0, [1, 5, 6]], 1.0)
    assert y[0, 3] == 0.5 and y[0, 2] == 0.0 and y[0, 4] == 0.0 and 0 <= y[0, 7] < 1e-37


def test_other_inputs_fall_back_to_the_twin_and_the_layer_uses_the_kernel():
    x64 = np.linspace(-5, 5, 12).reshape(3, 4)
    assert sigmoid32(x64) is None and sigmoid32(x64.astype(np.float32)[:, ::2]) is None
    layer = md.Sigmoid()
    np.testing.assert_array_equal(layer.forward(x64), sigmoid_numpy(x64))
    np.testing.assert_array_equal(sigmoid(x64), sigmoid_numpy(x64))
    x = x64.astype(np.float32)
    np.testing.assert_array_equal(layer.forward(x), sigmoid32(x))
    np.testing.assert_array_equal(sigmoid(x), sigmoid32(x))
    np.testing.assert_allclose(layer.forward(x[:, ::2]), sigmoid_numpy(x[:, ::2]), rtol=2e-7)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 19), st.integers(1, 19), st.sampled_from(["CC", "FF", "FC", "CF"]),
       st.integers(0, 2 ** 16))
def test_sigmoid_gradient_kernel_equals_the_twin_bit_for_bit(rows, cols, orders, seed):
    rng = np.random.default_rng(seed)
    y = np.asarray(sigmoid_numpy(rng.standard_normal((rows, cols)).astype(np.float32) * 4),
                   order=orders[0])
    grad = np.asarray(rng.standard_normal((rows, cols)), dtype=np.float32, order=orders[1])
    twin = (1 - y) * y * grad
    got = sigmoid_grad32(y, grad)
    np.testing.assert_array_equal(got, twin)        # mixed orders too: one pass
    assert got.flags.f_contiguous == y.flags.f_contiguous    # y's memory order
    assert got.flags.c_contiguous == y.flags.c_contiguous
    layer = md.Sigmoid()
    layer.forward(np.asarray(rng.standard_normal((rows, cols)), np.float32, order=orders[0]))
    np.testing.assert_allclose(layer.backward(grad), (1 - layer._y) * layer._y * grad,
                               rtol=1e-6, atol=1e-7)


def test_parallel_sigmoid_is_the_serial_kernel_bit_for_bit():
    """Sitting 18: large batches split between the Numba threads; every element gets the
    serial kernel's arithmetic, so the bits are the same for any number of ranges."""
    from minidnn.kernels import activation
    x = (np.random.default_rng(3).standard_normal(10_007) * 30).astype(np.float32)
    x[[5, 700, 9999]] = [np.nan, np.inf, -np.inf]
    serial = np.empty_like(x)
    activation._sigmoid_flat(x, serial)
    for blocks in (1, 2, 3, 8):
        out = np.empty_like(x)
        activation._sigmoid_flat_parallel(x, out, blocks)
        assert np.array_equal(out.view(np.uint32), serial.view(np.uint32)), blocks
