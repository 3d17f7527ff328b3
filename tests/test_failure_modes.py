"""A training run never silently ruins a model (issue 7).

One section per defect of the issue, each test named for what it proves:
divergence is caught and nothing good is overwritten, NaN is never hidden,
batch norm never sees a batch of one, dropout after ``load`` is seeded,
every batch size is checked, damaged caches and named data directories are
reported, and API misuse says what was wrong and where.
"""
import json
import os
import subprocess
import sys
import textwrap
import warnings

import h5py
import numpy as np
import pytest

import minidnn as md
from minidnn import io
from minidnn.checks import NonFiniteWarning
from minidnn.cli import main
from minidnn.data import api, cache, registry
from minidnn.training import TrainingDiverged


def toy_problem(n=600, d=12, k=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    y = (x @ rng.standard_normal((d, k))).argmax(axis=1)
    return x, y


def relu_net(seed=1, dropout=0.0):
    layers = [md.Dense(12, 16), md.ReLU()]
    if dropout:
        layers.append(md.Dropout(dropout))
    return md.Sequential(layers + [md.Dense(16, 3)], seed=seed)


def train(model, data, epochs, **kw):
    kw.setdefault("optimizer", md.SGD(0.1, momentum=0.9))
    kw.setdefault("batch_size", 32)
    return md.fit(model, data, epochs=epochs, progress=False, log=None, **kw)


def params_equal(a, b):
    return all(np.array_equal(p, q) for (_, p), (_, q) in zip(a.named_params(), b.named_params()))


def run(*argv):
    return main([str(a) for a in argv])


# == 1. NaN is never hidden =============================================================

def test_relu_propagates_nan_and_keeps_its_values():
    x = np.array([[-1.0, np.nan, 0.0, 2.0, -np.inf, np.inf]], np.float32)
    out = md.ReLU().forward(x)
    np.testing.assert_array_equal(out, [[0, np.nan, 0, 2, 0, np.inf]])
    assert out.dtype == np.float32


def test_nan_weight_behind_relu_stops_training():
    """The ReLU used to turn a NaN hidden unit into 0, so the loss stayed finite."""
    model = relu_net()
    model.layers[0].params["W"][0, 0] = np.nan
    with pytest.raises(TrainingDiverged, match="epoch 1/2, batch 1/"):
        train(model, toy_problem(), 2)


def test_cli_train_with_a_huge_learning_rate_fails_and_writes_no_model(tmp_path, capsys):
    out = tmp_path / "m.h5"
    assert run("train", "--quiet", "--arch", "mlp:784-32-10:relu", "--lr", 1e6, "--epochs", 2,
               "--out", out) == 1
    err = capsys.readouterr().err
    assert "training diverged at epoch 1/2" in err and f"--out {out} was not written" in err
    assert not out.exists() and not (tmp_path / "m.ckpt.h5").exists()


def test_save_refuses_and_load_warns_about_nan_weights(tmp_path):
    model = relu_net()
    model.layers[2].params["W"][:] = np.nan
    with pytest.raises(ValueError, match=r"refusing to save.*dense_2/W \(100% NaN/Inf\)"):
        md.save(model, tmp_path / "m.h5")
    md.save(model, tmp_path / "m.h5", allow_nonfinite=True)
    with pytest.warns(NonFiniteWarning, match="dense_2/W"):
        md.load(tmp_path / "m.h5")


def test_evaluate_warns_when_outputs_are_nan():
    model = relu_net()
    model.layers[0].params["b"][0] = np.nan
    with pytest.warns(NonFiniteWarning, match="non-finite weights: dense_0/b"):
        md.evaluate(model, toy_problem(n=20))


def test_cli_info_and_eval_report_nan_weights(tmp_path, capsys):
    model = md.architectures.build("mlp:784-8-10", seed=0)
    model.layers[1].params["W"][:] = np.nan
    path = tmp_path / "nan.h5"
    md.save(model, path, allow_nonfinite=True)
    with pytest.warns(NonFiniteWarning):
        assert run("info", path) == 0
    assert "WARNING: non-finite weights: dense_1/W (100% NaN/Inf)" in capsys.readouterr().out
    with pytest.warns(NonFiniteWarning) as caught:
        assert run("eval", path, "--quiet") == 0
    assert any("outputs are NaN or Inf" in str(w.message) for w in caught)


# == 2. Divergence: the rule, the message, what is kept ==================================

def test_a_finite_explosion_of_the_loss_is_divergence():
    """The issue's run: mlp:784-100-10 at lr 1e6 reached a finite train loss of 3e30."""
    splits = md.data.load("embedded")
    model = md.architectures.build("mlp:784-100-10", seed=0)
    with pytest.raises(TrainingDiverged, match=r"epoch 1/3: the epoch's mean training loss .*e\+30 "
                                               r"exceeds 10 x the lowest so far") as info:
        train(model, splits.train, 3, batch_size=100, optimizer=md.SGD(1e6, momentum=0.9))
    assert info.value.epoch == 1 and info.value.batch is None


def test_a_trained_model_whose_loss_sits_in_a_few_samples_is_not_called_diverged():
    """Sitting 16's false stop: fine-tuning a trained net, the epoch's mean loss (carried by
    a few hard samples) was over 10x the loss of the call's first minibatch (which had none
    of them). The reference is now the starting loss over ten minibatches' worth of samples.
    The model barely moves (lr 1e-9), so every epoch's mean equals the starting loss."""
    n, batch = 2000, 100
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, n)
    x = np.where(y[:, None] == 1, 1.0, -1.0).astype(np.float32) * np.ones((n, 2), np.float32)
    y[::200] = 1 - y[::200]                      # 10 mislabelled samples carry the loss
    model = md.Sequential([md.Dense(2, 2)], seed=0)
    model.layers[0].params["W"][...] = [[-20.0, 20.0], [-20.0, 20.0]]
    model.layers[0].params["b"][...] = 0.0
    losses = [md.evaluate(model, (x[i:i + batch], y[i:i + batch]))["loss"]
              for i in range(0, n, batch)]
    mean = md.evaluate(model, (x, y))["loss"]
    # the premise: a minibatch without a mislabelled sample is far below a tenth of the mean
    assert min(losses) < mean / 1000 and mean > 0.1
    for seed in range(5):                        # the old rule stopped most of these
        history = train(model, (x, y), 2, batch_size=batch, seed=seed,
                        optimizer=md.SGD(1e-9))
        assert len(history.epochs) == 2


