"""Technique 2: bit-mask patterns, rounding, the integer path, the search (issue #10)."""
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minidnn as md
from minidnn.kernels.quantized_matmul import (check_int32_accumulation, int_matmul,
                                              int_matmul_numpy)
from minidnn.quantization import (BitMaskPattern, QuantizedConv2D, QuantizedDense,
                                  calibrate, enumerate_patterns, quantize_model,
                                  quantize_to_pattern, round_to_pattern, search_patterns,
                                  set_integer)


# -- patterns -------------------------------------------------------------------------------
@st.composite
def patterns(draw):
    B = draw(st.integers(2, 16))
    M = draw(st.integers(0, B - 2))
    masked = draw(st.lists(st.integers(0, B - 2), min_size=M, max_size=M, unique=True))
    S = draw(st.integers(-16, 16))
    return BitMaskPattern(B, tuple(masked), S)


@given(patterns())
@settings(max_examples=200, deadline=None)
def test_pattern_notation_round_trips(p):
    assert BitMaskPattern.parse(str(p)) == p
    if -1 <= p.shift <= p.bits - 2:
        assert BitMaskPattern.parse(p.readable()) == p
    assert p.effective_bits == p.bits - len(p.masked)
    values = p.values()
    np.testing.assert_array_equal(values, -values[::-1])          # symmetric
    assert np.count_nonzero(values == 0) == 1                      # one zero
    assert len(values) == 2 ** p.effective_bits - 1                # every free-bit combination
    assert values[-1] == p.max_value and p.range == (-p.max_value, p.max_value)


def _frac(values):
    return [Fraction(v).limit_denominator(1 << 20) for v in values]


@pytest.mark.parametrize("text, readable, step, top", [
    ("4_0_0", "XX.XX", Fraction(1, 4), Fraction(7, 4)),
    ("5_1_0_0", "X0.XXX", Fraction(1, 8), Fraction(7, 8)),
    ("6_2_0_1_0", "X0.0XXX", Fraction(1, 16), Fraction(7, 16)),
    ("7_3_0_1_2_0", "X0.00XXX", Fraction(1, 32), Fraction(7, 32)),
    ("5_2_0_1_0", "X0.0XX", Fraction(1, 8), Fraction(3, 8)),
    ("3_0_0", "XX.X", Fraction(1, 2), Fraction(3, 2)),
])
def test_uniform_patterns_of_the_spec(text, readable, step, top):
    p = BitMaskPattern.parse(text)
    assert p.readable() == readable and BitMaskPattern.parse(readable) == p
    assert Fraction(p.step) == step and Fraction(p.max_value) == top
    n = int(top / step)
    assert _frac(p.values()) == [k * step for k in range(-n, n + 1)]


@pytest.mark.parametrize("text, readable, magnitudes_16ths", [
    # X0.X0XX: free bits worth 1/2, 1/8, 1/16
    ("6_2_0_2_0", "X0.X0XX", [0, 1, 2, 3, 8, 9, 10, 11]),
    # X0.XX0X: free bits worth 1/2, 1/4, 1/16
    ("6_2_0_3_0", "X0.XX0X", [0, 1, 4, 5, 8, 9, 12, 13]),
])
def test_non_uniform_patterns_of_the_spec(text, readable, magnitudes_16ths):
    p = BitMaskPattern.parse(text)
    assert p.readable() == readable
    mags = [m for m in _frac(p.values()) if m >= 0]
    assert mags == [Fraction(k, 16) for k in magnitudes_16ths]


@pytest.mark.parametrize("text, message", [
    ("1_0_0", "2 <= B"),
    ("4_3_0_1_2_0", "leaves none free"),
    ("5_2_0_0_0", "distinct"),
    ("5_1_4_0", "0..3"),
    ("5_1_0", "needs 4 fields"),
    ("4_0_0_0", "needs 3 fields"),
    ("4_0_40", "shift S"),
    ("4_-1_0", "must be >= 0"),
    ("hello", "cannot read"),
    ("X0.0X.X", "cannot read"),
])
def test_invalid_patterns_say_what_is_wrong(text, message):
    with pytest.raises(ValueError, match=message):
        BitMaskPattern.parse(text)


