"""The seams every technique plugs into: how an update lands on a layer
(``apply_update``), how a layer's state goes into and out of a file
(``state_for_file`` / ``load_state``), the optimizer's ``begin_step`` hook and
its generic checkpoint state."""
import numpy as np
import pytest

import minidnn as md
from minidnn import io
from minidnn.layers import register_layer
from minidnn.layers.base import Layer
from minidnn.training import fit


@register_layer
class CodeScale(Layer):
    """Test layer: y = x · (codes · step), codes int8 rounded to nearest on
    every update; its buffer ``keep`` has a length chosen at random, like a
    CSR layer's nnz."""

    decay_params = ("codes",)

    def __init__(self, features: int, step: float = 0.25, name=None):
        super().__init__(name)
        self.features, self.step = features, step
        self.params["codes"] = np.zeros(features, dtype=np.int8)
        self.buffers["keep"] = np.arange(3, dtype=np.int32)
        self.zero_grads()
        self.deltas = []

    def initialize(self, rng):
        self.params["codes"] = rng.integers(-4, 5, size=self.features).astype(np.int8)
        self.buffers["keep"] = np.arange(int(rng.integers(1, 10)), dtype=np.int32)

    def forward(self, x, training=False):
        self._x = x
        return x * (self.params["codes"] * self.step).astype(x.dtype)

    def backward(self, grad):
        self.grads["codes"] = (grad * self._x).sum(axis=0)
        return grad * (self.params["codes"] * self.step).astype(grad.dtype)

    def apply_update(self, name, delta):
        self.deltas.append(delta.copy())
        value = self.params[name] * self.step + delta
        self.params[name] = np.clip(np.rint(value / self.step), -127, 127).astype(np.int8)

    def param_value(self, name):
        return (self.params[name] * self.step).astype(self.dtype)

    def load_state(self, params, buffers):
        if params["codes"].dtype != np.int8 or params["codes"].shape != (self.features,):
            raise ValueError(f"{self.name}: codes must be int8 of shape ({self.features},)")
        self.params["codes"] = params["codes"].copy()
        self.buffers["keep"] = buffers["keep"].copy()   # any length
        self.zero_grads()

    def get_config(self):
        return {"features": self.features, "step": self.step, "name": self.name}


def _model(seed=0):
    return md.Sequential([CodeScale(4, name="codes"), md.Dense(4, 3)], seed=seed)


def test_sgd_hands_layers_a_float_step_and_never_touches_integer_params_itself():
    model = _model()
    x = np.ones((2, 4), np.float32)
    model.forward(x, training=True)
    model.backward(np.ones((2, 3), np.float32))
    opt = md.SGD(lr=0.1, momentum=0.9, weight_decay=0.01)
    opt.step(model)
    layer = model.layer("codes")
    assert layer.params["codes"].dtype == np.int8
    assert layer.deltas and layer.deltas[0].dtype == np.float32
    assert opt.velocity["codes/codes"].dtype == np.float32


def test_weight_decay_acts_on_the_float_value_of_a_code_holding_layer():
    layer = CodeScale(4, step=0.25, name="codes")
    layer.params["codes"] = np.array([4, -4, 0, 2], np.int8)
    layer.grads["codes"] = np.zeros(4, np.float32)
    holder = type("Holder", (), {"layers": [layer]})()
    md.SGD(lr=1.0, weight_decay=0.5).step(holder)
    # delta = -lr · λ · value = -0.5 · [1, -1, 0, 0.5]
    np.testing.assert_allclose(layer.deltas[0], [-0.5, 0.5, 0.0, -0.25])


def test_plain_layers_update_in_place_exactly_as_before():
    model = md.Sequential([md.Dense(3, 2)], seed=0)
    W = model.layers[0].params["W"]
    before = W.copy()
    model.forward(np.ones((1, 3), np.float32), training=True)
    model.backward(np.ones((1, 2), np.float32))
    md.SGD(lr=0.5).step(model)
    assert model.layers[0].params["W"] is W          # in place
    np.testing.assert_array_equal(W, before - np.float32(0.5) * model.layers[0].grads["W"])


