"""Sitting 21 (issue #11): the sparse layer's padded buffers across batch changes, and the
parallel regions of a layer step.

Sitting 21's one-region switches (``FILL_PER_THREAD``, ``FILL_PER_THREAD_FORWARD``,
``BALANCE_BY_NNZ``, ``LINE_ALIGNED_ROWS``) tied or lost on the quiet machine and were
deleted in sitting 22 with their kernels; what is left here tests live code: a layer never
hands out a stale xᵀ buffer when the batch size or the way x arrives changes, and
``step_regions`` counts the default splits' regions."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minidnn as md
from minidnn.kernels import csr

needs_simd = pytest.mark.skipif(not csr.SIMD_AVAILABLE, reason="the padded kernels need AVX2 + FMA")


# -- TrainingKernels, the layer and the fused pair ---------------------------------------

@pytest.fixture
def two_threads(monkeypatch):
    """Every call takes the parallel path: 2 (or ``set(n)``) blocks from the first
    multiply-add, whatever the machine's thread count."""
    monkeypatch.setattr(csr, "PARALLEL_MIN_WORK", 0)
    monkeypatch.setattr(csr, "_layer_factor", 1)
    count = {"n": 2}
    monkeypatch.setattr(csr, "numba_thread_count", lambda: count["n"])

    def set_(n):
        count["n"] = n
    return set_


@needs_simd
def test_batch_changes_and_input_buffers_never_hand_out_a_stale_buffer(two_threads):
    # calls that put another xᵀ buffer in place (the input buffer of another batch size,
    # C-ordered x after the input buffer and back): the numbers stay a fresh layer's
    rng = np.random.default_rng(10)
    layer = md.SparseDense(30, 20, density=0.3, rng=0)
    plain = md.SparseDense(30, 20, density=0.3, rng=0)
    for k, how in ((24, "C"), (13, "buffer"), (24, "buffer"), (24, "C"), (24, "C"),
                   (13, "C"), (24, "buffer"), (24, "C")):
        x = rng.random((k, 30), dtype=np.float32)
        g = rng.standard_normal((k, 20)).astype(np.float32)
        if how == "buffer":
            xin = layer.input_buffer(k)
            xin[:] = x
        else:
            xin = x
        y, dx = np.array(layer.forward(xin, training=True)), np.array(layer.backward(g))
        np.testing.assert_array_equal(y, plain.forward(x, training=True), err_msg=how)
        np.testing.assert_array_equal(dx, plain.backward(g))
        np.testing.assert_array_equal(layer.grads["data"], plain.grads["data"])
        assert not layer._kernels._x_pad[:, k:].any()       # the pad lanes stay zero


def test_step_regions_counts_the_parallel_regions_of_a_layer_step(monkeypatch, two_threads):
    layer = md.SparseDense(30, 20, density=0.3, rng=0)
    kern = layer._kernels
    if csr.SIMD_AVAILABLE:
        assert kern.step_regions(100) == 4                 # C-ordered x and grad
        assert kern.step_regions(100, fill_x=False) == 3   # x already in the input buffer
    monkeypatch.setattr(csr.TrainingKernels, "THREADS", 1)
    assert kern.step_regions(100) == 0


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("sizes", [(13, 9, 13), (100, 97, 100, 1), (32, 17)])
def test_a_smaller_batch_of_the_same_row_length_reads_no_stale_lanes(monkeypatch, two_threads,
                                                                    threads, sizes):
    # sizes that share a padded row length (13 and 9: 16 lanes for 8- and 16-lane vectors)
    # reuse the buffers; the lanes the larger batch wrote must read as zeros, or the
    # weight gradient's dot products pick them up (the bug until sitting 22). Against the
    # SciPy/NumPy twins, through the plain layer and the fused SparseDense → Sigmoid kernels
    from minidnn.kernels import csr_fused
    two_threads(threads)
    rng = np.random.default_rng(12)
    layer = md.SparseDense(30, 20, density=0.3, rng=0)
    kern = layer._kernels
    ip, ix = kern.indptr.view(np.int32), kern.indices.view(np.int32)
    for k in sizes:
        x = rng.random((k, 30), dtype=np.float32)
        g = rng.standard_normal((k, 20)).astype(np.float32)
        y = np.array(layer.forward(x, training=True))
        dx = np.array(layer.backward(g))
        data, bias = layer.params["data"], layer.params["b"]
        np.testing.assert_allclose(y, csr.csr_matmul_numpy(ip, ix, data, x.T, bias).T,
                                   rtol=1e-5, atol=1e-5)
        want = csr.csr_backward_numpy(ip, ix, data, g.T.copy(), x.T.copy())
        np.testing.assert_allclose(layer.grads["data"], want[0], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(layer.grads["b"], want[1], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(dx, want[2].T, rtol=1e-4, atol=1e-5)
        if csr.SIMD_AVAILABLE:
            ys, xt = csr_fused.forward_sigmoid(kern, data, bias, x, batch_major=True)
            gd, gb, _ = csr_fused.backward_sigmoid(kern, data, ys, g, xt, True,
                                                   batch_major=True)
            ref = csr_fused.backward_sigmoid_numpy(ip, ix, data, ys, g.T, x.T)
            np.testing.assert_allclose(gd, ref[0], rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(gb, ref[1], rtol=1e-4, atol=1e-5)


@needs_simd
@settings(max_examples=60, deadline=None)
@given(st.integers(0, 50), st.integers(0, 70), st.data())
def test_padded_transpose_of_any_sample_range_equals_numpy(k, m, data):
    # _transpose_samples_padded (the fills of xᵀ and gradᵀ): 16 × 16 tiles with 16-lane
    # vectors (sitting 22), 8 × 8 tiles, scalar edges; any s0 ≤ s1 (the sample shares
    # start on a vector, but the kernel takes any range); lanes outside s0..s1 untouched
    s0 = data.draw(st.integers(0, k), label="s0")
    s1 = data.draw(st.integers(s0, k), label="s1")
    a = np.random.default_rng(k * 100 + m).random((k, m), dtype=np.float32)
    out = csr.padded_buffer(m, k)
    out[:] = np.nan
    csr._transpose_samples_padded(a, out, s0, s1)
    np.testing.assert_array_equal(out[:, s0:s1], a[s0:s1].T)
    assert np.isnan(out[:, :s0]).all() and np.isnan(out[:, s1:]).all()