def test_shift_moves_the_binary_point():
    assert BitMaskPattern.parse("4_0_1").readable() == "XXX.X"
    assert BitMaskPattern.parse("4_0_1").max_value == 3.5
    assert BitMaskPattern.parse("X.XXX") == BitMaskPattern(4, (), -1)
    assert BitMaskPattern(4, (), -1).step == 1 / 8


def test_candidates_count_every_mask_choice():
    # sum over B = e..8 of C(B - 1, B - e)
    assert len(enumerate_patterns(4)) == 1 + 4 + 10 + 20 + 35
    assert len(enumerate_patterns(3)) == 1 + 3 + 6 + 10 + 15 + 21
    assert all(p.effective_bits == 3 for p in enumerate_patterns(3))


# -- rounding -------------------------------------------------------------------------------------
@given(st.lists(st.floats(-4, 4, allow_nan=False, width=32), min_size=1, max_size=30),
       patterns().filter(lambda p: p.bits <= 10))
@settings(max_examples=150, deadline=None)
def test_rounding_is_nearest_saturating_and_idempotent(ws, p):
    w = np.array(ws, dtype=np.float32)
    q = round_to_pattern(w, p)
    values = p.values()
    dist = np.abs(w.astype(np.float64)[:, None] - values[None, :])
    np.testing.assert_array_equal(np.abs(q - w), dist.min(axis=1))   # a nearest value
    assert np.isin(q, values).all()
    assert (np.abs(q) <= p.max_value).all()
    np.testing.assert_array_equal(round_to_pattern(q, p), q)          # idempotent


def test_ties_go_away_from_zero_and_large_weights_saturate():
    p = BitMaskPattern.parse("4_0_0")                                 # step 1/4, max 1.75
    np.testing.assert_array_equal(round_to_pattern([0.125, -0.125, 0.375, 9.0, -9.0], p),
                                  [0.25, -0.25, 0.5, 1.75, -1.75])
    p = BitMaskPattern.parse("6_2_0_2_0")                             # magnitudes .., 3/16, 8/16
    assert round_to_pattern([11 / 32], p)[0] == 0.5                   # tie between 3/16 and 1/2
    assert quantize_to_pattern([0.1], "5_1_0_0").dtype == np.int8
    with pytest.raises(ValueError, match="NaN"):
        quantize_to_pattern([np.nan], p)


# -- integer kernel and the integer path -----------------------------------------------------------
def test_int_matmul_kernel_equals_its_numpy_twin():
    rng = np.random.default_rng(0)
    a = rng.integers(-127, 128, (7, 33)).astype(np.int8)
    a[:, ::3] = 0                                                    # the zero-skip path
    b = rng.integers(-255, 256, (33, 12)).astype(np.int16)
    out = int_matmul(a, b)
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, int_matmul_numpy(a, b))
    with pytest.raises(ValueError, match="overflow"):
        check_int32_accumulation(32767, 127, 10 ** 6, "test")


def _small_cnn(seed=0):
    return md.Sequential([md.Conv2D(1, 4, 3), md.ReLU(), md.MaxPool2D(2), md.Flatten(),
                          md.Dense(4 * 3 * 3, 10)], seed=seed, input_shape=(1, 8, 8))


