"""Technique 1: the fused whole-model ternary forward, its sigmoid, and the gain rules."""
import numpy as np
import pytest

import minidnn as md
from minidnn.kernels import rounding as R
from minidnn.kernels import ternary_net as tn
from minidnn.quantization import DiscreteDense, FusedTernaryNet, PowerOfTwoGrid, discretize
from minidnn.quantization.discrete import rounding_error_gain

EPS = 2.0 ** -24


def random_ternary_layers(rng, sizes, acts, density=0.3, dyadic=False):
    layers = []
    for (n_in, n_out), act in zip(zip(sizes, sizes[1:]), acts):
        p = density / 2
        codes = rng.choice([-1, 0, 1], size=(n_in, n_out), p=[p, 1 - 2 * p, p]).astype(np.int8)
        if dyadic:
            scale, bias = 0.25, rng.integers(-8, 9, n_out) / 8
        else:
            scale, bias = float(rng.uniform(0.05, 0.3)), rng.normal(size=n_out)
        layers.append((codes, scale, bias.astype(np.float32), act))
    return layers


def run_kernel(kind, x, plan):
    out = np.empty((x.shape[0], int(plan.sizes[-1])), dtype=np.float32)
    if kind == "rows":
        tn.ternary_net_rows_kernel(x, plan.sizes, plan.codes, plan.code_ptr, plan.scales,
                                   plan.bias, plan.bias_ptr, plan.acts, out)
    else:
        tn.ternary_net_columns_kernel(x, plan.sizes, plan.scales, plan.bias, plan.bias_ptr,
                                      plan.acts, plan.out_ptr, plan.plus_ptr, plan.plus_index,
                                      plan.minus_ptr, plan.minus_index, out)
    return out


# -- the sigmoid -----------------------------------------------------------------------------

def test_sigmoid_kernel_equals_its_twin_bit_for_bit_and_is_accurate():
    rng = np.random.default_rng(0)
    z = np.concatenate([rng.normal(0, 8, 20000), [0.0, -0.0, 1e-30, -1e-30, 87.0, -87.0,
                                                   -87.5, 200.0, -200.0]]).astype(np.float32)
    twin = tn.sigmoid_poly_numpy(z)
    kernel = z.copy()
    tn.sigmoid_poly_kernel(kernel, np.empty(z.size, dtype=np.int32))
    assert np.array_equal(kernel, twin)
    inside = np.linspace(-87, 30, 200001).astype(np.float32)
    exact = 1 / (1 + np.exp(-inside.astype(np.float64)))
    assert (np.abs(tn.sigmoid_poly_numpy(inside) - exact) / exact).max() < 4e-7
    # below −87 the result is σ(−87) ≈ 1.6e-38, never a NaN or a negative
    assert 0 < tn.sigmoid_poly_numpy(np.float32(-200.0)) < 2e-38


