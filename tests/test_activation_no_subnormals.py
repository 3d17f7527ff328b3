"""``layers.activations.sigmoid`` returns no subnormal numbers: below about x = -87.3
(float32; -708 for float64) σ(x) would be under the smallest normal and is stored as 0,
on every path (the float32 kernel, its NumPy twin, the fused Dense / CSR + sigmoid
steps), because subnormal operands send the next layer's GEMMs to the CPU's slow path
(sitting 22: 20x with 3 % of them). Everywhere else the values are the old bits."""
import numpy as np
import pytest

import minidnn as md
from minidnn.kernels import csr_fused
from minidnn.layers.activations import sigmoid, sigmoid_numpy


def _old_sigmoid_numpy(x):
    """sigmoid_numpy before sitting 23: no flush."""
    out = np.negative(x)
    with np.errstate(over="ignore"):
        np.exp(out, out=out)
    out += out.dtype.type(1)
    np.reciprocal(out, out=out)
    return out


def _subnormal(y):
    return (y != 0) & (np.abs(y) < np.finfo(y.dtype).tiny)


def _band_and_beyond(dtype):
    """x from well below to well above the subnormal band, the band densely."""
    lo, hi = (-90.0, -86.0) if dtype == np.float32 else (-750.0, -700.0)
    x = np.concatenate([np.linspace(lo, hi, 40_040), np.linspace(-30, 30, 1001),
                        [np.nan, np.inf, -np.inf, 0.0, -0.0]]).astype(dtype)
    return x


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_twin_flushes_the_subnormal_band_and_keeps_every_other_bit(dtype):
    x = _band_and_beyond(dtype)
    old, new = _old_sigmoid_numpy(x), sigmoid_numpy(x)
    band = _subnormal(old)
    assert band.sum() > 1000                       # the old twin made subnormals here
    assert not _subnormal(new).any()
    assert (new[band] == 0).all()
    bits = np.uint32 if dtype == np.float32 else np.uint64
    np.testing.assert_array_equal(new[~band].view(bits), old[~band].view(bits))
    assert np.isnan(new[-5]) and new[-4] == 1 and new[-3] == 0 and new[-2] == new[-1] == 0.5


def test_every_sigmoid_path_returns_no_subnormals():
    x = _band_and_beyond(np.float32)[:-5].reshape(-1, 1001)       # (41, 1001), no NaN
    paths = {"kernel": sigmoid(x), "twin (strided input)": sigmoid(x[:, ::2]),
             "Sigmoid layer": md.Sigmoid().forward(np.asfortranarray(x)),
             "float64": sigmoid(x.astype(np.float64) * 8.0)}
    bias = np.linspace(-1, 1, x.shape[1]).astype(np.float32)
    fused = csr_fused.bias_activation(x - bias, bias, "sigmoid")      # Dense → Sigmoid
    if fused is not None:
        paths["Dense + sigmoid"] = fused
    paths["Dense + sigmoid twin"] = csr_fused.bias_activation_numpy(x - bias, bias, "sigmoid")
    for name, y in paths.items():
        assert not _subnormal(y).any(), name


def test_the_gradient_through_a_flushed_output_is_zero_and_normal():
    """σ'(x) = σ(1 - σ) is below the smallest normal where σ is: the layer's backward,
    which reads σ, gives 0 there (the flushed σ's own derivative), and the old bits
    elsewhere."""
    x = _band_and_beyond(np.float64)[:-5]
    grad = np.random.default_rng(0).standard_normal(x.shape)
    layer = md.Sigmoid()
    y = layer.forward(x)
    d = layer.backward(grad)
    band = _subnormal(_old_sigmoid_numpy(x))
    assert band.any() and (d[band] == 0).all()
    old = _old_sigmoid_numpy(x)
    np.testing.assert_array_equal(d[~band], ((1 - old) * old * grad)[~band])
    np.testing.assert_array_equal(y[~band], old[~band])
