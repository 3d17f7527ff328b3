"""Technique 1's small-batch path: subset-sum tables over code bytes (kernels/ternary_lut.py)."""
import numba
import numpy as np
import pytest

import minidnn as md
from minidnn.kernels import ternary_lut as tl
from minidnn.kernels import ternary_net as tn
from minidnn.quantization import FusedTernaryNet, discretize

EPS = 2.0 ** -24
needs_avx2 = pytest.mark.skipif(not tl.LUT_AVAILABLE, reason="the lut kernel needs AVX2")


def random_layers(rng, sizes, acts, max_code=1, density=0.5, dyadic=False):
    """Integer codes in [−max_code, max_code] (1: ternary, 4: Δ = 2^−2), a fraction
    ``density`` of them nonzero."""
    layers = []
    for (n_in, n_out), act in zip(zip(sizes, sizes[1:]), acts):
        magnitude = rng.integers(1, max_code + 1, (n_in, n_out))
        sign = rng.choice([-1, 1], (n_in, n_out))
        codes = (magnitude * sign * (rng.random((n_in, n_out)) < density)).astype(np.int8)
        if dyadic:
            scale, bias = 0.25 / max_code, rng.integers(-8, 9, n_out) / 8
        else:
            scale, bias = float(rng.uniform(0.05, 0.3)) / max_code, rng.normal(size=n_out)
        layers.append((codes, scale, bias.astype(np.float32), act))
    return layers


def kernel(x, plan):
    return tl.lut_net_forward(x, plan)


# -- the code bytes ---------------------------------------------------------------------------------

@pytest.mark.parametrize("max_code", [1, 4, 127])
def test_code_bytes_decode_back_to_the_codes(max_code):
    """Σ_q 2^q (p_q − m_q) over each byte's bits gives back every code, padding is 0."""
    rng = np.random.default_rng(max_code)
    codes = rng.integers(-max_code, max_code + 1, (31, 21)).astype(np.int8)
    planes = tl.code_bytes(codes)
    assert len(planes) == int(max_code).bit_length()
    decoded = np.zeros((33, 32), np.int64)
    for q, plane in zip(range(len(planes) - 1, -1, -1), planes):
        assert plane.shape == (11, 32) and plane.dtype == np.uint8 and plane.max() < 64
        for k in range(3):
            p, m = (plane >> k) & 1, (plane >> (3 + k)) & 1
            assert not np.any(p & m)                   # a code is never both +1 and −1
            decoded[k::3] += (p.astype(np.int64) - m) << q
    assert np.array_equal(decoded[:31, :21], codes)
    assert not decoded[31:].any() and not decoded[:, 21:].any()


def test_subset_sum_tables_hold_every_subset_sum():
    h = np.random.default_rng(0).random((2, 7)).astype(np.float32)
    t = tl.subset_sum_tables_numpy(h)
    hp = np.concatenate([h, np.zeros((2, 2), np.float32)], axis=1)
    for g in range(3):
        for m in range(8):
            want = sum(np.float64(hp[:, 3 * g + k]) * ((m >> k) & 1) for k in range(3))
            np.testing.assert_allclose(t[:, g, m], want, rtol=2 * EPS)


# -- the kernel against its twin and the float simulation ----------------------------------------

@needs_avx2
@pytest.mark.parametrize("max_code", [1, 4])
@pytest.mark.parametrize("batch", [1, 2, 3, 4, 5, 6, 7])
def test_kernel_equals_its_twin_bit_for_bit(max_code, batch):
    rng = np.random.default_rng(10 * batch + max_code)
    layers = random_layers(rng, [61, 40, 33, 7], ["sigmoid", "relu", "identity"], max_code)
    plan = tl.lut_plan(layers)
    x = rng.random((batch, 61)).astype(np.float32)
    x[:, rng.random(61) < 0.6] = 0                  # zero inputs: whole groups skipped
    x[0, :] = 0 if batch > 1 else x[0, :]           # an all-zero sample
    assert np.array_equal(kernel(x, plan), tl.lut_net_forward_numpy(x, plan))


@pytest.mark.parametrize("max_code", [1, 4])
def test_twin_is_bit_identical_to_the_float_simulation_on_dyadic_inputs(max_code):
    """Identity activations, inputs m/8, scale 2^−2/max_code, biases m/8: every partial sum
    is exact in float32, so neither the tables nor the order can change a bit."""
    rng = np.random.default_rng(20 + max_code)
    layers = random_layers(rng, [60, 40, 30, 7], ["identity"] * 3, max_code, dyadic=True)
    plan = tl.lut_plan(layers)
    x = (rng.integers(-8, 9, (5, 60)) / 8).astype(np.float32)
    x[:, ::4] = 0
    want = tl.float_simulation_numpy(x, layers)
    assert np.array_equal(tl.lut_net_forward_numpy(x, plan), want)
    if tl.LUT_AVAILABLE:
        assert np.array_equal(kernel(x, plan), want)


