"""Technique 2, the optional rescale before rounding (issue #10): s · q(W / s), s stored and
applied at the output."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minidnn as md
from minidnn.quantization import (BitMaskPattern, QuantizedConv2D, QuantizedDense, calibrate,
                                  quantize_model, search_patterns, set_integer)
from minidnn.quantization.ptq import check_rescale, quantize_layer, rescale_factors

PER_CHANNEL_CONV = ["6_2_0_1_0", "5_1_0_0", "6_2_0_2_0", "4_0_0"]


def _small_cnn(seed=0, weight_scale=0.05):
    """A conv net whose weights are far below the patterns' steps (as a trained CNN's are)."""
    model = md.Sequential([md.Conv2D(1, 4, 3), md.ReLU(), md.MaxPool2D(2), md.Flatten(),
                           md.Dense(4 * 3 * 3, 10)], seed=seed, input_shape=(1, 8, 8))
    for layer in model.layers:
        if "W" in layer.params:
            layer.params["W"] = (layer.params["W"] * weight_scale).astype(np.float32)
    return model


def _inputs(n=20, seed=1):
    return np.random.default_rng(seed).random((n, 1, 8, 8)).astype(np.float32)


@pytest.mark.parametrize("rescale", ["max", "pow2"])
@pytest.mark.parametrize("per_channel", [False, True])
def test_integer_path_with_a_scale_equals_float_simulation_bit_for_bit(rescale, per_channel):
    model = _small_cnn()
    conv = PER_CHANNEL_CONV if per_channel else "6_2_0_1_0"
    q = quantize_model(model, {"conv1": conv, "ip1": "7_3_0_1_2_0"}, rescale=rescale)
    x = _inputs()
    calibrate(q, x)
    h = x
    for layer in q.layers:
        if isinstance(layer, (QuantizedConv2D, QuantizedDense)):
            scale = layer.weight_scale()
            assert (scale != 1).all()                       # a scale is really in play
            if not per_channel or isinstance(layer, QuantizedDense):
                assert (scale == scale[0]).all()            # one pattern: one scale
            else:
                assert len(set(scale.tolist())) > 1         # per channel: its own scale
            if rescale == "pow2":
                np.testing.assert_array_equal(np.exp2(np.round(np.log2(scale))), scale)
            layer.integer = True
            np.testing.assert_array_equal(layer.forward(h), layer.simulate_integer(h))
            layer.integer = False
        h = layer.forward(h)
    # the weight-only path is a float model holding s · code · step
    ref = _small_cnn()
    for r, layer in zip(ref.layers, q.layers):
        if "W" in layer.params:
            codes = layer._channel_view(layer.params["W"]).astype(np.float64)
            values = codes * (layer.step_per_channel * layer.weight_scale())[:, None]
            r.params["W"] = layer._from_channel_view(
                values, layer.params["W"].shape).astype(np.float32)
    np.testing.assert_allclose(q.predict(x), ref.predict(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("rescale", ["max", "pow2"])
def test_rescaled_model_file_round_trips_scale_codes_and_output(rescale, tmp_path):
    model = _small_cnn()
    x = _inputs(5, seed=2)
    q = quantize_model(model, {"conv1": PER_CHANNEL_CONV, "ip1": "X0.0XX"}, rescale=rescale)
    calibrate(q, x)
    md.save(q, tmp_path / "q.h5")
    back = md.load(tmp_path / "q.h5")
    for a, b in zip(q.layers, back.layers):
        assert type(a) is type(b)
        if isinstance(a, (QuantizedConv2D, QuantizedDense)):
            assert b.rescale == rescale
            assert b.weight_scale().dtype == np.float64
            np.testing.assert_array_equal(a.weight_scale(), b.weight_scale())   # exact
            np.testing.assert_array_equal(a.params["W"], b.params["W"])
            np.testing.assert_array_equal(a.weight_values(), b.weight_values())
    np.testing.assert_array_equal(back.predict(x), q.predict(x))
    set_integer(back, True)
    set_integer(q, True)
    np.testing.assert_array_equal(back.predict(x), q.predict(x))
    summary = back.summary()
    assert f"rescale {rescale} s=" in summary
    s = back.layers[-1].weight_scale()[0]
    assert f"rescale {rescale} s={s:.6g}" in summary
    # the float32 scales count in the stored weight bytes: 4 per conv channel, 4 for the dense
    from minidnn.quantization import weight_bytes
    packed = {l.name: l._pack().nbytes for l in q.layers if hasattr(l, "_pack")}
    wb = weight_bytes(q)
    assert wb[q.layers[0].name] == packed[q.layers[0].name] + 4 * 4
    assert wb[q.layers[-1].name] == packed[q.layers[-1].name] + 4


def test_default_is_no_rescale_and_files_without_a_scale_still_load(tmp_path):
    q = quantize_model(_small_cnn(), {"all": "6_2_0_1_0"})
    for layer in (q.layers[0], q.layers[-1]):
        assert layer.rescale is None and "weight_scale" not in layer.buffers
        assert layer.get_config()["rescale"] is None
        np.testing.assert_array_equal(layer.weight_scale(), 1.0)
    md.save(q, tmp_path / "q.h5")
    assert "rescale" not in md.load(tmp_path / "q.h5").summary()


@st.composite
def small_weights(draw):
    """Weights (n, k) all below half the pattern's step: unscaled, every one rounds to 0."""
    pattern = draw(st.sampled_from(["4_0_0", "5_1_0_0", "6_2_0_1_0", "6_2_0_2_0",
                                    "7_3_0_1_2_0", "3_0_0", "5_2_0_1_0", "8_4_0_1_2_3_0"]))
    p = BitMaskPattern.parse(pattern)
    n, k = draw(st.integers(1, 4)), draw(st.integers(1, 12))
    fractions = draw(st.lists(st.floats(-0.499, 0.499, allow_nan=False), min_size=n * k,
                              max_size=n * k))
    return np.array(fractions, dtype=np.float64).reshape(n, k) * p.step, pattern


