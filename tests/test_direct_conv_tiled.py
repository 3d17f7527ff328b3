"""The register-tiled direct convolution (``kernels.direct_conv``: ``window_rows``,
``direct_conv_tiled``, ``direct_conv_weight_grad_tiled``; ``Conv2D._direct_tiled_applies``):
each kernel against its NumPy twin over shapes (1-3 input channels, odd sizes, output
rows that are not whole vectors, kernels wider than the 6-tap register block,
paddings), 2 threads against 1, the layer against the im2row path and a
finite-difference check, that the first layer computes no input gradient, and the
fall-backs (float64, stride 2, outputs narrower than 8, no SIMD, NUMBA_DISABLE_JIT)."""
import os
import subprocess
import sys

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minidnn.kernels import direct_conv as dc
from minidnn.layers import Conv2D

needs_simd = pytest.mark.skipif(not dc.SIMD_AVAILABLE,
                                reason="Numba's target has no AVX2 + FMA here")

geometry = st.fixed_dictionaries({
    "N": st.integers(1, 3), "C": st.sampled_from([1, 2, 3]), "O": st.integers(1, 40),
    "kh": st.integers(1, 7), "kw": st.integers(1, 7), "H": st.integers(1, 12),
    "W": st.integers(8, 37), "ph": st.integers(0, 3), "pw": st.integers(0, 3),
    "seed": st.integers(0, 2**16)})


def _case(g):
    """x, W, b, dY (float32) of a geometry whose output rows hold >= 8 pixels."""
    rng = np.random.default_rng(g["seed"])
    kh = min(g["kh"], g["H"] + 2 * g["ph"])
    kw = min(g["kw"], g["W"] + 2 * g["pw"] - 7)           # OW >= 8
    x = rng.standard_normal((g["N"], g["C"], g["H"], g["W"])).astype(np.float32)
    W = rng.standard_normal((g["O"], g["C"], kh, kw)).astype(np.float32)
    b = rng.standard_normal(g["O"]).astype(np.float32)
    OH, OW = g["H"] + 2 * g["ph"] - kh + 1, g["W"] + 2 * g["pw"] - kw + 1
    grad = rng.standard_normal((g["N"], g["O"], OH, OW)).astype(np.float32)
    return x, W, b, grad, (g["ph"], g["pw"])


def _f64(*arrays):
    return [a.astype(np.float64) for a in arrays]


@settings(max_examples=30, deadline=None)
@given(geometry)
def test_window_rows_kernel_equals_its_twin(g):
    x, _, _, _, pads = _case(g)
    want = dc.window_rows_numpy(x, pads)
    out = np.full(want.shape, np.nan, np.float32)          # every value must be written
    np.testing.assert_array_equal(dc.window_rows(x, pads, out=out), want)
    np.testing.assert_array_equal(dc.window_rows(x, pads), want)


@needs_simd
@settings(max_examples=40, deadline=None)
@given(geometry)
def test_tiled_forward_equals_the_twin(g):
    x, W, b, _, pads = _case(g)
    y, rows = dc.direct_conv_tiled(x, W, b, pads)
    np.testing.assert_array_equal(rows, dc.window_rows_numpy(x, pads))
    want = dc.direct_conv_numpy(*_f64(x, W, b), 1, pads)
    bound = dc.direct_conv_numpy(*_f64(np.abs(x), np.abs(W), np.abs(b)), 1, pads)
    assert y.dtype == np.float32 and y.shape == want.shape
    assert np.all(np.abs(y - want) <= 1e-6 * bound + 1e-6)
    y0, _ = dc.direct_conv_tiled(x, W, None, pads)
    np.testing.assert_allclose(y0, y - b.reshape(1, -1, 1, 1), rtol=1e-5, atol=1e-5)


@needs_simd
@settings(max_examples=40, deadline=None)
@given(geometry)
def test_tiled_weight_and_bias_gradients_equal_the_twin(g):
    x, W, _, grad, pads = _case(g)
    _, rows = dc.direct_conv_tiled(x, W, None, pads)
    dW, db = dc.direct_conv_weight_grad_tiled(rows, grad, W.shape[2:])
    x64, g64 = _f64(x, grad)
    want = dc.direct_conv_weight_grad_numpy(x64, g64, W.shape[2:], 1, pads)
    bound = dc.direct_conv_weight_grad_numpy(np.abs(x64), np.abs(g64), W.shape[2:], 1, pads)
    assert dW.shape == W.shape and dW.dtype == np.float32
    assert np.all(np.abs(dW - want) <= 1e-5 * bound + 1e-6)
    np.testing.assert_allclose(db, g64.sum(axis=(0, 2, 3)), rtol=1e-5,
                               atol=1e-5 * np.abs(g64).sum(axis=(0, 2, 3)).max())