def test_divergence_rolls_the_model_back_to_the_last_good_epoch(tmp_path):
    data = toy_problem()
    model, reference = relu_net(), relu_net()
    ck = tmp_path / "run.ckpt.h5"
    train(model, data, 1, checkpoint=ck)
    train(reference, data, 1)
    with pytest.raises(TrainingDiverged, match="rolled back to its state after epoch 1") as info:
        train(model, data, 3, checkpoint=ck, resume=True, resume_with_changes=True,
              optimizer=md.SGD(1e6, momentum=0.9))
    assert "the checkpoint" in info.value.kept and "(epoch 1, resumed from) was not replaced" \
        in info.value.kept
    assert params_equal(model, reference)


def test_resume_with_a_huge_lr_replaces_neither_checkpoint_nor_out(tmp_path, capsys):
    out, ck = tmp_path / "m.h5", tmp_path / "m.ckpt.h5"
    args = ["train", "--quiet", "--arch", "mlp:784-32-10", "--out", out]
    assert run(*args, "--epochs", 1) == 0
    before = out.read_bytes(), ck.read_bytes()
    capsys.readouterr()
    assert run(*args, "--epochs", 3, "--resume", "--resume-with-changes", "--lr", 1e6) == 1
    err = capsys.readouterr().err
    assert "training diverged at epoch 2/3" in err
    assert "(epoch 1, resumed from) was not replaced" in err
    assert f"the existing --out {out} was not replaced" in err
    assert (out.read_bytes(), ck.read_bytes()) == before