def test_a_layer_with_state_of_its_own_shape_round_trips_through_a_model_file(tmp_path):
    model = _model(seed=3)
    keep = model.layer("codes").buffers["keep"]
    path = tmp_path / "m.h5"
    md.save(model, path)
    back = md.load(path)
    np.testing.assert_array_equal(back.layer("codes").buffers["keep"], keep)
    assert back.layer("codes").params["codes"].dtype == np.int8
    np.testing.assert_array_equal(back.layer("codes").params["codes"], model.layer("codes").params["codes"])


def test_load_state_errors_become_model_file_errors_naming_the_layer(tmp_path):
    path = tmp_path / "m.h5"
    md.save(_model(), path)
    import h5py
    with h5py.File(path, "a") as h5:
        del h5["layers/codes/params/codes"]
        h5["layers/codes/params/codes"] = np.zeros(4, np.float64)
    with pytest.raises(io.ModelFileError, match="codes: codes must be int8"):
        md.load(path)


def test_default_load_state_checks_names_shapes_and_integer_dtypes():
    layer = md.Dense(3, 2, name="d")
    layer.buffers["index"] = np.arange(2, dtype=np.int32)
    params, buffers = {k: v.astype(np.float64) for k, v in layer.params.items()}, dict(layer.buffers)
    layer.load_state(params, buffers)                       # floats are cast to the layer's dtype
    assert layer.params["W"].dtype == np.float32
    with pytest.raises(ValueError, match="d/buffers/index has dtype int64, expected int32"):
        layer.load_state(params, {"index": np.arange(2)})
    with pytest.raises(ValueError, match=r"d/params/W has shape \(2, 3\), expected \(3, 2\)"):
        layer.load_state({**params, "W": np.zeros((2, 3))}, buffers)
    with pytest.raises(ValueError, match="layer d has params"):
        layer.load_state({"W": params["W"]}, buffers)


def test_write_state_and_read_state_round_trip_nested_dicts(tmp_path):
    import h5py
    state = {"velocity": {"dense_0/W": np.arange(6.0).reshape(2, 3)}, "steps": 7,
             "order": [2, 0, 1], "extra": {"seed": 5, "name": "x"}}
    with h5py.File(tmp_path / "s.h5", "w") as h5:
        io.write_state(h5.create_group("s"), state)
    with h5py.File(tmp_path / "s.h5", "r") as h5:
        back = io.read_state(h5["s"])
    np.testing.assert_array_equal(back["velocity"]["dense_0/W"], state["velocity"]["dense_0/W"])
    assert back["steps"] == 7 and back["order"] == [2, 0, 1] and back["extra"] == state["extra"]


class CountingSGD(md.SGD):
    """An optimizer with state of its own: how often begin_step ran, and when."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.begun = 0
        self.calls = []

    def begin_step(self, model):
        self.calls.append(("begin", self.steps))
        self.begun += 1

    def state_dict(self):
        return {**super().state_dict(), "begun": self.begun}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.begun = int(state["begun"])


def test_begin_step_runs_once_before_every_minibatch_and_its_state_resumes(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 4)).astype(np.float32)
    y = rng.integers(0, 3, size=30)
    model = md.Sequential([md.Dense(4, 3)], seed=0)
    opt = CountingSGD(lr=0.1, momentum=0.5)
    ckpt = tmp_path / "c.h5"
    fit(model, (x, y), epochs=2, batch_size=10, optimizer=opt, checkpoint=ckpt, progress=False,
        log=None)
    assert opt.begun == 6
    assert [c for c in opt.calls] == [("begin", s) for s in range(6)]
    resumed = CountingSGD(lr=0.1, momentum=0.5)
    fit(md.Sequential([md.Dense(4, 3)], seed=0), (x, y), epochs=3, batch_size=10,
        optimizer=resumed, checkpoint=ckpt, resume=True, progress=False, log=None)
    assert resumed.begun == 9 and resumed.steps == 9


def test_per_layer_overrides_keep_groups_as_their_old_name():
    assert md.SGD(per_layer={"a": {"lr": 1.0}}).per_layer == md.SGD(groups={"a": {"lr": 1.0}}).per_layer
    with pytest.raises(ValueError, match="not both"):
        md.SGD(per_layer={}, groups={})
