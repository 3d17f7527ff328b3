"""Failure modes against PyTorch: NaN through ReLU, cross-entropy beyond the
float range, one-sample batch norm, and SGD momentum across a learning-rate
step (Caffe's form, our default, and PyTorch's, our option)."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch not installed; reference tests against it are skipped")
import torch.nn.functional as F  # noqa: E402

import minidnn as md  # noqa: E402


def test_relu_forward_and_backward_treat_nan_as_torch_does():
    x = np.array([[-1.0, np.nan, 0.0, 2.0, -np.inf, np.inf]])
    upstream = np.array([[1.0, 2.0, 3.0, 4.0, 5.0, np.nan]])
    relu = md.ReLU()
    ours = relu.forward(x)
    dx = relu.backward(upstream)
    xt = torch.tensor(x, requires_grad=True)
    yt = F.relu(xt)
    yt.backward(torch.tensor(upstream))
    np.testing.assert_array_equal(ours, yt.detach().numpy())
    np.testing.assert_array_equal(dx, xt.grad.numpy())


@pytest.mark.parametrize("label", [0, 1])
def test_cross_entropy_beyond_the_float_range_matches_torch(label):
    logits = np.array([[3e38, -3e38]], np.float32)
    value, _ = md.SoftmaxCrossEntropy()(logits, np.array([label]))
    reference = F.cross_entropy(torch.tensor(logits), torch.tensor([label])).item()
    assert value == reference       # 0 for the max class, inf for the other


def test_batchnorm_refuses_a_one_sample_batch_as_torch_does():
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        torch.nn.BatchNorm1d(3).train()(torch.ones(1, 3))
    with pytest.raises(ValueError, match="more than one value per feature"):
        md.BatchNorm(3).forward(np.ones((1, 3)), training=True)


def _train_through_an_lr_step(momentum_form, steps_before=3, steps_after=5):
    """Our SGD and torch.optim.SGD (momentum 0.9, weight decay 0.01) on the same
    Dense model and data; lr 0.1, then 0.01 (a x0.1 step). Returns both weight lists."""
    rng = np.random.default_rng(0)
    ours = md.Sequential([md.Dense(5, 4), md.Tanh(), md.Dense(4, 3)], seed=0, dtype="float64")
    lin1, lin2 = torch.nn.Linear(5, 4).double(), torch.nn.Linear(4, 3).double()
    with torch.no_grad():
        for lin, dense in ((lin1, ours.layers[0]), (lin2, ours.layers[2])):
            lin.weight.copy_(torch.tensor(dense.params["W"].T))
            lin.bias.copy_(torch.tensor(dense.params["b"]))
    theirs = torch.nn.Sequential(lin1, torch.nn.Tanh(), lin2)
    opt = md.SGD(0.1, momentum=0.9, weight_decay=0.01, schedule=md.StepLR(1, 0.1),
                 momentum_form=momentum_form)
    torch_opt = torch.optim.SGD([{"params": [lin1.weight, lin2.weight], "weight_decay": 0.01},
                                 {"params": [lin1.bias, lin2.bias], "weight_decay": 0.0}],
                                lr=0.1, momentum=0.9)
    loss = md.SoftmaxCrossEntropy()
    for step in range(steps_before + steps_after):
        epoch = int(step >= steps_before)
        opt.set_epoch(epoch)
        for group in torch_opt.param_groups:
            group["lr"] = 0.1 * 0.1 ** epoch
        x, y = rng.standard_normal((8, 5)), rng.integers(0, 3, 8)
        _, grad = loss(ours.forward(x, training=True), y)
        ours.backward(grad)
        opt.step(ours)
        torch_opt.zero_grad()
        F.cross_entropy(theirs(torch.tensor(x)), torch.tensor(y)).backward()
        torch_opt.step()
    mine = [ours.layers[0].params["W"], ours.layers[2].params["W"]]
    reference = [lin1.weight.detach().numpy().T, lin2.weight.detach().numpy().T]
    return mine, reference


def test_pytorch_momentum_form_matches_torch_sgd_across_a_learning_rate_step():
    mine, reference = _train_through_an_lr_step("pytorch")
    for a, b in zip(mine, reference):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_caffe_momentum_form_matches_torch_until_the_step_and_then_differs():
    for a, b in zip(*_train_through_an_lr_step("caffe", steps_after=0)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    mine, reference = _train_through_an_lr_step("caffe")
    initial = md.Sequential([md.Dense(5, 4), md.Tanh(), md.Dense(4, 3)], seed=0,
                            dtype="float64").layers[0].params["W"]
    moved_caffe, moved_torch = mine[0] - initial, reference[0] - initial
    # measured: the displacements differ by ~100% of torch's after 5 steps at the new rate
    assert np.abs(moved_caffe - moved_torch).max() > 0.25 * np.abs(moved_torch).max()
