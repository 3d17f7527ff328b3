"""Technique 1: power-of-two grids, randomized rounding, discrete Dense layers, files, CLI."""
import h5py
import numpy as np
import pytest

import minidnn as md
from minidnn.cli import main
from minidnn.io import ModelFileError
from minidnn.kernels import quantized_matmul as qmm
from minidnn.kernels import rounding as R
from minidnn.quantization import (DiscreteDense, PowerOfTwoGrid, ShadowDiscreteDense,
                                  discretize, export_discrete, weight_storage_bytes)

from .gradcheck import numerical_grad

STEPS = ["2^0", "2^-1", "2^-2", "2^-3", "2^-4", "2^-6"]


# -- the grid ---------------------------------------------------------------------------------

def test_grid_values_codes_and_bits():
    ternary = PowerOfTwoGrid.parse("2^0")
    assert ternary.values().tolist() == [-1, 0, 1] and ternary.bits == 2 and ternary.is_ternary
    half = PowerOfTwoGrid.parse("1/2")
    assert half.values().tolist() == [-1, -0.5, 0, 0.5, 1] and half.bits == 3
    assert [PowerOfTwoGrid.parse(s).bits for s in STEPS] == [2, 3, 4, 5, 6, 8]
    for spelling in ("2^-2", "2**-2", "0.25", "1/4", 0.25):
        assert PowerOfTwoGrid.parse(spelling) == PowerOfTwoGrid(2)
    grid = PowerOfTwoGrid(3)
    codes = np.arange(-8, 9, dtype=np.int8)
    assert np.array_equal(grid.encode(grid.decode(codes)), codes)
    assert PowerOfTwoGrid.from_config(grid.get_config()) == grid


@pytest.mark.parametrize("bad", ["0.3", "3/4", "2", "0", "-0.5", "2^-7", "two", 1.5])
def test_a_step_that_is_not_a_power_of_two_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="power of two|2\\^-2|int8"):
        PowerOfTwoGrid.parse(bad)
    with pytest.raises(ValueError):
        DiscreteDense(4, 3, grid=bad)


def test_encode_refuses_values_between_grid_points():
    with pytest.raises(ValueError, match="round them first"):
        PowerOfTwoGrid(1).encode([0.25])


@pytest.mark.parametrize("step", STEPS)
def test_packing_round_trips_exactly(step):
    grid = PowerOfTwoGrid.parse(step)
    codes = np.random.default_rng(0).integers(-grid.max_code, grid.max_code + 1,
                                              (7, 5)).astype(np.int8)
    packed = grid.pack(codes)
    assert packed.dtype == np.uint8 and packed.size == (35 * grid.bits + 7) // 8
    assert np.array_equal(grid.unpack(packed, (7, 5)), codes)


# -- randomized rounding -------------------------------------------------------------------------

@pytest.mark.parametrize("step", ["2^0", "2^-2"])
def test_randomized_rounding_is_unbiased(step):
    """Mean of N roundings of x is x within 5 standard errors, σ = Δ·sqrt(f(1 − f)/N) ≤ Δ/(2√N)."""
    grid = PowerOfTwoGrid.parse(step)
    x = np.random.default_rng(1).uniform(-1, 1, 40)
    n = 20000
    codes = R.randomized_round(np.repeat(x[None, :], n, axis=0), grid, np.random.default_rng(2))
    means = (codes.astype(np.float64) * grid.step).mean(axis=0)
    frac = x / grid.step - np.floor(x / grid.step)
    stderr = grid.step * np.sqrt(frac * (1 - frac) / n)
    assert np.all(np.abs(means - x) <= 5 * stderr + 1e-7)


def test_randomized_rounding_lands_on_neighbouring_grid_points_and_clips():
    grid = PowerOfTwoGrid(2)
    x = np.random.default_rng(3).uniform(-1.5, 1.5, 10000)
    codes = R.randomized_round(x, grid, np.random.default_rng(4))
    assert codes.dtype == np.int8 and codes.min() >= -4 and codes.max() <= 4
    clipped = np.clip(x, -1, 1)
    assert np.all(np.abs(codes * grid.step - clipped) < grid.step)
    assert np.all(codes[x >= 1] == 4) and np.all(codes[x <= -1] == -4)


