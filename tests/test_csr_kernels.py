"""The CSR kernels equal their SciPy/NumPy twins, and the twins equal dense products.

Shapes, densities (0 and 1 included), empty rows and columns, float32 and
float64 are drawn by hypothesis; both Numba builds (serial and parallel) are
checked, whatever the thread count."""
import numba
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from minidnn.kernels import csr


def random_csr(rng, n_rows, n_cols, density, dtype, empty_row=False, empty_col=False):
    mask = rng.random((n_rows, n_cols)) < density
    if empty_row and n_rows:
        mask[rng.integers(n_rows)] = False
    if empty_col and n_cols:
        mask[:, rng.integers(n_cols)] = False
    dense = np.where(mask, rng.standard_normal((n_rows, n_cols)), 0).astype(dtype)
    a = sp.csr_matrix(dense)
    a.sort_indices()
    return (a.indptr.astype(np.int32), a.indices.astype(np.int32), a.data.astype(dtype),
            dense, mask)


problems = st.fixed_dictionaries({
    "n_rows": st.integers(0, 13), "n_cols": st.integers(1, 13), "k": st.integers(0, 11),
    "density": st.sampled_from([0.0, 0.05, 0.3, 0.7, 1.0]),
    "dtype": st.sampled_from([np.float32, np.float64]),
    "empty_row": st.booleans(), "empty_col": st.booleans(), "seed": st.integers(0, 2 ** 16)})


def _tolerance(dtype):
    return {"rtol": 1e-5, "atol": 1e-5} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-12}


def _both_builds(name):
    """(label, kernel, n_blocks): the serial build, and the parallel one with one and
    with three row blocks (the block split is exercised whatever the thread count)."""
    serial, parallel = csr._KERNELS[name]
    return [("serial", serial, 1), ("parallel", parallel, 1), ("parallel, 3 blocks", parallel, 3)]


def _u(*arrays):
    return [csr._unsigned(a) for a in arrays]


def _drawn_matrix(p, dtype=None):
    """(rng, random_csr(...)) of a drawn problem: its seed, shape, density and empty
    row/column, in the problem's dtype unless ``dtype`` is given."""
    rng = np.random.default_rng(p["seed"])
    return rng, random_csr(rng, p["n_rows"], p["n_cols"], p["density"],
                           p["dtype"] if dtype is None else dtype, p["empty_row"], p["empty_col"])


def _drawn_backward_operands(rng, p):
    """(grad batch-major (k, n_rows), the same feature-major, x (n_cols, k)), float32."""
    grad_bm = rng.standard_normal((p["k"], p["n_rows"])).astype(np.float32)
    return (grad_bm, np.ascontiguousarray(grad_bm.T),
            rng.standard_normal((p["n_cols"], p["k"])).astype(np.float32))


def _nan_backward_outputs(n_data, n_rows, n_cols, k, input_grad=True, dtype=np.float32):
    """grad_data, grad_bias and dx buffers for a backward kernel, NaN so that an entry
    the kernel leaves unwritten fails the comparison; dx has no rows without the
    input gradient (a first layer)."""
    return (np.full(n_data, np.nan, dtype), np.full(n_rows, np.nan, dtype),
            np.full((n_cols if input_grad else 0, k), np.nan, dtype))


def _fills(batch_major, feature_major):
    """(fill, source) for each way a padded kernel gets an operand: already in the
    padded buffer (FILL_NONE; the source is then not read), transposed from the
    batch-major array, or copied from the feature-major one."""
    return ((csr.FILL_NONE, batch_major), (csr.FILL_TRANSPOSE, batch_major),
            (csr.FILL_COPY, feature_major))


def _padded_operand(a, fill):
    """The zeroed padded buffer a kernel is handed for the feature-major operand ``a``
    (n, k), holding ``a`` already when the kernel does not fill it (FILL_NONE)."""
    buf = csr.padded_buffer(a.shape[0], a.shape[1])
    if fill == csr.FILL_NONE:
        buf[:, :a.shape[1]] = a
    return buf


def _assert_filled(buf, a, what=None):
    """The padded buffer holds ``a`` exactly and its pad lanes are still zero."""
    np.testing.assert_array_equal(buf[:, :a.shape[1]], a, err_msg=str(what or ""))
    assert not buf[:, a.shape[1]:].any(), what


def _assert_outputs_equal(got, want, what=None):
    """Each output equals its reference bit for bit."""
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b, err_msg=str(what or ""))


def _one_block_backward(structure, data, grad_bm, g_pad, x_pad, k, n_rows, n_cols,
                        input_grad=True):
    """The serial one-block padded backward's (grad_data, grad_bias, dx): the reference
    of the split kernels (``g_pad`` already holds the gradient)."""
    ref = _nan_backward_outputs(len(data), n_rows, n_cols, k, input_grad)
    empty = np.empty((0, len(data)), np.float32), np.empty((0, n_rows), np.float32)
    csr._KERNELS["backward_padded"][0](*structure, data, grad_bm, g_pad, x_pad, k,
                                       np.float32(0), *ref, *empty, csr.FILL_NONE, 1)
    return ref


def _drawn_step_operands(p):
    """A padded problem's CSR matrix (float32) and the step's operands, drawn in one fixed
    order: (rng, (indptr, indices, data, dense), x_bm, grad_bm, x, grad, bias, structure),
    x / grad feature-major copies of the batch-major x_bm / grad_bm."""
    rng, (indptr, indices, data, dense, _) = _drawn_matrix(p, np.float32)
    k = p["k"]
    x_bm = rng.standard_normal((k, p["n_cols"])).astype(np.float32)
    grad_bm = rng.standard_normal((k, p["n_rows"])).astype(np.float32)
    x, grad = np.ascontiguousarray(x_bm.T), np.ascontiguousarray(grad_bm.T)
    bias = rng.standard_normal(p["n_rows"]).astype(np.float32)
    structure = _u(*csr.csr_transpose_structure(indptr, indices, p["n_cols"]))
    return rng, (indptr, indices, data, dense), x_bm, grad_bm, x, grad, bias, structure


