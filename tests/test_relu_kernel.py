"""ReLU's one-pass kernels (``kernels.activation.relu_kernel`` / ``relu_grad_kernel``)
held to their NumPy twins bit for bit, with the special values, and the layer's
fall-back to the twins for input the kernels do not take."""
import numpy as np
import pytest

from minidnn.kernels.activation import _relu_flat, _relu_grad_flat, relu_grad_kernel, relu_kernel
from minidnn.layers.activations import ReLU, relu_grad_numpy, relu_numpy
from tests.gradcheck import check_layer_gradients

SPECIAL = [np.nan, -np.nan, 0.0, -0.0, np.inf, -np.inf, 1e-45, -1e-45, 3.0, -2.0]


def _bits(a):
    return a.view(np.uint32 if a.dtype == np.float32 else np.uint64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(0,), (1,), (7, 3), (100, 32, 16, 16)])
def test_kernels_equal_their_twins_bit_for_bit(dtype, shape):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(dtype)
    grad = rng.standard_normal(shape).astype(dtype)
    flat = x.reshape(-1)
    flat[:len(SPECIAL)] = np.array(SPECIAL[:flat.size], dtype)
    y = relu_kernel(x)
    np.testing.assert_array_equal(_bits(y), _bits(relu_numpy(x)))
    for y_in in (y, x):                         # y as the layer keeps it, and any array
        np.testing.assert_array_equal(_bits(relu_grad_kernel(y_in, grad)),
                                      _bits(relu_grad_numpy(y_in, grad)))
    out = np.empty_like(flat)
    _relu_flat(flat, out)
    np.testing.assert_array_equal(_bits(out), _bits(relu_numpy(flat)))
    _relu_grad_flat(flat, grad.reshape(-1), out)
    np.testing.assert_array_equal(_bits(out), _bits(relu_grad_numpy(flat, grad.reshape(-1))))


def test_the_kernels_decline_what_they_do_not_take():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert relu_kernel(x.T) is None                          # not C-contiguous
    assert relu_kernel(x.astype(np.int32)) is None
    assert relu_grad_kernel(x, x.astype(np.float64)) is None  # mixed dtypes
    assert relu_grad_kernel(x, x[:, :2].copy()) is None       # shapes differ


def test_the_layer_gives_the_twins_bits_on_either_path():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 3, 5, 5)).astype(np.float32)
    x.reshape(-1)[:4] = [np.nan, -0.0, 0.0, -np.inf]
    grad = rng.standard_normal(x.shape).astype(np.float32)
    layer = ReLU()
    np.testing.assert_array_equal(_bits(layer.forward(x, training=True)), _bits(relu_numpy(x)))
    np.testing.assert_array_equal(_bits(layer.backward(grad)),
                                  _bits(relu_grad_numpy(relu_numpy(x), grad)))
    # a Fortran-ordered input takes the twins
    xf = np.asfortranarray(x[0, 0])
    np.testing.assert_array_equal(layer.forward(xf), relu_numpy(xf))
    np.testing.assert_array_equal(layer.backward(np.asfortranarray(grad[0, 0])),
                                  relu_grad_numpy(relu_numpy(xf), grad[0, 0]))


def test_relu_gradients_match_finite_differences():
    x = np.random.default_rng(2).standard_normal((3, 4, 5))
    x[np.abs(x) < 0.05] = 0.5                     # keep away from the kink
    check_layer_gradients(ReLU(), x, np.random.default_rng(3))