def test_divergence_message_names_the_epoch_of_an_earlier_runs_checkpoint(tmp_path):
    data = toy_problem()
    ck = tmp_path / "run.ckpt.h5"
    train(relu_net(), data, 2, checkpoint=ck)
    with pytest.raises(TrainingDiverged) as info:
        train(relu_net(), data, 2, checkpoint=ck, optimizer=md.SGD(1e6))
    assert "left by an earlier run (after its epoch 2) was not replaced" in str(info.value)
    assert "epoch 0" not in str(info.value)


def test_no_numpy_warnings_are_printed_above_the_divergence_error():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(TrainingDiverged):
            train(relu_net(), toy_problem(), 3, optimizer=md.SGD(1e12))
    assert [str(w.message) for w in caught] == []


def test_divergence_factor_is_configurable_and_can_be_turned_off():
    # lr 3 diverges mildly: a factor of 1.5 catches it, None lets the NaN-free run finish
    with pytest.raises(TrainingDiverged):
        train(relu_net(), toy_problem(), 4, optimizer=md.SGD(30.0), divergence_factor=1.5)
    with pytest.raises(ValueError, match="divergence_factor must be > 1"):
        train(relu_net(), toy_problem(), 1, divergence_factor=0.5)


def _noisy_val_problem():
    x, y = toy_problem(n=460)
    yv = y[400:].copy()
    yv[::3] = (yv[::3] + 1) % 3          # label noise: validation accuracy wanders
    return (x[:400], y[:400]), (x[400:], yv)


def test_keep_best_keeps_the_epoch_with_the_best_validation_accuracy(tmp_path):
    data, val = _noisy_val_problem()
    model = relu_net()
    history = train(model, data, 6, val=val, keep_best=True, optimizer=md.SGD(0.3, momentum=0.9))
    best = int(np.argmax(history["val_acc"])) + 1
    assert history.best_epoch == best < 6, "pick a problem whose last epoch is not the best"
    reference = relu_net()
    train(reference, data, best, val=val, optimizer=md.SGD(0.3, momentum=0.9))
    assert params_equal(model, reference)
    assert md.evaluate(model, val)["accuracy"] == max(history["val_acc"])


def test_keep_best_survives_an_interruption(tmp_path):
    data, val = _noisy_val_problem()
    uninterrupted = relu_net()
    train(uninterrupted, data, 6, val=val, keep_best=True, optimizer=md.SGD(0.3, momentum=0.9))
    ck = tmp_path / "run.ckpt.h5"
    train(relu_net(), data, 3, val=val, keep_best=True, checkpoint=ck,
          optimizer=md.SGD(0.3, momentum=0.9))
    resumed = relu_net(seed=5)
    history = train(resumed, data, 6, val=val, keep_best=True, checkpoint=ck, resume=True,
                    optimizer=md.SGD(0.3, momentum=0.9))
    assert params_equal(resumed, uninterrupted) and history.best_epoch is not None


def test_keep_best_needs_validation_labels():
    with pytest.raises(ValueError, match="keep_best=True needs validation data"):
        train(relu_net(), toy_problem(), 1, keep_best=True)


def test_cli_keep_best_saves_the_best_validation_epoch(tmp_path, capsys):
    out = tmp_path / "m.h5"
    assert run("train", "--quiet", "--arch", "mlp:784-16-10", "--epochs", 3, "--lr", 0.5,
               "--keep-best", "--out", out) == 0
    assert "(best val acc)" in capsys.readouterr().out
    info = io.read_training_info(out)
    best = max(r["val_acc"] for r in info["history"])
    assert info["history"][info["best_epoch"] - 1]["val_acc"] == best
    splits = md.data.load("embedded")
    assert md.evaluate(md.load(out), splits.val)["accuracy"] == best


# == 3. Batch norm never trains on one sample ==========================================

def test_batchnorm_refuses_a_one_sample_training_batch():
    bn = md.BatchNorm(4, name="bn")
    with pytest.raises(ValueError, match=r"layer bn \(BatchNorm.*more than one value per feature"):
        bn.forward(np.ones((1, 4), np.float32), training=True)
    bn.forward(np.ones((1, 4), np.float32), training=False)          # evaluation is fine
    bn2 = md.BatchNorm(2)
    bn2.forward(np.ones((1, 2, 3, 3), np.float32), training=True)    # 9 values per channel