@pytest.mark.parametrize("max_code", [1, 4])
def test_one_layer_is_within_the_stated_summation_order_bound(max_code):
    """|Δz| ≤ 2·n_in·ε·s·Σ_i|h_i||c_i| (+ the rounding of the scale and bias), per output."""
    rng = np.random.default_rng(30 + max_code)
    layers = random_layers(rng, [300, 50], ["identity"], max_code, density=0.6)
    plan = tl.lut_plan(layers)
    x = rng.random((7, 300)).astype(np.float32)
    codes, scale, bias, _ = layers[0]
    want = tl.float_simulation_numpy(x, layers).astype(np.float64)
    bound = 2 * 300 * EPS * scale * (np.abs(x) @ np.abs(codes).astype(np.float64))
    bound += 2 * EPS * (np.abs(want) + np.abs(bias))
    got = [tl.lut_net_forward_numpy(x, plan)] + ([kernel(x, plan)] if tl.LUT_AVAILABLE else [])
    for g in got:
        assert np.all(np.abs(g - want) <= bound)
    assert np.abs(got[0] - want).max() > 0         # the order does differ: the bound is used


@pytest.mark.parametrize("max_code", [1, 4])
def test_all_zero_codes_and_all_zero_inputs_give_the_bias_exactly(max_code):
    """An all-zero layer (every output row empty), empty output rows inside a layer, and an
    all-zero input: the sum is an exact 0 and the layer gives f(b)."""
    rng = np.random.default_rng(40 + max_code)
    layers = random_layers(rng, [20, 17, 9], ["sigmoid", "identity"], max_code)
    codes0 = layers[0][0].copy()
    codes0[:, [0, 5, 16]] = 0                       # empty output rows
    layers[0] = (codes0, *layers[0][1:])
    layers[1] = (np.zeros_like(layers[1][0]), *layers[1][1:])       # an all-zero layer
    plan = tl.lut_plan(layers)
    x = rng.random((3, 20)).astype(np.float32)
    x[1] = 0
    twin = tl.lut_net_forward_numpy(x, plan)
    assert np.array_equal(twin, np.broadcast_to(layers[1][2], (3, 9)))   # exactly b
    first = tl.lut_plan(layers[:1])
    sim = tl.float_simulation_numpy(x, layers[:1])
    np.testing.assert_allclose(tl.lut_net_forward_numpy(x, first), sim, rtol=1e-6, atol=1e-6)
    assert np.array_equal(tl.lut_net_forward_numpy(x, first)[:, [0, 5, 16]], sim[:, [0, 5, 16]])
    assert np.array_equal(tl.lut_net_forward_numpy(x[1:2], first), sim[1:2])   # σ(b)
    if tl.LUT_AVAILABLE:
        assert np.array_equal(kernel(x, plan), twin)
        assert np.array_equal(kernel(x, first), tl.lut_net_forward_numpy(x, first))


@needs_avx2
@pytest.mark.parametrize("density", [0.25, 0.575])
def test_both_study_models_shapes_match_the_float_simulation(density):
    """784-300-300-300-300-10 with σ, at the two study models' code densities (paper's gain
    25 %, rounding-error gain 57.5 %), MNIST-like inputs (80 % exact zeros), batches 1–7."""
    rng = np.random.default_rng(50)
    sizes = [784, 300, 300, 300, 300, 10]
    layers = random_layers(rng, sizes, ["sigmoid"] * 4 + ["identity"], density=density)
    ternary = tn.ternary_net_plan(layers)
    plan = tl.lut_plan_for(ternary)
    x = rng.random((7, 784)).astype(np.float32) * (rng.random((7, 784)) < 0.2)
    want = tn.ternary_net_forward_numpy(x, ternary)
    for batch in range(1, 8):
        got = tn.ternary_net_forward(x[:batch], ternary, path="lut")
        assert np.array_equal(got, kernel(x[:batch], plan))
        np.testing.assert_allclose(got, want[:batch], rtol=1e-5, atol=1e-5)
    assert np.array_equal(tl.lut_net_forward_numpy(x[:2], plan), kernel(x[:2], plan))
    # the code bytes: ⌈n_in/3⌉ × (n_out padded to 16) a layer, one plane (ternary); the
    # biases and scales are the TernaryNetPlan's own arrays, not copies
    assert plan.idx.nbytes == 262 * 304 + 3 * 100 * 304 + 100 * 16 == 172_448
    assert plan.bias is ternary.bias and plan.scales is ternary.scales
    assert tl.lut_plan_for(ternary) is plan                      # built once
    assert kernel(x[:0], plan).shape == (0, 10)


