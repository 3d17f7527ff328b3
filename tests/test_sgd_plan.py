"""SGD's one-call step of every parameter (``SGD._planned_step``, ``sgd_update_many``):
the kernel equals its twin, and training with the plan equals training without it, bit
for bit, also when what the plan caches changes under it (hyperparameters, velocities,
parameter arrays)."""
import numpy as np
import pytest

import minidnn as md
from minidnn.kernels.sgd_update import FORMS, sgd_update_many, sgd_update_many_numpy
from minidnn.optimizers import SGD, InvLR, StepLR
from minidnn.training import fit


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("form", ["caffe", "pytorch"])
def test_many_kernel_equals_its_twin(dtype, form):
    rng = np.random.default_rng(1)
    sizes = (7, 1, 130, 33)
    ws = [rng.standard_normal(n).astype(dtype) for n in sizes]
    gs = [rng.standard_normal(n).astype(dtype) for n in sizes]
    vs = [rng.standard_normal(n).astype(dtype) for n in sizes]
    vs[1] = ws[1]                      # α = 0: the velocity slot is the parameter, unread
    scalars = np.array([(0.1, 0.9, 1e-3), (0.2, 0.0, 0.0), (0.05, 0.5, 0.0),
                        (0.3, 0.0, 1e-2)], dtype=dtype)
    decays = np.array([True, False, False, True])
    ref_w, ref_v = [w.copy() for w in ws], [v.copy() for v in vs]
    ref_v[1] = ref_w[1]
    sgd_update_many_numpy(ref_w, gs, ref_v, scalars, decays, FORMS[form])
    sgd_update_many(tuple(ws), tuple(gs), tuple(vs), scalars, decays, FORMS[form])
    for a, b in zip(ws + vs, ref_w + ref_v):
        assert np.array_equal(a, b)


def _data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((96, 12)).astype(np.float32), rng.integers(0, 3, 96)


def _model():
    rng = np.random.default_rng(2)
    return md.Sequential([md.SparseDense(12, 16, density=0.5, rng=rng), md.Sigmoid(),
                          md.Dense(16, 3, rng=rng)], seed=None)


def _train(planned, opt_kwargs, epochs=3, tamper=None, monkeypatch=None):
    monkeypatch.setattr(SGD, "FUSED_PLAN", planned)
    x, y = _data()
    model = _model()
    opt = SGD(**opt_kwargs)
    for epoch in range(epochs):
        if tamper is not None:
            tamper(epoch, model, opt)
        fit(model, (x, y), epochs=1, batch_size=32, optimizer=opt, seed=epoch, progress=False,
            log=None)
    return model, opt


def _same(a, b):
    (ma, oa), (mb, ob) = a, b
    for la, lb in zip(ma.layers, mb.layers):
        for name in la.params:
            assert np.array_equal(la.params[name], lb.params[name]), (la.name, name)
    assert oa.velocity.keys() == ob.velocity.keys()
    for key in oa.velocity:
        assert np.array_equal(oa.velocity[key], ob.velocity[key]), key
    assert oa.steps == ob.steps


@pytest.mark.parametrize("kwargs", [
    dict(lr=0.1, momentum=0.9, weight_decay=1e-3),
    dict(lr=0.1, momentum=0.0, weight_decay=1e-3),
    dict(lr=0.1, momentum=0.9, momentum_form="pytorch", schedule=StepLR(1, 0.5)),
    dict(lr=0.1, momentum=0.9, schedule=InvLR(0.1, 0.75)),
    dict(lr=0.1, momentum=0.9, per_layer={"dense_2": {"lr": 0.01, "momentum": 0.5}},
         param_mult={"b": {"lr": 2.0, "weight_decay": 1.0}}, weight_decay=1e-3),
])
def test_planned_training_equals_per_parameter_steps(kwargs, monkeypatch):
    _same(_train(True, kwargs, monkeypatch=monkeypatch),
          _train(False, kwargs, monkeypatch=monkeypatch))


def test_plan_follows_changes_under_it(monkeypatch):
    """A learning rate set by hand, a per_layer dict changed in place, velocities loaded
    from a state dict and parameter arrays replaced by load_state all reach the step."""
    def tamper(epoch, model, opt):
        if epoch == 1:
            opt.lr = 0.03
            opt.per_layer.setdefault("dense_2", {})["lr"] = 0.2
        if epoch == 2:
            opt.per_layer["dense_2"]["momentum"] = 0.1
            opt.load_state_dict({k: v for k, v in opt.state_dict().items()})
            layer = model.layers[2]
            layer.load_state({k: v * 0.5 for k, v in layer.params.items()}, {})
    kwargs = dict(lr=0.1, momentum=0.9, weight_decay=1e-3)
    planned = _train(True, kwargs, epochs=4, tamper=tamper, monkeypatch=monkeypatch)
    plain = _train(False, kwargs, epochs=4, tamper=tamper, monkeypatch=monkeypatch)
    _same(planned, plain)


def test_a_layer_without_the_default_storage_takes_the_general_path(monkeypatch):
    """A layer whose update is its own (in_place_param None) makes the plan step aside."""
    from minidnn.layers.dense import Dense

    class Clipped(Dense):
        def apply_update(self, name, delta):
            self.params[name] += delta
            np.clip(self.params[name], -0.5, 0.5, out=self.params[name])

    x, y = _data()
    model = md.Sequential([Clipped(12, 3, rng=np.random.default_rng(0))], seed=None)
    opt = SGD(0.5, momentum=0.9)
    fit(model, (x, y), epochs=2, batch_size=32, optimizer=opt, progress=False, log=None)
    assert opt.__dict__.get("_plan") is None
    assert np.abs(model.layers[0].params["W"]).max() <= 0.5


def _train_rbm(planned, monkeypatch):
    """Three CD-1 epochs of a small Bernoulli RBM through the engine's SGD (momentum,
    weight decay on W), with or without the one-call plan. Returns (rbm, optimizer)."""
    from minidnn.pretraining import BernoulliRBM, PretrainConfig
    from minidnn.pretraining.dbn import train_unit
    monkeypatch.setattr(SGD, "FUSED_PLAN", planned)
    x = (np.random.default_rng(3).random((64, 20)) < 0.3).astype(np.float32)
    rbm = BernoulliRBM(20, 9, rng=1, dtype=np.float32)
    config = PretrainConfig(epochs=3, lr=0.1, momentum=0.5, final_momentum=0.9,
                            momentum_switch_epoch=2, batch_size=16, monitor_size=16)
    opt = SGD(config.lr, config.momentum, config.weight_decay)
    train_unit(rbm, x, config, np.random.default_rng(4), optimizer=opt)
    return rbm, opt


def test_an_rbm_takes_the_plan(monkeypatch):
    """BernoulliRBM's W, visible and hidden biases go through the one-call plan, bit for
    bit the per-parameter steps (its row-split step, which asked for W's update in
    parts, was deleted in sitting 22)."""
    planned, plain = _train_rbm(True, monkeypatch), _train_rbm(False, monkeypatch)
    assert planned[1].__dict__.get("_plan") is not None
    from types import SimpleNamespace
    _same((SimpleNamespace(layers=[planned[0]]), planned[1]),
          (SimpleNamespace(layers=[plain[0]]), plain[1]))
