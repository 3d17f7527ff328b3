"""Sitting 20: the implicit convolution's passes as one parallel region each
(``implicit_conv.conv_nchw`` / ``backward_nchw``, Conv2D's implicit path): the
kernels against their NumPy twins, bit for bit against sitting 19's separate passes
(padding, kernels, NCHW copy), the small kernels (weight panels, NumPy's pairwise
sum, the dW / db finish) against theirs, the sample split, and the errors."""
import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minidnn.kernels import implicit_conv as ic
from minidnn.kernels.im2col import weight_from_rows, weight_rows
from minidnn.kernels.layout import pad_channels_last_numpy, rows_to_nchw
from minidnn.layers import Conv2D

needs_simd = pytest.mark.skipif(not ic.SIMD_AVAILABLE,
                                reason="Numba's target has no AVX2 + FMA here")

geometry = st.fixed_dictionaries({
    "N": st.integers(1, 4), "C": st.sampled_from([8, 16, 24]),
    "O": st.sampled_from([8, 16, 24, 40]), "k": st.integers(1, 5), "H": st.integers(4, 9),
    "W": st.integers(4, 9), "pad_frac": st.floats(0, 1), "bias": st.booleans(),
    "seed": st.integers(0, 2**16)})


def _case(g):
    k = min(g["k"], g["H"], g["W"])
    pad = int(round(g["pad_frac"] * (k - 1)))
    rng = np.random.default_rng(g["seed"])
    x = rng.standard_normal((g["N"], g["C"], g["H"], g["W"])).astype(np.float32)
    W = rng.standard_normal((g["O"], g["C"], k, k)).astype(np.float32)
    b = rng.standard_normal(g["O"]).astype(np.float32) if g["bias"] else None
    return x, W, b, (pad, pad), rng


def _zero_pad_buffer(shape):
    return np.zeros(shape, np.float32)


@needs_simd
@settings(max_examples=30, deadline=None)
@given(geometry)
def test_fused_forward_and_backward_equal_their_twins(g):
    x, W, b, pads, rng = _case(g)
    N, C, H, Wd = x.shape
    O, _, kh, kw = W.shape
    x_pad = _zero_pad_buffer((N, H + 2 * pads[0], Wd + 2 * pads[1], C))
    y = ic.conv_nchw(x, W, b, pads, x_pad)
    y_twin, x_pad_twin = ic.conv_nchw_numpy(x, W, b, pads)
    np.testing.assert_array_equal(x_pad, x_pad_twin)          # a copy: exact
    bound = ic.conv_nchw_numpy(np.abs(x), np.abs(W), None if b is None else np.abs(b), pads)[0]
    assert np.all(np.abs(y - y_twin) <= 1e-5 * bound + 1e-6)
    grad = rng.standard_normal(y.shape).astype(np.float32)
    qh, qw = kh - 1 - pads[0], kw - 1 - pads[1]
    g_pad = _zero_pad_buffer((N, y.shape[2] + 2 * qh, y.shape[3] + 2 * qw, O))
    dW, db, dx = ic.backward_nchw(grad, x_pad, W, pads, g_pad, bias=b is not None)
    dW_t, db_t, dx_t = ic.backward_nchw_numpy(grad, x_pad, W, pads, bias=b is not None)
    scale_w = 1e-5 * np.abs(dW_t).max() * N * y.shape[2] * y.shape[3] + 1e-5
    np.testing.assert_allclose(dW, dW_t, rtol=1e-4, atol=scale_w)
    np.testing.assert_allclose(dx, dx_t, rtol=1e-4, atol=1e-4 * (1 + np.abs(dx_t).max()))
    if b is None:
        assert db is None and db_t is None
    else:
        np.testing.assert_array_equal(db, db_t)              # NumPy's own order


def _separate_passes(layer, x, grad):
    """(y, dx, dW, db) of ``layer`` as sitting 19's separate passes computed them (the
    layer's branch until sitting 22): a padding pass, the kernels over the whole batch
    (``conv_rows``, ``weight_grad_rows``), an NCHW copy pass, NumPy's sum for db."""
    (kh, kw), (ph, pw) = layer.kernel, layer.pads
    N, C, H, W = x.shape
    O = layer.out_channels
    W_ = layer.params["W"]
    b = layer.params["b"] if layer.bias else None
    x_pad = pad_channels_last_numpy(x, ph, pw)
    OH, OW = H + 2 * ph - kh + 1, W + 2 * pw - kw + 1
    y = rows_to_nchw(ic.conv_rows(x_pad, weight_rows(W_), (kh, kw)), N, OH, OW, b)
    qh, qw = kh - 1 - ph, kw - 1 - pw
    g_pad = pad_channels_last_numpy(grad, qh, qw)
    dW = weight_from_rows(ic.weight_grad_rows(x_pad, g_pad, (kh, kw), offset=(qh, qw)),
                          W_.shape)
    db = grad.sum(axis=(0, 2, 3)) if layer.bias else None
    dx = rows_to_nchw(ic.conv_rows(g_pad, ic.flipped_weight_rows(W_), (kh, kw)), N, H, W)
    assert dx.shape == (N, C, H, W) and y.shape == (N, O, OH, OW)
    return y, dx, dW, db


