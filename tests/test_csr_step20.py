"""Sitting 20 (issue #11): the sparse layer's per-step Python was cut (TrainingKernels'
kernel choice, reused padded views, SparseDense's operand checks). These tests hold the
shortened path to what it replaced: the same kernels on the same arguments, so the same
numbers bit for bit, the same buffers, and the same errors at the public boundary."""
from __future__ import annotations

import numpy as np
import pytest

from minidnn.kernels import csr
from minidnn.sparse import SparseDense

needs_simd = pytest.mark.skipif(not csr.SIMD_AVAILABLE, reason="the padded kernels need AVX2 + FMA")


def _layer(n_in=37, n_out=23, density=0.2, bias=True, seed=0):
    return SparseDense(n_in, n_out, density=density, bias=bias, rng=seed)


def _direct(layer, x_bm, g_bm, input_grad=True):
    """The step's two padded kernels called by hand (serial builds, fresh buffers): what
    TrainingKernels must compute, bit for bit, from batch-major x and g."""
    kern = layer._kernels
    k = x_bm.shape[0]
    data = layer.params["data"]
    bias = layer.params["b"] if layer.bias else np.zeros(0, np.float32)
    x_pad, g_pad = csr.padded_buffer(kern.n_cols, k), csr.padded_buffer(kern.n_rows, k)
    out = np.empty((kern.n_rows, k), np.float32)
    csr._KERNELS["matmul_padded"][0](kern.indptr, kern.indices, data, bias, x_bm, x_pad, out,
                                     csr.FILL_TRANSPOSE, 1)
    gd = np.empty(kern.nnz, np.float32)
    gb = np.empty(kern.n_rows if layer.bias else 0, np.float32)
    dx = np.empty((kern.n_cols if input_grad else 0, k), np.float32)
    none = np.empty((0, kern.nnz), np.float32), np.empty((0, kern.n_rows), np.float32)
    csr._KERNELS["backward_padded"][0](kern.t_indptr, kern.t_indices, kern.perm, data, g_bm,
                                       g_pad, x_pad, k, np.float32(0), gd, gb, dx, *none,
                                       csr.FILL_TRANSPOSE, 1)
    return out.T, gd, gb, dx.T, x_pad


@needs_simd
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("order", ["C", "F"])
def test_layer_step_is_bit_for_bit_the_kernels_called_by_hand(monkeypatch, bias, order):
    # one thread (the serial builds); C-ordered x and g (a data batch) and Fortran-ordered
    # ones (another sparse layer's output) take different branches to the same numbers
    monkeypatch.setattr(csr.TrainingKernels, "THREADS", 1)
    rng = np.random.default_rng(3)
    layer = _layer(bias=bias)
    for k in (13, 8, 13):                       # a batch-size change and back
        x = rng.random((k, 37), dtype=np.float32)
        g = rng.standard_normal((k, 23)).astype(np.float32)
        want_y, want_gd, want_gb, want_dx, _ = _direct(layer, x, g)
        xi, gi = (x, g) if order == "C" else (np.asfortranarray(x), np.asfortranarray(g))
        y = layer.forward(xi, training=True)
        dx = layer.backward(gi)
        np.testing.assert_array_equal(y, want_y)
        np.testing.assert_array_equal(dx, want_dx)
        np.testing.assert_array_equal(layer.grads["data"], want_gd)
        if bias:
            np.testing.assert_array_equal(layer.grads["b"], want_gb)
        else:
            assert "b" not in layer.grads
        # and the first-layer step (no dx) gives the same parameter gradients
        layer.forward(xi, training=True)
        assert layer.backward_params(gi) is None
        np.testing.assert_array_equal(layer.grads["data"], want_gd)