def _bn_model():
    return md.Sequential([md.BatchNorm(12), md.Dense(12, 3)], seed=0)


def test_fit_drops_the_short_last_batch_of_a_batch_norm_model_by_default():
    """201 samples at batch 100 left the running variance ~27% too small."""
    x, y = toy_problem(n=201)
    model = _bn_model()
    train(model, (x, y), 10, batch_size=100, optimizer=md.SGD(0.01))
    running = model.layers[0].buffers["running_var"]
    np.testing.assert_allclose(running, x.var(axis=0, ddof=1), rtol=0.1)


def test_fit_drop_last_false_with_batch_norm_names_the_one_sample_batch():
    x, y = toy_problem(n=201)
    with pytest.raises(ValueError, match="more than one value per feature"):
        train(_bn_model(), (x, y), 1, batch_size=100, drop_last=False)


class CountingLoss(md.SoftmaxCrossEntropy):
    """Cross-entropy that records the size of every batch it sees."""

    def __init__(self):
        self.batches = []

    def __call__(self, logits, target):
        self.batches.append(len(target))
        return super().__call__(logits, target)


def test_drop_last_trains_on_full_batches_only_and_says_so():
    x, y = toy_problem(n=70)
    lines = []
    for drop_last, batches in ((True, [32, 32]), (False, [32, 32, 6]), (None, [32, 32, 6])):
        loss = CountingLoss()
        md.fit(relu_net(), (x, y), epochs=1, batch_size=32, drop_last=drop_last, loss=loss,
               optimizer=md.SGD(0.1), progress=False, log=lines.append)
        # first the starting loss of the divergence rule (evaluation mode, every sample
        # here: 10 batches' worth is more than 70), then the training minibatches
        assert loss.batches == [32, 32, 6] + batches, f"drop_last={drop_last}"
    assert sum("skips its short last batch (6 of 70" in line for line in lines) == 1
    with pytest.raises(ValueError, match="no full batch of 100"):
        train(relu_net(), (x, y), 1, batch_size=100, drop_last=True)


def test_cli_drop_last_flag(tmp_path):
    out = tmp_path / "m.h5"
    assert run("train", "--quiet", "--arch", "mlp:784-8-10", "--epochs", 1, "--batch-size", 3000,
               "--drop-last", "--out", out) == 0
    assert io.read_training_info(out)["drop_last"] is True


# == 4. Dropout after load is seeded ================================================

def test_fine_tuning_a_loaded_dropout_model_is_reproducible(tmp_path):
    path = tmp_path / "m.h5"
    md.save(relu_net(dropout=0.5), path)
    runs = []
    for seed in (3, 3, 4):
        model = md.load(path)
        train(model, toy_problem(), 2, seed=seed)
        runs.append(model)
    assert params_equal(runs[0], runs[1])
    assert not params_equal(runs[0], runs[2])


def test_a_loaded_model_draws_no_mask_from_os_entropy(tmp_path):
    path = tmp_path / "m.h5"
    md.save(relu_net(dropout=0.5), path)
    x = np.ones((4, 12), np.float32)
    a, b = md.load(path), md.load(path)
    np.testing.assert_array_equal(a.forward(x, training=True), b.forward(x, training=True))


# == 5. Batch sizes are checked at every entry point ====================================

@pytest.mark.parametrize("batch_size, error, message", [
    (-1, ValueError, "positive integer, got -1"), (0, ValueError, "positive integer, got 0"),
    (2.5, TypeError, r"positive integer, got 2.5 \(float\)"), ("10", TypeError, "positive integer, got '10'"),
    (True, TypeError, "positive integer, got True"),
])
def test_every_entry_point_checks_the_batch_size(batch_size, error, message):
    data = toy_problem(n=10)
    with pytest.raises(error, match="evaluate: batch_size must be a " + message):
        md.evaluate(relu_net(), data, batch_size=batch_size)
    with pytest.raises(error, match="predict: batch_size must be a " + message):
        relu_net().predict(data[0], batch_size=batch_size)
    with pytest.raises(error, match="fit: batch_size must be a " + message):
        train(relu_net(), data, 1, batch_size=batch_size)


