"""Conv2D, MaxPool2D and AvgPool2D against PyTorch on the same inputs."""
from __future__ import annotations

import numpy as np
import pytest

from minidnn.layers import AvgPool2D, Conv2D, MaxPool2D

torch = pytest.importorskip("torch", reason="PyTorch not installed: reference tests skipped")
F = torch.nn.functional

CONV_CASES = [  # (x_shape, out_channels, kernel, stride, padding)
    ((3, 1, 28, 28), 20, 5, 1, 0),
    ((2, 3, 9, 7), 4, (3, 2), (2, 1), (1, 2)),
    ((2, 2, 6, 6), 3, 3, 3, 2),
    ((1, 3, 32, 32), 32, 5, 1, 2),
]

POOL_CASES = [  # (x_shape, kernel, stride, padding, ceil_mode)
    ((2, 3, 24, 24), 2, None, 0, False),
    ((2, 3, 32, 32), 3, 2, 0, True),
    ((2, 2, 16, 16), 3, 2, 0, True),
    ((2, 2, 8, 8), 3, 2, 0, True),
    ((2, 2, 7, 9), (3, 2), (2, 3), (1, 1), True),
    ((1, 2, 6, 5), 3, 2, 1, False),
]


def _torch(x):
    return torch.tensor(x, dtype=torch.float64, requires_grad=True)


@pytest.mark.parametrize("x_shape, out_channels, kernel, stride, padding", CONV_CASES)
def test_conv2d_matches_torch(x_shape, out_channels, kernel, stride, padding):
    rng = np.random.default_rng(0)
    layer = Conv2D(x_shape[1], out_channels, kernel, stride, padding, rng=rng).cast(np.float64)
    layer.set_weights(layer.params["W"], rng.standard_normal(out_channels))
    x = rng.standard_normal(x_shape)
    y = layer.forward(x, training=True)
    g = rng.standard_normal(y.shape)
    dx = layer.backward(g)

    tx, tW, tb = _torch(x), _torch(layer.params["W"]), _torch(layer.params["b"])
    ty = F.conv2d(tx, tW, tb, stride=stride, padding=padding)
    ty.backward(torch.tensor(g))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(layer.grads["W"], tW.grad.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(layer.grads["b"], tb.grad.numpy(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("x_shape, kernel, stride, padding, ceil_mode", POOL_CASES)
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pooling_matches_torch(kind, x_shape, kernel, stride, padding, ceil_mode):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(x_shape)
    cls, fn = (MaxPool2D, F.max_pool2d) if kind == "max" else (AvgPool2D, F.avg_pool2d)
    layer = cls(kernel, stride, padding, ceil_mode)
    y = layer.forward(x, training=True)
    g = rng.standard_normal(y.shape)
    dx = layer.backward(g)

    tx = _torch(x)
    extra = {"count_include_pad": True} if kind == "avg" else {}
    ty = fn(tx, kernel, stride=stride, padding=padding, ceil_mode=ceil_mode, **extra)
    ty.backward(torch.tensor(g))
    assert y.shape == tuple(ty.shape)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_float32_conv_and_pool_match_torch():
    rng = np.random.default_rng(2)
    conv = Conv2D(20, 50, 5, rng=rng)
    x = rng.standard_normal((8, 20, 12, 12)).astype(np.float32)
    pool = MaxPool2D(2)
    y = pool.forward(conv.forward(x, training=True), training=True)
    g = rng.standard_normal(y.shape).astype(np.float32)
    dx = conv.backward(pool.backward(g))

    tx = torch.tensor(x, requires_grad=True)
    tW = torch.tensor(conv.params["W"], requires_grad=True)
    tb = torch.tensor(conv.params["b"], requires_grad=True)
    ty = F.max_pool2d(F.conv2d(tx, tW, tb), 2)
    ty.backward(torch.tensor(g))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(conv.grads["W"], tW.grad.numpy(), rtol=1e-3, atol=1e-3)