@needs_simd
@settings(max_examples=30, deadline=None)
@given(geometry)
def test_16_lane_tiles_agree_with_8_lane_tiles(g):
    # the forward: the same FMA chain per output at either width, so the same bits; the
    # weight gradient's 16-lane partial sums cover other pixels, so within the twin's
    # bound (run on any AVX2 target: LLVM splits 16-lane vectors where there is no zmm)
    x, W, b, grad, pads = _case(g)
    y8, rows = dc.direct_conv_tiled(x, W, b, pads, wide=False)
    y16, _ = dc.direct_conv_tiled(x, W, b, pads, wide=True)
    np.testing.assert_array_equal(y16, y8)
    x64, g64 = _f64(x, grad)
    want = dc.direct_conv_weight_grad_numpy(x64, g64, W.shape[2:], 1, pads)
    bound = dc.direct_conv_weight_grad_numpy(np.abs(x64), np.abs(g64), W.shape[2:], 1, pads)
    for wide in (False, True):
        dW, db = dc.direct_conv_weight_grad_tiled(rows, grad, W.shape[2:], wide=wide)
        assert np.all(np.abs(dW - want) <= 1e-5 * bound + 1e-6)
        np.testing.assert_allclose(db, g64.sum(axis=(0, 2, 3)), rtol=1e-5,
                                   atol=1e-5 * np.abs(g64).sum(axis=(0, 2, 3)).max())


@needs_simd
@pytest.mark.parametrize("W, pad", [(32, 2), (28, 0), (45, 2), (16, 0)])
def test_16_lane_tiles_on_the_rows_that_take_them(W, pad):
    # OW = 32 (Cifar10_quick's conv1: a 32-pixel zmm block, 16-lane dW blocks), 24
    # (LeNet's: 8-lane both), 45 (32 + 8 + a shifted 8; dW 3 blocks of 16, the last
    # masked) and 12
    g = {"N": 2, "C": 3, "O": 13, "kh": 5, "kw": 5, "H": 6, "W": W, "ph": pad, "pw": pad,
         "seed": W}
    test_16_lane_tiles_agree_with_8_lane_tiles.hypothesis.inner_test(g)


@needs_simd
def test_two_threads_equal_one():
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("Numba allows one thread here")
    g = {"N": 6, "C": 3, "O": 32, "kh": 5, "kw": 5, "H": 12, "W": 12, "ph": 2, "pw": 2,
         "seed": 3}
    x, W, b, grad, pads = _case(g)
    before = numba.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            numba.set_num_threads(threads)
            y, rows = dc.direct_conv_tiled(x, W, b, pads)
            results.append((y, *dc.direct_conv_weight_grad_tiled(rows, grad, (5, 5))))
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(results[0][0], results[1][0])    # per-sample sums: same bits
    for one, two in zip(results[0][1:], results[1][1:]):           # partials per thread
        np.testing.assert_allclose(one, two, rtol=1e-5, atol=1e-4)


class _ProductPath(Conv2D):
    """The same layer with its weight gradient as the product: the im2col path."""
    def _weight_grad(self, rows, grad_rows):
        return super()._weight_grad(rows, grad_rows)


@needs_simd
@pytest.mark.parametrize("C, O, size, kernel, padding, batch", [
    (3, 32, 32, 5, 2, 4),            # Cifar10_quick's conv1
    (1, 20, 28, 5, 0, 3),            # LeNet's
    (3, 7, 13, 3, 1, 2), (2, 5, 11, (5, 3), (2, 0), 2), (1, 6, 9, 1, 0, 2)])