@pytest.mark.parametrize("per_channel", [False, True])
def test_integer_path_equals_float_simulation_bit_for_bit(per_channel):
    rng = np.random.default_rng(1)
    model = _small_cnn()
    conv_pattern = ["6_2_0_1_0", "5_1_0_0", "6_2_0_2_0", "4_0_0"] if per_channel else "6_2_0_1_0"
    q = quantize_model(model, {"conv1": conv_pattern, "ip1": "7_3_0_1_2_0"})
    x = rng.random((20, 1, 8, 8)).astype(np.float32)
    calibrate(q, x)
    for layer in q.layers:
        if isinstance(layer, (QuantizedConv2D, QuantizedDense)):
            h = x if layer is q.layers[0] else q.layers[3].forward(
                q.layers[2].forward(q.layers[1].forward(q.layers[0].forward(x))))
            layer.integer = True
            np.testing.assert_array_equal(layer.forward(h), layer.simulate_integer(h))
            layer.integer = False
    # and the weight-only path equals a float model holding the rounded weights
    ref = md.Sequential([md.Conv2D(1, 4, 3), md.ReLU(), md.MaxPool2D(2), md.Flatten(),
                         md.Dense(36, 10)], seed=0, input_shape=(1, 8, 8))
    for r, layer in zip(ref.layers, q.layers):
        if "W" in layer.params:
            r.params["W"] = layer.weight_values().copy()
    np.testing.assert_allclose(q.predict(x), ref.predict(x), rtol=1e-6, atol=1e-6)
    set_integer(q, True)
    assert q.layers[0].integer and q.layers[-1].integer


def test_integer_path_needs_calibration():
    q = quantize_model(_small_cnn(), {"all": "5_1_0_0"})
    set_integer(q, True)
    with pytest.raises(RuntimeError, match="calibrate"):
        q.predict(np.zeros((1, 1, 8, 8), np.float32))


def test_quantized_model_file_round_trips_codes_and_patterns(tmp_path):
    model = _small_cnn()
    x = np.random.default_rng(2).random((5, 1, 8, 8)).astype(np.float32)
    q = quantize_model(model, {"conv1": ["6_2_0_1_0", "5_1_0_0", "7_3_0_1_2_0", "4_0_0"],
                               "ip1": "X0.0XX"})
    calibrate(q, x)
    set_integer(q, True)
    md.save(q, tmp_path / "q.h5")
    back = md.load(tmp_path / "q.h5")
    for a, b in zip(q.layers, back.layers):
        assert type(a) is type(b)
        for key in a.params:
            assert a.params[key].dtype == b.params[key].dtype
            np.testing.assert_array_equal(a.params[key], b.params[key])
    assert back.layers[0].patterns == q.layers[0].patterns
    np.testing.assert_array_equal(back.predict(x), q.predict(x))
    # packed at the effective width: 36 weights x (4, 4, 4, 4) bits, 360 weights x 3 bits
    assert q.layers[0].state_for_file()[0]["W_packed"].nbytes == (36 * 4 + 7) // 8
    assert q.layers[-1].state_for_file()[0]["W_packed"].nbytes == (360 * 3 + 7) // 8
    assert "pattern 5_2_0_1_0 (X0.0XX), 3 bits/weight" in back.summary()


# -- the search ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained_small_cnn():
    from minidnn.data import load
    splits = load("embedded")
    model = md.Sequential([md.Conv2D(1, 6, 5), md.MaxPool2D(2), md.ReLU(), md.Flatten(),
                           md.Dense(6 * 12 * 12, 10)], seed=0, input_shape=(1, 28, 28))
    # one epoch (sitting 20; was two): the tests below need a trained model, not a good one
    md.fit(model, splits.train, epochs=1, batch_size=50, optimizer=md.SGD(0.05, 0.9),
           progress=False, log=None)
    # the searches evaluate every candidate pattern on the validation split: its first
    # 500 images (of 2,000) pick among them as well, at a quarter of the time
    from minidnn.data.dataset import Dataset, Splits
    return model, Splits(splits.train, Dataset(splits.val.x[:500], splits.val.y[:500]),
                         splits.test)