@pytest.mark.parametrize("step", STEPS)
def test_randomized_rounding_never_moves_a_grid_point(step):
    grid = PowerOfTwoGrid.parse(step)
    values = np.tile(grid.values(), 50)
    codes = R.randomized_round(values, grid, np.random.default_rng(5))
    assert np.array_equal(codes, grid.encode(values))
    before = codes.copy()
    R.randomized_update(codes, np.zeros(codes.shape, np.float32), grid, np.random.default_rng(6))
    assert np.array_equal(codes, before)


def test_randomized_rounding_is_reproducible_from_a_seed():
    grid = PowerOfTwoGrid(1)
    x = np.random.default_rng(7).uniform(-1, 1, 1000)
    a = R.randomized_round(x, grid, np.random.default_rng(8))
    b = R.randomized_round(x, grid, np.random.default_rng(8))
    c = R.randomized_round(x, grid, np.random.default_rng(9))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_round_to_nearest_picks_the_closest_point_ties_to_even():
    grid = PowerOfTwoGrid(1)
    codes = R.round_to_nearest([0.2, 0.26, -0.74, 0.25, 0.75, 3.0, -7.0], grid)
    assert codes.tolist() == [0, 1, -1, 0, 2, 2, -2]


def test_rounding_kernels_match_their_numpy_twins():
    rng = np.random.default_rng(10)
    scaled = rng.uniform(-70, 70, 5000)
    key = np.uint64(rng.integers(0, 2**64, dtype=np.uint64))
    for n in (1, 4, 64):
        out = np.empty(scaled.size, np.int8)
        R.randomized_round_kernel(scaled, key, n, out)
        assert np.array_equal(out, R.randomized_round_numpy(scaled, key, n))
        R.nearest_round_kernel(scaled, n, out)
        assert np.array_equal(out, R.nearest_round_numpy(scaled, n))
        codes = rng.integers(-n, n + 1, 5000).astype(np.int8)
        delta = rng.standard_normal(5000).astype(np.float32) * 0.7
        a, b = codes.copy(), codes.copy()
        R.randomized_update_kernel(a, delta, 2.0, key, n)
        R.randomized_update_numpy(b, delta, 2.0, key, n)
        assert np.array_equal(a, b)
        R.nearest_update_kernel(a, delta, 2.0, n)
        R.nearest_update_numpy(b, delta, 2.0, n)
        assert np.array_equal(a, b)


def test_update_moves_codes_by_the_step_in_expectation_nearest_does_not():
    grid = PowerOfTwoGrid(0)
    delta = np.full(200000, 0.03, np.float32)          # 3% of a grid step
    codes = np.zeros(delta.size, np.int8)
    R.randomized_update(codes, delta, grid, np.random.default_rng(11))
    assert abs(codes.mean() - 0.03) < 5 * np.sqrt(0.03 * 0.97 / delta.size)
    codes = np.zeros(delta.size, np.int8)
    R.nearest_update(codes, delta, grid)
    assert not codes.any()


def test_rounding_rejects_bad_input():
    grid = PowerOfTwoGrid(0)
    with pytest.raises(ValueError, match="NaN"):
        R.randomized_round([np.nan], grid, np.random.default_rng(0))
    with pytest.raises(TypeError, match="Generator"):
        R.randomized_round([0.5], grid, 0)
    with pytest.raises(ValueError, match="int8"):
        R.randomized_update(np.zeros(3, np.int32), np.zeros(3), grid, np.random.default_rng(0))


# -- the code kernels -------------------------------------------------------------------------------

def _dyadic(rng, shape):
    """Inputs m/2^6 with small m: every partial sum is exact, so any order gives the same bits."""
    return (rng.integers(-64, 65, shape) / 64.0).astype(np.float32)