@needs_simd
@pytest.mark.parametrize("C, O, H, k, pad, bias", [
    (32, 64, 8, 5, 2, True),        # Cifar10_quick's conv3
    (32, 32, 16, 5, 2, True),       # ... and conv2
    (8, 16, 5, 3, 1, False),
    (16, 8, 7, 3, 0, True),
    (16, 24, 6, 2, 1, True),        # an even kernel, padding < k - 1 on one side of dx
])
def test_fused_layer_is_bit_for_bit_the_separate_passes(C, O, H, k, pad, bias):
    """The same tile calls on the same data, the same partial sums per thread, the
    same NumPy-order bias sum: every output and gradient is the same float32."""
    rng = np.random.default_rng(C + O + H)
    layer = Conv2D(C, O, k, padding=pad, bias=bias, rng=0)
    assert layer._implicit_applies((7, C, H, H))
    for _ in range(2):                               # reused buffers: fresh data each step
        x = rng.standard_normal((7, C, H, H)).astype(np.float32)
        if bias:
            layer.params["b"][:] = rng.standard_normal(O)
        y = layer.forward(x, training=True)
        grad = rng.standard_normal(y.shape).astype(np.float32)
        y_s, dx_s, dW_s, db_s = _separate_passes(layer, x, grad)
        np.testing.assert_array_equal(y, y_s)
        np.testing.assert_array_equal(layer.backward(grad), dx_s)
        np.testing.assert_array_equal(layer.grads["W"], dW_s)
        if bias:
            np.testing.assert_array_equal(layer.grads["b"], db_s)
        else:
            assert set(layer.grads) == {"W"}
        layer.forward(x, training=True)
        assert layer.backward_params(grad) is None
        np.testing.assert_array_equal(layer.grads["W"], dW_s)
        if bias:
            np.testing.assert_array_equal(layer.grads["b"], db_s)
    layer.EVAL_CHUNK = 3                             # evaluation, in chunks too
    np.testing.assert_array_equal(layer.forward(x), y_s)


@needs_simd
def test_sample_ranges_split_like_the_separate_weight_gradient(monkeypatch):
    """At T threads each pass splits the batch into T ranges; the dW partials are
    then the separate kernel's at T threads. T = 1, 2, 3 are checked through the
    serial build (the ranges are explicit, so the sums do not depend on which thread
    runs a range): dW bit for bit ``weight_grad_rows`` at the same T, y and dx the
    same bits at every T."""
    rng = np.random.default_rng(1)
    N, C, O, H = 7, 16, 16, 8
    x = rng.standard_normal((N, C, H, H)).astype(np.float32)
    W = rng.standard_normal((O, C, 5, 5)).astype(np.float32)
    grad = rng.standard_normal((N, O, H, H)).astype(np.float32)
    results = []
    for T in (1, 2, 3):
        monkeypatch.setattr(ic, "_threads", lambda T=T: T)
        monkeypatch.setattr(ic, "_build", lambda fn, parallel: ic._BUILDS.get(
            (fn.__name__, False)) or ic.njit_variant(fn, "_serial", parallel=False))
        x_pad = np.zeros((N, H + 4, H + 4, C), np.float32)
        g_pad = np.zeros((N, H + 4, H + 4, O), np.float32)
        y = ic.conv_nchw(x, W, None, (2, 2), x_pad)
        dW, _, dx = ic.backward_nchw(grad, x_pad, W, (2, 2), g_pad, bias=False)
        dW_sep = weight_from_rows(ic.weight_grad_rows(x_pad, g_pad, (5, 5), offset=(2, 2)),
                                  W.shape)
        np.testing.assert_array_equal(dW, dW_sep)
        results.append((y, dx, dW))
    for y, dx, dW in results[1:]:
        np.testing.assert_array_equal(y, results[0][0])
        np.testing.assert_array_equal(dx, results[0][1])
        np.testing.assert_allclose(dW, results[0][2], rtol=1e-5, atol=1e-4)