# -- path choice and the model-level API ----------------------------------------------------------

def test_choose_path_takes_lut_below_the_gemm_batch_where_avx2_is_there(monkeypatch):
    rng = np.random.default_rng(60)
    plan = tn.ternary_net_plan(random_layers(rng, [30, 20, 5], ["sigmoid", "identity"]))
    assert tn.GEMM_FROM_BATCH < tl.LUT_BELOW_BATCH < tn.COLUMNS_FROM_BATCH
    small = ["lut" if tl.LUT_AVAILABLE else "rows"] * (tn.GEMM_FROM_BATCH - 1)
    assert [tn.choose_path(b, plan) for b in range(1, tn.GEMM_FROM_BATCH)] == small
    assert tn.choose_path(tl.LUT_BELOW_BATCH - 1, plan) == ("lut" if tl.LUT_AVAILABLE else "gemm")
    assert tn.choose_path(tl.LUT_BELOW_BATCH, plan) == "gemm"
    monkeypatch.setattr(tl, "LUT_AVAILABLE", False)
    assert tn.choose_path(1, plan) == "rows"
    assert tn.choose_path(tn.GEMM_FROM_BATCH, plan) == "gemm"
    with pytest.raises(RuntimeError, match="AVX2"):
        tn.ternary_net_forward(np.zeros((1, 30), np.float32), plan, path="lut")


def test_avx2_check_follows_numbas_target(monkeypatch):
    monkeypatch.setattr(numba.config, "CPU_FEATURES", "+sse2,-avx2")
    assert not tl._avx2_target()
    monkeypatch.setattr(numba.config, "CPU_FEATURES", "+avx,+avx2,+fma")
    assert tl._avx2_target()
    monkeypatch.setattr(numba.config, "CPU_FEATURES", None)
    monkeypatch.setattr(numba.config, "CPU_NAME", "generic")
    assert not tl._avx2_target()
    monkeypatch.setattr(numba.config, "CPU_NAME", None)
    monkeypatch.setattr(numba.config, "DISABLE_JIT", True)
    assert not tl._avx2_target()


@needs_avx2
@pytest.mark.parametrize("batch", [1, 4, 7, 15])
def test_fused_net_takes_the_lut_path_and_equals_the_model_forward(batch):
    rng = np.random.default_rng(70)
    layers = [md.Flatten()]
    sizes = [49, 30, 20, 5]
    for k, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
        dense = md.Dense(n_in, n_out)
        dense.set_weights(rng.normal(0, 1 / np.sqrt(n_in), (n_in, n_out)), rng.normal(size=n_out))
        layers += [dense] + ([md.Sigmoid()] if k < len(sizes) - 2 else [])
    model = discretize(md.Sequential(layers, seed=None), "2^0", rng=0)
    net = FusedTernaryNet.from_model(model)
    assert "_lut_plan" in vars(net.plan)             # built with the net, not on first call
    assert net.path_for(batch) == "lut"
    x = rng.random((batch, 1, 7, 7)).astype(np.float32)
    np.testing.assert_allclose(net.forward(x), model.forward(x, training=False),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(net.forward(x), net.forward(x, path="rows"), rtol=1e-5, atol=1e-6)


def test_lut_plan_refuses_bad_layers():
    rng = np.random.default_rng(80)
    good = random_layers(rng, [5, 4, 3], ["sigmoid", "identity"])
    with pytest.raises(ValueError, match="do not follow"):
        tl.lut_plan([good[0], good[0]])
    with pytest.raises(ValueError, match="integers"):
        tl.lut_plan([(good[0][0] * 0.5, 0.1, None, "sigmoid")])
    with pytest.raises(ValueError, match="integers"):
        tl.lut_plan([(good[0][0].astype(np.int16) * 200, 0.1, None, "sigmoid")])
    with pytest.raises(ValueError, match="activation"):
        tl.lut_plan([(good[0][0], 0.1, None, "tanh")])
    with pytest.raises(ValueError, match="scale"):
        tl.lut_plan([(good[0][0], -1.0, None, "sigmoid")])
    with pytest.raises(ValueError, match="bias"):
        tl.lut_plan([(good[0][0], 0.1, np.zeros(3), "sigmoid")])
    with pytest.raises(ValueError, match="at least one layer"):
        tl.lut_plan([])
    if tl.LUT_AVAILABLE:
        with pytest.raises(ValueError, match=r"shape \(batch, 5\)"):
            tl.lut_net_forward(np.zeros((2, 4), np.float32), tl.lut_plan(good))