@given(small_weights(), st.sampled_from(["max", "pow2"]), st.booleans())
@settings(max_examples=150, deadline=None)
def test_rescaled_rounding_error_is_at_most_the_unscaled_on_small_weights(case, rescale,
                                                                          per_channel):
    """Unscaled, weights below step/2 all round to 0 (error |w|); scaled, 0 is still a
    value, so no weight's error can grow, and with "max" the largest |w| is hit exactly."""
    W, pattern = case
    W = W.astype(np.float32).astype(np.float64)           # the layer holds float32
    dense = md.Dense(W.shape[1], W.shape[0], name="d")
    dense.params["W"] = W.T.astype(np.float32).copy()
    patterns = [pattern] * W.shape[0] if per_channel else pattern
    plain = quantize_layer(dense, patterns)
    scaled = quantize_layer(dense, patterns, rescale=rescale)
    assert (plain.params["W"] == 0).all()
    err_plain = np.abs(plain.weight_values(np.float64).T - W)
    err_scaled = np.abs(scaled.weight_values(np.float64).T - W)
    assert (err_scaled <= err_plain * (1 + 1e-6) + 1e-45).all()
    assert (err_scaled ** 2).sum() <= (err_plain ** 2).sum() * (1 + 1e-6)
    if rescale == "max" and np.abs(W).max() > 1e-30:
        p = BitMaskPattern.parse(pattern)
        top = np.abs(scaled.params["W"]).max()
        assert top == p.max_code                            # max|w| lands on the largest value


def test_fine_tuning_keeps_the_stored_scale():
    q = quantize_layer(_small_cnn().layers[-1], "6_2_0_1_0", rescale="max")
    scale = q.weight_scale().copy()
    values = q.weight_values(np.float64)
    q.apply_update("W", np.full(values.shape, 1e-4))
    np.testing.assert_array_equal(q.weight_scale(), scale)
    step = BitMaskPattern.parse("6_2_0_1_0").step * scale[0]
    codes = q.weight_values(np.float64) / step
    np.testing.assert_allclose(codes, np.round(codes), atol=1e-6)    # still on the scaled grid


def test_bad_rescale_values_give_clear_errors(tmp_path):
    assert check_rescale(None) is None and check_rescale("none") is None
    assert check_rescale("MAX") == "max"
    for bad in ("mean", 2.0, "pow3", True):
        with pytest.raises(ValueError, match="rescale must be None, 'max' or 'pow2'"):
            quantize_model(_small_cnn(), {"conv1": "4_0_0"}, rescale=bad)
    with pytest.raises(ValueError, match="rescale must be"):
        QuantizedDense(3, 2, pattern="4_0_0", rescale="median")
    with pytest.raises(ValueError, match="needs a rescale mode"):
        rescale_factors(np.ones((1, 3)), [BitMaskPattern.parse("4_0_0")], None)
    # a stored scale that is not positive, or several scales for one pattern, is refused
    q = quantize_model(_small_cnn(), {"conv1": "4_0_0"}, rescale="max")
    layer = q.layers[0]
    params, buffers = layer.state_for_file()
    for bad, message in ((np.array([0.1, -0.1, 0.1, 0.1]), "finite and positive"),
                         (np.array([0.1, np.nan, 0.1, 0.1]), "finite and positive"),
                         (np.array([0.1, 0.2, 0.1, 0.1]), "one pattern per layer has one scale")):
        fresh = QuantizedConv2D(**layer.get_config())
        with pytest.raises(ValueError, match=message):
            fresh.load_state(params, {**buffers, "weight_scale": bad})
    from minidnn.cli import main
    md.save(_small_cnn(), tmp_path / "m.h5")
    with pytest.raises(SystemExit):
        main(["quantize", str(tmp_path / "m.h5"), "--pattern", "conv1=4_0_0",
              "--rescale", "mean", "-o", str(tmp_path / "q.h5")])