def test_one_pass_epilogue_equals_the_twin_bit_for_bit_over_the_whole_range():
    """``scale_bias_activate_kernel`` (s·z + b and the poly sigmoid fused in one pass, 2^n
    built in a register) gives the twin's bits on every float32 region: the clamp at −87,
    denormal results, ±0, ±inf and NaN, and through ReLU and identity."""
    rng = np.random.default_rng(11)
    z = np.concatenate([rng.normal(0, 8, 30000), np.linspace(-100, 100, 20001),
                        [0.0, -0.0, -87.0, -87.3, -86.9, 88.0, 1e-30, -1e-30, np.inf, -np.inf,
                         np.nan, 1e-45, -1e-45]]).astype(np.float32)
    z = z[:z.size // 7 * 7].reshape(-1, 7)           # 7 outputs: rows not a multiple of 8
    bias = rng.normal(size=7).astype(np.float32)
    bias[0] = 0
    for s, b in ((np.float32(1), np.zeros(7, np.float32)), (np.float32(0.37), bias)):
        for act in (tn.IDENTITY, tn.SIGMOID, tn.RELU):
            got = z.copy()
            tn.scale_bias_activate_kernel(got, s, b, act)
            twin = tn.scale_bias_activate_numpy(z, s, b, act)
            assert np.array_equal(got, twin, equal_nan=True), (s, act)


# -- the kernels against their twin ----------------------------------------------------------------

@pytest.mark.parametrize("kind", ["rows", "columns"])
@pytest.mark.parametrize("batch", [1, 3, 16])
def test_fused_kernels_are_bit_identical_to_the_float_simulation_on_dyadic_inputs(kind, batch):
    """Identity activations, inputs m/8, scale 1/4, biases m/8: every partial sum is
    exact in float32, so a different summation order cannot change a bit."""
    rng = np.random.default_rng(batch)
    layers = random_ternary_layers(rng, [60, 40, 30, 7], ["identity"] * 3, dyadic=True)
    plan = tn.ternary_net_plan(layers)
    x = (rng.integers(-8, 9, (batch, 60)) / 8).astype(np.float32)
    x[:, ::3] = 0                               # zero inputs are skipped by the rows kernel
    assert np.array_equal(run_kernel(kind, x, plan), tn.ternary_net_forward_numpy(x, plan))


@pytest.mark.parametrize("kind", ["rows", "columns"])
def test_one_fused_layer_is_within_the_stated_summation_order_bound(kind):
    """|Δz| ≤ 2·n_in·ε·s·Σ_i|h_i c_i| (+ the rounding of the bias add), per output."""
    rng = np.random.default_rng(1)
    layers = random_ternary_layers(rng, [300, 50], ["identity"], density=0.6)
    plan = tn.ternary_net_plan(layers)
    x = rng.random((12, 300)).astype(np.float32)
    codes, scale, bias, _ = layers[0]
    got, twin = run_kernel(kind, x, plan), tn.ternary_net_forward_numpy(x, plan)
    bound = 2 * 300 * EPS * scale * (np.abs(x) @ np.abs(codes).astype(np.float64))
    bound += 2 * EPS * (np.abs(twin) + np.abs(bias))
    assert np.all(np.abs(got.astype(np.float64) - twin) <= bound)


@pytest.mark.parametrize("acts", [["sigmoid", "sigmoid", "identity"], ["relu", "relu", "identity"]])
def test_rows_and_columns_kernels_match_the_twin_through_activations(acts):
    rng = np.random.default_rng(2)
    plan = tn.ternary_net_plan(random_ternary_layers(rng, [100, 64, 48, 10], acts))
    x = rng.random((20, 100)).astype(np.float32)
    twin = tn.ternary_net_forward_numpy(x, plan)
    for kind in ("rows", "columns"):
        np.testing.assert_allclose(run_kernel(kind, x, plan), twin, rtol=1e-5, atol=1e-5)


def test_the_plan_refuses_what_is_not_a_ternary_chain():
    rng = np.random.default_rng(3)
    good = random_ternary_layers(rng, [5, 4, 3], ["sigmoid", "identity"])
    with pytest.raises(ValueError, match="-1, 0 or 1"):
        tn.ternary_net_plan([(good[0][0] * 2, 0.1, None, "sigmoid")])
    with pytest.raises(ValueError, match="do not follow"):
        tn.ternary_net_plan([good[0], good[0]])
    with pytest.raises(ValueError, match="activation"):
        tn.ternary_net_plan([(good[0][0], 0.1, None, "tanh")])
    with pytest.raises(ValueError, match="scale"):
        tn.ternary_net_plan([(good[0][0], 0.0, None, "sigmoid")])
    with pytest.raises(ValueError, match=r"shape \(batch, 5\)"):
        tn.ternary_net_forward(np.zeros((2, 4), np.float32), tn.ternary_net_plan(good))
    with pytest.raises(ValueError, match="path must be one of"):
        tn.ternary_net_forward(np.zeros((2, 5), np.float32), tn.ternary_net_plan(good), "blas")


# -- the model-level API against the per-layer reference path -------------------------------------

def ternary_mlp(seed=0):
    rng = np.random.default_rng(seed)
    layers = [md.Flatten()]
    sizes = [49, 30, 20, 5]
    for k, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
        dense = md.Dense(n_in, n_out)
        dense.set_weights(rng.normal(0, 1 / np.sqrt(n_in), (n_in, n_out)), rng.normal(size=n_out))
        layers.append(dense)
        if k < len(sizes) - 2:
            layers.append(md.Sigmoid())
    return discretize(md.Sequential(layers, seed=None), "2^0", rng=seed)


@pytest.mark.parametrize("batch", [1, 5, 8, 64])
def test_fused_net_equals_the_layer_by_layer_model_forward(batch):
    model = ternary_mlp()
    net = FusedTernaryNet.from_model(model)
    x = np.random.default_rng(batch).random((batch, 1, 7, 7)).astype(np.float32)
    reference = model.forward(x, training=False)      # DiscreteDense kernels + Sigmoid layers
    np.testing.assert_allclose(net.forward(x), reference, rtol=1e-5, atol=1e-5)
    assert np.array_equal(net.predict(x), net.forward(x).argmax(axis=1))


def test_fused_net_refuses_models_it_cannot_run():
    model = ternary_mlp()
    fine = discretize(md.Sequential([md.Dense(6, 4), md.Sigmoid(), md.Dense(4, 2)], seed=0),
                      "2^-2", rng=0)
    with pytest.raises(ValueError, match="ternary"):
        FusedTernaryNet.from_model(fine)
    with pytest.raises(ValueError, match="Tanh"):
        FusedTernaryNet.from_model(md.Sequential([*model.layers[:2], md.Tanh(), *model.layers[3:]],
                                                 seed=None))
    with pytest.raises(ValueError, match="no DiscreteDense"):
        FusedTernaryNet.from_model(md.Sequential([md.Flatten()], seed=None, input_shape=(4,)))


# -- the gemm path: codes expanded per layer into a one-layer float32 scratch, BLAS ---------------

def test_gemm_path_pieces_equal_their_twins_bit_for_bit():
    rng = np.random.default_rng(5)
    h = rng.random((9, 40)).astype(np.float32)
    h[:, [0, 3, 4, 39]] = 0
    h[4, 3] = np.nan                              # a NaN column is kept, never dropped
    keep = np.empty(40, dtype=np.int64)
    n_keep, entries = tn.nonzero_columns_kernel(h, keep)
    twin_keep, twin_entries = tn.nonzero_columns_numpy(h)
    assert np.array_equal(keep[:n_keep], twin_keep) and entries == twin_entries
    assert n_keep == 37 and entries == np.count_nonzero(h)
    dense_first_row = h.copy()
    dense_first_row[0] = 1                        # the first row decides: nothing dropped
    assert tn.nonzero_columns_kernel(dense_first_row, keep) == (40, dense_first_row.size)
    assert tn.nonzero_columns_numpy(dense_first_row)[1] == dense_first_row.size
    codes = rng.integers(-1, 2, (40, 13)).astype(np.int8)
    h_kept = np.empty((9, n_keep), np.float32)
    w = np.empty((n_keep, 13), np.float32)
    tn.gather_expand_kernel(h, codes, keep[:n_keep], h_kept, w)
    twin_h, twin_w = tn.gather_expand_numpy(h, codes, keep[:n_keep])
    assert np.array_equal(h_kept, twin_h, equal_nan=True) and np.array_equal(w, twin_w)
    full = np.empty(codes.size, np.float32)
    tn.expand_codes_kernel(codes.ravel(), full)
    assert np.array_equal(full.reshape(codes.shape), codes.astype(np.float32))
    z = rng.normal(0, 5, (9, 13)).astype(np.float32)
    bias = rng.normal(size=13).astype(np.float32)
    for act in (tn.IDENTITY, tn.SIGMOID, tn.RELU):
        got = z.copy()
        tn.scale_bias_activate_kernel(got, np.float32(0.3), bias, act)
        assert np.array_equal(got, tn.scale_bias_activate_numpy(z, 0.3, bias, act))


@pytest.mark.parametrize("n_nonzero", [0, 1, 3, 4, 5, 8, 13])
@pytest.mark.parametrize("n_out", [1, 7, 33])
def test_sparse_input_product_kernel_equals_its_twin_bit_for_bit(n_nonzero, n_out):
    """Any number of nonzero inputs a sample (groups of four and the rest one by one),
    output widths not a multiple of the vector width, non-dyadic inputs, a NaN and an
    inf: the kernel (FMA-contracted, exact products) gives the twin's bits."""
    rng = np.random.default_rng(100 * n_nonzero + n_out)
    batch, n_in = 5, 20
    h = np.zeros((batch, n_in), np.float32)
    for b in range(batch):
        cols = rng.choice(n_in, n_nonzero + b % 2 if n_nonzero else 0, replace=False)
        h[b, cols] = rng.normal(size=cols.size)
    if n_nonzero >= 3:
        h[1, np.flatnonzero(h[1])[0]] = np.nan
        h[2, np.flatnonzero(h[2])[-1]] = np.inf
    codes = rng.integers(-1, 2, (n_in, n_out)).astype(np.int8)
    z = np.full((batch, n_out), 7, np.float32)           # every entry is written
    tn.sparse_input_product_kernel(h, codes, z, np.empty(n_in, np.int64))
    assert np.array_equal(z, tn.sparse_input_product_numpy(h, codes), equal_nan=True)
    finite = np.isfinite(h).all(axis=1)
    np.testing.assert_allclose(z[finite], (h[finite] @ codes.astype(np.float32)),
                               rtol=1e-5, atol=1e-5)


def test_gemm_path_takes_the_sparse_input_kernel_only_for_sparse_inputs_with_dropped_columns(
        monkeypatch):
    rng = np.random.default_rng(12)
    plan = tn.ternary_net_plan(random_ternary_layers(
        rng, [200, 64, 10], ["sigmoid", "identity"], density=0.6))
    calls = []
    kernel = tn.sparse_input_product_kernel
    monkeypatch.setattr(tn, "sparse_input_product_kernel",
                        lambda *a: (calls.append(a[0].shape), kernel(*a)))
    sparse = rng.random((16, 200)).astype(np.float32)
    sparse[rng.random(sparse.shape) > 0.15] = 0
    sparse[:, :50] = 0                             # MNIST-like: a border and sparse pixels
    dense_but_dropped = rng.random((16, 200)).astype(np.float32)
    dense_but_dropped[:, :50] = 0
    no_dropped_column = sparse.copy()
    no_dropped_column[0] = 0.5                     # sparse, yet no whole-batch-zero column
    for x, expected in ((sparse, [(16, 200)]), (dense_but_dropped, []), (no_dropped_column, [])):
        calls.clear()
        got = tn.ternary_net_forward(x, plan, path="gemm")
        assert calls == expected
        np.testing.assert_allclose(got, tn.ternary_net_forward_numpy(x, plan), rtol=1e-5,
                                   atol=1e-6)
    # no dropped column: the twin's own BLAS call, bit for bit, sparse or not
    assert np.array_equal(tn.ternary_net_forward(no_dropped_column, plan, path="gemm"),
                          tn.ternary_net_forward_numpy(no_dropped_column, plan))


def test_gemm_path_is_bit_identical_to_the_twin_when_no_input_column_is_dropped():
    """No zero column: the gemm path makes the twin's own BLAS call on the same float32
    operands, so even through sigmoids and on non-dyadic inputs not a bit differs."""
    rng = np.random.default_rng(6)
    plan = tn.ternary_net_plan(random_ternary_layers(
        rng, [120, 64, 48, 10], ["sigmoid", "sigmoid", "identity"], density=0.6))
    x = rng.uniform(0.1, 1.0, (40, 120)).astype(np.float32)
    assert np.array_equal(tn.ternary_net_forward(x, plan, path="gemm"),
                          tn.ternary_net_forward_numpy(x, plan))


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("batch", [1, 16, 100])
def test_gemm_path_with_dropped_columns_is_bit_identical_on_dyadic_inputs(batch, sparse):
    """Dense kept columns go through BLAS, sparse ones (≤ SPARSE_INPUT_DENSITY nonzero)
    through the sparse-input kernel: either way every partial sum is exact."""
    rng = np.random.default_rng(7 + batch)
    plan = tn.ternary_net_plan(random_ternary_layers(rng, [60, 40, 30, 7], ["identity"] * 3,
                                                     dyadic=True, density=0.6))
    x = (rng.integers(-8, 9, (batch, 60)) / 8).astype(np.float32)
    if sparse:
        x[rng.random(x.shape) > 0.2] = 0
    x[:, ::3] = 0                                  # whole-batch zero columns: dropped
    assert np.array_equal(tn.ternary_net_forward(x, plan, path="gemm"),
                          tn.ternary_net_forward_numpy(x, plan))


def test_gemm_path_with_dropped_columns_is_within_the_stated_bound():
    rng = np.random.default_rng(8)
    layers = random_ternary_layers(rng, [300, 50], ["identity"], density=0.6)
    plan = tn.ternary_net_plan(layers)
    codes, scale, bias, _ = layers[0]
    for density in (1.0, 0.2):                     # BLAS on the kept columns; sparse kernel
        x = rng.random((32, 300)).astype(np.float32)
        x[rng.random(x.shape) > density] = 0
        x[:, rng.choice(300, 110, replace=False)] = 0
        got = tn.ternary_net_forward(x, plan, path="gemm")
        twin = tn.ternary_net_forward_numpy(x, plan)
        bound = 2 * 300 * EPS * scale * (np.abs(x) @ np.abs(codes).astype(np.float64))
        bound += 2 * EPS * (np.abs(twin) + np.abs(bias))
        assert np.all(np.abs(got.astype(np.float64) - twin) <= bound)


def test_auto_path_follows_batch_and_code_density_and_every_path_agrees():
    rng = np.random.default_rng(9)
    acts = ["sigmoid", "sigmoid", "identity"]
    dense = tn.ternary_net_plan(random_ternary_layers(rng, [100, 64, 48, 10], acts, density=0.6))
    sparse = tn.ternary_net_plan(random_ternary_layers(rng, [100, 64, 48, 10], acts, density=0.2))
    assert dense.nonzero_fraction > tn.GEMM_ABOVE_DENSITY > sparse.nonzero_fraction
    batches = (1, tn.GEMM_FROM_BATCH - 1, tn.GEMM_FROM_BATCH, tn.COLUMNS_FROM_BATCH, 100)
    lut = tn.ternary_lut.LUT_AVAILABLE                           # tests/test_ternary_lut.py
    small, eight = ("lut", "lut") if lut else ("rows", "gemm")
    assert [tn.choose_path(b, dense) for b in batches] == [small, small, eight, "gemm", "gemm"]
    assert [tn.choose_path(b, sparse) for b in batches] == \
        [small, small, eight, "columns", "columns"]
    x = rng.random((24, 100)).astype(np.float32)
    x[:, :30] = 0
    for plan in (dense, sparse):
        twin = tn.ternary_net_forward_numpy(x, plan)
        for path in [p for p in tn.PATHS if p != "lut" or tn.ternary_lut.LUT_AVAILABLE]:
            np.testing.assert_allclose(tn.ternary_net_forward(x, plan, path=path), twin,
                                       rtol=1e-5, atol=1e-5)
    assert tn.ternary_net_forward(x[:0], dense).shape == (0, 10)


def test_fused_net_keeps_no_float_weights_across_gemm_calls():
    """The gemm path's float32 expansion lives only inside the call: after it, the net
    (and its plan) holds int8 codes, index lists, biases and one scale a layer."""
    model = ternary_mlp()
    net = FusedTernaryNet.from_model(model)
    x = np.random.default_rng(10).random((32, 49)).astype(np.float32)
    # the first batch that takes gemm: above lut's range (AVX2 CPUs) and rows' range
    first_gemm = max(tn.GEMM_FROM_BATCH, tn.ternary_lut.LUT_BELOW_BATCH if tn.ternary_lut.LUT_AVAILABLE else 0)
    assert net.path_for(first_gemm) == "gemm"
    np.testing.assert_allclose(net.forward(x, path="gemm"), model.forward(x, training=False),
                               rtol=1e-5, atol=1e-5)
    # an MNIST-like sparse input with a zero border: layer 1 takes the sparse-input kernel
    sparse = x.copy()
    sparse[sparse < 0.8] = 0
    sparse[:, :10] = 0
    np.testing.assert_allclose(net.forward(sparse, path="gemm"),
                               model.forward(sparse, training=False), rtol=1e-5, atol=1e-5)
    floats = [v for v in list(vars(net).values()) + list(vars(net.plan).values())
              if isinstance(v, np.ndarray) and v.dtype.kind == "f"]
    n_layers = net.plan.n_layers
    assert sum(v.size for v in floats) == int(net.plan.sizes[1:].sum()) + n_layers
    assert net.plan.codes.dtype == np.int8


# -- gain rules ------------------------------------------------------------------------------------

def test_rounding_error_gain_lowers_the_measured_rounding_error_of_heavy_tailed_weights():
    """Laplace weights (like a pretrained RBM's): the chosen gain's mean squared error over
    many randomized roundings is far below that of the paper's g = max|W|."""
    rng = np.random.default_rng(4)
    W = rng.laplace(0, 0.1, (200, 100))
    grid = PowerOfTwoGrid.parse("2^0")
    g = rounding_error_gain(W, grid)
    assert 0 < g < np.abs(W).max()

    def measured(gain):
        draws = [gain * R.randomized_round(W / gain, grid, rng) for _ in range(30)]
        return np.mean([((W - d) ** 2).mean() for d in draws])
    assert measured(g) < 0.3 * measured(np.abs(W).max())


def test_discretize_with_the_mse_gain_rule_sets_each_layers_gain_and_clips():
    float_model = md.Sequential([md.Dense(49, 30), md.Sigmoid(), md.Dense(30, 5)], seed=1)
    mse = discretize(float_model, "2^0", rng=0, gain="mse")
    for old, new in zip(float_model.layers, mse.layers):
        if isinstance(new, DiscreteDense):
            assert new.gain == pytest.approx(rounding_error_gain(old.params["W"], new.grid))
            assert np.abs(new.params["codes"]).max() <= 1
    with pytest.raises(ValueError, match="gain must be one of"):
        discretize(float_model, "2^0", gain="mean")
    with pytest.raises(ValueError, match="gain"):
        DiscreteDense.from_float(np.ones((3, 2)), gain=-1.0)


def test_cli_grid_gain_mse_gives_smaller_gains_than_the_papers_max(tmp_path):
    from minidnn.cli import main
    gains = {}
    for rule in ("max", "mse"):
        out = tmp_path / f"{rule}.h5"
        assert main(["train", "--quiet", "--epochs", "1", "--arch", "mlp:784-16-10:sigmoid",
                     "--seed", "3", "--momentum", "0", "--grid-step", "2^0",
                     "--grid-gain", rule, "--out", str(out)]) == 0
        gains[rule] = [l.gain for l in md.load(out).layers if isinstance(l, DiscreteDense)]
    assert all(0 < m < x for m, x in zip(gains["mse"], gains["max"]))