@settings(max_examples=60, deadline=None)
@given(problems)
def test_csr_matmul_kernels_equal_the_twin(p):
    rng, (indptr, indices, data, dense, _) = _drawn_matrix(p)
    x = rng.standard_normal((p["n_cols"], p["k"])).astype(p["dtype"])
    twin = csr.csr_matmul_numpy(indptr, indices, data, x)
    np.testing.assert_allclose(twin, dense @ x, **_tolerance(p["dtype"]))
    bias = rng.standard_normal(p["n_rows"]).astype(p["dtype"])
    twin_bias = csr.csr_matmul_numpy(indptr, indices, data, x, bias)
    np.testing.assert_allclose(twin_bias, dense @ x + bias[:, None], **_tolerance(p["dtype"]))
    for label, kernel, blocks in _both_builds("matmul"):
        for b, want in ((bias[:0], twin), (bias, twin_bias)):
            out = np.full((p["n_rows"], p["k"]), np.nan, dtype=p["dtype"])
            kernel(*_u(indptr, indices), data, b, p["dtype"](0), x, out, blocks)
            np.testing.assert_allclose(out, want, **_tolerance(p["dtype"]), err_msg=label)
    public = csr.csr_matmul(indptr, indices, data, x, p["n_cols"])
    assert public.dtype == p["dtype"]
    np.testing.assert_allclose(public, twin, **_tolerance(p["dtype"]))
    # the bias is added after the product: bit for bit the product, then += bias
    np.testing.assert_array_equal(csr.csr_matmul(indptr, indices, data, x, p["n_cols"], bias=bias),
                                  public + bias[:, None])


@settings(max_examples=60, deadline=None)
@given(problems)
def test_transposed_product_kernels_equal_the_twin(p):
    rng, (indptr, indices, data, dense, _) = _drawn_matrix(p)
    g = rng.standard_normal((p["n_rows"], p["k"])).astype(p["dtype"])
    twin = csr.csr_matmul_transposed_numpy(indptr, indices, data, g, p["n_cols"])
    np.testing.assert_allclose(twin, dense.T @ g, **_tolerance(p["dtype"]))
    transposed = csr.csr_transpose_structure(indptr, indices, p["n_cols"])
    for label, kernel, blocks in _both_builds("matmul_permuted"):
        out = np.full((p["n_cols"], p["k"]), np.nan, dtype=p["dtype"])
        kernel(*_u(*transposed), data, g, out, blocks)
        np.testing.assert_allclose(out, twin, **_tolerance(p["dtype"]), err_msg=label)
    public = csr.csr_matmul_transposed(transposed, data, g, p["n_rows"])
    np.testing.assert_allclose(public, twin, **_tolerance(p["dtype"]))


@settings(max_examples=60, deadline=None)
@given(problems)
def test_sampled_product_kernels_equal_the_twin(p):
    rng, (indptr, indices, data, _, mask) = _drawn_matrix(p)
    left = rng.standard_normal((p["n_rows"], p["k"])).astype(p["dtype"])
    right = rng.standard_normal((p["n_cols"], p["k"])).astype(p["dtype"])
    twin = csr.sampled_matmul_numpy(indptr, indices, left, right)
    # CSR order is row-major order of the mask
    np.testing.assert_allclose(twin, (left @ right.T)[mask], **_tolerance(p["dtype"]))
    for label, kernel, blocks in _both_builds("sampled"):
        out = np.full(len(indices), np.nan, dtype=p["dtype"])
        sums = np.full(p["n_rows"], np.nan, dtype=p["dtype"])
        kernel(*_u(indptr, indices), left, right, p["dtype"](0), out, sums, blocks)
        np.testing.assert_allclose(out, twin, **_tolerance(p["dtype"]), err_msg=label)
        np.testing.assert_allclose(sums, left.sum(axis=1), **_tolerance(p["dtype"]), err_msg=label)
    public = csr.sampled_matmul(indptr, indices, left, right, p["n_cols"])
    assert public.dtype == p["dtype"] and public.shape == (len(indices),)
    np.testing.assert_allclose(public, twin, **_tolerance(p["dtype"]))


@settings(max_examples=60, deadline=None)
@given(problems)
def test_fused_backward_kernels_equal_the_twin(p):
    rng, (indptr, indices, data, dense, mask) = _drawn_matrix(p)
    grad = rng.standard_normal((p["n_rows"], p["k"])).astype(p["dtype"])
    x = rng.standard_normal((p["n_cols"], p["k"])).astype(p["dtype"])
    twin = csr.csr_backward_numpy(indptr, indices, data, grad, x)
    tol = _tolerance(p["dtype"])
    np.testing.assert_allclose(twin[0], (grad @ x.T)[mask], **tol)
    np.testing.assert_allclose(twin[1], grad.sum(axis=1), **tol)
    np.testing.assert_allclose(twin[2], dense.T @ grad, **tol)
    transposed = csr.csr_transpose_structure(indptr, indices, p["n_cols"])
    for label, kernel, blocks in _both_builds("backward"):
        for input_grad in (True, False):
            outs = _nan_backward_outputs(len(indices), p["n_rows"], p["n_cols"], p["k"],
                                         input_grad, p["dtype"])
            kernel(*_u(*transposed), data, grad, x, p["dtype"](0), *outs, blocks)
            for got, want in zip(outs[:2 + input_grad], twin):
                np.testing.assert_allclose(got, want, **tol, err_msg=label)
    for input_grad in (True, False):
        public = csr.csr_backward(indptr, indices, transposed, data, grad, x, input_grad)
        assert (public[2] is None) == (not input_grad)
        for got, want in zip(public[:2 + input_grad], twin):
            assert got.dtype == p["dtype"]
            np.testing.assert_allclose(got, want, **tol)