@pytest.fixture(scope="module")
def trained_cnn():
    from minidnn.data import load
    splits = load("embedded")
    model = md.Sequential([md.Conv2D(1, 6, 5), md.MaxPool2D(2), md.ReLU(), md.Flatten(),
                           md.Dense(6 * 12 * 12, 10)], seed=0, input_shape=(1, 28, 28))
    md.fit(model, splits.train, epochs=2, batch_size=50, optimizer=md.SGD(0.05, 0.9),
           progress=False, log=None)
    return model, splits


@pytest.mark.parametrize("per_channel", [False, True])
def test_search_with_rescale_rebuilds_what_it_scored(trained_cnn, per_channel):
    model, splits = trained_cnn
    result = search_patterns(model, splits.val, bits=3, layers="all", max_bits=5,
                             per_channel=per_channel, rescale="max", log=None)
    assert result.rescale == "max" and result.to_json()["rescale"] == "max"
    q = quantize_model(model, result.assignment, rescale=result.rescale)
    assert md.evaluate(q, splits.val)["accuracy"] == pytest.approx(result.val_accuracy)
    assert all(l.rescale == "max" for l in q.layers if hasattr(l, "rescale"))
    if per_channel:
        # the per-channel assignment was scored with per-channel scales
        record = [c for c in result.candidates if "per_channel_patterns" in c][0]
        pc = quantize_layer(model.layers[0], record["per_channel_patterns"], rescale="max")
        assert len(set(pc.weight_scale().tolist())) > 1


def test_cli_quantize_rescale_writes_a_scaled_file_that_info_shows(trained_cnn, tmp_path,
                                                                    capsys):
    import json
    from minidnn.cli import main
    model, _ = trained_cnn
    md.save(model, tmp_path / "m.h5")
    assert main(["quantize", str(tmp_path / "m.h5"), "--dataset", "embedded", "--quiet",
                 "--pattern", "conv1=6_2_0_1_0", "--pattern", "ip1=5_2_0_1_0",
                 "--rescale", "pow2", "--integer", "-o", str(tmp_path / "q.h5"),
                 "--report", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["rescale"] == "pow2"
    back = md.load(tmp_path / "q.h5")
    assert back.layers[0].rescale == "pow2" and back.layers[0].integer
    assert main(["info", str(tmp_path / "q.h5")]) == 0
    out = capsys.readouterr().out
    assert "pattern 6_2_0_1_0 (X0.0XXX), 4 bits/weight, rescale pow2 s=" in out
    assert "pattern 5_2_0_1_0 (X0.0XX), 3 bits/weight, rescale pow2 s=" in out


def test_candidates_with_identical_weights_share_one_pass_and_top_k_counts_distinct(trained_cnn):
    """With a rescale every uniform mask (X0.0XXX, X0.XXX0, ...) is the plain format scaled:
    the same weights. They share one validation pass; top_k picks distinct weight sets."""
    model, splits = trained_cnn
    calls = []
    from minidnn.quantization import search as search_module
    real_run = search_module._run

    def counting_run(*args, **kwargs):
        calls.append(1)
        return real_run(*args, **kwargs)
    search_module._run, saved = counting_run, real_run
    try:
        result = search_patterns(model, splits.val, bits=3, layers="conv1", max_bits=5,
                                 rescale="max", top_k=3, log=None)
    finally:
        search_module._run = saved
    scored = [c for c in result.candidates if c["val_accuracy"] is not None]
    shared = [c for c in scored if "same_weights_as" in c]
    assert {c["same_weights_as"] for c in shared} >= {"3_0_0"}
    assert "4_1_0_0" in {c["pattern"] for c in shared}       # X0.XX = XX.X scaled
    assert len(calls) - 2 == len(scored) - len(shared) == 3   # (-2: float and final model)
    for c in shared:
        twin = next(d for d in scored if d["pattern"] == c["same_weights_as"])
        assert (c["val_accuracy"], c["val_loss"]) == (twin["val_accuracy"], twin["val_loss"])
