"""The implicit-GEMM convolution (``kernels.implicit_conv``, ``Conv2D._implicit_applies``):
the kernels against their NumPy twins (the im2row path), the layer against the
im2row + BLAS path and finite differences, and the fall-backs."""
import os
import subprocess
import sys

import numba
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from minidnn.kernels import implicit_conv
from minidnn.layers import Conv2D

needs_simd = pytest.mark.skipif(not implicit_conv.SIMD_AVAILABLE,
                                reason="Numba's target has no AVX2 + FMA here")


def _bound(rows_abs, w_abs):
    """|kernel − twin| allowed: float32 rounding of sums of |a·b| (module docstring)."""
    return 1e-5 * (rows_abs @ w_abs) + 1e-6


def _padded(rng, N, H, W, C, ph, pw):
    x_pad = np.zeros((N, H + 2 * ph, W + 2 * pw, C), np.float32)
    x_pad[:, ph:ph + H, pw:pw + W] = rng.standard_normal((N, H, W, C))
    return x_pad


geometry = st.fixed_dictionaries({
    "N": st.integers(1, 3), "C": st.integers(1, 20), "O": st.sampled_from([8, 16, 24, 40]),
    "kh": st.integers(1, 5), "kw": st.integers(1, 5), "H": st.integers(1, 9),
    "W": st.integers(1, 9), "ph": st.integers(0, 2), "pw": st.integers(0, 2),
    "seed": st.integers(0, 2**16)})


@needs_simd
@settings(max_examples=40, deadline=None)
@given(geometry)
def test_forward_kernel_equals_its_twin(g):
    rng = np.random.default_rng(g["seed"])
    kh, kw = min(g["kh"], g["H"] + 2 * g["ph"]), min(g["kw"], g["W"] + 2 * g["pw"])
    x_pad = _padded(rng, g["N"], g["H"], g["W"], g["C"], g["ph"], g["pw"])
    w = rng.standard_normal((kh * kw * g["C"], g["O"])).astype(np.float32)
    got = implicit_conv.conv_rows(x_pad, w, (kh, kw))
    want = implicit_conv.conv_rows_numpy(x_pad, w, (kh, kw))
    assert got.shape == want.shape
    bound = implicit_conv.conv_rows_numpy(np.abs(x_pad), np.abs(w), (kh, kw))
    assert np.all(np.abs(got - want) <= 1e-5 * bound + 1e-6)


@needs_simd
@settings(max_examples=40, deadline=None)
@given(geometry, st.integers(0, 2), st.integers(0, 2))
def test_weight_grad_kernel_equals_its_twin(g, gh, gw):
    rng = np.random.default_rng(g["seed"])
    kh, kw = min(g["kh"], g["H"] + 2 * g["ph"]), min(g["kw"], g["W"] + 2 * g["pw"])
    x_pad = _padded(rng, g["N"], g["H"], g["W"], g["C"], g["ph"], g["pw"])
    OH, OW = x_pad.shape[1] - kh + 1, x_pad.shape[2] - kw + 1
    # dY inside a larger array at (gh, gw): the layer passes its padded dY as is
    g_pad = rng.standard_normal((g["N"], OH + 2 * gh, OW + 2 * gw, g["O"])).astype(np.float32)
    got = implicit_conv.weight_grad_rows(x_pad, g_pad, (kh, kw), offset=(gh, gw))
    want = implicit_conv.weight_grad_rows_numpy(x_pad, g_pad, (kh, kw), offset=(gh, gw))
    bound = implicit_conv.weight_grad_rows_numpy(np.abs(x_pad), np.abs(g_pad), (kh, kw),
                                                 offset=(gh, gw))
    assert np.all(np.abs(got - want) <= 1e-5 * bound + 1e-6)


