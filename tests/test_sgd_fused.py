"""The fused in-place SGD step (kernels/sgd_update.py) against its NumPy twin and
against the unfused path (ΔW from ``_step_delta``, then ``apply_update``), bit for bit."""
import numpy as np
import pytest

import minidnn as md
from minidnn import architectures
from minidnn.kernels.sgd_update import (sgd_update, sgd_update_many, sgd_update_numpy,
                                        sgd_update_prepared,
                                        sgd_update_unchecked)
from minidnn.layers.base import ParamHolder
from minidnn.optimizers import SGD, StepLR
from minidnn.pretraining import BernoulliRBM
from minidnn.training import fit


class UnfusedSGD(SGD):
    """SGD on the old path: a subclass with its own ``_step_delta`` is never fused."""

    def _step_delta(self, key, layer, pname, grad, hyper):
        return super()._step_delta(key, layer, pname, grad, hyper)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("form", ["caffe", "pytorch"])
@pytest.mark.parametrize("momentum,weight_decay", [(0.0, 0.0), (0.0, 0.004), (0.9, 0.0),
                                                   (0.9, 0.004)])
@pytest.mark.parametrize("size", [1000, 70001])
def test_kernel_is_bit_identical_to_the_numpy_twin(dtype, form, momentum, weight_decay, size):
    rng = np.random.default_rng(size)
    w = rng.standard_normal(size).astype(dtype)
    v = (0.01 * rng.standard_normal(size)).astype(dtype)
    w_ref, v_ref, v_start = w.copy(), v.copy(), v.copy()
    for step in range(3):
        g = rng.standard_normal(size).astype(dtype)
        sgd_update(w, g, v, 0.05, momentum, weight_decay, form)
        sgd_update_numpy(w_ref, g, v_ref, 0.05, momentum, weight_decay, form)
        assert np.array_equal(w, w_ref) and np.array_equal(v, v_ref)
    if not momentum:   # the velocity is left alone without momentum
        assert np.array_equal(v, v_start)


def _mlp_data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((120, 12)).astype(np.float32)
    return x, rng.integers(0, 3, 120)


@pytest.mark.parametrize("form", ["caffe", "pytorch"])
def test_fused_sgd_trains_bit_identically_to_the_unfused_path(form, monkeypatch):
    """Momentum, weight decay, Caffe's bias multipliers and a learning-rate drop: every
    weight and every velocity equal after training, and the saved state the same."""
    from minidnn import optimizers
    calls = []

    def counted(*args):
        calls.append(args[0].shape)
        return sgd_update_prepared(*args)
    def counted_many(ws, *args):
        calls.extend(w.shape for w in ws)
        return sgd_update_many(ws, *args)
    # SGD._fused_step checks the operands itself and calls the kernel directly;
    # SGD._planned_step steps all of them in one call
    monkeypatch.setattr(optimizers, "sgd_update_prepared", counted)
    monkeypatch.setattr(optimizers, "sgd_update_many", counted_many)
    x, y = _mlp_data()
    results = []
    for cls in (SGD, UnfusedSGD):
        model = architectures.mlp([12, 16, 3], seed=3)
        opt = cls(0.05, 0.9, 0.004, schedule=StepLR(2, 0.1), momentum_form=form,
                  param_mult={"b": {"lr": 2.0, "weight_decay": 1.0}})
        fit(model, (x, y), epochs=3, batch_size=32, optimizer=opt, seed=0, progress=False,
            log=lambda line: None)
        results.append((model, opt))
    (fused_model, fused), (plain_model, plain) = results
    assert len(calls) == 3 * 4 * 4      # epochs × batches × parameters: all fused
    for a, b in zip(fused_model.layers, plain_model.layers):
        for name in a.params:
            assert np.array_equal(a.params[name], b.params[name]), (a.name, name)
    fs, ps = fused.state_dict(), plain.state_dict()
    assert fs.keys() == ps.keys() and fs["steps"] == ps["steps"] and fs["epoch"] == ps["epoch"]
    assert fs["velocity"].keys() == ps["velocity"].keys()
    for key in fs["velocity"]:
        assert fs["velocity"][key].dtype == ps["velocity"][key].dtype
        assert np.array_equal(fs["velocity"][key], ps["velocity"][key]), key
    assert fused.get_config() == plain.get_config()


