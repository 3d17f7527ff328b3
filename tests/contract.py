"""The layer contract, checked the same way for every layer class.

Modelled on scikit-learn's common estimator checks: a new layer (sparse,
quantized, ...) is tested the moment it is registered, by adding one example
to ``tests/test_layer_contract.py``. ``check_layer`` asserts:

* finite-difference gradients in float64, for the input and every floating
  parameter (random layers replay the same draws: their ``rng`` is reset
  before every forward pass);
* ``backward_params`` fills the same ``grads`` as ``backward``;
* the config round trip: ``from_config(get_config())`` plus ``load_state`` of
  ``state_for_file()`` computes the same outputs;
* a model file round trip that keeps every array and dtype exactly;
* ``cast`` changes floating arrays only;
* one momentum SGD step keeps every parameter's dtype and shape.
"""
from __future__ import annotations

import copy

import numpy as np

import minidnn as md
from minidnn.layers import layer_from_config

from .gradcheck import numerical_grad


def _replaying(layer):
    """A forward function that replays the layer's random draws each call."""
    rng = getattr(layer, "rng", None)
    state = copy.deepcopy(rng.bit_generator.state) if isinstance(rng, np.random.Generator) else None

    def forward(x, training):
        if state is not None:
            layer.rng.bit_generator.state = copy.deepcopy(state)
        return layer.forward(x, training)
    return forward


def check_gradients(layer, x, rng, training=True, rtol=1e-5, atol=1e-7):
    layer.cast(np.float64)
    x = np.array(x, dtype=np.float64)
    forward = _replaying(layer)
    out = forward(x, training)
    r = rng.standard_normal(out.shape)
    forward(x, training)
    dx = layer.backward(r.copy())
    analytic = {"x": dx, **{k: np.array(v, copy=True) for k, v in layer.grads.items()}}

    def loss():
        return float((forward(x, training) * r).sum())

    numeric = {"x": numerical_grad(loss, x)}
    # a straight-through gradient (quantized forward, float shadow) is not dL/dW by design
    straight_through = getattr(layer, "straight_through_params", ())
    for name, param in layer.params.items():
        if np.issubdtype(param.dtype, np.floating) and name not in straight_through:
            numeric[name] = numerical_grad(loss, param)
    for name in numeric:
        np.testing.assert_allclose(analytic[name], numeric[name], rtol=rtol, atol=atol,
                                   err_msg=f"{layer!r}: gradient of {name} is wrong")
    # backward_params: the same parameter gradients, without the input gradient
    for g in layer.grads.values():
        g[...] = 0
    forward(x, training)
    layer.backward_params(r.copy())
    for name, value in layer.grads.items():
        np.testing.assert_allclose(value, analytic[name], rtol=1e-12, atol=0,
                                   err_msg=f"{layer!r}: backward_params gives another {name} grad")


def _arrays(layer):
    params, buffers = layer.state_for_file()
    return {f"params/{k}": np.asarray(v) for k, v in params.items()} | \
        {f"buffers/{k}": np.asarray(v) for k, v in buffers.items()}


def _assert_same_arrays(a, b, what):
    assert a.keys() == b.keys(), f"{what}: {sorted(a)} != {sorted(b)}"
    for key in a:
        assert a[key].dtype == b[key].dtype, f"{what}: {key} dtype {a[key].dtype} != {b[key].dtype}"
        np.testing.assert_array_equal(a[key], b[key], err_msg=f"{what}: {key} differs")


def check_config_round_trip(layer, x):
    clone = layer_from_config(type(layer).__name__, copy.deepcopy(layer.get_config()))
    clone.cast(layer.dtype)
    clone.load_state(*layer.state_for_file())
    np.testing.assert_array_equal(clone.forward(x.astype(layer.dtype), False),
                                  layer.forward(x.astype(layer.dtype), False))
    _assert_same_arrays(_arrays(clone), _arrays(layer), f"{layer!r} config round trip")


def check_file_round_trip(layer, x, tmp_path):
    model = md.Sequential([layer], seed=None)
    path = tmp_path / f"{type(layer).__name__}.h5"
    md.save(model, path)
    back = md.load(path)
    _assert_same_arrays(_arrays(back.layers[0]), _arrays(layer), f"{layer!r} file round trip")
    np.testing.assert_array_equal(back.predict(x), model.predict(x))


def check_cast(layer):
    before = _arrays(layer)
    layer.cast(np.float64)
    after = _arrays(layer)
    for key, value in before.items():
        expected = np.float64 if np.issubdtype(value.dtype, np.floating) else value.dtype
        assert after[key].dtype == expected, f"{layer!r}: cast made {key} {after[key].dtype}"
    layer.cast(np.float32)


def check_sgd_step_keeps_dtypes(layer, x, rng):
    layer.cast(np.float32)
    before = _arrays(layer)
    out = _replaying(layer)(x.astype(np.float32), True)
    layer.backward(rng.standard_normal(out.shape).astype(np.float32))
    holder = type("Holder", (), {"layers": [layer]})()
    opt = md.SGD(lr=0.01, momentum=0.9, weight_decay=1e-3)
    opt.step(holder)
    opt.step(holder)
    after = _arrays(layer)
    for key in before:
        assert after[key].dtype == before[key].dtype and after[key].shape == before[key].shape, \
            f"{layer!r}: an SGD step changed {key} from {before[key].dtype}{before[key].shape} " \
            f"to {after[key].dtype}{after[key].shape}"


# -- failure modes (issue 7): NaN is never hidden, misuse is named -------------------

def check_nan_propagates(layer, x):
    """NaN in the input, or in any floating parameter, reaches the output, in
    training and in evaluation, as IEEE arithmetic and PyTorch give."""
    layer.cast(np.float64)
    x = np.array(x, dtype=np.float64)
    forward = _replaying(layer)
    for training in (True, False):
        poisoned = x.copy()
        poisoned.flat[0] = np.nan
        assert np.isnan(forward(poisoned, training)).any(), \
            f"{layer!r} (training={training}) hides a NaN input"
        for name, param in layer.params.items():
            if not np.issubdtype(param.dtype, np.floating):
                continue
            kept = param.flat[0]
            param.flat[0] = np.nan
            try:
                try:
                    out = forward(x, training)
                except ValueError as error:
                    # refusing the NaN with a clear error reports it too (a layer that must
                    # round its weights onto a grid cannot carry a NaN through)
                    assert "NaN" in str(error), \
                        f"{layer!r} (training={training}) fails on a NaN in {name} without naming it: {error}"
                    continue
                assert np.isnan(out).any(), \
                    f"{layer!r} (training={training}) hides a NaN in {name}"
            finally:
                param.flat[0] = kept


def check_call_order_errors(fresh_layer, x):
    """backward before forward is a RuntimeError naming the layer; a gradient
    of another shape than the output is a ValueError giving the expected one."""
    import pytest
    x = np.asarray(x, dtype=np.float32)
    with pytest.raises(RuntimeError, match="called before forward"):
        fresh_layer.backward(np.zeros((2, 2), np.float32))
    with pytest.raises(RuntimeError, match="called before forward"):
        fresh_layer.backward_params(np.zeros((2, 2), np.float32))
    out = fresh_layer.forward(x, True)
    wrong = np.zeros(out.shape[:-1] + (out.shape[-1] + 1,), np.float32)
    with pytest.raises(ValueError, match=rf"expects a gradient of shape \({out.shape[0]}, "):
        fresh_layer.backward(wrong)
    fresh_layer.backward(np.zeros(out.shape, np.float32))        # the right shape works