def test_flipped_weights_make_the_input_gradient_a_correlation():
    """dx = conv(dY padded by k-1-p, W_t) is the adjoint of the forward (twins only:
    <conv(x), dY> = <x, conv_t(dY)>), so the layer's input gradient is right."""
    rng = np.random.default_rng(0)
    N, C, O, H, W, kh, kw, ph, pw = 2, 5, 8, 6, 7, 3, 5, 1, 2
    Wt = rng.standard_normal((O, C, kh, kw)).astype(np.float64)
    x = rng.standard_normal((N, H, W, C))
    x_pad = np.zeros((N, H + 2 * ph, W + 2 * pw, C))
    x_pad[:, ph:ph + H, pw:pw + W] = x
    from minidnn.kernels.im2col import weight_rows
    y = implicit_conv.conv_rows_numpy(x_pad, weight_rows(Wt), (kh, kw))
    dy = rng.standard_normal(y.shape)
    OH, OW = H + 2 * ph - kh + 1, W + 2 * pw - kw + 1
    qh, qw = kh - 1 - ph, kw - 1 - pw
    dy_pad = np.zeros((N, OH + 2 * qh, OW + 2 * qw, O))
    dy_pad[:, qh:qh + OH, qw:qw + OW] = dy.reshape(N, OH, OW, O)
    dx = implicit_conv.conv_rows_numpy(dy_pad, implicit_conv.flipped_weight_rows(Wt), (kh, kw))
    assert dx.shape == (N * H * W, C)
    np.testing.assert_allclose((y * dy).sum(), (x.reshape(-1, C) * dx).sum(), rtol=1e-10)


def _rows_path(layer):
    """``layer`` on im2row + BLAS, the path the dispatch gives the shapes the implicit
    kernels do not take (``Conv2D._implicit_applies``), for the shapes it does."""
    layer._implicit_applies = lambda x_shape: False
    return layer


def _pair(shape, out_channels, kernel, padding, dtype=np.float32):
    """The same layer twice: implicit GEMM and im2row + BLAS."""
    layers = []
    for implicit in (True, False):
        layer = Conv2D(shape[1], out_channels, kernel, padding=padding, rng=0).cast(dtype)
        layers.append(layer if implicit else _rows_path(layer))
    return layers


layer_geometry = st.fixed_dictionaries({
    "N": st.integers(1, 3), "C": st.sampled_from([8, 16, 32]),
    "O": st.sampled_from([8, 16, 32, 64]), "k": st.integers(1, 5), "H": st.integers(3, 9),
    "W": st.integers(3, 9), "pad_frac": st.floats(0, 1), "seed": st.integers(0, 2**16)})


@needs_simd
@settings(max_examples=25, deadline=None)
@given(layer_geometry)
def test_layer_step_equals_the_im2row_path(g):
    k = min(g["k"], g["H"], g["W"])
    pad = int(round(g["pad_frac"] * (k - 1)))
    shape = (g["N"], g["C"], g["H"], g["W"])
    assume(g["C"] * k >= Conv2D.CHANNELS_LAST_MIN)     # else the direct path (channels first)
    out_h, out_w = g["H"] + 2 * pad - k + 1, g["W"] + 2 * pad - k + 1
    assume(min(out_h, out_w) >= Conv2D.IMPLICIT_MIN_OUTPUT)
    implicit, rows = _pair(shape, g["O"], k, pad)
    assert implicit._implicit_applies(shape) and not rows._implicit_applies(shape)
    rng = np.random.default_rng(g["seed"])
    for step in range(2):                        # reused buffers: fresh data each step
        x = rng.standard_normal(shape).astype(np.float32)
        implicit.params["b"][:] = rows.params["b"][:] = rng.standard_normal(g["O"])
        y = implicit.forward(x, training=True)
        np.testing.assert_allclose(y, rows.forward(x, training=True), rtol=1e-4, atol=1e-4)
        grad = rng.standard_normal(y.shape).astype(np.float32)
        np.testing.assert_allclose(implicit.backward(grad), rows.backward(grad),
                                   rtol=1e-4, atol=1e-4)
        for key in ("W", "b"):
            np.testing.assert_allclose(implicit.grads[key], rows.grads[key], rtol=1e-4,
                                       atol=1e-4)
        implicit.backward_params(grad)           # the first layer's call: grads only
        np.testing.assert_allclose(implicit.grads["W"], rows.grads["W"], rtol=1e-4, atol=1e-4)
    # evaluation, in chunks of EVAL_CHUNK samples too
    implicit.EVAL_CHUNK = 2
    np.testing.assert_allclose(implicit.forward(x), rows.forward(x), rtol=1e-4, atol=1e-4)