@needs_simd
def test_forward_reuses_its_view_of_the_padded_buffer_until_the_batch_changes():
    rng = np.random.default_rng(4)
    layer = _layer()
    kern = layer._kernels
    x = rng.random((13, 37), dtype=np.float32)
    data, bias = layer.params["data"], layer.params["b"]
    _, xt1 = kern.forward(data, bias, x)
    _, xt2 = kern.forward(data, bias, 2 * x)
    assert xt2 is xt1 and kern._owns_x(xt2)        # one view object, refilled in place
    np.testing.assert_array_equal(xt2, 2 * x.T)
    _, xt3 = kern.forward(data, bias, x[:5])       # another batch: another buffer and view
    assert xt3 is not xt1 and xt3.shape == (37, 5)
    np.testing.assert_array_equal(xt3, x[:5].T)
    assert not kern._x_pad[:, 5:].any()            # the pad lanes stay zero
    # a buffer swapped in from outside (as kernels.csr_fused does through ``_padded``)
    # gets a view of its own on the next fill
    old = kern._x_pad
    kern._x_pad = csr.padded_buffer(37, 5)
    _, xt4 = kern.forward(data, bias, x[:5])
    assert xt4 is not xt3 and np.shares_memory(xt4, kern._x_pad)
    assert not np.shares_memory(xt4, old)
    # the feature-major view handed back to forward is used where it lies (no fill)
    xt4[:] = 0.5
    y, xt5 = kern.forward(data, bias, xt4, batch_major=False)
    assert xt5 is xt4
    np.testing.assert_allclose(y, csr.csr_matmul_numpy(kern.indptr.view(np.int32),
                                                       kern.indices.view(np.int32), data,
                                                       np.full((37, 5), 0.5, np.float32), bias),
                               rtol=1e-5, atol=1e-5)


def test_thread_blocks_follow_the_cap_the_work_threshold_and_the_thread_count(monkeypatch):
    layer = _layer()
    kern = layer._kernels
    monkeypatch.setattr(csr, "numba_thread_count", lambda: 4)
    monkeypatch.setattr(csr, "PARALLEL_MIN_WORK", 1000)
    big, small = 10 * csr.min_parallel_work(), csr.min_parallel_work() - 1
    assert kern._blocks(big) == 4 and kern._blocks(small) == 1
    monkeypatch.setattr(csr.TrainingKernels, "THREADS", 2)
    assert kern._blocks(big) == 2
    monkeypatch.setattr(csr.TrainingKernels, "THREADS", 1)
    assert kern._blocks(big) == 1
    kernel, blocks = kern._pick("backward_padded", big)       # the old name, kept
    assert blocks == 1 and kernel is csr._KERNELS["backward_padded"][0]
    monkeypatch.setattr(csr.TrainingKernels, "THREADS", None)
    kernel, blocks = kern._pick("backward_padded", big)
    assert blocks == 4 and kernel is csr._KERNELS["backward_padded"][1]
    # the threshold follows PARALLEL_MIN_WORK even once the threading layer is cached
    monkeypatch.setattr(csr, "PARALLEL_MIN_WORK", 7)
    assert csr.min_parallel_work() in (7, 70)


def test_padded_path_reads_the_simd_switch_at_call_time(monkeypatch):
    monkeypatch.setattr(csr, "SIMD_AVAILABLE", True)
    assert csr.padded_path(np.float32) and csr.padded_path(np.dtype("float32"))
    assert not csr.padded_path(np.float64)
    monkeypatch.setattr(csr, "SIMD_AVAILABLE", False)
    assert not csr.padded_path(np.float32)


@needs_simd
def test_backward_converts_other_grads_to_the_same_numbers_and_refuses_bad_shapes():
    rng = np.random.default_rng(5)
    layer = _layer()
    x = rng.random((9, 37), dtype=np.float32)
    g = rng.standard_normal((9, 23)).astype(np.float32)
    layer.forward(x, training=True)
    dx = layer.backward(g)
    want = (dx.copy(), layer.grads["data"].copy(), layer.grads["b"].copy())
    for other in (g.astype(np.float64), np.repeat(g, 2, axis=1)[:, ::2]):   # dtype, strides
        layer.forward(x, training=True)
        got = layer.backward(other)
        for a, b in zip((got, layer.grads["data"], layer.grads["b"]), want):
            np.testing.assert_array_equal(a, b)
    layer.forward(x, training=True)
    with pytest.raises(ValueError, match=r"expects a gradient of shape \(9, 23\)"):
        layer.backward(g[:, :22])
    with pytest.raises(ValueError, match=r"expects input of shape \(batch, 37\)"):
        layer.forward(x[:, :36], training=True)
