"""Sitting 21 (issue #11): the sparse layer step in fewer parallel regions.

``TrainingKernels.FILL_PER_THREAD`` makes each thread fill a whole copy of xᵀ / gradᵀ of
its own inside the product's region (one region a call instead of two), and
``BALANCE_BY_NNZ`` cuts the threads' blocks by stored entries instead of by rows /
columns. Both change only which thread computes what, so these tests hold every output to
the one-block kernels bit for bit (and so to the NumPy/SciPy twins, within the float32
bound the padded kernels are held to), at 1–4 blocks (prange runs blocks in turn when
there are fewer threads), for every way an operand is filled, through the kernels, the
TrainingKernels object, the layer and the fused SparseDense → Sigmoid pair."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minidnn as md
from minidnn.kernels import csr, csr_fused
from minidnn.losses import SoftmaxCrossEntropy
from tests.test_csr_kernels import (_assert_filled, _assert_outputs_equal,
                                    _drawn_step_operands, _fills, _nan_backward_outputs,
                                    _one_block_backward, _padded_operand, _u, padded_problems,
                                    random_csr)

needs_simd = pytest.mark.skipif(not csr.SIMD_AVAILABLE, reason="the padded kernels need AVX2 + FMA")


def _stack(a, blocks, fill):
    """The (blocks, n, ld) stack of zeroed padded copies a private kernel is handed for the
    feature-major operand a (n, k); copy 0 holds a already where nothing is filled."""
    stack = csr.padded_buffer(blocks * a.shape[0], a.shape[1]).reshape(
        blocks, a.shape[0], csr.padded_width(a.shape[1]))
    if fill == csr.FILL_NONE:
        stack[0, :, :a.shape[1]] = a
    return stack


def _assert_stack_filled(stack, a, fill, what):
    # every copy a filling block wrote holds a exactly, pad lanes zero
    for c in range(stack.shape[0] if fill != csr.FILL_NONE else 1):
        _assert_filled(stack[c], a, (what, c))


# -- balanced_cuts ----------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 9), max_size=30), st.integers(1, 6), st.booleans())
def test_balanced_cuts_cover_the_rows_in_order_and_balance_the_entries(lengths, blocks, by_nnz):
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    cuts = csr.balanced_cuts(csr._unsigned(indptr), blocks, by_nnz)
    n, nnz = len(lengths), int(indptr[-1])
    assert cuts.dtype == np.int64 and len(cuts) == blocks + 1
    assert cuts[0] == 0 and cuts[-1] == n and (np.diff(cuts) >= 0).all()
    if not by_nnz or nnz == 0:
        np.testing.assert_array_equal(cuts, np.arange(blocks + 1) * n // blocks)
    else:
        # each block's entries are within one row's length of an equal share
        longest = max(lengths)
        per_block = np.diff(indptr[cuts])
        assert (np.abs(per_block - nnz / blocks) <= longest + 1).all(), (per_block, nnz)


# -- the kernels ------------------------------------------------------------------------

@needs_simd
@settings(max_examples=30, deadline=None)
@given(padded_problems, st.booleans())
def test_private_fill_kernels_equal_the_one_block_kernels_bit_for_bit(p, by_nnz):
    # the one-region forward (rows) and backward (A's columns, with and without dx), serial
    # and parallel builds, 1–4 blocks cut by counts or entries, x / grad filled by
    # transpose, by copy or not at all: the one-block kernels' outputs exactly, and every
    # block's copy of the operand filled
    rng, (indptr, indices, data, _), x_bm, grad_bm, x, grad, bias, structure = \
        _drawn_step_operands(p)
    k, blocks = p["k"], p["blocks"]
    x_pad, g_ref = _padded_operand(x, csr.FILL_NONE), _padded_operand(grad, csr.FILL_NONE)
    y_ref = np.empty((p["n_rows"], k), np.float32)
    csr._KERNELS["matmul_padded"][0](*_u(indptr, indices), data, bias, x_bm, x_pad, y_ref,
                                     csr.FILL_NONE, 1)
    refs = {input_grad: _one_block_backward(structure, data, grad_bm, g_ref, x_pad, k,
                                            p["n_rows"], p["n_cols"], input_grad)
            for input_grad in (True, False)}
    row_cuts = csr.balanced_cuts(indptr, blocks, by_nnz)
    col_cuts = csr.balanced_cuts(structure[0], blocks, by_nnz)
    for (fill, x_src), (_, g_src) in zip(_fills(x_bm, x), _fills(grad_bm, grad)):
        for build in csr._KERNELS["matmul_padded_private"]:
            pads = _stack(x, blocks, fill)
            y = np.full((p["n_rows"], k), np.nan, np.float32)
            build(*_u(indptr, indices), data, bias, x_src, pads, y, fill, row_cuts, blocks)
            np.testing.assert_array_equal(y, y_ref)
            _assert_stack_filled(pads, x, fill, "x")
        for build in csr._KERNELS["backward_padded_private"]:
            for input_grad, ref in refs.items():
                g_pads = _stack(grad, blocks, fill)
                got = _nan_backward_outputs(len(indices), p["n_rows"], p["n_cols"], k,
                                            input_grad)
                build(*structure, data, g_src, g_pads, x_pad, k, np.float32(0), *got, fill,
                      col_cuts, blocks)
                _assert_outputs_equal(got, ref, (fill, input_grad))
                _assert_stack_filled(g_pads, grad, fill, ("grad", input_grad))


@needs_simd
@settings(max_examples=20, deadline=None)
@given(padded_problems)
def test_private_fill_kernels_equal_the_twins_within_float32_rounding(p):
    # against the SciPy/NumPy twins directly (the bound the padded kernels are held to)
    rng, (indptr, indices, data, dense), x_bm, grad_bm, x, grad, bias, structure = \
        _drawn_step_operands(p)
    k, blocks = p["k"], p["blocks"]
    y = np.empty((p["n_rows"], k), np.float32)
    csr._KERNELS["matmul_padded_private"][1](
        *_u(indptr, indices), data, bias, x_bm, _stack(x, blocks, csr.FILL_TRANSPOSE), y,
        csr.FILL_TRANSPOSE, csr.balanced_cuts(indptr, blocks, True), blocks)
    a = np.abs(dense).astype(np.float64)
    bound = 1e-5 * (a @ np.abs(x) + np.abs(bias)[:, None]) + 1e-6
    want = csr.csr_matmul_numpy(indptr, indices, data, x, bias)
    assert (np.abs(y - want) <= bound).all()
    x_pad = _padded_operand(x, csr.FILL_NONE)
    got = _nan_backward_outputs(len(indices), p["n_rows"], p["n_cols"], k)
    csr._KERNELS["backward_padded_private"][1](
        *structure, data, grad_bm, _stack(grad, blocks, csr.FILL_TRANSPOSE), x_pad, k,
        np.float32(0), *got, csr.FILL_TRANSPOSE, csr.balanced_cuts(structure[0], blocks, True),
        blocks)
    want_gd, want_gb, want_dx = csr.csr_backward_numpy(indptr, indices, data, grad, x)
    rows = np.repeat(np.arange(p["n_rows"]), np.diff(indptr))
    bound_gd = 1e-5 * np.einsum("ij,ij->i", np.abs(grad[rows]), np.abs(x[indices])) + 1e-6
    assert (np.abs(got[0] - want_gd) <= bound_gd).all()
    np.testing.assert_allclose(got[1], want_gb, rtol=1e-5, atol=1e-5)
    bound_dx = 1e-5 * (a.T @ np.abs(grad)) + 1e-6
    assert (np.abs(got[2] - want_dx) <= bound_dx).all()


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


def _switches(monkeypatch, private, by_nnz, forward=True, aligned=False):
    monkeypatch.setattr(csr.TrainingKernels, "FILL_PER_THREAD", private)
    monkeypatch.setattr(csr.TrainingKernels, "BALANCE_BY_NNZ", by_nnz)
    monkeypatch.setattr(csr.TrainingKernels, "FILL_PER_THREAD_FORWARD", forward)
    monkeypatch.setattr(csr.TrainingKernels, "LINE_ALIGNED_ROWS", aligned)


#: (FILL_PER_THREAD, BALANCE_BY_NNZ, FILL_PER_THREAD_FORWARD, LINE_ALIGNED_ROWS): the
#: default first
VARIANTS = ((False, False, True, False), (True, False, True, False), (True, True, True, False),
            (True, False, False, False), (True, True, False, False), (False, False, True, True),
            (True, True, True, True))


def _layer_step(layer, x, g):
    y = np.array(layer.forward(x, training=True))
    dx = np.array(layer.backward(g))
    grads = {k: v.copy() for k, v in layer.grads.items()}
    layer.forward(x, training=True)
    layer.backward_params(g)
    first = {k: v.copy() for k, v in layer.grads.items()}
    return y, dx, grads, first


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("threads", [2, 3])
def test_layer_step_with_private_fills_is_bit_for_bit_the_default(monkeypatch, two_threads,
                                                                  dtype, threads):
    # SparseDense forward + backward (and backward_params) from C- and Fortran-ordered x
    # and g, through a batch-size change: the same numbers with the switches on as off
    # (float64 runs the portable kernels, which the switches leave alone)
    two_threads(threads)
    rng = np.random.default_rng(5)
    results = {}
    for variant in VARIANTS:
        _switches(monkeypatch, *variant)
        layer = md.SparseDense(70, 45, density=0.15, rng=0).cast(np.dtype(dtype))
        out = []
        for k, order in ((100, "C"), (13, "F"), (100, "F"), (40, "C")):
            x = rng.random((k, 70)).astype(dtype)
            g = rng.standard_normal((k, 45)).astype(dtype)
            if order == "F":
                x, g = np.asfortranarray(x), np.asfortranarray(g)
            out.append(_layer_step(layer, x, g))
        rng = np.random.default_rng(5)
        results[variant] = out
    for key, out in results.items():
        for got, want in zip(out, results[VARIANTS[0]]):
            np.testing.assert_array_equal(got[0], want[0], err_msg=str(key))
            np.testing.assert_array_equal(got[1], want[1], err_msg=str(key))
            for name in want[2]:
                np.testing.assert_array_equal(got[2][name], want[2][name], err_msg=str(key))
                np.testing.assert_array_equal(got[3][name], want[3][name], err_msg=str(key))


@needs_simd
def test_private_fills_keep_one_stack_and_hand_its_first_copy_to_the_backward(monkeypatch,
                                                                              two_threads):
    _switches(monkeypatch, True, False)
    rng = np.random.default_rng(6)
    layer = md.SparseDense(30, 20, density=0.3, rng=0)
    kern = layer._kernels
    x = rng.random((24, 30), dtype=np.float32)
    g = rng.standard_normal((24, 20)).astype(np.float32)
    layer.forward(x, training=True)
    layer.backward(g)
    stack, g_stack, view = kern._x_pads, kern._grad_pads, kern._x_view
    assert stack.shape == (2, 30, 24) and g_stack.shape == (2, 20, 24)
    assert kern._x_pad.base is stack.base or np.shares_memory(kern._x_pad, stack[0])
    assert view.base is not None and np.shares_memory(view, stack[0])
    for c in range(2):
        np.testing.assert_array_equal(stack[c, :, :24], x.T)
        np.testing.assert_array_equal(g_stack[c, :, :24], g.T)
    layer.forward(2 * x, training=True)             # the same buffers, refilled
    assert kern._x_pads is stack and kern._x_view is view
    np.testing.assert_array_equal(view, 2 * x.T)
    # the batch written into the layer's input buffer (what fit does) is read in place
    buf = layer.input_buffer(24)
    buf[:] = 3 * x
    y = layer.forward(buf, training=True)
    _switches(monkeypatch, False, False)
    plain = md.SparseDense(30, 20, density=0.3, rng=0)
    np.testing.assert_array_equal(y, plain.forward(3 * x, training=True))


@needs_simd
def test_line_aligned_rows_are_whole_cache_lines(monkeypatch, two_threads):
    _switches(monkeypatch, False, False, aligned=True)
    layer = md.SparseDense(30, 20, density=0.3, rng=0)
    x = np.random.default_rng(11).random((100, 30), dtype=np.float32)
    layer.forward(x, training=True)
    layer.backward(np.ones((100, 20), np.float32))
    for buf in (layer._kernels._x_pad, layer._kernels._grad_pad):
        assert buf.shape[1] == 112 and buf.ctypes.data % 64 == 0 and buf.strides[0] % 64 == 0
    np.testing.assert_array_equal(layer._kernels._x_pad[:, :100], x.T)
    assert not layer._kernels._x_pad[:, 100:].any()
    assert csr.padded_buffer(3, 5, width=16).shape == (3, 16)


@needs_simd
def test_switching_and_batch_changes_never_hand_out_a_stale_buffer(monkeypatch, two_threads):
    # the private path after calls that put another xᵀ buffer in place (the input buffer of
    # another batch size, a call with the switch off): the numbers stay the default's
    rng = np.random.default_rng(10)
    layer = md.SparseDense(30, 20, density=0.3, rng=0)
    plain = md.SparseDense(30, 20, density=0.3, rng=0)
    for private, k, how, aligned in ((True, 24, "C", False), (False, 13, "buffer", False),
                                     (True, 24, "buffer", False), (True, 24, "C", False),
                                     (False, 24, "C", False), (True, 24, "C", False),
                                     (True, 24, "C", True), (False, 24, "buffer", True),
                                     (True, 24, "C", False)):
        _switches(monkeypatch, private, False, aligned=aligned)
        x = rng.random((k, 30), dtype=np.float32)
        g = rng.standard_normal((k, 20)).astype(np.float32)
        if how == "buffer":
            xin = layer.input_buffer(k)
            xin[:] = x
        else:
            xin = x
        y, dx = np.array(layer.forward(xin, training=True)), np.array(layer.backward(g))
        _switches(monkeypatch, False, False)
        np.testing.assert_array_equal(y, plain.forward(x, training=True), err_msg=str(private))
        np.testing.assert_array_equal(dx, plain.backward(g))
        np.testing.assert_array_equal(layer.grads["data"], plain.grads["data"])


def _sparse_sigmoid_net(seed=0):
    rng = np.random.default_rng(seed)
    return md.Sequential([md.Flatten(), md.SparseDense(60, 40, density=0.1, rng=rng),
                          md.Sigmoid(), md.Dense(40, 5, rng=rng)], seed=None,
                         input_shape=(60,))


@needs_simd
@pytest.mark.parametrize("input_grad", [False, True])
@pytest.mark.parametrize("order", ["C", "F"])
def test_fused_sparse_sigmoid_pair_with_private_fills_gives_the_same_bits(monkeypatch,
                                                                          two_threads,
                                                                          input_grad, order):
    from minidnn.layers import fusion
    monkeypatch.setattr(fusion, "FUSE_DENSE_ACTIVATION", True)
    rng = np.random.default_rng(8)
    x = rng.standard_normal((37, 60)).astype(np.float32)
    x = np.asfortranarray(x) if order == "F" else x
    y = rng.integers(0, 5, 37)
    results = {}
    for variant in VARIANTS:
        _switches(monkeypatch, *variant)
        model = _sparse_sigmoid_net()
        out = model.forward(x, training=True)
        _, grad = SoftmaxCrossEntropy()(out, y)
        dx = model.backward(grad, input_grad=input_grad)
        assert type(model.plan()[1][1]).__name__ == "SparseSigmoid"
        results[variant] = (out, dx, {(l.name, k): np.array(v) for l in model.layers
                                      for k, v in l.grads.items()})
    want = results[VARIANTS[0]]
    for key, got in results.items():
        np.testing.assert_array_equal(got[0], want[0], err_msg=str(key))
        if input_grad:
            np.testing.assert_array_equal(got[1], want[1], err_msg=str(key))
        for name in want[2]:
            np.testing.assert_array_equal(got[2][name], want[2][name], err_msg=str((key, name)))


@needs_simd
def test_fused_private_kernels_equal_their_twins(monkeypatch, two_threads):
    # the fused pair's one-region kernels by hand (through csr_fused's entry points) against
    # forward_sigmoid_numpy / backward_sigmoid_numpy, batch-major x and grad
    _switches(monkeypatch, True, True)
    rng = np.random.default_rng(9)
    indptr, indices, data, dense, _ = random_csr(rng, 40, 60, 0.2, np.float32, True, True)
    kern = csr.TrainingKernels(indptr, indices, csr.csr_transpose_structure(indptr, indices, 60),
                               60)
    bias = rng.standard_normal(40).astype(np.float32)
    x = rng.random((29, 60), dtype=np.float32)
    g = rng.standard_normal((29, 40)).astype(np.float32)
    y, xt = csr_fused.forward_sigmoid(kern, data, bias, x, batch_major=True)
    want_y = csr_fused.forward_sigmoid_numpy(indptr, indices, data, bias, x.T)
    np.testing.assert_allclose(y, want_y, rtol=1e-5, atol=1e-6)
    gd, gb, dx = csr_fused.backward_sigmoid(kern, data, y, g, xt, True, batch_major=True)
    want = csr_fused.backward_sigmoid_numpy(indptr, indices, data, y, g.T, x.T)
    for got, ref in zip((gd, gb, dx), want):
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def test_step_regions_counts_the_parallel_regions_of_a_layer_step(monkeypatch, two_threads):
    layer = md.SparseDense(30, 20, density=0.3, rng=0)
    kern = layer._kernels
    _switches(monkeypatch, False, False)
    if csr.SIMD_AVAILABLE:
        assert kern.step_regions(100) == 4                 # C-ordered x and grad
        assert kern.step_regions(100, fill_x=False) == 3   # x already in the input buffer
        _switches(monkeypatch, True, False)
        assert kern.step_regions(100) == 2
        assert kern.step_regions(100, fill_x=False) == 2
        _switches(monkeypatch, True, False, forward=False)
        assert kern.step_regions(100) == 3
    monkeypatch.setattr(csr.TrainingKernels, "THREADS", 1)
    assert kern.step_regions(100) == 0