@settings(max_examples=60, deadline=None)
@given(problems)
def test_batch_major_kernels_transpose_inside_and_equal_the_twins(p):
    # the training path's kernels take C-ordered (batch, features) operands and do
    # the transpose in the same call: same results as the feature-major kernels'
    # twins, and the transposed operand they hand back is exactly aᵀ
    rng, (indptr, indices, data, dense, mask) = _drawn_matrix(p)
    x = rng.standard_normal((p["k"], p["n_cols"])).astype(p["dtype"])        # batch-major
    grad = rng.standard_normal((p["k"], p["n_rows"])).astype(p["dtype"])
    bias = rng.standard_normal(p["n_rows"]).astype(p["dtype"])
    tol = _tolerance(p["dtype"])
    want_y = csr.csr_matmul_numpy(indptr, indices, data, x.T, bias)
    want = csr.csr_backward_numpy(indptr, indices, data, grad.T, x.T)
    transposed = csr.csr_transpose_structure(indptr, indices, p["n_cols"])
    for label, kernel, blocks in _both_builds("matmul_batch_major"):
        for b, wy in ((bias[:0], csr.csr_matmul_numpy(indptr, indices, data, x.T)), (bias, want_y)):
            xt = np.full((p["n_cols"], p["k"]), np.nan, p["dtype"])
            out = np.full((p["n_rows"], p["k"]), np.nan, p["dtype"])
            kernel(*_u(indptr, indices), data, b, p["dtype"](0), x, xt, out, blocks)
            np.testing.assert_array_equal(xt, x.T, err_msg=label)
            np.testing.assert_allclose(out, wy, **tol, err_msg=label)
    for label, kernel, blocks in _both_builds("backward_batch_major"):
        for input_grad in (True, False):
            gt = np.full((p["n_rows"], p["k"]), np.nan, p["dtype"])
            outs = _nan_backward_outputs(len(indices), p["n_rows"], p["n_cols"], p["k"],
                                         input_grad, p["dtype"])
            kernel(*_u(*transposed), data, grad, gt, np.ascontiguousarray(x.T), p["dtype"](0),
                   *outs, blocks)
            np.testing.assert_array_equal(gt, grad.T, err_msg=label)
            for got, w in zip(outs[:2 + input_grad], want):
                np.testing.assert_allclose(got, w, **tol, err_msg=label)
    # the public functions and the layer's TrainingKernels: the same, through their checks
    y, xt = csr.csr_matmul_batch_major(indptr, indices, data, x, p["n_cols"], bias=bias)
    np.testing.assert_allclose(y, want_y, **tol)
    np.testing.assert_array_equal(xt, x.T)
    for input_grad in (True, False):
        got = csr.csr_backward(indptr, indices, transposed, data, grad, xt, input_grad,
                               batch_major_grad=True)
        for g_, w in zip(got[:2 + input_grad], want):
            np.testing.assert_allclose(g_, w, **tol)
    step = csr.TrainingKernels(indptr, indices, transposed, p["n_cols"])
    y2, xt2 = step.forward(data, bias, x)
    np.testing.assert_allclose(y2, want_y, **tol)
    y3, _ = step.forward(data, bias, np.ascontiguousarray(x.T), batch_major=False)
    np.testing.assert_allclose(y3, want_y, **tol)
    for batch_major, g_in in ((True, grad), (False, np.ascontiguousarray(grad.T))):
        scratch = np.empty((p["n_rows"], p["k"]), p["dtype"])
        gd, gb, dx = step.backward(data, g_in, xt2, True, True, batch_major=batch_major,
                                   grad_scratch=scratch)
        for g_, w in zip((gd, gb, dx), want):
            np.testing.assert_allclose(g_, w, **tol)
        gd, gb, dx = step.backward(data, g_in, xt2, False, False, batch_major=batch_major,
                                   grad_scratch=scratch)
        assert gb is None and dx is None
        np.testing.assert_allclose(gd, want[0], **tol)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 21), st.integers(0, 21), st.sampled_from([np.float32, np.float64]),
       st.integers(0, 2 ** 16))
def test_tiled_transpose_kernel_equals_numpy(n, m, dtype, seed):
    # 8 × 8 tiles plus ragged edges: every size around the tile width, both builds
    a = np.random.default_rng(seed).standard_normal((n, m)).astype(dtype)
    for label, kernel, blocks in _both_builds("transpose"):
        out = np.full((m, n), np.nan, dtype)
        kernel(a, out, blocks)
        np.testing.assert_array_equal(out, np.ascontiguousarray(a.T), err_msg=label)
    np.testing.assert_array_equal(csr.transpose_into(a), a.T)
    with pytest.raises(ValueError, match="out must be a C-ordered"):
        csr.transpose_into(a, np.empty((m + 1, n), dtype))


def test_transpose_is_c_ordered_and_free_for_fortran_order():
    a = np.random.default_rng(0).standard_normal((7, 5)).astype(np.float32)
    t = csr.transpose(a)
    assert t.flags.c_contiguous and t.dtype == np.float32
    np.testing.assert_array_equal(t, a.T)
    f = np.asfortranarray(a)
    assert np.shares_memory(csr.transpose(f), f)
    assert csr.transpose(a, dtype=np.float64).dtype == np.float64