def test_the_layer_step_equals_the_im2row_path(C, O, size, kernel, padding, batch):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((batch, C, size, size + 1)).astype(np.float32)
    tiled, plain = Conv2D(C, O, kernel, padding=padding, rng=0), \
        _ProductPath(C, O, kernel, padding=padding, rng=0)
    tiled.params["b"][:] = plain.params["b"][:] = rng.standard_normal(O)
    for _ in range(2):                                     # the second reuses the buffers
        y = tiled.forward(x, training=True)
        assert tiled._direct_rows and tiled._direct_x_pad.shape[2] == C
        np.testing.assert_allclose(y, plain.forward(x, training=True), rtol=1e-4, atol=1e-4)
        grad = rng.standard_normal(y.shape).astype(np.float32)
        np.testing.assert_allclose(tiled.backward(grad), plain.backward(grad), rtol=1e-4,
                                   atol=1e-4)
        scale = np.abs(grad).sum()
        for key in ("W", "b"):
            np.testing.assert_allclose(tiled.grads[key], plain.grads[key], rtol=1e-4,
                                       atol=1e-6 * scale)
        np.testing.assert_allclose(tiled.forward(x), y, rtol=1e-6, atol=1e-6)   # evaluation


@needs_simd
def test_the_plane_kernels_fallback_gives_the_same_values():
    """The plane-by-plane kernels are the dispatch's fallback (float64, output rows
    under 8 pixels, stride > 1, no AVX2 + FMA); forced here for a shape the tiled
    kernels take, they give the same values."""
    rng = np.random.default_rng(12)
    x = rng.standard_normal((3, 3, 10, 12)).astype(np.float32)
    layer = Conv2D(3, 8, 5, padding=2, rng=0)
    y = layer.forward(x, training=True)
    grad = rng.standard_normal(y.shape).astype(np.float32)
    layer.backward_params(grad)
    tiled = {k: v.copy() for k, v in layer.grads.items()}
    layer._direct_tiled_applies = lambda x_shape: False
    np.testing.assert_allclose(layer.forward(x, training=True), y, rtol=1e-5, atol=1e-5)
    assert not layer._direct_rows and layer._direct_x_pad.shape[1] == 3
    layer.backward_params(grad)
    for key in tiled:
        np.testing.assert_allclose(layer.grads[key], tiled[key], rtol=1e-4, atol=1e-4)


@needs_simd
def test_gradients_match_central_differences_of_the_linear_layer():
    """y is linear in (W, b), so for L = Σ G·y the central difference
    (L(θ + D) - L(θ - D)) / 2 equals <dL/dθ, D> for any step D (up to rounding)."""
    rng = np.random.default_rng(13)
    x = rng.standard_normal((2, 3, 9, 11)).astype(np.float32)
    layer = Conv2D(3, 7, 5, padding=2, rng=0)
    y = layer.forward(x, training=True)
    G = rng.standard_normal(y.shape).astype(np.float32)
    layer.backward_params(G)
    grads = {k: v.astype(np.float64) for k, v in layer.grads.items()}
    for key in ("W", "b"):
        base = layer.params[key].copy()
        D = rng.standard_normal(base.shape).astype(np.float32)
        losses = []
        for sign in (1, -1):
            layer.params[key][...] = base + sign * D
            losses.append(float(np.sum(G.astype(np.float64) * layer.forward(x))))
        layer.params[key][...] = base
        numeric = (losses[0] - losses[1]) / 2
        analytic = float(np.sum(grads[key] * D))
        assert abs(numeric - analytic) <= 1e-4 * max(1.0, abs(analytic))


def test_the_first_layer_of_a_model_computes_no_input_gradient(monkeypatch):
    from minidnn import architectures
    model = architectures.build("cifar10-quick", input_shape=(3, 32, 32), seed=0)
    first = model.layers[0]
    x = np.random.default_rng(14).random((2, 3, 32, 32), dtype=np.float32)
    out = model.forward(x, training=True)

    def refuse(*args, **kwargs):
        raise AssertionError("the first layer's input gradient was computed")
    monkeypatch.setattr(first, "backward", refuse)
    monkeypatch.setattr(first, "_input_grad", refuse)
    assert model.backward(np.ones_like(out), input_grad=False) is None
    assert first.grads["W"].shape == first.weight_shape and np.abs(first.grads["W"]).sum() > 0


@pytest.mark.parametrize("make, shape", [
    (lambda: Conv2D(3, 4, 5, padding=2).cast(np.float64), (2, 3, 10, 10)),   # float64
    (lambda: Conv2D(1, 4, 3, padding=1), (2, 1, 6, 6)),                      # OW < 8
    (lambda: Conv2D(3, 4, 3, stride=2, padding=1), (2, 3, 20, 20))])         # stride 2
