"""Losses against finite differences and careful float64 references; SGD
against the update rule written out by hand."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import logsumexp, softmax

from minidnn.layers import BatchNorm, Dense, ReLU
from minidnn.losses import LOSSES, MSE, SoftmaxCrossEntropy, log_softmax
from minidnn.model import Sequential
from minidnn.optimizers import (SGD, ConstantLR, StepLR, optimizer_from_config,
                                schedule_from_config)
from tests.gradcheck import numerical_grad

small = settings(max_examples=20, deadline=None)
batches = st.integers(1, 5)
classes = st.integers(1, 6)
seeds = st.integers(0, 2**32 - 1)


def _loss_gradient_matches_finite_differences(loss, pred, target):
    value, grad = loss(pred, target)
    numeric = numerical_grad(lambda: loss(pred, target)[0], pred)
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-8)
    return value, grad


# -- softmax cross-entropy -------------------------------------------------------

@small
@given(batch=batches, k=classes, seed=seeds)
def test_cross_entropy_with_labels_matches_finite_differences(batch, k, seed):
    rng = np.random.default_rng(seed)
    logits = 3 * rng.standard_normal((batch, k))
    labels = rng.integers(0, k, batch)
    value, _ = _loss_gradient_matches_finite_differences(SoftmaxCrossEntropy(), logits, labels)
    expected = np.mean(logsumexp(logits, axis=1) - logits[np.arange(batch), labels])
    # the reference subtracts two O(10) numbers: for a confident logit pair its loss
    # (~1e-4) carries ~1e-16 of absolute rounding, so the bound is absolute as well
    np.testing.assert_allclose(value, expected, rtol=1e-12, atol=1e-14)


@small
@given(batch=batches, k=classes, seed=seeds, soft=st.booleans())
def test_cross_entropy_with_one_hot_or_soft_targets_matches_finite_differences(batch, k, seed,
                                                                                 soft):
    rng = np.random.default_rng(seed)
    logits = 3 * rng.standard_normal((batch, k))
    labels = rng.integers(0, k, batch)
    target = softmax(rng.standard_normal((batch, k)), axis=1) if soft else np.eye(k)[labels]
    value, grad = _loss_gradient_matches_finite_differences(SoftmaxCrossEntropy(), logits, target)
    if not soft:  # one-hot and integer labels are the same loss
        same_value, same_grad = SoftmaxCrossEntropy()(logits, labels)
        np.testing.assert_allclose(value, same_value, rtol=1e-12)
        np.testing.assert_allclose(grad, same_grad, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_is_safe_for_huge_logits(dtype):
    logits = np.array([[1e4, -1e4, 0.0],
                       [-1e4, 1e4, 5.0],
                       [1e4, 1e4, -1e4],
                       [-1e4, -1e4, -1e4]], dtype)
    labels = np.array([1, 1, 0, 2])
    # exp of -2e4 rounds to 0 (underflow): correct, so only that is allowed
    with np.errstate(all="raise", under="ignore"):
        value, grad = SoftmaxCrossEntropy()(logits, labels)
    assert np.isfinite(value) and np.all(np.isfinite(grad)) and grad.dtype == dtype
    z = logits.astype(np.float64)
    reference = np.mean(logsumexp(z, axis=1) - z[np.arange(4), labels])
    # per sample: 2e4, ~0, log 2, log 3
    np.testing.assert_allclose(reference, (2e4 + 0.0 + np.log(2) + np.log(3)) / 4, rtol=1e-12)
    np.testing.assert_allclose(value, reference, rtol=1e-6)
    expected_grad = (softmax(z, axis=1) - np.eye(3)[labels]) / 4
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grad.sum(axis=1), 0.0, atol=1e-6)


def test_log_softmax_rows_are_normalised_for_any_scale():
    z = np.array([[1e4, 0.0, -1e4], [1.0, 2.0, 3.0], [-1e300, 0.0, 1e300]])
    with np.errstate(all="raise", under="ignore"):
        logp = log_softmax(z)
    np.testing.assert_allclose(np.exp(logp).sum(axis=1), 1.0, rtol=1e-12)


def test_cross_entropy_rejects_bad_labels_and_batch_mismatch():
    loss = SoftmaxCrossEntropy()
    logits = np.zeros((3, 4))
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        loss(logits, np.array([0, 1, 4]))
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        loss(logits, np.array([0, -1, 2]))
    with pytest.raises(ValueError, match="batch"):
        loss(logits, np.array([0, 1]))
    with pytest.raises(ValueError, match="batch"):
        loss(logits, np.eye(4)[:2])
    with pytest.raises(ValueError, match="classes"):
        loss(np.zeros((3, 4, 1)), np.array([0, 1, 2]))


# -- MSE -----------------------------------------------------------------------

@small
@given(batch=batches, n=classes, seed=seeds, per_element=st.booleans())
def test_mse_matches_its_formula_and_finite_differences(batch, n, seed, per_element):
    rng = np.random.default_rng(seed)
    pred, target = rng.standard_normal((batch, n)), rng.standard_normal((batch, n))
    loss = MSE(per_element=per_element)
    value, _ = _loss_gradient_matches_finite_differences(loss, pred, target)
    sq = (pred - target) ** 2
    expected = sq.mean() if per_element else 0.5 * sq.sum() / batch
    np.testing.assert_allclose(value, expected, rtol=1e-12)


def test_mse_rejects_shape_and_batch_mismatch():
    with pytest.raises(ValueError, match="batch"):
        MSE()(np.zeros((3, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="shape"):
        MSE()(np.zeros((3, 2)), np.zeros((3, 4)))


def test_losses_keep_float32_and_are_registered():
    pred = np.ones((2, 3), np.float32)
    assert MSE()(pred, np.zeros((2, 3)))[1].dtype == np.float32
    assert MSE(per_element=True)(pred, np.zeros((2, 3)))[1].dtype == np.float32
    assert SoftmaxCrossEntropy()(pred, np.array([0, 2]))[1].dtype == np.float32
    assert LOSSES == {"softmax_cross_entropy": SoftmaxCrossEntropy, "mse": MSE}


# -- SGD -------------------------------------------------------------------------

def _model(seed=0):
    return Sequential([Dense(3, 4), BatchNorm(4), ReLU(), Dense(4, 2, bias=False)],
                      seed=seed, dtype="float64")


def _set_grads(model, rng):
    for layer in model.layers:
        for key, value in layer.params.items():
            layer.grads[key] = rng.standard_normal(value.shape)


def _params(model):
    return {name: value.copy() for name, value in model.named_params()}


def test_sgd_step_with_momentum_and_weight_decay_equals_the_hand_computed_update():
    lr, alpha, lam = 0.1, 0.9, 0.01
    model = _model()
    opt = SGD(lr=lr, momentum=alpha, weight_decay=lam)
    rng = np.random.default_rng(0)
    decayed = {"dense_0/W", "dense_3/W"}  # not biases, not BN gamma/beta
    W = _params(model)
    dW = {k: np.zeros_like(v) for k, v in W.items()}
    for _ in range(3):
        _set_grads(model, rng)
        grads = {f"{l.name}/{k}": g.copy() for l in model.layers for k, g in l.grads.items()}
        opt.step(model)
        for key in W:
            decay = lam * W[key] if key in decayed else 0.0
            dW[key] = alpha * dW[key] - lr * (grads[key] + decay)  # ΔW ← αΔW − η(g + λW)
            W[key] = W[key] + dW[key]                                 # W ← W + ΔW
        for key, value in model.named_params():
            np.testing.assert_allclose(value, W[key], rtol=1e-12, atol=1e-15, err_msg=key)
    assert opt.steps == 3


def test_sgd_without_momentum_is_plain_gradient_descent_with_decay():
    model = _model()
    rng = np.random.default_rng(1)
    _set_grads(model, rng)
    before = _params(model)
    SGD(lr=0.5, weight_decay=0.1).step(model)
    dense = model.layer("dense_0")
    np.testing.assert_allclose(dense.params["W"],
                               before["dense_0/W"] - 0.5 * (dense.grads["W"] + 0.1 * before["dense_0/W"]))
    np.testing.assert_allclose(dense.params["b"], before["dense_0/b"] - 0.5 * dense.grads["b"])


def test_step_lr_divides_the_rate_every_step_size_epochs():
    schedule = StepLR(step_size=3, gamma=0.5)
    assert [schedule(0.8, e) for e in range(8)] == [0.8, 0.8, 0.8, 0.4, 0.4, 0.4, 0.2, 0.2]
    assert ConstantLR()(0.3, 99) == 0.3
    opt = SGD(lr=1.0, schedule=schedule, groups={"dense_3": {"lr": 0.1}})
    model = _model()
    opt.set_epoch(7)
    assert opt.hyper(model.layer("dense_0"))["lr"] == 0.25
    np.testing.assert_allclose(opt.hyper(model.layer("dense_3"))["lr"], 0.025)
    assert isinstance(schedule_from_config(schedule.get_config()), StepLR)
    assert schedule_from_config(schedule.get_config()).get_config() == schedule.get_config()
    assert isinstance(schedule_from_config(None), ConstantLR)
    with pytest.raises(ValueError, match="step_size"):
        StepLR(0)
    with pytest.raises(ValueError, match="schedule"):
        schedule_from_config({"type": "cosine"})


def test_per_layer_groups_override_the_learning_rate():
    model = _model()
    _set_grads(model, np.random.default_rng(2))
    before = _params(model)
    opt = SGD(lr=0.1, momentum=0.5, groups={"dense_0": {"lr": 0.0}, "batchnorm_1": {"lr": 1.0}})
    opt.step(model)
    after = _params(model)
    np.testing.assert_array_equal(after["dense_0/W"], before["dense_0/W"])
    np.testing.assert_array_equal(after["dense_0/b"], before["dense_0/b"])
    bn = model.layer("batchnorm_1")
    np.testing.assert_allclose(after["batchnorm_1/gamma"], before["batchnorm_1/gamma"] - bn.grads["gamma"])
    out = model.layer("dense_3")
    np.testing.assert_allclose(after["dense_3/W"], before["dense_3/W"] - 0.1 * out.grads["W"])
    h = SGD(lr=0.1, momentum=0.9, weight_decay=0.01,
            groups={"dense_0": {"momentum": 0.0, "weight_decay": 0.5}}).hyper(model.layer("dense_0"))
    assert h == {"lr": 0.1, "momentum": 0.0, "weight_decay": 0.5}


def test_param_mult_is_caffes_lr_mult_and_decay_mult():
    """{"b": {"lr": 2, "weight_decay": 1}}: biases move at twice the rate and are
    decayed like the weights (Caffe's example nets); other parameters unchanged."""
    lr, lam = 0.1, 0.01
    model = _model()
    _set_grads(model, np.random.default_rng(3))
    before = _params(model)
    opt = SGD(lr=lr, weight_decay=lam, param_mult={"b": {"lr": 2.0, "weight_decay": 1.0},
                                                   "gamma": {"lr": 0.0}})
    opt.step(model)
    after = _params(model)
    dense = model.layer("dense_0")
    np.testing.assert_allclose(after["dense_0/b"], before["dense_0/b"]
                               - 2 * lr * (dense.grads["b"] + lam * before["dense_0/b"]))
    np.testing.assert_allclose(after["dense_0/W"], before["dense_0/W"]
                               - lr * (dense.grads["W"] + lam * before["dense_0/W"]))
    np.testing.assert_array_equal(after["batchnorm_1/gamma"], before["batchnorm_1/gamma"])
    again = optimizer_from_config(opt.get_config())
    assert again.param_mult == {"b": {"lr": 2.0, "weight_decay": 1.0}, "gamma": {"lr": 0.0}}
    with pytest.raises(ValueError, match="param_mult"):
        SGD(param_mult={"b": {"lr_mult": 2.0}})
    with pytest.raises(ValueError, match="param_mult"):
        SGD(param_mult={"b": {"lr": -1.0}})


@pytest.mark.parametrize("kwargs", [
    {"lr": -0.1}, {"lr": float("nan")}, {"lr": float("inf")},
    {"momentum": -0.5}, {"momentum": 1.0}, {"momentum": 1.5},
    {"weight_decay": -1e-4}, {"weight_decay": float("nan")},
])
def test_sgd_rejects_invalid_hyperparameters(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        SGD(**kwargs)


def test_sgd_state_dict_round_trip_gives_identical_subsequent_steps():
    rng = np.random.default_rng(3)
    model = _model()
    opt = SGD(lr=0.05, momentum=0.9, weight_decay=1e-3, schedule=StepLR(2, 0.5))
    for epoch in range(3):
        opt.set_epoch(epoch)
        _set_grads(model, rng)
        opt.step(model)
    # checkpoint mid-run
    state, params = opt.state_dict(), _params(model)
    grad_rng_state = rng.bit_generator.state

    def continue_run(m, o, r):
        for _ in range(3):
            _set_grads(m, r)
            o.step(m)
        return _params(m)

    original = continue_run(model, opt, rng)  # the original keeps going after the snapshot

    resumed_model = _model(seed=99)
    for layer in resumed_model.layers:
        for key in layer.params:
            layer.params[key] = params[f"{layer.name}/{key}"].copy()
    resumed = optimizer_from_config(opt.get_config())
    resumed.load_state_dict(state)
    assert resumed.epoch == 2 and resumed.steps == 3
    rng.bit_generator.state = grad_rng_state
    replayed = continue_run(resumed_model, resumed, rng)
    for key in original:
        np.testing.assert_array_equal(replayed[key], original[key], err_msg=key)


def test_after_step_callbacks_run_once_per_step():
    seen = []
    opt = SGD(lr=0.1)
    opt.after_step.append(lambda model, o: seen.append(o.steps))
    model = _model()
    _set_grads(model, np.random.default_rng(4))
    opt.step(model)
    opt.step(model)
    assert seen == [1, 2]


def test_optimizer_from_config_rejects_unknown_types():
    with pytest.raises(ValueError, match="unknown optimizer"):
        optimizer_from_config({"type": "adam"})