@settings(max_examples=30, deadline=None)
@given(problems)
def test_transpose_structure_is_scipys_transpose(p):
    rng, (indptr, indices, data, dense, _) = _drawn_matrix(p)
    t_indptr, t_indices, perm = csr.csr_transpose_structure(indptr, indices, p["n_cols"])
    at = sp.csr_matrix(dense.T)
    at.sort_indices()
    np.testing.assert_array_equal(t_indptr, at.indptr)
    np.testing.assert_array_equal(t_indices, at.indices)
    np.testing.assert_array_equal(data[perm], at.data)
    csr.check_csr(t_indptr, t_indices, data[perm], (p["n_cols"], p["n_rows"]))


def test_large_products_use_the_parallel_build_and_agree():
    rng = np.random.default_rng(0)
    indptr, indices, data, dense, mask = random_csr(rng, 300, 400, 0.1, np.float32)
    x = rng.standard_normal((400, 100)).astype(np.float32)
    g = rng.standard_normal((300, 100)).astype(np.float32)
    assert len(data) * 100 >= csr.PARALLEL_MIN_WORK
    np.testing.assert_allclose(csr.csr_matmul(indptr, indices, data, x, 400), dense @ x,
                               rtol=1e-4, atol=1e-4)
    transposed = csr.csr_transpose_structure(indptr, indices, 400)
    np.testing.assert_allclose(csr.csr_matmul_transposed(transposed, data, g, 300), dense.T @ g,
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(csr.sampled_matmul(indptr, indices, g, x, 400), (g @ x.T)[mask],
                               rtol=1e-4, atol=1e-4)
    grad_data, grad_bias, dx = csr.csr_backward(indptr, indices, transposed, data, g, x)
    np.testing.assert_allclose(grad_data, (g @ x.T)[mask], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(grad_bias, g.sum(axis=1), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dx, dense.T @ g, rtol=1e-4, atol=1e-4)


def test_parallel_threshold_accounts_for_the_thread_pool():
    # a few µs to wake OpenMP's pool, ~0.1 ms for workqueue's: the threshold follows
    assert csr.min_parallel_work() in (csr.PARALLEL_MIN_WORK, 10 * csr.PARALLEL_MIN_WORK)
    kernel, blocks = csr._kernel("matmul", 0)
    assert kernel is csr._KERNELS["matmul"][0] and blocks == 1


# -- the invariant ----------------------------------------------------------------------------

def _valid():
    # 3 × 4: row 0 = {1, 3}, row 1 = {}, row 2 = {0, 2}
    return (np.array([0, 2, 2, 4], np.int32), np.array([1, 3, 0, 2], np.int32),
            np.array([1.0, 2.0, 3.0, 4.0], np.float32))


def test_check_csr_accepts_a_valid_matrix():
    csr.check_csr(*_valid(), (3, 4))


@pytest.mark.parametrize("change,message", [
    (lambda p, i, d: (p, np.array([1, 4, 0, 2], np.int32), d), "out of range"),
    (lambda p, i, d: (p, np.array([1, 3, -1, 2], np.int32), d), "out of range"),
    (lambda p, i, d: (p, np.array([3, 1, 0, 2], np.int32), d), "row 0 are not sorted"),
    (lambda p, i, d: (p, np.array([1, 3, 2, 2], np.int32), d), "row 2 are not sorted and unique"),
    (lambda p, i, d: (np.array([0, 3, 2, 4], np.int32), i, d), "non-decreasing"),
    (lambda p, i, d: (np.array([1, 2, 2, 4], np.int32), i, d), "start at 0"),
    (lambda p, i, d: (np.array([0, 2, 4], np.int32), i, d), "length 3, expected"),
    (lambda p, i, d: (np.array([0, 2, 2, 3], np.int32), i, d), "says 3 nonzeros"),
    (lambda p, i, d: (p, i, d[:3]), "data 3"),
    (lambda p, i, d: (p, i.astype(np.float32), d), "must be integers"),
    (lambda p, i, d: (p, i, np.array([1, np.nan, 3, 4], np.float32)), "NaN"),
])
def test_check_csr_names_what_is_wrong(change, message):
    with pytest.raises(ValueError, match=message):
        csr.check_csr(*change(*_valid()), (3, 4), "test matrix")


def test_public_kernels_reject_operands_of_the_wrong_shape():
    indptr, indices, data = _valid()
    with pytest.raises(ValueError, match=r"expects dense of shape \(4, k\), got \(3, 2\)"):
        csr.csr_matmul(indptr, indices, data, np.zeros((3, 2), np.float32), 4)
    with pytest.raises(ValueError, match=r"expects dense of shape \(3, k\)"):
        csr.csr_matmul_transposed(csr.csr_transpose_structure(indptr, indices, 4), data,
                                  np.zeros((4, 2), np.float32), 3)
    with pytest.raises(ValueError, match="right of shape"):
        csr.sampled_matmul(indptr, indices, np.zeros((3, 2)), np.zeros((5, 2)), 4)
    with pytest.raises(ValueError, match="bias has length 2, expected 3"):
        csr.csr_matmul(indptr, indices, data, np.zeros((4, 2), np.float32), 4,
                       bias=np.zeros(2, np.float32))
    transposed = csr.csr_transpose_structure(indptr, indices, 4)
    with pytest.raises(ValueError, match=r"expects x of shape \(4, k\)"):
        csr.csr_backward(indptr, indices, transposed, data, np.zeros((3, 2), np.float32),
                         np.zeros((3, 2), np.float32))
    with pytest.raises(ValueError, match="same number of columns"):
        csr.csr_backward(indptr, indices, transposed, data, np.zeros((3, 2), np.float32),
                         np.zeros((4, 5), np.float32))
    with pytest.raises(ValueError, match=r"batch-major grad of shape \(k, 3\)"):
        csr.csr_backward(indptr, indices, transposed, data, np.zeros((3, 2), np.float32),
                         np.zeros((4, 2), np.float32), batch_major_grad=True)
    with pytest.raises(ValueError, match=r"expects x of shape \(k, 4\)"):
        csr.csr_matmul_batch_major(indptr, indices, data, np.zeros((4, 2), np.float32), 4)


# -- the AVX2 + FMA forward (float32; float64 and CPUs without it use the kernels above) --

needs_simd = pytest.mark.skipif(not csr.SIMD_AVAILABLE,
                                reason="the explicit-SIMD forward needs AVX2 and FMA")

simd_problems = st.fixed_dictionaries({
    # k up to 200: passes of 96, 32 and 8 samples, every masked tail length 0..7, and
    # the tail carried by the last 96-sample pass (k = 97..103, 193..199)
    "n_rows": st.integers(0, 13), "n_cols": st.integers(1, 40),
    "k": st.one_of(st.integers(0, 200), st.integers(97, 103), st.integers(193, 199)),
    "density": st.sampled_from([0.0, 0.05, 0.3, 1.0]),
    "empty_row": st.booleans(), "empty_col": st.booleans(), "seed": st.integers(0, 2 ** 16)})


def _simd_bound(data_abs_dense, x):
    # the docstring's bound: 1e-5 · Σ_p |data[p]·dense[indices[p], b]| + 1e-6
    return 1e-5 * (data_abs_dense @ np.abs(x).astype(np.float64)) + 1e-6


@needs_simd
@settings(max_examples=60, deadline=None)
@given(simd_problems)
def test_simd_forward_kernels_equal_the_twin_within_float32_rounding(p):
    rng, (indptr, indices, data, dense, _) = _drawn_matrix(p, np.float32)
    x_bm = rng.standard_normal((p["k"], p["n_cols"])).astype(np.float32)
    x = np.ascontiguousarray(x_bm.T)
    bias = rng.standard_normal(p["n_rows"]).astype(np.float32)
    bound = _simd_bound(np.abs(dense).astype(np.float64), x)
    for b in (bias[:0], bias):
        twin = csr.csr_matmul_numpy(indptr, indices, data, x, b if len(b) else None)
        for label, kernel, blocks in _both_builds("matmul_simd"):
            out = np.full((p["n_rows"], p["k"]), np.nan, dtype=np.float32)
            kernel(*_u(indptr, indices), data, b, np.float32(0), x, out, blocks)
            assert (np.abs(out - twin) <= bound).all(), label
        for label, kernel, blocks in _both_builds("matmul_batch_major_simd"):
            out = np.full((p["n_rows"], p["k"]), np.nan, dtype=np.float32)
            xt = np.full((p["n_cols"], p["k"]), np.nan, dtype=np.float32)
            kernel(*_u(indptr, indices), data, b, np.float32(0), x_bm, xt, out, blocks)
            np.testing.assert_array_equal(xt, x)
            assert (np.abs(out - twin) <= bound).all(), label


@needs_simd
def test_simd_forward_masked_tail_neither_reads_nor_writes_past_the_row():
    # the last row of out and of dense end exactly at the array's end (k % 8 = 4); a
    # neighbouring row's values must be untouched and NaNs past the end never read
    rng = np.random.default_rng(3)
    indptr, indices, data, dense, _ = random_csr(rng, 5, 7, 1.0, np.float32)
    backing = np.full(7 * 12 + 8, np.nan, dtype=np.float32)
    x = backing[:7 * 12].reshape(7, 12)
    x[:] = rng.standard_normal((7, 12))
    out = np.full((5, 12), np.nan, dtype=np.float32)
    csr._KERNELS["matmul_simd"][0](*_u(indptr, indices), data, data[:0], np.float32(0), x, out, 1)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, dense @ x, rtol=1e-5, atol=1e-5)


def test_forward_uses_the_simd_kernel_for_float32_only_and_falls_back_when_off(monkeypatch):
    rng = np.random.default_rng(4)
    indptr, indices, data, _, _ = random_csr(rng, 9, 11, 0.3, np.float32)
    x = rng.standard_normal((11, 13)).astype(np.float32)
    assert csr._forward_name("matmul", np.float64) == "matmul"
    assert csr._forward_name("matmul", np.float32) == \
        ("matmul_simd" if csr.SIMD_AVAILABLE else "matmul")
    monkeypatch.setattr(csr, "SIMD_AVAILABLE", False)      # a CPU without AVX2 / FMA
    assert csr._forward_name("matmul_batch_major", np.float32) == "matmul_batch_major"
    portable = np.empty((9, 13), np.float32)
    csr._KERNELS["matmul"][0](*_u(indptr, indices), data, data[:0], np.float32(0), x, portable, 1)
    np.testing.assert_array_equal(csr.csr_matmul(indptr, indices, data, x, 11), portable)
    kernels = csr.TrainingKernels(indptr, indices, csr.csr_transpose_structure(indptr, indices, 11),
                                  11)
    y, xt = kernels.forward(data, data[:0], np.ascontiguousarray(x.T))
    np.testing.assert_array_equal(y, portable)
    np.testing.assert_array_equal(xt, x)


def test_simd_check_follows_numbas_target(monkeypatch):
    from minidnn.kernels import simd
    monkeypatch.setattr(numba.config, "CPU_FEATURES", "+avx,+avx2,-fma")
    assert simd.avx2_target() and not simd.avx2_fma_target()
    monkeypatch.setattr(numba.config, "CPU_FEATURES", "+avx,+avx2,+fma")
    assert simd.avx2_fma_target()
    monkeypatch.setattr(numba.config, "CPU_FEATURES", None)
    monkeypatch.setattr(numba.config, "CPU_NAME", "generic")
    assert not simd.avx2_fma_target()
    monkeypatch.setattr(numba.config, "CPU_NAME", None)
    monkeypatch.setattr(numba.config, "DISABLE_JIT", True)
    assert not simd.avx2_fma_target() and not simd.avx2_target()


# -- the padded training kernels (float32, AVX2 + FMA; sitting 18) ----------------------------

padded_problems = st.fixed_dictionaries({
    # k up to 220: one to four balanced passes (≤ 13 vectors forward, ≤ 7 backward),
    # every tail length, and a batch split into 1–4 sample shares
    "n_rows": st.integers(0, 13), "n_cols": st.integers(1, 40),
    "k": st.one_of(st.integers(0, 220), st.integers(97, 105)),
    "density": st.sampled_from([0.0, 0.05, 0.3, 1.0]),
    "empty_row": st.booleans(), "empty_col": st.booleans(), "seed": st.integers(0, 2 ** 16),
    "blocks": st.integers(1, 4)})


def _padded_copy(a):
    """a (n, k) in a padded buffer, NaN in the pad lanes: the forward must never let
    them reach a stored output."""
    buf = csr.padded_buffer(a.shape[0], a.shape[1])
    buf[:] = np.nan
    buf[:, :a.shape[1]] = a
    return buf


def _padded_builds(blocks):
    serial, parallel = csr._KERNELS["matmul_padded"]
    serial_b, parallel_b = csr._KERNELS["backward_padded"]
    return [("serial", serial, serial_b, 1), ("parallel", parallel, parallel_b, blocks)]


def test_padded_buffer_is_aligned_zeroed_and_a_whole_number_of_vectors():
    for n, k in ((3, 1), (5, 8), (784, 100), (0, 7), (2, 0)):
        buf = csr.padded_buffer(n, k)
        assert buf.shape == (n, csr.padded_width(k)) and buf.dtype == np.float32
        assert buf.shape[1] % csr._LANES == 0 and buf.shape[1] >= k and buf.flags.c_contiguous
        assert (buf.size == 0 or buf.ctypes.data % 64 == 0) and not buf.any()


@needs_simd
@settings(max_examples=40, deadline=None)
@given(padded_problems)
def test_padded_forward_kernels_equal_the_twin_within_float32_rounding(p):
    rng, (indptr, indices, data, dense, _) = _drawn_matrix(p, np.float32)
    x_bm = rng.standard_normal((p["k"], p["n_cols"])).astype(np.float32)
    x = np.ascontiguousarray(x_bm.T)
    bias = rng.standard_normal(p["n_rows"]).astype(np.float32)
    bound = _simd_bound(np.abs(dense).astype(np.float64), x)
    blocks = csr._sample_blocks(p["blocks"], p["k"])
    for b in (bias[:0], bias):
        twin = csr.csr_matmul_numpy(indptr, indices, data, x, b if len(b) else None)
        for label, kernel, _, n_blocks in _padded_builds(blocks):
            for fill, source in _fills(x_bm, x):
                pad = _padded_copy(x) if fill == csr.FILL_NONE else \
                    csr.padded_buffer(p["n_cols"], p["k"])
                out = np.full((p["n_rows"], p["k"]), np.nan, dtype=np.float32)
                kernel(*_u(indptr, indices), data, b, source, pad, out, fill, n_blocks)
                assert (np.abs(out - twin) <= bound).all(), (label, fill)
                if fill != csr.FILL_NONE:   # the fill, exact, and the pad lanes untouched
                    _assert_filled(pad, x, (label, fill))


@needs_simd
@settings(max_examples=40, deadline=None)
@given(padded_problems)
def test_padded_backward_kernels_equal_the_twin_within_float32_rounding(p):
    rng, (indptr, indices, data, dense, mask) = _drawn_matrix(p, np.float32)
    k = p["k"]
    grad_bm, grad, x = _drawn_backward_operands(rng, p)
    want_gd, want_gb, want_dx = csr.csr_backward_numpy(indptr, indices, data, grad, x)
    # the bound of the forward's docstring, for each product's own terms
    a_abs, g_abs, x_abs = np.abs(dense).astype(np.float64), np.abs(grad).astype(np.float64), \
        np.abs(x).astype(np.float64)
    bound_gd = 1e-5 * (g_abs @ x_abs.T)[mask] + 1e-6
    bound_gb = 1e-5 * g_abs.sum(axis=1) + 1e-6
    bound_dx = 1e-5 * (a_abs.T @ g_abs) + 1e-6
    transposed = csr.csr_transpose_structure(indptr, indices, p["n_cols"])
    x_pad = csr.padded_buffer(p["n_cols"], k)
    x_pad[:, :k] = x
    blocks = csr._sample_blocks(p["blocks"], k)
    for label, _, kernel, n_blocks in _padded_builds(blocks):
        for input_grad in (True, False):
            for fill, source in _fills(grad_bm, grad):
                g_pad = _padded_operand(grad, fill)
                gd, gb, dx = _nan_backward_outputs(len(indices), p["n_rows"], p["n_cols"], k,
                                                   input_grad)
                partial = np.full((n_blocks - 1, len(indices)), np.nan, np.float32)
                bias_partial = np.full((n_blocks - 1, p["n_rows"]), np.nan, np.float32)
                kernel(*_u(*transposed), data, source, g_pad, x_pad, k, np.float32(0), gd, gb,
                       dx, partial, bias_partial, fill, n_blocks)
                what = (label, input_grad, fill)
                assert (np.abs(gd - want_gd) <= bound_gd).all(), what
                assert (np.abs(gb - want_gb) <= bound_gb).all(), what
                if input_grad:
                    assert (np.abs(dx - want_dx) <= bound_dx).all(), what
                _assert_filled(g_pad, grad, what)


@needs_simd
@settings(max_examples=25, deadline=None)
@given(padded_problems)
def test_training_kernels_padded_path_equals_the_twins_and_keeps_its_buffers(p):
    # the layer's two calls, as SparseDense makes them (batch-major x and grad), and
    # with feature-major operands (copied into the padded buffers), at whatever
    # thread count; results within the bounds, and xᵀ handed back equal to x
    rng, (indptr, indices, data, dense, mask) = _drawn_matrix(p, np.float32)
    k = p["k"]
    x_bm = rng.standard_normal((k, p["n_cols"])).astype(np.float32)
    grad_bm = rng.standard_normal((k, p["n_rows"])).astype(np.float32)
    bias = rng.standard_normal(p["n_rows"]).astype(np.float32)
    want_y = csr.csr_matmul_numpy(indptr, indices, data, x_bm.T, bias)
    want = csr.csr_backward_numpy(indptr, indices, data, grad_bm.T, x_bm.T)
    tol = {"rtol": 1e-4, "atol": 1e-4}
    step = csr.TrainingKernels(indptr, indices, csr.csr_transpose_structure(indptr, indices,
                                                                            p["n_cols"]),
                               p["n_cols"])
    for batch_major in (True, False):
        x_in = x_bm if batch_major else np.ascontiguousarray(x_bm.T)
        y, xt = step.forward(data, bias, x_in, batch_major=batch_major)
        np.testing.assert_allclose(y, want_y, **tol)
        np.testing.assert_array_equal(xt, x_bm.T)
        assert step._owns_x(xt)
        g_in = grad_bm if batch_major else np.ascontiguousarray(grad_bm.T)
        for input_grad in (True, False):
            gd, gb, dx = step.backward(data, g_in, xt, input_grad, True, batch_major=batch_major)
            np.testing.assert_allclose(gd, want[0], **tol)
            np.testing.assert_allclose(gb, want[1], **tol)
            if input_grad:
                np.testing.assert_allclose(dx, want[2], **tol)
            else:
                assert dx is None
    # an xᵀ that is not the forward's view is copied, and the forward's buffer is kept
    other = rng.standard_normal((p["n_cols"], k)).astype(np.float32)
    gd, _, _ = step.backward(data, grad_bm, other, False, False, batch_major=True)
    np.testing.assert_allclose(gd, csr.sampled_matmul_numpy(indptr, indices, grad_bm.T, other),
                               **tol)
    np.testing.assert_array_equal(xt, x_bm.T)


def test_training_kernels_fall_back_to_the_portable_kernels_without_simd(monkeypatch):
    # without AVX2 / FMA (or NUMBA_DISABLE_JIT, or float64) no padded buffer is made and
    # the results are the portable kernels', bit for bit
    rng = np.random.default_rng(5)
    indptr, indices, data, _, _ = random_csr(rng, 9, 11, 0.3, np.float32)
    x = rng.standard_normal((13, 11)).astype(np.float32)
    g = rng.standard_normal((13, 9)).astype(np.float32)
    transposed = csr.csr_transpose_structure(indptr, indices, 11)
    monkeypatch.setattr(csr, "SIMD_AVAILABLE", False)
    step = csr.TrainingKernels(indptr, indices, transposed, 11)
    y, xt = step.forward(data, data[:0], x)
    gd, gb, dx = step.backward(data, g, xt, True, True, batch_major=True,
                               grad_scratch=np.empty((9, 13), np.float32))
    assert step._x_pad is None and step._grad_pad is None
    out = np.empty((9, 13), np.float32)
    csr._KERNELS["matmul"][0](*_u(indptr, indices), data, data[:0], np.float32(0),
                              np.ascontiguousarray(x.T), out, 1)
    np.testing.assert_array_equal(y, out)
    want = csr.csr_backward(indptr, indices, transposed, data, g, np.ascontiguousarray(x.T),
                            batch_major_grad=True)
    for got, w in zip((gd, gb, dx), want):
        np.testing.assert_array_equal(got, w)
    step64 = csr.TrainingKernels(indptr, indices, transposed, 11)
    monkeypatch.setattr(csr, "SIMD_AVAILABLE", True)
    step64.forward(data.astype(np.float64), data[:0].astype(np.float64), x.astype(np.float64))
    assert step64._x_pad is None


def test_sample_shares_cover_the_batch_in_whole_vectors():
    for k in (0, 1, 8, 9, 100, 104, 217):
        for blocks in (1, 2, 3, 4):
            n = csr._sample_blocks(blocks, k)
            L = csr._LANES                  # 16 with AVX-512, else 8
            assert 1 <= n <= max(1, (k + L - 1) // L)
            shares = [csr._sample_share(c, n, k) for c in range(n)]
            assert shares[0][2] == 0 and shares[-1][3] == k
            for (v0, v1, s0, s1), nxt in zip(shares, shares[1:] + [None]):
                assert s0 == min(k, L * v0) and s1 == min(k, L * v1) and s0 <= s1
                if nxt is not None:
                    assert nxt[0] == v1 and nxt[2] == s1


# -- sitting 19: the backward split by product, the THREADS cap --------------------------------

@needs_simd
@settings(max_examples=30, deadline=None)
@given(padded_problems)
def test_product_split_backward_equals_the_one_block_kernel_bit_for_bit(p):
    # BACKWARD_SPLIT = "products": dx by the permuted row kernel, the weight and bias
    # gradients by the one-block fused kernel; every output equals the serial fused
    # kernel's exactly (so 2-thread training gives the 1-thread numbers), and the twins'
    # within the padded kernels' bound; the fill is exact and leaves the pad lanes zero
    rng, (indptr, indices, data, dense, mask) = _drawn_matrix(p, np.float32)
    k = p["k"]
    grad_bm, grad, x = _drawn_backward_operands(rng, p)
    transposed = csr.csr_transpose_structure(indptr, indices, p["n_cols"])
    structure = _u(*transposed)
    x_pad = _padded_operand(x, csr.FILL_NONE)      # the layer's buffers have zero pad lanes
    ref = _one_block_backward(structure, data, grad_bm, _padded_operand(grad, csr.FILL_NONE),
                              x_pad, k, p["n_rows"], p["n_cols"])
    want_dx = csr.csr_matmul_transposed_numpy(indptr, indices, data, grad, p["n_cols"])
    bound_dx = 1e-5 * (np.abs(dense).astype(np.float64).T @ np.abs(grad)) + 1e-6
    assert (np.abs(ref[2] - want_dx) <= bound_dx).all()
    for build in csr._KERNELS["backward_products"]:
        for fill, source in _fills(grad_bm, grad):
            g_pad = _padded_operand(grad, fill)
            got = _nan_backward_outputs(len(indices), p["n_rows"], p["n_cols"], k)
            build(*structure, data, source, g_pad, x_pad, k, np.float32(0), *got, fill, 2)
            _assert_outputs_equal(got, ref, fill)
            _assert_filled(g_pad, grad, fill)


@needs_simd
def test_training_kernels_switches_keep_the_results(monkeypatch):
    # THREADS = 1 (serial builds at any thread count) and BACKWARD_SPLIT = "products" (at
    # two blocks) give the serial results bit for bit; a first layer (no dx) keeps the
    # sample split whatever the switch
    rng = np.random.default_rng(7)
    indptr, indices, data, _, _ = random_csr(rng, 40, 60, 0.2, np.float32)
    x = rng.standard_normal((100, 60)).astype(np.float32)
    g = rng.standard_normal((100, 40)).astype(np.float32)
    bias = rng.standard_normal(40).astype(np.float32)
    transposed = csr.csr_transpose_structure(indptr, indices, 60)
    monkeypatch.setattr(csr, "PARALLEL_MIN_WORK", 0)
    # the kernel choice reads threads.numba_thread_count (sitting 19), not numba.get_num_threads
    monkeypatch.setattr(csr, "numba_thread_count", lambda: 2)

    def run(threads, split, input_grad=True, forward_split="samples"):
        step = csr.TrainingKernels(indptr, indices, transposed, 60)
        step.THREADS, step.BACKWARD_SPLIT, step.FORWARD_SPLIT = threads, split, forward_split
        y, xt = step.forward(data, bias, x)
        return (y,) + step.backward(data, g, xt, input_grad, True, batch_major=True)

    serial = run(1, "samples")
    for variant in ((None, "products"), (1, "products"), (None, "columns", True, "rows"),
                    (None, "products", True, "rows")):
        for got, want in zip(run(*variant), serial):
            np.testing.assert_array_equal(got, want)
    serial_first = run(1, "samples", False)
    for got, want in zip(run(None, "columns", False, "rows")[:3], serial_first[:3]):
        np.testing.assert_array_equal(got, want)
    samples = run(None, "samples")
    np.testing.assert_array_equal(samples[3], serial[3])           # dx: the same chains
    np.testing.assert_allclose(samples[1], serial[1], rtol=1e-5, atol=1e-5)
    first_products, first_samples = run(None, "products", False), run(None, "samples", False)
    assert first_products[3] is None
    for got, want in zip(first_products[:3], first_samples[:3]):
        np.testing.assert_array_equal(got, want)


@needs_simd
@settings(max_examples=30, deadline=None)
@given(padded_problems)
def test_row_and_column_split_kernels_equal_the_one_block_kernels_bit_for_bit(p):
    # FORWARD_SPLIT = "rows" and BACKWARD_SPLIT = "columns" at 1–4 blocks (any thread
    # count: prange runs the blocks in turn on one thread): every output equals the
    # one-block padded kernels' exactly, with the fill from a batch-major or feature-major
    # operand or none
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
    for (fill, x_src), (_, g_src) in zip(_fills(x_bm, x), _fills(grad_bm, grad)):
        for build in csr._KERNELS["matmul_padded_rowsplit"]:
            pad = _padded_operand(x, fill)
            y = np.full((p["n_rows"], k), np.nan, np.float32)
            build(*_u(indptr, indices), data, bias, x_src, pad, y, fill, blocks)
            np.testing.assert_array_equal(y, y_ref)
            _assert_filled(pad, x, fill)
        for build in csr._KERNELS["backward_padded_colsplit"]:
            for input_grad, ref in refs.items():
                g_pad = _padded_operand(grad, fill)
                got = _nan_backward_outputs(len(indices), p["n_rows"], p["n_cols"], k,
                                            input_grad)
                build(*structure, data, g_src, g_pad, x_pad, k, np.float32(0), *got, fill,
                      blocks)
                _assert_outputs_equal(got, ref, (fill, input_grad))
                _assert_filled(g_pad, grad, (fill, input_grad))