@needs_simd
def test_layer_gradients_match_finite_differences_in_float32():
    """The layer is linear in x and in W, so central differences with a large step are
    exact up to float32 rounding of L = Σ r·y (summed in float64)."""
    rng = np.random.default_rng(3)
    layer = Conv2D(8, 16, 3, padding=1, rng=0)
    x = rng.standard_normal((2, 8, 5, 6)).astype(np.float32)
    assert layer._implicit_applies(x.shape)
    r = rng.standard_normal((2, 16, 5, 6))
    layer.forward(x, training=True)
    dx = layer.backward(r.astype(np.float32))
    dW, db = layer.grads["W"].copy(), layer.grads["b"].copy()

    def loss():
        return float((layer.forward(x, training=True).astype(np.float64) * r).sum())

    eps = 0.5
    for array, analytic in ((x, dx), (layer.params["W"], dW), (layer.params["b"], db)):
        flat = array.reshape(-1)
        for i in rng.choice(flat.size, size=min(flat.size, 25), replace=False):
            old = flat[i]
            flat[i] = old + eps
            plus = loss()
            flat[i] = old - eps
            minus = loss()
            flat[i] = old
            assert abs((plus - minus) / (2 * eps) - analytic.reshape(-1)[i]) <= \
                1e-3 * (1 + abs(analytic.reshape(-1)[i]))


@needs_simd
def test_two_threads_equal_one():
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("Numba allows one thread here")
    rng = np.random.default_rng(0)
    x_pad = _padded(rng, 5, 8, 8, 16, 2, 2)
    w = rng.standard_normal((25 * 16, 32)).astype(np.float32)
    g_pad = rng.standard_normal((5, 8, 8, 32)).astype(np.float32)
    before = numba.get_num_threads()
    try:
        results = []
        for threads in (1, 2):
            numba.set_num_threads(threads)
            results.append((implicit_conv.conv_rows(x_pad, w, (5, 5)),
                            implicit_conv.weight_grad_rows(x_pad, g_pad, (5, 5))))
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(results[0][0], results[1][0])     # same sums per output
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-5, atol=1e-4)


def test_serial_and_parallel_builds_have_their_own_cache_entries():
    """Numba's on-disk cache index is keyed by qualified name, file and signature, not
    by ``parallel``: two builds of one function shared an entry, and whichever was
    compiled first ran for both (sitting 18's two-thread runs were serial)."""
    names = set()
    for fn in (implicit_conv._conv_rows, implicit_conv._weight_grad_rows):
        serial, parallel = implicit_conv._build(fn, False), implicit_conv._build(fn, True)
        assert serial is not parallel
        assert serial.targetoptions.get("parallel") in (None, False)
        assert parallel.targetoptions.get("parallel")
        for build in (serial, parallel):
            names.add(build.py_func.__qualname__)
            assert build._cache._cache_file._index_name.startswith(
                "implicit_conv." + build.py_func.__qualname__ + "-")
    assert len(names) == 4


# (sitting 18's fresh-cache bug end to end, a one-thread run and then a two-thread one in
# a fresh Numba cache, is tests/test_builds.py's
# test_a_two_thread_run_after_a_one_thread_run_in_a_fresh_cache_runs_the_parallel_build,
# on a small kernel built by the same njit_variant; this module's builds having their own
# cache index is test_serial_and_parallel_builds_have_their_own_cache_entries above)


class _OwnProduct(Conv2D):
    def _forward_product(self, rows):
        return super()._forward_product(rows)


@pytest.mark.parametrize("make, shape", [
    (lambda: Conv2D(8, 8, 3, padding=1).cast(np.float64), (1, 8, 5, 5)),   # float64
    (lambda: Conv2D(12, 8, 3, padding=1), (1, 12, 5, 5)),       # C not a multiple of 8
    (lambda: Conv2D(8, 12, 3, padding=1), (1, 8, 5, 5)),        # O not a multiple of 8
    (lambda: Conv2D(8, 8, 3, stride=2, padding=1), (1, 8, 5, 5)),
    (lambda: Conv2D(8, 8, 3, padding=3), (1, 8, 5, 5)),         # padding > kernel - 1
    (lambda: Conv2D(136, 8, 3, padding=1), (1, 136, 5, 5)),     # above IMPLICIT_MAX_CHANNELS
    (lambda: Conv2D(3, 32, 5, padding=2), (1, 3, 8, 8)),        # few channels: direct path
    (lambda: Conv2D(8, 8, 3, padding=1), (1, 8, 3, 3)),         # output under IMPLICIT_MIN_OUTPUT
    (lambda: _OwnProduct(8, 8, 3, padding=1), (1, 8, 5, 5)),    # a subclass's own product
])
def test_layers_outside_the_kernels_keep_their_paths(make, shape):
    layer = make()
    assert not layer._implicit_applies(shape)
    x = np.random.default_rng(0).standard_normal(shape).astype(layer.dtype)
    layer.forward(x, training=True)
    assert layer._implicit_x_pad is None