def test_the_tiled_path_falls_back_where_it_does_not_apply(make, shape):
    layer = make()
    x = np.random.default_rng(15).standard_normal(shape).astype(layer.dtype)
    assert not layer._direct_tiled_applies(shape)
    y = layer.forward(x, training=True)
    assert not getattr(layer, "_direct_rows", False)
    want = dc.direct_conv_numpy(x, layer.params["W"], layer.params["b"], layer.strides,
                                layer.pads)
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4)
    layer.backward_params(np.ones_like(y))


def test_without_simd_the_plane_kernels_run(monkeypatch):
    monkeypatch.setattr(dc, "SIMD_AVAILABLE", False)
    layer = Conv2D(3, 4, 5, padding=2, rng=0)
    assert not layer._direct_tiled_applies((1, 3, 12, 12))
    with pytest.raises(ValueError, match="AVX2"):
        dc.direct_conv_tiled(np.zeros((1, 3, 12, 12), np.float32),
                             np.zeros((4, 3, 5, 5), np.float32), None, 2)


@needs_simd
def test_clear_errors_at_the_boundary():
    x, W = np.zeros((2, 3, 12, 12), np.float32), np.zeros((4, 3, 5, 5), np.float32)
    with pytest.raises(ValueError, match="expects x of shape"):
        dc.direct_conv_tiled(x[:, :2], W)
    with pytest.raises(ValueError, match="output row of >= 8"):
        dc.direct_conv_tiled(x[:, :, :, :9], W)
    with pytest.raises(ValueError, match="out must be"):
        dc.direct_conv_tiled(x, W, None, 2, out=np.zeros((2, 4, 12, 11), np.float32))
    with pytest.raises(ValueError, match="out must be"):
        dc.window_rows(x, 2, out=np.zeros((2, 16, 3, 15), np.float32))
    _, rows = dc.direct_conv_tiled(x, W, None, 2)
    with pytest.raises(ValueError, match="dY must have shape"):
        dc.direct_conv_weight_grad_tiled(rows, np.zeros((2, 4, 12, 11), np.float32), 5)
    with pytest.raises(ValueError, match="float32"):
        dc.direct_conv_weight_grad_tiled(rows, np.zeros((2, 4, 12, 12)), 5)


def test_disabled_jit_runs_the_plane_path():
    """Under NUMBA_DISABLE_JIT there is no intrinsic: the layer keeps the plane kernels."""
    code = ("import numpy as np\n"
            "from minidnn.kernels import direct_conv as dc\n"
            "from minidnn.layers import Conv2D\n"
            "assert not dc.SIMD_AVAILABLE\n"
            "layer = Conv2D(3, 4, 5, padding=2, rng=0)\n"
            "x = np.ones((1, 3, 8, 8), np.float32)\n"
            "assert not layer._direct_tiled_applies(x.shape)\n"
            "y = layer.forward(x, training=True)\n"
            "layer.backward_params(np.ones_like(y))\n"
            "assert layer.grads['W'].shape == (4, 3, 5, 5)\n")
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=300)


@needs_simd
@pytest.mark.parametrize("shape, O, k, pad", [((3, 3, 32, 32), 32, 5, 2), ((2, 1, 28, 28), 20, 5, 0),
                                              ((2, 2, 9, 13), 7, 3, 1)])
def test_the_inference_kernels_share_the_tiled_walk(shape, O, k, pad):
    """``fused_inference.conv_pool2x2`` and ``direct_conv_padded_serial`` (the inference
    plan's conv1) run the tiled sample walk in float32 and equal the twins."""
    from minidnn.kernels import fused_inference as fused
    rng = np.random.default_rng(16)
    x = rng.standard_normal(shape).astype(np.float32)
    W = rng.standard_normal((O, shape[1], k, k)).astype(np.float32)
    b = rng.standard_normal(O).astype(np.float32)
    x_pad = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    want = dc.direct_conv_numpy(*_f64(x, W, b), 1, pad)
    bound = dc.direct_conv_numpy(*_f64(np.abs(x), np.abs(W), np.abs(b)), 1, pad)
    y = np.empty(want.shape, np.float32)
    dc.direct_conv_padded_serial(x_pad, W, b, 1, y)
    assert np.all(np.abs(y - want) <= 1e-6 * bound + 1e-6)
    pooled = np.full(fused.maxpool2x2_values_numpy(want).shape, np.nan, np.float32)
    fused.conv_pool2x2(x_pad, W, b, pooled)
    np.testing.assert_array_equal(pooled, fused.maxpool2x2_values_numpy(y))