def test_fused_rbm_step_equals_the_unfused_one():
    rng = np.random.default_rng(0)
    x = (rng.random((50, 20)) < 0.3).astype(np.float32)
    params = []
    for cls in (SGD, UnfusedSGD):
        rbm = BernoulliRBM(20, 8, rng=0)
        opt = cls(0.1, 0.5, 0.001)
        holder = type("Holder", (), {"layers": [rbm]})()
        step_rng = np.random.default_rng(1)
        for _ in range(4):
            rbm.cd_gradients(x, 1, step_rng)
            opt.step(holder)
        params.append({k: v.copy() for k, v in rbm.params.items()})
    for name in params[0]:
        assert np.array_equal(params[0][name], params[1][name]), name


def test_resume_from_a_checkpoint_is_exact_with_the_fused_step(tmp_path):
    x, y = _mlp_data()

    def run(epochs, resume):
        model = architectures.mlp([12, 16, 3], seed=3)
        opt = SGD(0.05, 0.9, 0.004, schedule=StepLR(2, 0.1))
        fit(model, (x, y), epochs=epochs, batch_size=32, optimizer=opt, seed=0,
            checkpoint=str(tmp_path / "ck.h5"), resume=resume, progress=False,
            log=lambda line: None)
        return model, opt

    straight, _ = run(3, False)
    (tmp_path / "ck.h5").unlink()
    run(2, False)
    resumed, _ = run(3, True)
    for a, b in zip(straight.layers, resumed.layers):
        for name in a.params:
            assert np.array_equal(a.params[name], b.params[name])


def test_layers_with_their_own_update_get_no_in_place_array():
    class Rounded(ParamHolder):
        def __init__(self):
            self.params = {"W": np.zeros(3, np.float32)}

        def apply_update(self, name, delta):
            self.params[name] += np.round(delta)

    class Plain(ParamHolder):
        def __init__(self):
            self.params = {"W": np.zeros(3, np.float32)}

    assert Rounded().in_place_param("W") is None
    plain = Plain()
    assert plain.in_place_param("W") is plain.params["W"]
    dense = md.Dense(3, 2)
    assert dense.in_place_param("W") is dense.params["W"]


def test_arrays_the_kernel_cannot_take_fall_back_to_the_unfused_path():
    """A float64 gradient for a float32 weight, or a non-contiguous weight: same result
    as the unfused path, no error."""
    layer = md.Dense(6, 4)
    layer.initialize(np.random.default_rng(0))
    layer.params["W"] = np.asfortranarray(layer.params["W"])
    g = np.random.default_rng(1).standard_normal(layer.params["W"].shape)     # float64
    layer.grads = {"W": g, "b": np.ones(4, np.float32)}
    twin = md.Dense(6, 4)
    twin.params = {k: v.copy() for k, v in layer.params.items()}
    twin.grads = dict(layer.grads)
    holder = type("Holder", (), {"layers": [layer]})()
    twin_holder = type("Holder", (), {"layers": [twin]})()
    SGD(0.1, 0.9, 0.01).step(holder)
    UnfusedSGD(0.1, 0.9, 0.01).step(twin_holder)
    for name in layer.params:
        assert np.array_equal(layer.params[name], twin.params[name])


def test_sgd_update_rejects_what_it_cannot_update():
    w = np.zeros(4, np.float32)
    with pytest.raises(ValueError, match="one dtype and shape"):
        sgd_update(w, np.zeros(4, np.float64), None, 0.1, 0.0, 0.0)
    with pytest.raises(ValueError, match="needs the velocity"):
        sgd_update(w, np.zeros(4, np.float32), None, 0.1, 0.9, 0.0)
    with pytest.raises(ValueError, match="form"):
        sgd_update(w, np.zeros(4, np.float32), None, 0.1, 0.0, 0.0, form="adam")