def test_empty_inputs_are_clear_errors():
    empty = np.zeros((0, 12), np.float32)
    with pytest.raises(ValueError, match="evaluation data is empty"):
        md.evaluate(relu_net(), (empty, np.zeros(0, int)))
    with pytest.raises(ValueError, match="predict: x is empty"):
        relu_net().predict(empty)


@pytest.mark.parametrize("value", ["-1", "0", "1.5"])
def test_cli_eval_and_train_refuse_bad_batch_sizes(tmp_path, capsys, value):
    for command in (["eval", tmp_path / "m.h5"], ["train"]):
        with pytest.raises(SystemExit) as exit_info:
            run(*command, "--batch-size", value)
        assert exit_info.value.code == 2
        assert "expected a positive integer" in capsys.readouterr().err


# == 6. A damaged cache is reported and ignored ============================================

@pytest.fixture
def isolated_data(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIDNN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MINIDNN_DATA", raising=False)
    return tmp_path


def _valid_npz_bytes(tmp_path):
    arrays = {p: np.zeros((2, 28, 28) if "images" in p else 2, np.uint8) for p in registry.PARTS}
    np.savez_compressed(tmp_path / "x.npz", **arrays)
    return (tmp_path / "x.npz").read_bytes()


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "bad member"])
def test_a_damaged_cache_is_warned_about_and_skipped(isolated_data, damage):
    path = cache.cache_path("mnist")
    path.parent.mkdir(parents=True)
    good = _valid_npz_bytes(isolated_data)
    path.write_bytes({"garbage": b"PK\x03\x04garbage" * 100, "truncated": good[:len(good) // 2],
                      "empty": b"", "bad member": good[:40] + b"\xff" * 60 + good[100:]}[damage])
    with pytest.warns(UserWarning, match="ignoring unreadable cache"):
        assert cache.read_cache(registry.MNIST) is None
    with pytest.warns(UserWarning, match="ignoring unreadable cache"):
        with pytest.raises(api.DataUnavailableError, match="no valid"):
            md.data.load("mnist", download=False, progress=False)


# == 7. A named data directory is used, or the run stops ====================================

def _fake_cache(monkeypatch):
    """A cache that would serve MNIST (so a skipped directory would go unnoticed)."""
    arrays = {p: np.zeros((12, 28, 28) if "images" in p else 12, np.uint8) for p in registry.PARTS}
    monkeypatch.setattr(api, "read_cache", lambda info: arrays)


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_a_missing_named_data_directory_stops_the_load(isolated_data, monkeypatch, how):
    _fake_cache(monkeypatch)
    missing = isolated_data / "nowhere"
    kwargs = {"data_dir": missing} if how == "argument" else {}
    if how == "environment":
        monkeypatch.setenv("MINIDNN_DATA", str(missing))
    named = "data_dir" if how == "argument" else r"\$MINIDNN_DATA"
    with pytest.raises(api.DataUnavailableError, match=f"named by {named}.*does not exist"):
        md.data.load("mnist", download=False, **kwargs)


def test_an_incomplete_named_data_directory_says_what_is_missing(isolated_data, monkeypatch):
    from tests.test_data import tiny_idx_dir
    _fake_cache(monkeypatch)
    tiny_idx_dir(isolated_data / "idx")
    os.remove(isolated_data / "idx" / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(api.DataUnavailableError, match="lacks t10k-labels-idx1-ubyte"):
        md.data.load("mnist", data_dir=isolated_data / "idx", download=False)


def test_a_data_dir_for_the_embedded_subset_is_refused():
    with pytest.raises(ValueError, match="does not apply to the embedded subset"):
        md.data.load("embedded", data_dir="/somewhere")


def test_cli_train_says_where_its_data_came_from_and_stops_on_a_bad_data_dir(tmp_path, capsys,
                                                                           isolated_data):
    out = tmp_path / "m.h5"
    assert run("train", "--arch", "mlp:784-8-10", "--epochs", 1, "--out", out) == 0
    lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith("data: ")]
    assert len(lines) == 1 and "embedded MNIST subset" in lines[0]
    assert io.read_training_info(out)["data_source"] == lines[0]
    assert run("train", "--dataset", "mnist", "--data-dir", tmp_path / "nope", "--out", out) == 1
    assert "named by data_dir cannot be used" in capsys.readouterr().err


# == 8. API misuse says what was wrong and where ==========================================

@pytest.mark.parametrize("layer, shape", [
    (lambda: md.Dense(3, 2, name="fc"), (4, 2)),
    (lambda: md.Conv2D(1, 2, 3, name="fc"), (1, 2, 2, 2)),
    (lambda: md.MaxPool2D(2, name="fc"), (1, 1, 2, 2)),
    (lambda: md.BatchNorm(3, name="fc"), (4, 3)),
])
def test_backward_before_forward_names_the_layer(layer, shape):
    with pytest.raises(RuntimeError, match=r"layer fc \(.*\): backward was called before forward"):
        layer().backward(np.zeros(shape, np.float32))


def test_a_gradient_of_the_wrong_shape_says_which_shape_was_expected():
    model = relu_net()
    model.forward(np.zeros((5, 12), np.float32), training=True)
    with pytest.raises(ValueError, match=r"layer dense_2 \(Dense\(16, 3\)\): backward expects a "
                                         r"gradient of shape \(5, 3\).*got \(5, 4\)"):
        model.backward(np.zeros((5, 4), np.float32))


def test_float_labels_are_a_clear_error():
    x, y = toy_problem(n=40)
    with pytest.raises(ValueError, match="class labels must be integers, got dtype float64"):
        train(relu_net(), (x, y.astype(float)), 1)


def test_non_integer_epochs_or_batch_size_are_type_errors():
    with pytest.raises(TypeError, match=r"fit: batch_size must be a positive integer, got 32.0"):
        train(relu_net(), toy_problem(n=40), 1, batch_size=32.0)
    with pytest.raises(TypeError, match=r"fit: epochs must be a positive integer"):
        train(relu_net(), toy_problem(n=40), 1.5)


# == 9. The smaller ones ===================================================================

@pytest.mark.parametrize("target", [np.array([0]), np.array([[1.0, 0.0]])])
def test_cross_entropy_of_logits_beyond_the_float_range_is_zero_not_nan(target):
    logits = np.array([[3e38, -3e38]], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value, grad = md.SoftmaxCrossEntropy()(logits, target)
    assert value == 0.0 and np.array_equal(grad, [[0, 0]])


@pytest.mark.parametrize("change", [{"optimizer": md.SGD(0.2, momentum=0.9)},
                                    {"batch_size": 16}, {"seed": 9}])
def test_resume_refuses_other_settings_unless_told_and_then_records_them(tmp_path, change):
    data = toy_problem()
    ck = tmp_path / "run.ckpt.h5"
    train(relu_net(), data, 1, checkpoint=ck)
    with pytest.raises(ValueError, match="written with other settings than this run asks for"):
        train(relu_net(), data, 2, checkpoint=ck, resume=True, **change)
    history = train(relu_net(), data, 2, checkpoint=ck, resume=True, resume_with_changes=True,
                    **change)
    assert "changed" not in history.epochs[0] and history.epochs[1]["changed"]


def test_resume_with_the_same_settings_and_more_epochs_is_accepted(tmp_path):
    ck = tmp_path / "run.ckpt.h5"
    train(relu_net(), toy_problem(), 1, checkpoint=ck)
    assert len(train(relu_net(), toy_problem(), 2, checkpoint=ck, resume=True)) == 2


def test_a_killed_write_leaves_no_temporary_behind_the_next_write(tmp_path):
    path = tmp_path / "m.h5"
    script = textwrap.dedent(f"""
        import sys, time
        import minidnn as md
        def write(h5):
            h5["x"] = [1]
            h5.flush()
            print("writing", flush=True)
            time.sleep(60)
        md.io.atomic_write({str(path)!r}, write)
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                             env=env)
    try:
        assert child.stdout.readline().strip() == "writing"
    finally:
        child.kill()                      # kill -9 mid-write
        child.wait()
    assert any(p.name.startswith(".tmp-m.h5.") for p in tmp_path.iterdir())
    md.save(relu_net(), path)
    assert [p.name for p in tmp_path.iterdir()] == ["m.h5"]


def test_nan_input_error_names_the_sample():
    x, y = toy_problem(n=5000)
    x[4100, 3] = np.nan
    with pytest.raises(ValueError, match=r"first in sample 4100, x\[4100\]"):
        train(relu_net(), (x, y), 1)


def test_cli_train_prints_each_epoch_once(tmp_path, capsys):
    out = tmp_path / "m.h5"
    assert run("train", "--arch", "mlp:784-8-10", "--epochs", 2, "--out", out) == 0
    printed = capsys.readouterr().out
    for record in io.read_training_info(out)["history"]:
        assert printed.count(f"{record['train_loss']:.4f}") == 1
    assert "test accuracy" in printed


# == relatives ==========================================================================

def test_nan_targets_are_named_like_nan_inputs():
    x = np.zeros((10, 12), np.float32)
    t = np.zeros((10, 3), np.float32)
    t[7, 1] = np.nan
    model = md.Sequential([md.Dense(12, 3)])
    with pytest.raises(ValueError, match=r"NaN or Inf targets \(first in sample 7, y\[7\]\)"):
        md.fit(model, (x, t), epochs=1, batch_size=5, optimizer=md.SGD(0.1), loss=md.MSE(),
               progress=False, log=None)


def test_resume_refuses_another_data_set(tmp_path):
    ck = tmp_path / "run.ckpt.h5"
    train(relu_net(), toy_problem(), 1, checkpoint=ck, info={"dataset": "mnist"})
    with pytest.raises(ValueError, match="dataset 'mnist' -> 'fashion-mnist'"):
        train(relu_net(), toy_problem(), 2, checkpoint=ck, resume=True,
              info={"dataset": "fashion-mnist"})


class BlowUpAfter:
    """A schedule: the base rate for ``epochs`` epochs, then 1e6 (a divergence)."""

    def __init__(self, epochs):
        self.epochs = epochs

    def __call__(self, base_lr, epoch):
        return base_lr if epoch < self.epochs else 1e6

    def get_config(self):
        return {"type": "blow-up", "after": self.epochs}


def test_divergence_with_keep_best_leaves_the_best_epoch_in_memory():
    data, val = _noisy_val_problem()
    reference = relu_net()
    best_epoch = train(reference, data, 3, val=val, keep_best=True,
                       optimizer=md.SGD(0.3, momentum=0.9)).best_epoch
    model = relu_net()
    with pytest.raises(TrainingDiverged, match=f"epoch 4/6.*holds the weights of epoch "
                                               f"{best_epoch}, the best by validation accuracy"):
        train(model, data, 6, val=val, keep_best=True,
              optimizer=md.SGD(0.3, momentum=0.9, schedule=BlowUpAfter(3)))
    assert params_equal(model, reference)


def test_train_help_says_momentum_follows_caffe_and_offers_pytorch(capsys):
    from minidnn.cli import build_parser
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "in Caffe's form by default" in text and "--momentum-form {caffe,pytorch}" in text


def test_a_checkpoint_missing_a_part_is_a_clear_error(tmp_path):
    ck = tmp_path / "run.ckpt.h5"
    train(relu_net(), toy_problem(), 1, checkpoint=ck)
    with h5py.File(ck, "a") as h5:
        del h5["checkpoint"].attrs["rng_states"]
    with pytest.raises(io.ModelFileError, match="damaged or incomplete.*rng_states"):
        train(relu_net(), toy_problem(), 2, checkpoint=ck, resume=True)


def test_resume_refuses_a_checkpoint_already_past_the_asked_epochs(tmp_path):
    ck = tmp_path / "run.ckpt.h5"
    train(relu_net(), toy_problem(), 2, checkpoint=ck)
    with pytest.raises(ValueError, match="already at epoch 2, beyond epochs=1"):
        train(relu_net(), toy_problem(), 1, checkpoint=ck, resume=True)