@needs_simd
def test_two_threads_equal_one():
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("Numba allows one thread here")
    rng = np.random.default_rng(2)
    x = rng.standard_normal((6, 32, 8, 8)).astype(np.float32)
    before = numba.get_num_threads()
    out = []
    try:
        for threads in (1, 2):
            numba.set_num_threads(threads)
            layer = Conv2D(32, 64, 5, padding=2, rng=0)
            y = layer.forward(x, training=True)
            dx = layer.backward(np.cos(y))
            out.append((y, dx, layer.grads["W"], layer.grads["b"]))
    finally:
        numba.set_num_threads(before)
    for a, b in zip(*out[:2]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(out[0][0], out[1][0])      # per output the same sum
    np.testing.assert_array_equal(out[0][1], out[1][1])
    np.testing.assert_array_equal(out[0][3], out[1][3])


def test_serial_and_parallel_builds_have_their_own_cache_entries():
    for fn in (ic._conv_nchw, ic._backward_nchw):
        serial, parallel = ic._build(fn, False), ic._build(fn, True)
        assert serial is not parallel
        assert serial.py_func.__qualname__ != parallel.py_func.__qualname__
        assert parallel.targetoptions.get("parallel")
        assert serial.targetoptions.get("parallel") in (None, False)


@pytest.mark.parametrize("O, C, flip", [(64, 32, False), (64, 32, True), (24, 8, False),
                                        (8, 24, True), (40, 16, True)])
def test_weight_panels_equal_the_panels_of_the_weight_rows(O, C, flip):
    W = np.random.default_rng(O + C).standard_normal((O, C, 3, 2)).astype(np.float32)
    out = np.empty(W.size, np.float32)
    ic._weight_panels(W, flip, out)
    want = ic.panels(ic.flipped_weight_rows(W) if flip else weight_rows(W))
    np.testing.assert_array_equal(out, want)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 5), st.integers(2, 9), st.integers(1, 300), st.integers(0, 2**16))
def test_plane_sums_in_numpys_order(N, O, P, seed):
    """``_pairwise_sum`` plane by plane, then in sample order, is NumPy's
    ``grad.sum(axis=(0, 2, 3))`` to the bit (checked against the NumPy installed).
    With O = 1 NumPy merges the planes into one sum and rounds otherwise; the
    kernels need O to be a multiple of 8, so that case never reaches them."""
    rng = np.random.default_rng(seed)
    grad = (rng.standard_normal((N, O, 1, P)) * 10 ** rng.uniform(-3, 3)).astype(np.float32)
    sums = np.array([[ic._pairwise_sum(grad[n, o].reshape(-1), 0, P) for o in range(O)]
                     for n in range(N)], dtype=np.float32)
    parts = np.zeros((1, 1, O), np.float32)
    dW, db = np.empty((O, 1, 1, 1), np.float32), np.empty(O, np.float32)
    ic._finish_grads(parts, sums, True, dW, db)
    np.testing.assert_array_equal(db, grad.sum(axis=(0, 2, 3)))


def test_finish_adds_the_partials_in_order_and_lays_out_W():
    rng = np.random.default_rng(4)
    parts = rng.standard_normal((3, 2 * 3 * 5, 8)).astype(np.float32)   # kh=2, kw=3, C=5
    dW = np.empty((8, 5, 2, 3), np.float32)
    db = np.empty(1, np.float32)
    want = parts[0].copy()
    want += parts[1]
    want += parts[2]
    ic._finish_grads(parts, np.zeros((1, 1), np.float32), False, dW, db)   # (sums in parts[0])
    np.testing.assert_array_equal(dW, weight_from_rows(want, dW.shape))


@needs_simd
def test_fused_arguments_are_checked():
    x = np.zeros((2, 8, 5, 5), np.float32)
    W = np.zeros((8, 8, 3, 3), np.float32)
    with pytest.raises(ValueError, match="x_pad must be"):
        ic.conv_nchw(x, W, None, (1, 1), np.zeros((2, 6, 6, 8), np.float32))
    with pytest.raises(ValueError, match="x_pad must be"):
        ic.conv_nchw(x, W, None, (1, 1), np.zeros((2, 7, 7, 8)))
    with pytest.raises(ValueError, match="W \\(O, C, kh, kw\\)"):
        ic.conv_nchw(x, np.zeros((8, 4, 3, 3), np.float32), None, (1, 1),
                     np.zeros((2, 7, 7, 8), np.float32))
    with pytest.raises(TypeError, match="float32"):
        ic.conv_nchw(x, W.astype(np.float64), None, (1, 1), np.zeros((2, 7, 7, 8), np.float32))
    x_pad = np.zeros((2, 7, 7, 8), np.float32)
    with pytest.raises(ValueError, match="expected dY"):
        ic.backward_nchw(np.zeros((2, 8, 4, 4), np.float32), x_pad, W, (1, 1),
                         np.zeros((2, 7, 7, 8), np.float32))
    with pytest.raises(ValueError, match="g_pad must be"):
        ic.backward_nchw(np.zeros((2, 8, 5, 5), np.float32), x_pad, W, (1, 1),
                         np.zeros((2, 6, 6, 8), np.float32))
    with pytest.raises(ValueError, match="exceeds kernel - 1"):
        ic.backward_nchw(np.zeros((2, 8, 9, 9), np.float32),
                         np.zeros((2, 11, 11, 8), np.float32), W, (3, 3),
                         np.zeros((2, 9, 9, 8), np.float32))
