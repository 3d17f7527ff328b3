"""Technique 4: semi-synchronous updates of FC layers (minidnn.semisync).

The rule (Hori, Sekiya & Takenaka): per minibatch one group of output units
takes W ← W − η∂L/∂W + αΔW, all others W ← W + αΔW; groups in round robin.
"""
import numpy as np
import pytest

import minidnn as md
from minidnn import architectures
from minidnn.layers import BatchNorm, Dense, Dropout, ReLU
from minidnn.losses import SoftmaxCrossEntropy
from minidnn.semisync import NeuronGroups, SemiSyncSGD, default_layers


def toy_problem(n=200, d=12, k=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    y = (x @ rng.standard_normal((d, k))).argmax(axis=1)
    return x, y


def net(seed=1, hidden=10, dropout=0.0, bn=False):
    layers = [Dense(12, hidden, name="fc1")]
    if bn:
        layers.append(BatchNorm(hidden))
    layers.append(ReLU())
    if dropout:
        layers.append(Dropout(dropout))
    layers += [Dense(hidden, 7, name="fc2"), ReLU(), Dense(7, 3, name="out")]
    return md.Sequential(layers, seed=seed)


def one_step(model, opt, xb, yb):
    """What fit does per minibatch; returns the full gradients of every Dense W."""
    loss = SoftmaxCrossEntropy()
    opt.begin_step(model)
    _, grad = loss(model.forward(xb, training=True), yb)
    model.backward(grad, input_grad=False)
    opt.step(model)


def full_gradients(model, xb, yb):
    """dL/dW for every layer, all units, with the model's current weights and rng states."""
    import copy
    clone = copy.deepcopy(model)
    for layer in clone.layers:
        layer.active_units = None
    _, grad = SoftmaxCrossEntropy()(clone.forward(xb, training=True), yb)
    clone.backward(grad)
    return {l.name: {k: v.copy() for k, v in l.grads.items()} for l in clone.layers}


# -- the partition ---------------------------------------------------------------------

@pytest.mark.parametrize("order", ["contiguous", "random"])
@pytest.mark.parametrize("n, g, sizes", [(10, None, [3, 3, 2, 2]), (16, None, [4] * 4),
                                         (17, None, [4, 4, 3, 3, 3]), (7, 1, [7]), (5, 5, [1] * 5)])
def test_groups_are_a_disjoint_cover_as_even_as_possible(order, n, g, sizes):
    groups = NeuronGroups(n, g, order=order, seed=3)
    assert len(groups) == len(sizes)  # ⌈√N⌉ by default
    assert groups.sizes() == sizes
    members = np.concatenate([groups.members(i) for i in range(len(groups))])
    assert np.array_equal(np.sort(members), np.arange(n))
    if order == "contiguous":
        assert all(isinstance(groups.active(i), slice) for i in range(len(groups)))


def test_random_groups_come_from_the_seed():
    a, b, c = NeuronGroups(64, order="random", seed=1), NeuronGroups(64, order="random", seed=1), \
        NeuronGroups(64, order="random", seed=2)
    assert all(np.array_equal(a.members(i), b.members(i)) for i in range(8))
    assert not all(np.array_equal(a.members(i), c.members(i)) for i in range(8))
    restored = NeuronGroups.from_state(a.state())
    assert all(np.array_equal(a.members(i), restored.members(i)) for i in range(8))


@pytest.mark.parametrize("kwargs, message", [({"n_units": 0}, "n_units >= 1"),
                                              ({"n_units": 4, "n_groups": 5}, "n_groups must be in 1..4"),
                                              ({"n_units": 4, "order": "striped"}, "order must be one of")])
def test_bad_partitions_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        NeuronGroups(**kwargs)


def test_default_layers_are_every_dense_but_the_output():
    model = net()
    assert default_layers(model) == ["fc1", "fc2"]
    opt = SemiSyncSGD(0.1)
    assert sorted(opt.attach(model)) == ["fc1", "fc2"]
    assert len(opt.neuron_groups["fc1"]) == 4 and len(opt.neuron_groups["fc2"]) == 3
    with pytest.raises(ValueError, match="applies to Dense layers"):
        SemiSyncSGD(0.1, layers=["relu_1"]).attach(model)
    with pytest.raises(ValueError, match="no layer named 'fc9'"):
        SemiSyncSGD(0.1, layers=["fc9"]).attach(model)


# -- the rule --------------------------------------------------------------------------

@pytest.mark.parametrize("order", ["contiguous", "random"])
def test_one_group_per_minibatch_round_robin_each_unit_once_per_cycle(order):
    """Momentum 0: a unit moves only when it takes the gradient step."""
    x, y = toy_problem()
    model = net()
    opt = SemiSyncSGD(0.1, momentum=0.0, weight_decay=0.01, order=order, seed=5)
    opt.attach(model)
    updates = {name: np.zeros(model.layer(name).out_features, int) for name in ("fc1", "fc2")}
    out_before = model.layer("out").params["W"].copy()
    for t in range(4):  # fc1 has 4 groups: one full cycle
        xb, yb = x[32 * t:32 * t + 32], y[32 * t:32 * t + 32]
        grads = full_gradients(model, xb, yb)
        before = {n: {k: v.copy() for k, v in model.layer(n).params.items()} for n in updates}
        one_step(model, opt, xb, yb)
        for name in updates:
            groups = opt.neuron_groups[name]
            active = groups.members(t % len(groups))
            W0, b0 = before[name]["W"], before[name]["b"]
            layer = model.layer(name)
            moved = np.flatnonzero(np.any(layer.params["W"] != W0, axis=0))
            assert np.array_equal(moved, active), f"{name} step {t}: round robin group {t % len(groups)}"
            assert np.array_equal(np.flatnonzero(layer.params["b"] != b0), active)
            expected = W0[:, active] - np.float32(0.1) * (grads[name]["W"][:, active]
                                                          + np.float32(0.01) * W0[:, active])
            np.testing.assert_allclose(layer.params["W"][:, active], expected, rtol=1e-6, atol=1e-7)
            updates[name][moved] += 1
    assert np.all(updates["fc1"] == 1)  # after ⌈√N⌉ steps every unit had exactly one
    # fc2 has 3 groups: in 4 steps group 0 had two updates, the others one
    assert np.array_equal(np.bincount(np.concatenate(
        [opt.neuron_groups["fc2"].members(t % 3) for t in range(4)]), minlength=7), updates["fc2"])
    assert np.any(model.layer("out").params["W"] != out_before)  # the output layer: plain SGD


@pytest.mark.parametrize("order", ["contiguous", "random"])  # random: the Numba column kernels
def test_inactive_units_move_by_exactly_alpha_delta_w(order):
    x, y = toy_problem()
    model = net()
    opt = SemiSyncSGD(0.05, momentum=0.9, weight_decay=0.001, order=order)
    for t in range(3):
        one_step(model, opt, x[32 * t:32 * t + 32], y[32 * t:32 * t + 32])
    for t in range(3, 9):
        xb, yb = x[32 * (t % 6):32 * (t % 6) + 32], y[32 * (t % 6):32 * (t % 6) + 32]
        grads = full_gradients(model, xb, yb)
        layer = model.layer("fc1")
        W0, v0 = layer.params["W"].copy(), opt.velocity["fc1/W"].copy()
        b0, vb0 = layer.params["b"].copy(), opt.velocity["fc1/b"].copy()
        active = opt.neuron_groups["fc1"].members(opt.steps % 4)
        inactive = np.setdiff1d(np.arange(10), active)
        one_step(model, opt, xb, yb)
        alpha = np.float32(0.9)
        # bit for bit: W + α·ΔW in float32
        assert np.array_equal(layer.params["W"][:, inactive], W0[:, inactive] + alpha * v0[:, inactive])
        assert np.array_equal(layer.params["b"][inactive], b0[inactive] + alpha * vb0[inactive])
        expected = W0[:, active] + (alpha * v0[:, active] - np.float32(0.05) * (
            grads["fc1"]["W"][:, active] + np.float32(0.001) * W0[:, active]))
        np.testing.assert_allclose(layer.params["W"][:, active], expected, rtol=1e-5, atol=1e-7)


def test_dense_computes_only_the_active_columns():
    rng = np.random.default_rng(0)
    layer = Dense(6, 9, rng=1)
    # index arrays after index arrays take the Numba clear-and-write sweep
    for cols in (slice(3, 6), np.array([0, 4, 8]), slice(0, 3), np.array([1, 2]),
                 np.array([3, 5, 7]), np.array([0, 8])):
        x = rng.standard_normal((5, 6)).astype(np.float32)
        g = rng.standard_normal((5, 9)).astype(np.float32)
        layer.active_units = cols
        layer.forward(x, training=True)
        layer.backward(g)
        full = x.T @ g
        mask = np.zeros(9, bool)
        mask[cols] = True
        np.testing.assert_allclose(layer.grads["W"][:, mask], full[:, mask], rtol=1e-6)
        assert np.all(layer.grads["W"][:, ~mask] == 0)  # the previous step's columns re-zeroed
    layer.active_units = None
    layer.backward(g)
    np.testing.assert_allclose(layer.grads["W"], x.T @ g, rtol=1e-6)


def test_one_group_equals_plain_momentum_sgd_bit_for_bit():
    data = toy_problem()
    a, b = net(dropout=0.3), net(dropout=0.3)
    kw = dict(epochs=3, batch_size=32, progress=False, log=None, seed=4)
    md.fit(a, data, optimizer=md.SGD(0.05, momentum=0.9, weight_decay=1e-3), **kw)
    md.fit(b, data, optimizer=SemiSyncSGD(0.05, momentum=0.9, weight_decay=1e-3, n_groups=1), **kw)
    for (name, p), (_, q) in zip(a.named_params(), b.named_params()):
        assert np.array_equal(p, q), name


@pytest.mark.parametrize("order", ["contiguous", "random"])
def test_resume_in_the_middle_of_a_cycle_equals_an_uninterrupted_run(tmp_path, order):
    data = toy_problem(n=150)  # 5 minibatches per epoch; fc1 has 4 groups, fc2 3
    kw = dict(batch_size=32, progress=False, log=None, seed=2, drop_last=False)  # 5 steps/epoch

    def opt():
        return SemiSyncSGD(0.05, momentum=0.9, weight_decay=1e-4, order=order, seed=7)
    whole = net(dropout=0.2, bn=True)
    md.fit(whole, data, epochs=3, optimizer=opt(), **kw)
    ckpt = tmp_path / "run.ckpt.h5"
    md.fit(net(dropout=0.2, bn=True), data, epochs=1, optimizer=opt(), checkpoint=ckpt, **kw)
    resumed, resumed_opt = net(dropout=0.2, bn=True, seed=99), opt()  # other init: all from file
    md.fit(resumed, data, epochs=3, optimizer=resumed_opt, checkpoint=ckpt, resume=True, **kw)
    assert resumed_opt.steps == 15 and resumed_opt.steps % 4 != 0
    for (name, p), (_, q) in zip(whole.named_params(), resumed.named_params()):
        assert np.array_equal(p, q), name


def test_resume_restores_the_saved_groups_not_fresh_ones(tmp_path):
    model = net()
    opt = SemiSyncSGD(0.1, order="random", seed=1)
    opt.attach(model)
    opt.steps = 6
    other = SemiSyncSGD(0.1, order="random", seed=2)
    other.load_state_dict(opt.state_dict())
    assert other.steps == 6
    for name in ("fc1", "fc2"):
        assert np.array_equal(other.neuron_groups[name].permutation, opt.neuron_groups[name].permutation)
    with pytest.raises(ValueError, match="no 'semisync' entry"):
        other.load_state_dict(md.SGD(0.1).state_dict())


def test_composes_with_dropout_and_batchnorm_and_learns():
    x, y = toy_problem(n=600)
    model = net(hidden=16, dropout=0.2, bn=True)
    opt = SemiSyncSGD(0.1, momentum=0.9)
    before = md.evaluate(model, (x, y))["accuracy"]
    # with dropout and BN in between, still one group's columns get a gradient per step
    xb, yb = x[:32], y[:32]
    opt.begin_step(model)
    _, g = SoftmaxCrossEntropy()(model.forward(xb, training=True), yb)
    model.backward(g, input_grad=False)
    nonzero = np.flatnonzero(np.any(model.layer("fc1").grads["W"] != 0, axis=0))
    assert set(nonzero) <= set(opt.neuron_groups["fc1"].members(0))
    opt.step(model)
    assert model.layer("fc1").active_units is None  # cleared after the step
    history = md.fit(model, (x, y), epochs=15, batch_size=32, optimizer=opt, progress=False, log=None)
    assert history["train_loss"][-1] < history["train_loss"][0]
    assert md.evaluate(model, (x, y))["accuracy"] > max(0.85, before)


# -- architecture and command line ---------------------------------------------------------

def test_vgg_cifar_has_vgg16_stages_and_its_options():
    model = architectures.build("vgg-cifar:width=2,fc=9,dropout=0.5,bn=both", input_shape=(3, 32, 32))
    names = [l.name for l in model.layers]
    convs = [n for n in names if n.startswith("conv")]
    assert len(convs) == 13 and convs[-1] == "conv5_3"
    assert model.layer("conv4_1").out_channels == 16 and model.layer("fc6").in_features == 16
    assert model.layer("fc7").params["W"].shape == (9, 9)  # square FC layers
    assert "bn1_1" in names and "bn_fc6" in names and "drop_fc7" in names
    assert default_layers(model) == ["fc6", "fc7"]
    out = model.forward(np.zeros((2, 3, 32, 32), np.float32), training=True)
    assert out.shape == (2, 10)
    plain = architectures.build("vgg-cifar:width=2,fc=9", input_shape=(3, 32, 32))
    assert not any(isinstance(l, (BatchNorm, Dropout)) for l in plain.layers)
    with pytest.raises(ValueError, match="bad vgg-cifar option 'bn=all'"):
        architectures.build("vgg-cifar:bn=all", input_shape=(3, 32, 32))
    with pytest.raises(ValueError, match="expects 32×32 inputs"):
        architectures.build("vgg-cifar", input_shape=(1, 28, 28))


def test_cli_semi_sync_fc(tmp_path, capsys):
    from minidnn import io
    from minidnn.cli import main
    out = tmp_path / "m.h5"
    assert main(["train", "--quiet", "--epochs", "1", "--arch", "mlp:784-36-16-10",
                 "--semi-sync", "fc", "--semi-sync-groups", "4", "--semi-sync-order", "random",
                 "--out", str(out)]) == 0
    assert "test accuracy" in capsys.readouterr().out
    info = io.read_training_info(str(out))
    assert info["optimizer"]["type"] == "semisync_sgd"
    assert info["optimizer"]["layers"] == ["dense_1", "dense_3"]
    assert info["optimizer"]["n_groups"] == 4
    assert main(["train", "--quiet", "--epochs", "1", "--arch", "mlp:784-16-10",
                 "--semi-sync", "relu_2", "--out", str(out)]) == 1
    assert "applies to Dense layers" in capsys.readouterr().err


def test_config_round_trip():
    opt = SemiSyncSGD(0.01, 0.9, 1e-4, layers=["fc1"], n_groups=3, order="random", seed=4)
    again = SemiSyncSGD.from_config(opt.get_config())
    assert again.get_config() == opt.get_config()


def test_semi_sync_refuses_the_pytorch_momentum_form():
    from types import SimpleNamespace
    from minidnn.semisync import optimizer_from_args
    args = SimpleNamespace(semi_sync="fc", semi_sync_groups=None, semi_sync_order="contiguous", seed=0)
    with pytest.raises(ValueError, match="Caffe's momentum form"):
        optimizer_from_args(args, md.SGD(0.1, momentum=0.9, momentum_form="pytorch"))
