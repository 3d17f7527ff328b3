"""Every core layer, loss and the optimizer against PyTorch on the same inputs.

All comparisons run in float64, so agreement is to rounding (rtol 1e-10),
not to a loose tolerance that could hide a wrong term.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch not installed; reference tests against it are skipped")
import torch.nn.functional as F  # noqa: E402

from minidnn.layers import BatchNorm, Dense, Flatten, Identity, ReLU, Sigmoid, Tanh  # noqa: E402
from minidnn.losses import MSE, SoftmaxCrossEntropy  # noqa: E402
from minidnn.model import Sequential  # noqa: E402
from minidnn.optimizers import SGD  # noqa: E402

RTOL, ATOL = 1e-10, 1e-12


def _t(a, requires_grad=False):
    return torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=requires_grad)


def _close(ours, theirs, what=""):
    theirs = theirs.detach().numpy() if isinstance(theirs, torch.Tensor) else theirs
    np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=ATOL, err_msg=what)


def _run_torch(module, x, upstream):
    """Forward x through a torch module, backprop upstream; return (y, dx)."""
    xt = _t(x, requires_grad=True)
    y = module(xt)
    y.backward(_t(upstream))
    return y, xt.grad


@pytest.mark.parametrize("bias", [True, False])
def test_dense_matches_torch_linear(bias):
    rng = np.random.default_rng(0)
    layer = Dense(5, 3, bias=bias, rng=0).cast(np.float64)
    if bias:
        layer.params["b"] = rng.standard_normal(3)
    linear = torch.nn.Linear(5, 3, bias=bias).double()
    with torch.no_grad():
        linear.weight.copy_(_t(layer.params["W"].T))  # ours (in, out), torch (out, in)
        if bias:
            linear.bias.copy_(_t(layer.params["b"]))
    x, g = rng.standard_normal((4, 5)), rng.standard_normal((4, 3))
    y_ref, dx_ref = _run_torch(linear, x, g)
    _close(layer.forward(x, training=True), y_ref, "output")
    _close(layer.backward(g), dx_ref, "input grad")
    _close(layer.grads["W"], linear.weight.grad.T, "W grad")
    if bias:
        _close(layer.grads["b"], linear.bias.grad, "b grad")


@pytest.mark.parametrize("ours, theirs", [(ReLU, torch.nn.ReLU), (Sigmoid, torch.nn.Sigmoid),
                                          (Tanh, torch.nn.Tanh), (Identity, torch.nn.Identity)])
def test_activations_match_torch(ours, theirs):
    rng = np.random.default_rng(1)
    x = 4 * rng.standard_normal((6, 7))
    x[0, :3] = [-1000.0, 1000.0, 30.0]  # saturated ends included
    g = rng.standard_normal(x.shape)
    layer = ours()
    y_ref, dx_ref = _run_torch(theirs(), x, g)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        _close(layer.forward(x, training=True), y_ref, "output")
        _close(layer.backward(g), dx_ref, "input grad")


def test_flatten_matches_torch_flatten():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 2, 4, 5))
    g = rng.standard_normal((3, 40))
    y_ref, dx_ref = _run_torch(torch.nn.Flatten(), x, g)
    layer = Flatten()
    _close(layer.forward(x), y_ref)
    _close(layer.backward(g), dx_ref)


def _matched_batchnorms(shape, rng, momentum=0.1, eps=1e-5):
    c = shape[1]
    ours = BatchNorm(c, momentum=momentum, eps=eps).cast(np.float64)
    theirs = (torch.nn.BatchNorm1d if len(shape) == 2 else torch.nn.BatchNorm2d)(
        c, momentum=momentum, eps=eps).double()
    ours.params["gamma"] = rng.uniform(0.5, 2.0, c)
    ours.params["beta"] = rng.standard_normal(c)
    ours.buffers["running_mean"] = rng.standard_normal(c)
    ours.buffers["running_var"] = rng.uniform(0.5, 2.0, c)
    with torch.no_grad():
        theirs.weight.copy_(_t(ours.params["gamma"]))
        theirs.bias.copy_(_t(ours.params["beta"]))
        theirs.running_mean.copy_(_t(ours.buffers["running_mean"]))
        theirs.running_var.copy_(_t(ours.buffers["running_var"]))
    return ours, theirs


@pytest.mark.parametrize("shape", [(8, 4), (2, 3), (4, 3, 5, 5), (1, 2, 3, 3)])
@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_matches_torch_including_running_stats(shape, training):
    rng = np.random.default_rng(3)
    ours, theirs = _matched_batchnorms(shape, rng, momentum=0.2, eps=1e-3)
    theirs.train(training)
    for step in range(3):  # several steps so the running statistics compound
        x = 2.0 + 3.0 * rng.standard_normal(shape)
        g = rng.standard_normal(shape)
        theirs.zero_grad()
        y_ref, dx_ref = _run_torch(theirs, x, g)
        _close(ours.forward(x, training=training), y_ref, f"output, step {step}")
        _close(ours.backward(g), dx_ref, f"input grad, step {step}")
        _close(ours.grads["gamma"], theirs.weight.grad, f"gamma grad, step {step}")
        _close(ours.grads["beta"], theirs.bias.grad, f"beta grad, step {step}")
        _close(ours.buffers["running_mean"], theirs.running_mean, f"running mean, step {step}")
        _close(ours.buffers["running_var"], theirs.running_var, f"running var, step {step}")


@pytest.mark.parametrize("targets", ["labels", "one_hot", "probabilities"])
def test_cross_entropy_matches_torch(targets):
    rng = np.random.default_rng(4)
    logits = 5 * rng.standard_normal((6, 4))
    logits[0] = [1e4, -1e4, 0.0, 3.0]
    labels = rng.integers(0, 4, 6)
    target = {"labels": labels, "one_hot": np.eye(4)[labels],
              "probabilities": np.exp(rng.standard_normal((6, 4)))}[targets]
    if targets == "probabilities":
        target = target / target.sum(axis=1, keepdims=True)
    zt = _t(logits, requires_grad=True)
    ref = F.cross_entropy(zt, torch.tensor(labels) if targets == "labels" else _t(target))
    ref.backward()
    value, grad = SoftmaxCrossEntropy()(logits, target)
    np.testing.assert_allclose(value, ref.item(), rtol=RTOL)
    _close(grad, zt.grad)


@pytest.mark.parametrize("per_element", [True, False])
def test_mse_matches_torch(per_element):
    rng = np.random.default_rng(5)
    pred, target = rng.standard_normal((5, 7)), rng.standard_normal((5, 7))
    pt = _t(pred, requires_grad=True)
    if per_element:
        ref = F.mse_loss(pt, _t(target))
    else:  # ½ Σ‖y - t‖² / batch
        ref = 0.5 * F.mse_loss(pt, _t(target), reduction="sum") / pred.shape[0]
    ref.backward()
    value, grad = MSE(per_element=per_element)(pred, target)
    np.testing.assert_allclose(value, ref.item(), rtol=RTOL)
    _close(grad, pt.grad)


def test_sgd_with_momentum_and_weight_decay_matches_torch_over_several_steps():
    """Torch's v ← μv + (g + λw); w ← w − ηv equals our ΔW ← αΔW − η(g + λW)
    for a constant η (ΔW = −ηv). Torch decays every parameter of a group, so
    biases and BN parameters go in a group with weight_decay=0, as our
    ``decay_params`` does."""
    lr, momentum, weight_decay = 0.1, 0.9, 0.01
    ours = Sequential([Dense(6, 5), BatchNorm(5), ReLU(), Dense(5, 3)], seed=0, dtype="float64")
    lin1, bn, lin2 = torch.nn.Linear(6, 5), torch.nn.BatchNorm1d(5), torch.nn.Linear(5, 3)
    theirs = torch.nn.Sequential(lin1, bn, torch.nn.ReLU(), lin2).double()
    with torch.no_grad():
        for torch_linear, dense in ((lin1, ours.layers[0]), (lin2, ours.layers[3])):
            torch_linear.weight.copy_(_t(dense.params["W"].T))
            torch_linear.bias.copy_(_t(dense.params["b"]))
    opt = SGD(lr=lr, momentum=momentum, weight_decay=weight_decay)
    torch_opt = torch.optim.SGD([
        {"params": [lin1.weight, lin2.weight], "weight_decay": weight_decay},
        {"params": [lin1.bias, lin2.bias, bn.weight, bn.bias], "weight_decay": 0.0},
    ], lr=lr, momentum=momentum)
    loss = SoftmaxCrossEntropy()
    rng = np.random.default_rng(6)
    for step in range(5):
        x, y = rng.standard_normal((8, 6)), rng.integers(0, 3, 8)
        value, grad = loss(ours.forward(x, training=True), y)
        ours.backward(grad)
        opt.step(ours)
        torch_opt.zero_grad()
        ref = F.cross_entropy(theirs(_t(x)), torch.tensor(y))
        ref.backward()
        torch_opt.step()
        np.testing.assert_allclose(value, ref.item(), rtol=RTOL)
        pairs = [(ours.layers[0].params["W"], lin1.weight.T), (ours.layers[0].params["b"], lin1.bias),
                 (ours.layers[1].params["gamma"], bn.weight), (ours.layers[1].params["beta"], bn.bias),
                 (ours.layers[3].params["W"], lin2.weight.T), (ours.layers[3].params["b"], lin2.bias),
                 (ours.layers[1].buffers["running_mean"], bn.running_mean),
                 (ours.layers[1].buffers["running_var"], bn.running_var)]
        for i, (mine, reference) in enumerate(pairs):
            _close(mine, reference, f"tensor {i} after step {step}")
