"""Properties of whole models (hypothesis), not single layers.

Models are drawn from a small grammar that covers every core layer: an MLP
(Dense, ReLU/Sigmoid/Tanh/Identity, optional BatchNorm and Dropout) or a
conv net (Conv2D 3x3 padding 1, activation, optional BatchNorm, MaxPool2D or
AvgPool2D 2x2 on even sizes, Flatten, Dense), so every input element and
every weight reaches the output. The properties:

* any finite input gives a finite output, or a clear ValueError naming the
  expected shape; any finite logits give a finite loss;
* NaN anywhere, in the input, a weight or a buffer, shows in the output, and
  ``fit`` reports it (ValueError for inputs, TrainingDiverged for weights);
* ``save``/``load`` then ``fit`` with a seed gives the same weights every time.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import minidnn as md
from minidnn.training import TrainingDiverged

few = settings(max_examples=15, deadline=None,
               suppress_health_check=[HealthCheck.function_scoped_fixture])
ACTIVATIONS = [md.ReLU, md.Sigmoid, md.Tanh, md.Identity]


@st.composite
def models(draw):
    """(model, input shape of one sample, number of classes)."""
    classes = draw(st.integers(2, 4))
    act = lambda: draw(st.sampled_from(ACTIVATIONS))()  # noqa: E731
    if draw(st.booleans()):                                   # MLP
        widths = draw(st.lists(st.integers(1, 6), min_size=1, max_size=3))
        layers, width = [], widths[0]
        for nxt in widths[1:] + [classes]:
            layers.append(md.Dense(width, nxt))
            if nxt != classes or draw(st.booleans()):
                if draw(st.booleans()):
                    layers.append(md.BatchNorm(nxt))
                layers.append(act())
                if draw(st.booleans()):
                    layers.append(md.Dropout(draw(st.sampled_from([0.2, 0.5]))))
            width = nxt
        shape = (widths[0],)
    else:                                                     # conv net
        channels, size = draw(st.integers(1, 2)), draw(st.sampled_from([2, 4]))
        out = draw(st.integers(1, 3))
        layers = [md.Conv2D(channels, out, 3, padding=1), act()]
        if draw(st.booleans()):
            layers.append(md.BatchNorm(out))
        layers.append(draw(st.sampled_from([md.MaxPool2D, md.AvgPool2D]))(2))
        layers += [md.Flatten(), md.Dense(out * (size // 2) ** 2, classes)]
        shape = (channels, size, size)
    seed = draw(st.integers(0, 2**16))
    dtype = draw(st.sampled_from(["float32", "float64"]))
    return md.Sequential(layers, seed=seed, dtype=dtype), shape, classes


def _inputs(draw, shape, batch, scale):
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    return (scale * rng.standard_normal((batch,) + shape)).astype(np.float32)


@few
@given(spec=models(), data=st.data())
def test_any_finite_input_gives_a_finite_output_or_a_clear_error(spec, data):
    model, shape, _ = spec
    scale = data.draw(st.sampled_from([1e-30, 1.0, 1e3]))
    batch = data.draw(st.integers(2, 5))
    wrong = data.draw(st.booleans())
    if wrong:       # one more feature (MLP) or channel (conv net)
        shape = (shape[0] + 1,) + shape[1:]
    x = _inputs(data.draw, shape, batch, scale)
    for training in (True, False):
        try:
            out = model.forward(x, training=training)
        except ValueError as error:
            assert wrong and "expects input of shape" in str(error)
            return
        assert not wrong, "an input of the wrong shape was accepted"
        assert np.isfinite(out).all()


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_any_finite_logits_give_a_finite_loss_and_gradient(data):
    k = data.draw(st.integers(2, 5))
    biggest = float(np.finfo(np.float32).max)
    finite32 = st.floats(-biggest, biggest, allow_nan=False, allow_infinity=False, width=32)
    logits = np.array(data.draw(st.lists(st.lists(finite32, min_size=k, max_size=k),
                                         min_size=1, max_size=4)), np.float32)
    labels = np.argmax(logits, axis=1) if data.draw(st.booleans()) else \
        np.array(data.draw(st.lists(st.integers(0, k - 1), min_size=len(logits),
                                    max_size=len(logits))))
    value, grad = md.SoftmaxCrossEntropy()(logits, labels)
    assert np.isfinite(grad).all()
    # finite unless a label's logit is beyond the float range from the max (then +inf, as torch)
    gap = logits.max(axis=1).astype(np.float64) - logits[np.arange(len(labels)), labels]
    assert np.isfinite(value) or (gap > 3.4e38).any()
    assert not np.isnan(value)


def _poison(model, draw):
    """Set one random element of one random floating weight or buffer to NaN;
    returns what was poisoned and whether it is a buffer."""
    arrays = [(layer, kind, name) for layer in model.layers
              for kind, store in (("params", layer.params), ("buffers", layer.buffers))
              for name, value in store.items() if np.issubdtype(value.dtype, np.floating)]
    layer, kind, name = draw(st.sampled_from(arrays))
    store = getattr(layer, kind)
    store[name].flat[draw(st.integers(0, store[name].size - 1))] = np.nan
    return f"{layer.name}/{name}", kind == "buffers"


@few
@given(spec=models(), data=st.data())
def test_nan_anywhere_is_reported_never_hidden(spec, data):
    model, shape, classes = spec
    x = _inputs(data.draw, shape, 6, 1.0)
    y = np.arange(6) % classes
    fit = lambda: md.fit(model, (x, y), epochs=1, batch_size=3, optimizer=md.SGD(0.01),  # noqa: E731
                         progress=False, log=None)
    if data.draw(st.booleans()):                              # NaN in the input
        x.flat[data.draw(st.integers(0, x.size - 1))] = np.nan
        assert np.isnan(model.forward(x, training=False)).any()
        assert np.isnan(model.forward(x, training=True)).any()
        with pytest.raises(ValueError, match="NaN or Inf inputs"):
            fit()
    else:                                                     # NaN in a weight or buffer
        where, is_buffer = _poison(model, data.draw)
        if not is_buffer:       # buffers (running statistics) act in evaluation only
            assert np.isnan(model.forward(x, training=True)).any(), f"NaN in {where} hidden"
        assert np.isnan(model.forward(x, training=False)).any(), f"NaN in {where} hidden"
        with pytest.raises(TrainingDiverged, match="epoch 1/1"):
            fit()


@few
@given(spec=models(), seed=st.integers(0, 2**16))
def test_save_load_then_fit_with_a_seed_is_reproducible(spec, seed, tmp_path):
    model, shape, classes = spec
    path = tmp_path / "m.h5"
    md.save(model, path)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((10,) + shape).astype(np.float32)
    y = rng.integers(0, classes, 10)
    runs = []
    for _ in range(2):
        loaded = md.load(path)
        md.fit(loaded, (x, y), epochs=2, batch_size=4, optimizer=md.SGD(0.05, momentum=0.9),
               seed=seed, progress=False, log=None)
        runs.append(loaded)
    for (name, a), (_, b) in zip(runs[0].named_params(), runs[1].named_params()):
        np.testing.assert_array_equal(a, b, err_msg=name)