def test_no_simd_falls_back_to_im2row(monkeypatch):
    monkeypatch.setattr(implicit_conv, "SIMD_AVAILABLE", False)
    layer = Conv2D(8, 8, 3, padding=1, rng=0)
    x = np.random.default_rng(0).standard_normal((2, 8, 5, 5)).astype(np.float32)
    assert not layer._implicit_applies(x.shape)
    y = layer.forward(x, training=True)
    assert layer._rows is not None and layer._implicit_x_pad is None
    layer.backward(np.ones_like(y))
    with pytest.raises(RuntimeError, match="AVX2"):
        implicit_conv.conv_rows(np.zeros((1, 3, 3, 8), np.float32),
                                np.zeros((9 * 8, 8), np.float32), (3, 3))


def test_kernel_arguments_are_checked():
    with pytest.raises(TypeError, match="float32"):
        implicit_conv.conv_rows(np.zeros((1, 3, 3, 8)), np.zeros((72, 8)), (3, 3))
    with pytest.raises(ValueError, match="multiple of 8"):
        implicit_conv.conv_rows(np.zeros((1, 3, 3, 8), np.float32),
                                np.zeros((72, 12), np.float32), (3, 3))
    with pytest.raises(ValueError, match="w_rows"):
        implicit_conv.conv_rows(np.zeros((1, 3, 3, 8), np.float32),
                                np.zeros((70, 8), np.float32), (3, 3))
    with pytest.raises(ValueError, match="does not hold"):
        implicit_conv.weight_grad_rows(np.zeros((1, 5, 5, 8), np.float32),
                                       np.zeros((1, 2, 3, 8), np.float32), (3, 3))
    with pytest.raises(ValueError, match="Hp >= 3"):
        implicit_conv.conv_rows(np.zeros((1, 2, 3, 8), np.float32),
                                np.zeros((72, 8), np.float32), (3, 3))
    with pytest.raises(ValueError, match="out must be"):
        implicit_conv.conv_rows(np.zeros((1, 3, 3, 8), np.float32),
                                np.zeros((72, 8), np.float32), (3, 3),
                                out=np.zeros((2, 8), np.float32))


def test_disabled_jit_runs_the_im2row_path():
    """Under NUMBA_DISABLE_JIT there is no intrinsic: the layer takes im2row + BLAS."""
    code = ("import numpy as np\n"
            "from minidnn.kernels import implicit_conv\n"
            "from minidnn.layers import Conv2D\n"
            "assert not implicit_conv.SIMD_AVAILABLE\n"
            "layer = Conv2D(8, 8, 3, padding=1, rng=0)\n"
            "x = np.ones((1, 8, 4, 4), np.float32)\n"
            "assert not layer._implicit_applies(x.shape)\n"
            "y = layer.forward(x, training=True)\n"
            "assert layer.backward(np.ones_like(y)).shape == x.shape\n")
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=300)


@needs_simd
def test_layer_without_bias_and_backward_without_a_training_forward():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 16, 6, 6)).astype(np.float32)
    layers = []
    for implicit in (True, False):
        layer = Conv2D(16, 8, 3, padding=1, bias=False, rng=0)
        layers.append(layer if implicit else _rows_path(layer))
    y = layers[0].forward(x, training=True)
    np.testing.assert_allclose(y, layers[1].forward(x, training=True), rtol=1e-4, atol=1e-4)
    grad = rng.standard_normal(y.shape).astype(np.float32)
    np.testing.assert_allclose(layers[0].backward(grad), layers[1].backward(grad), rtol=1e-4,
                               atol=1e-4)
    assert set(layers[0].grads) == {"W"}
    np.testing.assert_allclose(layers[0].grads["W"], layers[1].grads["W"], rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="gradient of shape"):
        layers[0].backward(grad[:, :4])
    layers[0].forward(x)                             # evaluation keeps nothing for backward
    with pytest.raises(RuntimeError, match="training=True"):
        layers[0].backward(grad)