@pytest.mark.parametrize("batch", [1, 3, 100])
def test_ternary_kernel_equals_the_float_simulation(batch):
    rng = np.random.default_rng(12)
    codes = rng.integers(-1, 2, (70, 23)).astype(np.int8)
    plan = qmm.ternary_plan(codes)
    scale = 0.375
    x = _dyadic(rng, (batch, 70))
    assert np.array_equal(qmm.ternary_matmul(x, plan, scale), qmm.float_simulation(x, codes, scale))
    x = rng.standard_normal((batch, 70)).astype(np.float32)
    bound = 2 * 70 * np.finfo(np.float32).eps * scale * (np.abs(x) @ np.abs(codes))
    assert np.all(np.abs(qmm.ternary_matmul(x, plan, scale) -
                         qmm.float_simulation(x, codes, scale)) <= bound + 1e-30)


@pytest.mark.parametrize("batch", [1, 100])
def test_code_kernel_equals_the_float_simulation(batch):
    rng = np.random.default_rng(13)
    codes = rng.integers(-16, 17, (50, 19)).astype(np.int8)
    x = _dyadic(rng, (batch, 50))
    x[:, ::3] = 0                                   # the skipped zero inputs
    assert np.array_equal(qmm.code_matmul(x, codes, 0.125), qmm.float_simulation(x, codes, 0.125))


@pytest.mark.parametrize("step", ["2^0", "2^-3"])
def test_layer_code_forward_equals_float_forward(step):
    rng = np.random.default_rng(14)
    layer = DiscreteDense(40, 12, grid=step, rng=0)
    layer.set_codes(layer.params["codes"], gain=0.5, b=np.arange(12) / 8)
    x = _dyadic(rng, (5, 40))
    kernel = layer.forward(x)
    layer.inference = "float"
    assert np.array_equal(kernel, layer.forward(x))
    # and the float forward is g·(x Q) + b with Q the grid values
    expected = 0.5 * (x.astype(np.float64) @ layer.weight_values()) + np.arange(12) / 8
    np.testing.assert_allclose(layer.forward(x), expected, rtol=1e-6, atol=1e-6)


# -- the layer ------------------------------------------------------------------------------------------

