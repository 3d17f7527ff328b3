"""The layer contract, held to finite differences and to the layers' own math.

Gradients are checked in float64 (central differences, tests/gradcheck.py) on
small shapes drawn by hypothesis: batch 1-5, features 1-6.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from minidnn.layers import (LAYER_TYPES, BatchNorm, Dense, Dropout, Flatten, Identity, ReLU,
                            Sigmoid, Tanh, layer_from_config)
from minidnn.model import Sequential
from tests.gradcheck import check_layer_gradients, numerical_grad

batches = st.integers(1, 5)
features = st.integers(1, 6)
spatial = st.integers(1, 3)
seeds = st.integers(0, 2**32 - 1)
small = settings(max_examples=20, deadline=None)


def _float64(layer):
    return layer.cast(np.float64)


# -- finite-difference gradient checks ---------------------------------------

@small
@given(batch=batches, n_in=features, n_out=features, bias=st.booleans(), seed=seeds)
def test_dense_gradients_match_finite_differences(batch, n_in, n_out, bias, seed):
    rng = np.random.default_rng(seed)
    layer = _float64(Dense(n_in, n_out, bias=bias, rng=rng))
    if bias:  # a zero bias would hide a wrong broadcast in the bias gradient
        layer.params["b"] = rng.standard_normal(n_out)
    assert ("b" in layer.params) == bias
    check_layer_gradients(layer, rng.standard_normal((batch, n_in)), rng)


@small
@given(batch=batches, n=features, seed=seeds)
def test_relu_gradient_matches_finite_differences_away_from_the_kink(batch, n, seed):
    rng = np.random.default_rng(seed)
    # |x| >= 0.1 >> the 1e-6 difference step, so no probe crosses 0
    x = rng.uniform(0.1, 2.0, (batch, n)) * rng.choice([-1.0, 1.0], (batch, n))
    check_layer_gradients(ReLU(), x, rng)


@small
@given(batch=batches, n=features, seed=seeds,
       layer_type=st.sampled_from([Sigmoid, Tanh, Identity]))
def test_smooth_activation_gradients_match_finite_differences(batch, n, seed, layer_type):
    rng = np.random.default_rng(seed)
    check_layer_gradients(layer_type(), 3 * rng.standard_normal((batch, n)), rng)


@small
@given(batch=batches, c=features, h=spatial, w=spatial, seed=seeds)
def test_flatten_gradient_is_the_reshaped_output_gradient(batch, c, h, w, seed):
    rng = np.random.default_rng(seed)
    layer = Flatten()
    x = rng.standard_normal((batch, c, h, w))
    assert layer.forward(x).shape == (batch, c * h * w)
    assert layer.output_shape((c, h, w)) == (c * h * w,)
    check_layer_gradients(layer, x, rng)


def _batchnorm_with_random_state(c, rng):
    layer = _float64(BatchNorm(c))
    layer.params["gamma"] = rng.uniform(0.5, 2.0, c)
    layer.params["beta"] = rng.standard_normal(c)
    layer.buffers["running_mean"] = rng.standard_normal(c)
    layer.buffers["running_var"] = rng.uniform(0.5, 2.0, c)
    return layer


@small
@given(batch=st.integers(2, 5), c=features, seed=seeds, training=st.booleans())
def test_batchnorm_dense_gradients_match_finite_differences(batch, c, seed, training):
    rng = np.random.default_rng(seed)
    layer = _batchnorm_with_random_state(c, rng)
    x = 1.0 + 2.0 * rng.standard_normal((batch, c))
    check_layer_gradients(layer, x, rng, training=training, rtol=1e-4, atol=1e-6)


@small
@given(batch=batches, c=st.integers(1, 4), h=spatial, w=spatial, seed=seeds,
       training=st.booleans())
def test_batchnorm_conv_gradients_match_finite_differences(batch, c, h, w, seed, training):
    # training needs two or more values per channel (one has no batch variance; refused)
    assume(not training or batch * h * w > 1)
    rng = np.random.default_rng(seed)
    layer = _batchnorm_with_random_state(c, rng)
    x = 1.0 + 2.0 * rng.standard_normal((batch, c, h, w))
    check_layer_gradients(layer, x, rng, training=training, rtol=1e-4, atol=1e-6)


def _with_fixed_mask(layer: Dropout) -> Dropout:
    """Rewind the layer's Generator before every forward, so every call of the
    finite-difference loop draws the same mask."""
    state = layer.rng.bit_generator.state
    unpatched = layer.forward

    def forward(x, training=False):
        layer.rng.bit_generator.state = state
        return unpatched(x, training)

    layer.forward = forward
    return layer


@small
@given(batch=batches, n=features, seed=seeds, rate=st.sampled_from([0.0, 0.2, 0.5, 0.9]))
def test_dropout_gradient_with_a_fixed_mask_matches_finite_differences(batch, n, seed, rate):
    rng = np.random.default_rng(seed)
    layer = _with_fixed_mask(_float64(Dropout(rate, rng=seed)))
    check_layer_gradients(layer, rng.standard_normal((batch, n)), rng, training=True)


@small
@given(batch=batches, n_in=features, hidden=features, seed=seeds)
def test_sequential_backward_chains_the_layer_gradients(batch, n_in, hidden, seed):
    rng = np.random.default_rng(seed)
    model = Sequential([Dense(n_in, hidden), Tanh(), BatchNorm(hidden), Dense(hidden, 3),
                        Sigmoid()], seed=seed, dtype="float64")
    x = rng.standard_normal((batch, n_in))
    r = rng.standard_normal((batch, 3))
    model.forward(x, training=False)
    dx = model.backward(r)
    numeric = numerical_grad(lambda: float((model.forward(x) * r).sum()), x)
    np.testing.assert_allclose(dx, numeric, rtol=1e-5, atol=1e-7)


# -- activations at extreme inputs ---------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_is_safe_at_large_magnitudes(dtype):
    x = np.array([[-1000.0, -50.0, 0.0, 50.0, 1000.0]], dtype)
    # exp(-1000) rounding to 0 (underflow) is the correct answer, not a hazard;
    # overflow, invalid and divide-by-zero must not happen.
    with np.errstate(all="raise", under="ignore"):
        layer = Sigmoid()
        y = layer.forward(x)
        dx = layer.backward(np.ones_like(x))
    assert y.dtype == dtype and np.all(np.isfinite(y)) and np.all(np.isfinite(dx))
    assert y[0, 0] == 0.0 and y[0, -1] == 1.0 and y[0, 2] == 0.5
    np.testing.assert_allclose(y[0, 1] + y[0, 3], 1.0, rtol=1e-6)


# -- properties ----------------------------------------------------------------

@pytest.mark.parametrize("shape", [(64, 5), (16, 3, 4, 4)])
def test_batchnorm_training_output_has_zero_mean_and_unit_variance_per_feature(shape):
    rng = np.random.default_rng(0)
    scale = np.array([0.5, 2.0, 10.0, 1.0, 3.0])[:shape[1]].reshape((1, -1) + (1,) * (len(shape) - 2))
    x = (5.0 + scale * rng.standard_normal(shape)).astype(np.float32)
    layer = BatchNorm(shape[1])
    y = layer.forward(x, training=True).astype(np.float64)
    axes = (0,) if len(shape) == 2 else (0, 2, 3)
    np.testing.assert_allclose(y.mean(axis=axes), 0.0, atol=1e-5)
    # var(y) = var(x) / (var(x) + eps): below 1 by at most eps / var(x)
    var_x = x.astype(np.float64).var(axis=axes)
    np.testing.assert_allclose(y.var(axis=axes), var_x / (var_x + layer.eps), rtol=1e-4)
    np.testing.assert_allclose(y.var(axis=axes), 1.0, atol=1e-4)


@pytest.mark.parametrize("shape", [(8, 3), (4, 3, 2, 5)])
def test_batchnorm_running_stats_move_toward_the_batch_stats(shape):
    rng = np.random.default_rng(1)
    x = 3.0 + 2.0 * rng.standard_normal(shape)
    layer = _float64(BatchNorm(shape[1], momentum=0.1))
    axes = (0,) if len(shape) == 2 else (0, 2, 3)
    batch_mean = x.mean(axis=axes)
    n = x.size // shape[1]
    unbiased_var = x.var(axis=axes) * n / (n - 1)
    layer.forward(x, training=True)
    np.testing.assert_allclose(layer.buffers["running_mean"], 0.1 * batch_mean, rtol=1e-12)
    np.testing.assert_allclose(layer.buffers["running_var"], 0.9 + 0.1 * unbiased_var, rtol=1e-12)
    for _ in range(300):  # geometric convergence: 0.9**300 ~ 2e-14
        layer.forward(x, training=True)
    np.testing.assert_allclose(layer.buffers["running_mean"], batch_mean, rtol=1e-9)
    np.testing.assert_allclose(layer.buffers["running_var"], unbiased_var, rtol=1e-9)


@pytest.mark.parametrize("shape", [(6, 4), (3, 4, 2, 2)])
def test_batchnorm_eval_mode_uses_the_running_stats_and_leaves_them_alone(shape):
    rng = np.random.default_rng(2)
    layer = _batchnorm_with_random_state(shape[1], rng)
    before = {k: v.copy() for k, v in layer.buffers.items()}
    x = rng.standard_normal(shape)
    y = layer.forward(x, training=False)
    pf = (lambda v: v) if len(shape) == 2 else (lambda v: v.reshape(1, -1, 1, 1))
    expected = (pf(layer.params["gamma"]) * (x - pf(before["running_mean"]))
                / np.sqrt(pf(before["running_var"]) + layer.eps) + pf(layer.params["beta"]))
    np.testing.assert_allclose(y, expected, rtol=1e-12)
    for key in before:
        np.testing.assert_array_equal(layer.buffers[key], before[key])


def test_batchnorm_rejects_inputs_with_the_wrong_feature_count():
    with pytest.raises(ValueError, match=r"\(batch, 4\)"):
        BatchNorm(4).forward(np.zeros((2, 3), np.float32), training=True)
    with pytest.raises(ValueError, match=r"\(batch, 4, H, W\)"):
        BatchNorm(4).forward(np.zeros((2, 4, 3)), training=True)


def test_dropout_in_eval_mode_is_exactly_the_identity():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((7, 11)).astype(np.float32)
    layer = Dropout(0.5, rng=0)
    y = layer.forward(x, training=False)
    assert y.dtype == x.dtype
    np.testing.assert_array_equal(y, x)
    g = rng.standard_normal(x.shape).astype(np.float32)
    np.testing.assert_array_equal(layer.backward(g), g)


def test_dropout_with_rate_zero_is_the_identity_in_training():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(Dropout(0.0, rng=0).forward(x, training=True), x)


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.8])
def test_dropout_keeps_the_expected_scale_and_zeros_about_rate_of_the_units(rate):
    n = 1_000_000
    x = np.random.default_rng(4).uniform(1.0, 2.0, (1000, 1000)).astype(np.float64)
    layer = _float64(Dropout(rate, rng=5))
    y = layer.forward(x, training=True)
    keep = 1.0 - rate
    dropped = y == 0
    # survivors are scaled by exactly 1/(1-rate)
    np.testing.assert_allclose(y[~dropped], x[~dropped] / keep, rtol=1e-12)
    # fraction dropped ~ Binomial(n, rate)/n: 6 standard deviations
    sigma_frac = np.sqrt(rate * keep / n)
    assert abs(dropped.mean() - rate) < 6 * sigma_frac
    # output mean: each unit x·m/keep has variance E[x²]/keep - E[x]²
    sigma_mean = np.sqrt(((x ** 2).mean() / keep - x.mean() ** 2) / n)
    assert abs(y.mean() - x.mean()) < 6 * sigma_mean
    # backward uses the same mask
    np.testing.assert_array_equal(layer.backward(np.ones_like(x)) == 0, dropped)


def test_dropout_masks_are_reproducible_from_the_seed():
    x = np.ones((50, 50), np.float32)
    a = Dropout(0.5, rng=7).forward(x, training=True)
    b = Dropout(0.5, rng=7).forward(x, training=True)
    c = Dropout(0.5, rng=8).forward(x, training=True)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5])
def test_dropout_rejects_rates_outside_zero_to_one(rate):
    with pytest.raises(ValueError, match="rate"):
        Dropout(rate)


def test_dense_rejects_wrong_input_shapes_naming_the_expected_shape():
    layer = Dense(784, 500)
    with pytest.raises(ValueError, match=r"expects input of shape \(batch, 784\).*\(32, 28, 28\)"):
        layer.forward(np.zeros((32, 28, 28), np.float32))
    with pytest.raises(ValueError, match=r"\(batch, 784\).*\(32, 783\)"):
        layer.forward(np.zeros((32, 783), np.float32))
    with pytest.raises(ValueError, match=r"\(batch, 784\)"):
        layer.forward(np.zeros(784, np.float32))


def test_dense_rejects_bad_sizes_and_init():
    with pytest.raises(ValueError):
        Dense(0, 3)
    with pytest.raises(ValueError):
        Dense(3, -1)
    with pytest.raises(ValueError, match="init"):
        Dense(3, 2, init="uniform")


def test_dense_forward_is_x_times_w_plus_b():
    rng = np.random.default_rng(6)
    layer = _float64(Dense(4, 3, rng=0))
    W, b = rng.standard_normal((4, 3)), rng.standard_normal(3)
    layer.set_weights(W, b)
    x = rng.standard_normal((5, 4))
    np.testing.assert_allclose(layer.forward(x), x @ W + b, rtol=1e-12)
    with pytest.raises(ValueError, match="W must have shape"):
        layer.set_weights(W.T)


def test_dense_initialisations_have_the_documented_scale():
    n_in, n_out = 400, 300
    glorot = Dense(n_in, n_out, rng=0).params["W"]
    assert np.abs(glorot).max() <= np.sqrt(6.0 / (n_in + n_out))
    np.testing.assert_allclose(glorot.std(), np.sqrt(2.0 / (n_in + n_out)), rtol=0.02)
    he = Dense(n_in, n_out, init="he", rng=0).params["W"]
    np.testing.assert_allclose(he.std(), np.sqrt(2.0 / n_in), rtol=0.02)
    assert not Dense(n_in, n_out, init="zeros").params["W"].any()


ALL_LAYERS = [
    Dense(5, 3), Dense(5, 3, bias=False, init="he", name="head"),
    ReLU(), Sigmoid(name="gate"), Tanh(), Identity(), Flatten(),
    Dropout(0.3), BatchNorm(4, momentum=0.2, eps=1e-3, name="bn"),
]


@pytest.mark.parametrize("layer", ALL_LAYERS, ids=lambda l: repr(l))
def test_config_round_trip_rebuilds_every_layer(layer):
    rebuilt = type(layer).from_config(layer.get_config())
    assert type(rebuilt) is type(layer)
    assert rebuilt.get_config() == layer.get_config()
    assert {k: v.shape for k, v in rebuilt.params.items()} == \
        {k: v.shape for k, v in layer.params.items()}
    assert set(rebuilt.buffers) == set(layer.buffers)
    by_name = layer_from_config(type(layer).__name__, layer.get_config())
    assert by_name.get_config() == layer.get_config()


def test_every_registered_core_layer_is_covered_by_the_round_trip():
    core = {"Dense", "ReLU", "Sigmoid", "Tanh", "Identity", "Flatten", "Dropout", "BatchNorm"}
    assert core <= set(LAYER_TYPES)
    assert core <= {type(l).__name__ for l in ALL_LAYERS}
    with pytest.raises(ValueError, match="unknown layer type"):
        layer_from_config("NoSuchLayer", {})


def test_cast_converts_params_grads_and_buffers():
    layer = BatchNorm(3).cast(np.float64)
    for store in (layer.params, layer.grads, layer.buffers):
        assert all(v.dtype == np.float64 for v in store.values())
    assert set(layer.params) == set(layer.grads)


# -- Sequential ----------------------------------------------------------------

def _mlp(seed=0, dtype="float32"):
    return Sequential([Dense(4, 6), ReLU(), BatchNorm(6), Dropout(0.5), Dense(6, 3, name="out")],
                      seed=seed, dtype=dtype)


def test_sequential_names_unnamed_layers_by_type_and_position():
    model = _mlp()
    assert [l.name for l in model.layers] == ["dense_0", "relu_1", "batchnorm_2", "dropout_3", "out"]
    assert model.layer("out") is model.layers[-1]
    with pytest.raises(KeyError):
        model.layer("nope")


def test_sequential_rejects_duplicate_names():
    with pytest.raises(ValueError, match="'x'"):
        Sequential([Dense(2, 2, name="x"), Dense(2, 2, name="x")])
    # an explicit name that collides with an automatic one
    with pytest.raises(ValueError, match="dense_0"):
        Sequential([Dense(2, 2), Dense(2, 2, name="dense_0")])


def test_sequential_rejects_empty_and_non_layers():
    with pytest.raises(ValueError):
        Sequential([])
    with pytest.raises(TypeError, match="not a Layer"):
        Sequential([Dense(2, 2), lambda x: x])


def test_same_seed_gives_identical_params_and_different_seeds_differ():
    a, b, c = _mlp(seed=11), _mlp(seed=11), _mlp(seed=12)
    names = [n for n, _ in a.named_params()]
    assert names == [n for n, _ in b.named_params()]
    for (_, pa), (_, pb) in zip(a.named_params(), b.named_params()):
        np.testing.assert_array_equal(pa, pb)
    assert not np.array_equal(a.layer("dense_0").params["W"], c.layer("dense_0").params["W"])
    # and the dropout masks are seeded too
    x = np.ones((8, 4), np.float32)
    np.testing.assert_array_equal(a.forward(x, training=True), b.forward(x, training=True))


def test_sequential_float64_runs_in_float64():
    model = _mlp(dtype="float64")
    assert all(v.dtype == np.float64 for _, v in model.named_params())
    y = model.forward(np.ones((5, 4), np.float32), training=True)
    assert y.dtype == np.float64
    dx = model.backward(np.ones_like(y))
    assert dx.dtype == np.float64 and dx.shape == (5, 4)
    assert all(layer.grads[k].dtype == np.float64 for layer in model.layers for k in layer.grads)


def test_summary_mentions_every_layer_and_the_parameter_total():
    model = _mlp()
    expected_total = 4 * 6 + 6 + 2 * 6 + 6 * 3 + 3
    assert model.n_params == expected_total
    text = model.summary(input_shape=(4,))
    for layer in model.layers:
        assert layer.name in text and type(layer).__name__ in text
    assert f"total parameters: {expected_total:,}" in text
    assert "(batch, 3)" in text


def test_sequential_config_round_trip_rebuilds_the_architecture():
    model = _mlp()
    rebuilt = Sequential.from_config(model.get_config())
    assert rebuilt.get_config() == model.get_config()