def test_search_never_reads_the_test_set(trained_small_cnn, monkeypatch, tmp_path):
    """The CLI's search sees the validation split only: poisoning the test split
    (noise images, shuffled labels) leaves the chosen patterns unchanged."""
    import argparse
    from minidnn.data.dataset import Dataset, Splits
    from minidnn.quantization.cli import run_quantize
    model, splits = trained_small_cnn
    md.save(model, tmp_path / "m.h5")
    rng = np.random.default_rng(3)
    poisoned = Splits(splits.train, splits.val,
                      Dataset(rng.random(splits.test.x.shape).astype(np.float32),
                              rng.permutation(splits.test.y)))
    args = argparse.Namespace(model=str(tmp_path / "m.h5"), out=str(tmp_path / "q.h5"),
                              pattern=[], search=True, bits=3, layers="all", per_channel=True,
                              max_bits=5, activation_bits=8, integer=False, batch_size=500,
                              quiet=True, dataset="embedded")
    clean = run_quantize(args, splits)
    dirty = run_quantize(args, poisoned)
    assert clean["assignment"] == dirty["assignment"]
    assert clean["search"]["candidates"] == dirty["search"]["candidates"]
    assert clean["quantized_test_accuracy"] != dirty["quantized_test_accuracy"]


def test_search_reports_every_candidate_and_picks_the_best_on_validation(trained_small_cnn):
    model, splits = trained_small_cnn
    result = search_patterns(model, splits.val, bits=3, layers="conv", max_bits=5,
                             per_channel=True, log=None)
    tried = [c for c in result.candidates if c["layer"] == model.layers[0].name]
    plain = [c for c in tried if "per_channel_patterns" not in c]
    assert [c["pattern"] for c in plain] == [str(p) for p in enumerate_patterns(3, 5)]
    best = max(c["val_accuracy"] for c in tried)
    chosen = result.assignment[model.layers[0].name]
    chosen_record = next(c for c in tried if c.get("per_channel_patterns", c["pattern"]) == chosen)
    assert chosen_record["val_accuracy"] == best
    q = quantize_model(model, result.assignment)
    assert md.evaluate(q, splits.val)["accuracy"] == pytest.approx(result.val_accuracy)


def test_cli_quantize_writes_a_file_that_info_shows(trained_small_cnn, tmp_path, capsys):
    from minidnn.cli import main
    model, _ = trained_small_cnn
    md.save(model, tmp_path / "m.h5")
    assert main(["quantize", str(tmp_path / "m.h5"), "--dataset", "embedded", "--quiet",
                 "--pattern", "conv1=6_2_0_1_0", "--pattern", "ip1=X0.00XXX", "--integer",
                 "-o", str(tmp_path / "q.h5"), "--report", str(tmp_path / "r.json")]) == 0
    assert main(["info", str(tmp_path / "q.h5")]) == 0
    out = capsys.readouterr().out
    assert "pattern 6_2_0_1_0 (X0.0XXX), 4 bits/weight" in out
    assert "pattern 7_3_0_1_2_0 (X0.00XXX), 4 bits/weight" in out
    assert main(["quantize", str(tmp_path / "m.h5"), "--pattern", "conv1", "-o", "x.h5"]) != 0
    assert "expects LAYER=PATTERN" in capsys.readouterr().err


def test_inv_policy_follows_caffe_per_iteration():
    from minidnn.optimizers import InvLR, optimizer_from_config
    opt = md.SGD(0.01, momentum=0.9, schedule=InvLR(1e-4, 0.75))
    layer = md.Dense(2, 2, name="d")
    assert opt.hyper(layer)["lr"] == 0.01
    opt.steps = 5000
    assert opt.hyper(layer)["lr"] == pytest.approx(0.01 * (1 + 1e-4 * 5000) ** -0.75)
    opt.set_epoch(3)                                   # epochs do not move it
    assert opt.hyper(layer)["lr"] == pytest.approx(0.01 * 1.5 ** -0.75)
    back = optimizer_from_config(opt.get_config())
    assert isinstance(back.schedule, InvLR) and back.schedule.get_config() == opt.schedule.get_config()