def test_gained_layer_gradients_match_finite_differences_for_g_b_and_input():
    rng = np.random.default_rng(15)
    layer = DiscreteDense(6, 4, grid="2^-2", rng=1).cast(np.float64)
    x = rng.standard_normal((3, 6))
    r = rng.standard_normal((3, 4))
    loss = lambda: float((layer.forward(x, training=True) * r).sum())   # noqa: E731
    layer.forward(x, training=True)
    dx = layer.backward(r)
    np.testing.assert_allclose(dx, numerical_grad(loss, x), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(layer.grads["b"], numerical_grad(loss, layer.params["b"]),
                               rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(layer.gain_grad, numerical_grad(loss, layer.buffers["gain"])[0],
                               rtol=1e-6)
    # ∂L/∂Q: the gradient with respect to the grid values, checked on a float copy
    Q = layer.weight_values().astype(np.float64)
    g, b = layer.gain, layer.params["b"]
    dQ = numerical_grad(lambda: float(((g * (x @ Q) + b) * r).sum()), Q)
    np.testing.assert_allclose(layer.grads["codes"], dQ, rtol=1e-6, atol=1e-8)


def test_conversion_sets_the_gain_to_max_abs_w_and_rounds_onto_the_grid():
    rng = np.random.default_rng(16)
    W = rng.standard_normal((30, 8)) * 0.2
    layer = DiscreteDense.from_float(W, np.zeros(8), grid="2^-6", rng=3)
    assert layer.gain == pytest.approx(np.abs(W).max(), rel=1e-6)
    assert np.all(np.abs(layer.float_weights() - W) <= layer.gain * layer.grid.step + 1e-6)
    near = DiscreteDense.from_float(W, None, grid="2^-2", rounding="nearest")
    assert np.array_equal(near.params["codes"], R.round_to_nearest(W / np.abs(W).max(), near.grid))


def test_a_zero_gain_all_zero_layer_is_a_clear_error():
    with pytest.raises(ValueError, match="all weights are zero"):
        DiscreteDense.from_float(np.zeros((4, 3)))
    layer = DiscreteDense(4, 3)
    with pytest.raises(ValueError, match="gain"):
        layer.set_codes(layer.params["codes"], gain=0.0)


def _train_steps(model, x, y, steps, lr, momentum=0.0):
    opt = md.SGD(lr, momentum=momentum)
    loss = md.SoftmaxCrossEntropy()
    for _ in range(steps):
        out = model.forward(x, training=True)
        _, grad = loss(out, y)
        model.backward(grad)
        opt.step(model)
        yield model


@pytest.mark.parametrize("step", ["2^0", "2^-2"])
def test_codes_stay_on_the_grid_and_no_float_weight_exists_after_many_steps(step):
    rng = np.random.default_rng(17)
    x = rng.standard_normal((32, 10)).astype(np.float32)
    y = rng.integers(0, 3, 32)
    model = md.Sequential([DiscreteDense(10, 8, grid=step, rng=1), md.Sigmoid(),
                           DiscreteDense(8, 3, grid=step, rng=2)], seed=5)
    start = [l.params["codes"].copy() for l in model.layers if l.params]
    for m in _train_steps(model, x, y, 200, lr=5.0):
        for layer in (l for l in m.layers if l.params):
            codes = layer.params["codes"]
            assert codes.dtype == np.int8
            assert codes.min() >= -layer.grid.max_code and codes.max() <= layer.grid.max_code
    moved = [not np.array_equal(a, l.params["codes"]) for a, l in
             zip(start, (l for l in model.layers if l.params))]
    assert all(moved)
    for layer in (l for l in model.layers if l.params):
        # the memory-saving mode: no float array of the weights' shape, except the gradient
        shape = (layer.in_features, layer.out_features)
        owned = {**{f"params/{k}": v for k, v in layer.params.items()},
                 **{f"buffers/{k}": v for k, v in layer.buffers.items()},
                 **{f"attr/{k}": v for k, v in vars(layer).items() if isinstance(v, np.ndarray)}}
        floats = [k for k, v in owned.items()
                  if np.issubdtype(v.dtype, np.floating) and v.shape == shape]
        assert floats == [], f"{layer.name} holds float weight arrays {floats}"
        values = layer.weight_values()
        assert np.array_equal(layer.grid.decode(layer.grid.encode(values)), values)


def test_training_with_randomized_rounding_lowers_the_loss():
    rng = np.random.default_rng(18)
    x = rng.standard_normal((200, 10)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    model = md.Sequential([DiscreteDense(10, 2, grid="2^-2", rng=0)], seed=1)
    loss = md.SoftmaxCrossEntropy()
    before = loss(model.forward(x), y)[0]
    for _ in _train_steps(model, x, y, 100, lr=1.0):
        pass
    assert loss(model.forward(x), y)[0] < 0.7 * before


def test_nearest_rounding_control_cannot_take_steps_smaller_than_half_a_grid_step():
    rng = np.random.default_rng(19)
    x = rng.standard_normal((50, 10)).astype(np.float32)
    y = rng.integers(0, 2, 50)
    layer = DiscreteDense(10, 2, grid="2^0", rounding="nearest", rng=0)
    model = md.Sequential([layer], seed=None)
    before = layer.params["codes"].copy()
    for _ in _train_steps(model, x, y, 20, lr=1e-3):
        pass
    assert np.array_equal(layer.params["codes"], before)


def test_shadow_control_keeps_float_weights_clipped_and_exports_to_codes():
    rng = np.random.default_rng(20)
    x = rng.standard_normal((40, 10)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    model = md.Sequential([ShadowDiscreteDense(10, 3, grid="2^-1", rng=0)], seed=2)
    for _ in _train_steps(model, x, y, 30, lr=3.0):
        pass
    layer = model.layers[0]
    assert layer.params["W"].dtype == np.float32 and np.abs(layer.params["W"]).max() <= 1
    exported = export_discrete(model)
    assert isinstance(exported.layers[0], DiscreteDense)
    codes = exported.layers[0].params["codes"]
    assert np.all(np.abs(codes * layer.grid.step - layer.params["W"]) < layer.grid.step)
    np.testing.assert_allclose(exported.predict(x), model.predict(x), rtol=1e-5, atol=1e-6)
    assert np.array_equal(export_discrete(model).layers[0].params["codes"], codes)  # no stream used
    near = ShadowDiscreteDense.from_float(layer.params["W"], None, "2^-1", rounding="nearest")
    assert np.array_equal(near.to_discrete().params["codes"],
                          R.round_to_nearest(layer.params["W"], layer.grid))


# -- conversion, files, checkpoints ----------------------------------------------------------------

def _float_mlp():
    return md.Sequential([md.Flatten(), md.Dense(12, 9), md.Sigmoid(), md.Dense(9, 3)], seed=4)


def test_discretize_converts_every_dense_layer_and_keeps_names():
    model = _float_mlp()
    disc = discretize(model, "2^-1", rng=0)
    assert [l.name for l in disc.layers] == [l.name for l in model.layers]
    dense = [l for l in disc.layers if l.params]
    assert all(isinstance(l, DiscreteDense) for l in dense)
    for old, new in zip((l for l in model.layers if l.params), dense):
        assert new.gain == pytest.approx(np.abs(old.params["W"]).max(), rel=1e-6)
        assert np.array_equal(new.params["b"], old.params["b"])
    with pytest.raises(ValueError, match="not Dense layers"):
        discretize(model, "2^0", layers=["sigmoid_2"])


def test_discretize_a_pretrained_dbn():
    from minidnn.pretraining import DBN
    dbn = DBN([12, 6, 5], rng=0)
    model = discretize(dbn, "2^0", n_classes=3, rng=1)
    assert sum(isinstance(l, DiscreteDense) for l in model.layers) == 3
    assert model.predict(np.random.default_rng(0).random((4, 12))).shape == (4, 3)


@pytest.mark.parametrize("step", ["2^0", "2^-2", "2^-6"])
def test_model_file_stores_packed_codes_gain_and_step_and_round_trips_exactly(step, tmp_path):
    model = discretize(_float_mlp(), step, rng=0)
    path = tmp_path / "d.h5"
    md.save(model, path)
    back = md.load(path)
    for a, b in zip(model.layers, back.layers):
        if a.params:
            assert np.array_equal(a.params["codes"], b.params["codes"])
            assert b.params["codes"].dtype == np.int8
            assert a.gain == b.gain and np.array_equal(a.params["b"], b.params["b"])
    x = np.random.default_rng(1).random((5, 12)).astype(np.float32)
    assert np.array_equal(back.predict(x), model.predict(x))
    grid = PowerOfTwoGrid.parse(step)
    with h5py.File(path) as h5:
        stored = h5["layers/dense_1/params/codes_packed"]
        assert stored.dtype == np.uint8 and stored.shape == ((12 * 9 * grid.bits + 7) // 8,)
        assert h5["layers/dense_1/buffers/step"][0] == grid.step


def test_codes_out_of_range_in_a_file_are_a_clear_error(tmp_path):
    model = discretize(_float_mlp(), "2^0", rng=0)
    path = tmp_path / "d.h5"
    md.save(model, path)
    with h5py.File(path, "r+") as h5:
        h5["layers/dense_1/params/codes_packed"][0] = 0xFF    # 2-bit value 3 = code 2
    with pytest.raises(ModelFileError, match="code 2, outside"):
        md.load(path)
    md.save(model, path)
    with h5py.File(path, "r+") as h5:
        h5["layers/dense_3/buffers/gain"][0] = 0.0
    with pytest.raises(ModelFileError, match="gain"):
        md.load(path)


def test_checkpoint_resume_of_discrete_training_is_exact(tmp_path):
    rng = np.random.default_rng(21)
    x = rng.random((60, 12)).astype(np.float32)
    y = rng.integers(0, 3, 60)

    def train(epochs, resume):
        model = discretize(_float_mlp(), "2^-1", rng=0)
        md.fit(model, (x, y), epochs=epochs, batch_size=20, optimizer=md.SGD(0.5), seed=3,
               checkpoint=tmp_path / "ck.h5", resume=resume, progress=False, log=None)
        return model

    straight = train(3, False)
    (tmp_path / "ck.h5").unlink()
    train(1, False)
    resumed = train(3, True)
    for a, b in zip(straight.layers, resumed.layers):
        if a.params:
            assert np.array_equal(a.params["codes"], b.params["codes"])


def test_summary_shows_bits_per_weight_and_ternary_bytes_are_a_sixteenth():
    sizes = [784, 300, 300, 300, 300, 10]                   # the 6-layer net of the paper
    layers = []
    for n_in, n_out in zip(sizes, sizes[1:]):
        layers += [md.Dense(n_in, n_out), md.Sigmoid()]
    model = md.Sequential(layers[:-1], seed=0)
    ternary = discretize(model, "2^0", rng=0)
    assert "ternary, 2 bits/weight" in ternary.summary()
    assert weight_storage_bytes(ternary) * 16 == weight_storage_bytes(model)
    assert ternary.layers[0].storage_bytes() == 784 * 300 // 4 + 300 * 4 + 2 * 4


def test_cli_discretises_a_pretrained_dbn_fine_tunes_on_the_grid_and_info_shows_bits(tmp_path, capsys):
    dbn = tmp_path / "dbn.h5"
    assert main(["pretrain", "rbm", "--layers", "784-32", "--epochs", "1", "--limit", "1000",
                 "--no-progress", "-o", str(dbn)]) == 0
    out = tmp_path / "t.h5"
    assert main(["train", "--quiet", "--epochs", "1", "--init-from", str(dbn), "--momentum", "0",
                 "--grid-step", "2^-2", "--rounding", "randomized", "--out", str(out)]) == 0
    model = md.load(out)
    assert [type(l).__name__ for l in model.layers if l.params] == ["DiscreteDense"] * 2
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "grid 2^-2, 4 bits/weight" in shown
    # bytes per layer (codes packed at 4 bits, plus gain and bias) and the model's total
    discrete = [l for l in model.layers if l.params]
    assert discrete[0].storage_bytes() == (784 * 32 * 4 + 7) // 8 + 32 * 4 + 2 * 4
    row = next(line for line in shown.splitlines() if line.startswith("dense_1"))
    assert row.split()[-1] == f"{discrete[0].storage_bytes():,}"
    assert f"bytes: {sum(l.storage_bytes() for l in discrete):,}" in shown
    packed = (784 * 32 * 4 + 7) // 8 + (32 * 10 * 4 + 7) // 8
    assert weight_storage_bytes(model) == packed
    assert (f"weights: {packed:,} bytes as codes (4 bits/weight) against "
            f"{(784 * 32 + 32 * 10) * 4:,} in float32 (1/8.0)") in shown
    # the file says what was trained: the DBN it started from and the grid, not --arch's default
    training = md.io.read_training_info(out)
    assert training["init_from"] == str(dbn) and training["architecture"] is None
    assert training["discrete"] == {"grid_step": "2^-2", "rounding": "randomized", "gain": "max"}
    shadow = tmp_path / "s.h5"
    assert main(["train", "--quiet", "--epochs", "1", "--arch", "mlp:784-16-10:sigmoid",
                 "--grid-step", "2^0", "--rounding", "shadow", "--out", str(shadow)]) == 0
    assert all(isinstance(l, DiscreteDense) for l in md.load(shadow).layers if l.params)
    assert main(["train", "--quiet", "--epochs", "1", "--grid-step", "0.3",
                 "--out", str(tmp_path / "x.h5")]) == 1
    assert "power of two" in capsys.readouterr().err
