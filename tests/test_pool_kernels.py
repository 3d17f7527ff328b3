"""The separable pooling kernels of ``minidnn.kernels.pooling`` held to their NumPy
twins (shapes with ceil-mode edges, odd sizes, padding, ties, NaN, float32/64),
their layers to finite differences, and the per-window fallback's dispatch rule."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minidnn.kernels import pooling as kp
from minidnn.kernels.im2col import kernel_for
from minidnn.layers import AvgPool2D, MaxPool2D
from tests.gradcheck import check_layer_gradients

FAST = settings(max_examples=25, deadline=None)


@st.composite
def geometries(draw):
    """(x_shape, kernel, stride, padding, ceil_mode): kernels 1-4 (3x3/2 and 2x2/2
    take the literal-stride paths), odd sizes, padding < kernel."""
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, kh - 1)), draw(st.integers(0, kw - 1))
    H = draw(st.integers(max(1, kh - 2 * ph), 11))
    W = draw(st.integers(max(1, kw - 2 * pw), 11))
    N, C = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    return (N, C, H, W), (kh, kw), (sh, sw), (ph, pw), draw(st.booleans())


CIFAR_LIKE = [((2, 3, 32, 32), 3, 2, 0, True), ((2, 3, 16, 16), 3, 2, 0, True),
              ((2, 3, 8, 8), 3, 2, 0, True), ((2, 2, 9, 7), 3, 2, 0, True),
              ((2, 2, 8, 9), 2, 2, 0, False), ((1, 2, 7, 7), 2, 2, 0, True),
              # 2×2/2 with whole windows: the one-pass kernel (LeNet's pools; an odd
              # last row or column left out); the ceil-mode edge above takes the passes
              ((2, 3, 24, 24), 2, 2, 0, False), ((2, 2, 9, 8), 2, 2, 0, False),
              # 3×3/2 on even widths: the flat passes (sitting 24), in floor and ceil
              # mode, odd heights, the smallest planes
              ((2, 3, 10, 12), 3, 2, 0, False), ((2, 2, 9, 8), 3, 2, 0, True),
              ((2, 2, 9, 8), 3, 2, 0, False), ((2, 2, 8, 10), 3, 2, 0, True),
              ((1, 2, 3, 4), 3, 2, 0, True), ((1, 2, 4, 4), 3, 2, 0, False)]


def _run_maxpool(x, geometry):
    kh, kw, sh, sw, ph, pw, OH, OW = geometry
    N, C = x.shape[:2]
    out = np.empty((N, C, OH, OW), x.dtype)
    offsets = np.empty((N, C, OH, OW), np.uint8)
    nan_seen = np.empty(N, np.bool_)
    kernel_for(kp._maxpool_offsets_kernel, x.size)(x, kh, kw, sh, sw, ph, pw, out, offsets,
                                                   nan_seen)
    return out, offsets, nan_seen


def _check_maxpool(x, layer, rng):
    geometry = layer._geometry(x.shape)
    out, offsets, nan_seen = _run_maxpool(x, geometry)
    twin_out, twin_offsets = kp.maxpool_offsets_numpy(x, geometry)
    assert not nan_seen.any()
    np.testing.assert_array_equal(out, twin_out)
    np.testing.assert_array_equal(offsets, twin_offsets)
    grad = rng.standard_normal(out.shape).astype(x.dtype)
    kh, kw, sh, sw, ph, pw, _, _ = geometry
    rows, cols = kp.offset_tables(kw)
    dx = np.full(x.shape, np.nan, x.dtype)          # every element must be written
    kernel_for(kp._maxpool_offsets_backward_kernel, dx.size)(grad, offsets, rows, cols,
                                                            sh, sw, ph, pw, dx)
    # (a, b) order, as the twin's np.add.at: the same bits
    np.testing.assert_array_equal(dx, kp.maxpool_offsets_backward_numpy(
        grad, twin_offsets, geometry, x.shape))


@FAST
@given(geometries(), st.sampled_from([np.float32, np.float64]), st.integers(0, 2**31 - 1))
def test_maxpool_offsets_kernels_equal_their_twins(geometry, dtype, seed):
    x_shape, kernel, stride, padding, ceil_mode = geometry
    rng = np.random.default_rng(seed)
    x = np.round(rng.standard_normal(x_shape), 1).astype(dtype)     # ties are common
    _check_maxpool(x, MaxPool2D(kernel, stride, padding, ceil_mode), rng)


@pytest.mark.parametrize("shape, kernel, stride, padding, ceil", CIFAR_LIKE)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_maxpool_offsets_kernels_on_the_literal_stride_paths(shape, kernel, stride, padding,
                                                             ceil, dtype):
    rng = np.random.default_rng(1)
    layer = MaxPool2D(kernel, stride, padding, ceil)
    x = (np.round(rng.standard_normal(shape) * 2) / 2).astype(dtype)    # many ties
    _check_maxpool(x, layer, rng)
    _check_maxpool(np.zeros(shape, dtype), layer, rng)                # all tied


@pytest.mark.parametrize("shape, kernel, stride, padding, ceil",
                         CIFAR_LIKE + [((2, 3, 11, 9), 3, 2, 1, True),
                                       ((2, 2, 9, 10), (3, 2), (1, 2), (1, 0), False)])
def test_a_nan_sets_the_flag_and_the_layer_keeps_the_first_nan_rule(shape, kernel, stride,
                                                                   padding, ceil):
    rng = np.random.default_rng(2)
    x = rng.standard_normal(shape).astype(np.float32)
    x.reshape(-1)[rng.choice(x.size, 3, replace=False)] = np.nan
    layer = MaxPool2D(kernel, stride, padding, ceil)
    geometry = layer._geometry(x.shape)
    _, _, nan_seen = _run_maxpool(x, geometry)
    assert nan_seen.any()
    out = layer.forward(x, training=True)
    twin_out, twin_offsets = kp.maxpool_offsets_numpy(x, geometry)
    np.testing.assert_array_equal(out, twin_out)
    np.testing.assert_array_equal(layer._offsets, twin_offsets)
    grad = rng.standard_normal(out.shape).astype(np.float32)
    np.testing.assert_array_equal(layer.backward(grad), kp.maxpool_offsets_backward_numpy(
        grad, twin_offsets, geometry, x.shape))


def test_offsets_twin_agrees_with_the_flat_argmax_twin():
    from minidnn.layers.pooling import maxpool_backward_numpy, maxpool_forward_numpy
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 9, 9))
    geometry = MaxPool2D(3, 2, ceil_mode=True)._geometry(x.shape)
    out, argmax = maxpool_forward_numpy(x, geometry)
    out2, offsets = kp.maxpool_offsets_numpy(x, geometry)
    np.testing.assert_array_equal(out, out2)
    assert offsets.dtype == np.uint8 and offsets.max() < 9
    grad = rng.standard_normal(out.shape)
    np.testing.assert_array_equal(kp.maxpool_offsets_backward_numpy(grad, offsets, geometry, x.shape),
                                  maxpool_backward_numpy(grad, argmax, x.shape))


def _check_avgpool(x, layer):
    geometry = layer._geometry(x.shape)
    kh, kw, sh, sw, ph, pw, OH, OW = geometry
    divisor = kp.avg_divisors(x.shape, geometry, x.dtype)
    out = np.empty(x.shape[:2] + (OH, OW), x.dtype)
    kernel_for(kp._avgpool_sep_forward_kernel, x.size)(x, kh, kw, sh, sw, ph, pw, divisor, out)
    tol = dict(rtol=1e-5, atol=1e-6) if x.dtype == np.float32 else dict(rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(out, kp.avgpool_forward_numpy(x, geometry), **tol)


@FAST
@given(geometries(), st.sampled_from([np.float32, np.float64]), st.integers(0, 2**31 - 1))
def test_avgpool_separable_forward_equals_its_twin(geometry, dtype, seed):
    x_shape, kernel, stride, padding, ceil_mode = geometry
    rng = np.random.default_rng(seed)
    x = np.round(rng.standard_normal(x_shape), 1).astype(dtype)
    _check_avgpool(x, AvgPool2D(kernel, stride, padding, ceil_mode))


@pytest.mark.parametrize("shape, kernel, stride, padding, ceil", CIFAR_LIKE)
def test_avgpool_separable_forward_on_the_literal_stride_path(shape, kernel, stride, padding,
                                                              ceil):
    rng = np.random.default_rng(4)
    layer = AvgPool2D(kernel, stride, padding, ceil)
    for dtype in (np.float32, np.float64):
        _check_avgpool(rng.standard_normal(shape).astype(dtype), layer)
    x = rng.standard_normal(shape).astype(np.float32)
    x.reshape(-1)[:3] = np.nan
    _check_avgpool(x, layer)


@pytest.mark.parametrize("shape, kernel, stride, padding, ceil",
                         [((2, 2, 9, 9), 3, 2, 0, True), ((1, 2, 8, 7), 2, 2, 0, False),
                          ((2, 1, 7, 8), 3, 2, 1, True), ((1, 2, 6, 7), (3, 2), (1, 2), (1, 0), False)])
def test_pool_layers_on_the_new_kernels_match_finite_differences(shape, kernel, stride, padding,
                                                                 ceil):
    rng = np.random.default_rng(5)
    size = int(np.prod(shape))
    # values at least 0.01 apart: no max flips under a finite-difference step
    x = ((rng.permutation(size) * 0.01 + 0.005) * rng.choice([-1, 1], size)).reshape(shape)
    for layer in (MaxPool2D(kernel, stride, padding, ceil), AvgPool2D(kernel, stride, padding, ceil)):
        layer.cast(np.float64)
        check_layer_gradients(layer, x, rng)
        assert getattr(layer, "_offsets", True) is not None      # the offsets path ran


def test_the_per_window_fallback_takes_big_windows_and_other_dtypes():
    """The dispatch rule of ``MaxPool2D.forward``: windows of more than MAX_WINDOW taps
    and dtypes other than float32/float64 take the per-window kernels (int32 flat
    argmax), the same values and routes as the twin."""
    from minidnn.layers.pooling import maxpool_backward_numpy, maxpool_forward_numpy
    rng = np.random.default_rng(6)
    cases = [(np.round(rng.standard_normal((2, 3, 20, 18)), 1).astype(np.float32), 16, 2),
             (rng.integers(-5, 5, (2, 3, 8, 9)), 2, 2), (rng.integers(-5, 5, (2, 2, 9, 9)), 3, 2)]
    for x, k, stride in cases:
        layer = MaxPool2D(k, stride)
        out = layer.forward(x)
        assert layer._offsets is None and layer._argmax.dtype == np.int32
        # (the twin pads with -inf: integers go through float64, exactly)
        twin_out, twin_argmax = maxpool_forward_numpy(x.astype(np.float64),
                                                      layer._geometry(x.shape))
        assert out.dtype == x.dtype
        np.testing.assert_array_equal(out, twin_out)
        np.testing.assert_array_equal(layer.flat_argmax(), twin_argmax)
        grad = rng.standard_normal(out.shape)
        np.testing.assert_allclose(layer.backward(grad),
                                   maxpool_backward_numpy(grad, twin_argmax, x.shape),
                                   rtol=1e-12, atol=1e-12)


def _avgpool_row_by_row_order(x, geometry):
    """The 3×3/2 separable average (no padding) in the row-by-row passes' order, in
    NumPy: (x0 + x1) + x2 along a row, a clipped last window (0 + x0) + x1, then down
    the rows (r0 + r1) + r2, or r0 + r1 for a window of two rows; / the divisor."""
    kh, kw, sh, sw, ph, pw, OH, OW = geometry
    H, W = x.shape[2:]
    zero = x.dtype.type(0)
    rs = np.empty(x.shape[:3] + (OW,), x.dtype)
    for b in range(OW):
        if 2 * b + 2 < W:
            rs[..., b] = (x[..., 2 * b] + x[..., 2 * b + 1]) + x[..., 2 * b + 2]
        else:
            rs[..., b] = (zero + x[..., 2 * b]) + x[..., 2 * b + 1]
    total = np.empty(x.shape[:2] + (OH, OW), x.dtype)
    for a in range(OH):
        total[:, :, a] = rs[:, :, 2 * a] + rs[:, :, 2 * a + 1]
        if 2 * a + 2 < H:
            total[:, :, a] = total[:, :, a] + rs[:, :, 2 * a + 2]
    return total / kp.avg_divisors(x.shape, geometry, x.dtype)


@pytest.mark.parametrize("shape, ceil", [((2, 3, 32, 32), True), ((2, 3, 16, 16), True),
                                         ((2, 3, 8, 8), True), ((2, 2, 9, 8), True),
                                         ((2, 2, 9, 8), False), ((2, 2, 10, 12), False),
                                         ((1, 2, 3, 4), True)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_avgpool_3x3_stride2_flat_passes_keep_the_row_by_row_sums_bit_for_bit(shape, ceil,
                                                                              dtype):
    """The flat 3×3/2 passes (sitting 24) add in the order of the row-by-row passes they
    replaced: the same bits, signed zeros included (a ReLU's -0.0 and +0.0)."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal(shape).astype(dtype)
    x[x < -0.5] = -0.0
    x[(x > 0) & (x < 0.3)] = 0.0
    x.reshape(-1)[:4] = -0.0                          # a window of -0.0 only
    x[:, 0, -2:, :] = -0.0                            # the bottom edge's two-row windows
    layer = AvgPool2D(3, 2, 0, ceil)
    geometry = layer._geometry(x.shape)
    out = layer.forward(x)
    twin = _avgpool_row_by_row_order(x, geometry)
    np.testing.assert_array_equal(out.view(np.uint8), twin.view(np.uint8))


@pytest.mark.parametrize("shape, ceil", [((2, 3, 32, 32), True), ((2, 2, 9, 8), True),
                                         ((2, 2, 10, 12), False)])
def test_maxpool_3x3_stride2_flat_passes_on_infinities_and_signed_zeros(shape, ceil):
    """-inf (the value the flat passes put beyond the edges), whole windows of it, and
    -0.0 tied with 0.0 (the first in row-major order wins): the twin's values and offsets."""
    rng = np.random.default_rng(8)
    x = np.round(rng.standard_normal(shape), 0).astype(np.float32)
    x[x < -1] = -np.inf
    x[:, 0, :3, :] = -np.inf                          # windows of -inf only
    x[:, 0, -2:, :] = -np.inf                         # the bottom edge's two-row windows
    x[x == 0] = -0.0
    x[:, -1, ::3, ::2] = 0.0
    _check_maxpool(x, MaxPool2D(3, 2, 0, ceil), rng)


@pytest.mark.parametrize("shape, ceil", [((2, 3, 32, 32), True), ((2, 3, 16, 16), True),
                                         ((2, 3, 8, 8), True), ((2, 2, 9, 8), True),
                                         ((2, 2, 9, 8), False), ((2, 2, 10, 12), False),
                                         ((1, 2, 3, 4), True), ((1, 2, 4, 4), False)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_avgpool_3x3_stride2_backward_gather_equals_the_scatter_bit_for_bit(shape, ceil, dtype):
    """The gather (sitting 24) adds each window's float64 share in (a, b) order from 0,
    as the per-window scatter it replaced for this geometry: the same bits (signed zeros
    and all), and the NumPy twin's values to rounding."""
    from minidnn.layers.pooling import _avgpool_backward_kernel
    rng = np.random.default_rng(9)
    layer = AvgPool2D(3, 2, 0, ceil)
    x = rng.standard_normal(shape).astype(dtype)
    out = layer.forward(x, training=True)
    grad = rng.standard_normal(out.shape).astype(dtype)
    grad[grad > 1.0] = -0.0
    grad[:, 0] = -0.0                                  # a plane of -0.0 gradients
    dx = layer.backward(grad)
    scatter = np.zeros(shape, dtype)
    # (the compiled scatter: in Numba grad / an int64 size is float64; its Python source
    # run by NumPy would divide in float32)
    _avgpool_backward_kernel(grad, 3, 3, 2, 2, 0, 0, scatter)
    np.testing.assert_array_equal(dx.view(np.uint8), scatter.view(np.uint8))
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dx, kp.avgpool_backward_numpy(grad, layer._geometry(shape),
                                                             shape), **tol)
