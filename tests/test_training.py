"""The training loop: learning, reproducibility, resume, divergence, bad input."""
import numpy as np
import pytest

import minidnn as md
from minidnn.training import TrainingDiverged


def toy_problem(n=600, d=12, k=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    y = (x @ rng.standard_normal((d, k))).argmax(axis=1)
    return x, y


def small_net(seed=1, dropout=0.2):
    return md.Sequential([md.Dense(12, 16), md.ReLU(), md.Dropout(dropout), md.Dense(16, 3)],
                         seed=seed)


def train(model, data, epochs, **kw):
    kw.setdefault("optimizer", md.SGD(0.1, momentum=0.9, weight_decay=1e-4))
    return md.fit(model, data, epochs=epochs, batch_size=32, progress=False, log=None, **kw)


def params_equal(a, b):
    return all(np.array_equal(p, q) for (_, p), (_, q) in zip(a.named_params(), b.named_params()))


def test_fit_learns_a_linearly_separable_problem():
    data = toy_problem()
    model = small_net()
    before = md.evaluate(model, data)["accuracy"]
    history = train(model, data, epochs=10)
    assert history["train_loss"][-1] < history["train_loss"][0]
    assert md.evaluate(model, data)["accuracy"] > max(0.9, before)


def test_same_seed_same_weights_different_seed_different_weights():
    data = toy_problem()
    a, b, c = small_net(), small_net(), small_net()
    train(a, data, 2, seed=5)
    train(b, data, 2, seed=5)
    train(c, data, 2, seed=6)
    assert params_equal(a, b)
    assert not params_equal(a, c)


def test_resume_after_interruption_equals_uninterrupted_run(tmp_path):
    data = toy_problem()
    reference = small_net()
    train(reference, data, 4, seed=3)

    ck = tmp_path / "run.ckpt.h5"
    first = small_net()
    train(first, data, 2, seed=3, checkpoint=ck)          # "interrupted" after epoch 2
    resumed = small_net(seed=99)                          # a fresh process, other init
    history = train(resumed, data, 4, seed=3, checkpoint=ck, resume=True)
    assert [r["epoch"] for r in history.epochs] == [1, 2, 3, 4]
    assert params_equal(reference, resumed)


def test_resume_refuses_a_checkpoint_of_another_architecture(tmp_path):
    data = toy_problem()
    ck = tmp_path / "run.ckpt.h5"
    train(small_net(), data, 1, checkpoint=ck)
    other = md.Sequential([md.Dense(12, 8), md.ReLU(), md.Dense(8, 3)])
    with pytest.raises(ValueError, match="different architecture"):
        train(other, data, 2, checkpoint=ck, resume=True)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_nan_loss_stops_training_and_keeps_last_good_checkpoint(tmp_path):
    x, y = toy_problem()
    ck = tmp_path / "run.ckpt.h5"
    model = small_net(dropout=0.0)
    train(model, (x, y), 1, checkpoint=ck)
    saved = md.load(ck)
    with pytest.raises(TrainingDiverged, match="loss became"):
        train(model, (x * 1e30, y), 3, checkpoint=ck, resume=False,
              optimizer=md.SGD(1e10))
    kept = md.load(ck)
    assert params_equal(saved, kept)


@pytest.mark.parametrize("bad, message", [
    ((np.zeros((10, 12), np.float32), np.zeros(9, int)), "10 inputs but 9 targets"),
    ((np.full((4, 12), np.nan, np.float32), np.zeros(4, int)), "NaN"),
    ((np.zeros((0, 12), np.float32), np.zeros(0, int)), "empty"),
])
def test_bad_training_data_is_rejected_with_a_clear_message(bad, message):
    with pytest.raises(ValueError, match=message):
        train(small_net(), bad, 1)


def test_wrong_input_width_names_the_expected_shape():
    x, y = toy_problem(d=7)
    with pytest.raises(ValueError, match=r"expects input of shape \(batch, 12\)"):
        train(small_net(), (x, y), 1)


def test_step_schedule_lowers_learning_rate_per_epoch():
    history = train(small_net(), toy_problem(), 4,
                    optimizer=md.SGD(0.1, schedule=md.StepLR(2, 0.5)))
    assert history["lr"] == pytest.approx([0.1, 0.1, 0.05, 0.05])


def test_float64_training_runs_in_float64():
    x, y = toy_problem()
    model = md.Sequential([md.Dense(12, 3)], dtype="float64")
    train(model, (x, y), 1)
    assert model.layers[0].params["W"].dtype == np.float64
    assert model.forward(x).dtype == np.float64


def test_mlp_reaches_90_percent_on_the_embedded_mnist_subset():
    """The default run: 784-500-10 ReLU on 10k real MNIST digits, 3 epochs."""
    from minidnn import architectures, data
    splits = data.load("embedded")
    model = architectures.build("mlp:784-500-10:relu", seed=0)
    md.fit(model, splits.train, epochs=3, batch_size=100, optimizer=md.SGD(0.1, momentum=0.9),
           progress=False, log=None)
    # 0.9295 with 1 BLAS thread, 0.93+ with 2: the sum order moves the last digit
    assert md.evaluate(model, splits.test)["accuracy"] >= 0.92


def test_backward_without_input_grad_gives_the_same_parameter_gradients():
    from minidnn.layers import Conv2D, MaxPool2D
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 1, 8, 8))
    model = md.Sequential([Conv2D(1, 2, 3), MaxPool2D(2), md.Flatten(), md.Dense(18, 4)],
                          dtype="float64")
    g = rng.standard_normal((3, 4))
    model.forward(x, training=True)
    assert model.backward(g).shape == x.shape
    full = {k: v.copy() for l in model.layers for k, v in
            ((f"{l.name}/{n}", g_) for n, g_ in l.grads.items())}
    model.forward(x, training=True)
    assert model.backward(g, input_grad=False) is None
    for l in model.layers:
        for n, g_ in l.grads.items():
            np.testing.assert_array_equal(g_, full[f"{l.name}/{n}"])
