"""Per-channel normalisation and random crop + flip augmentation in fit and the CLI."""
import warnings

import numpy as np
import pytest

import minidnn as md
from minidnn.data.transforms import (ChannelNormalize, RandomCropFlip, random_crop_flip,
                                     random_crop_flip_numpy)


def test_crop_flip_equals_its_numpy_twin():
    rng = np.random.default_rng(0)
    x = rng.random((6, 3, 8, 8), dtype=np.float32)
    offsets = rng.integers(0, 9, (6, 2))
    flips = rng.random(6) < 0.5
    np.testing.assert_array_equal(random_crop_flip(x, offsets, flips, 4),
                                  random_crop_flip_numpy(x, offsets, flips, 4))


def test_crop_at_the_corner_shifts_the_image_in_and_pads_with_zeros():
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4) + 1
    out = random_crop_flip(x, np.array([[0, 0]]), np.array([False]), 2)
    assert (out[0, 0, :2] == 0).all() and (out[0, 0, :, :2] == 0).all()
    np.testing.assert_array_equal(out[0, 0, 2:, 2:], x[0, 0, :2, :2])
    centre = random_crop_flip(x, np.array([[2, 2]]), np.array([True]), 2)
    np.testing.assert_array_equal(centre, x[:, :, :, ::-1])


def test_augmentation_draws_crops_and_flips_from_the_generator_given():
    x = np.random.default_rng(1).random((50, 3, 32, 32), dtype=np.float32)
    augment = RandomCropFlip(4)
    a = augment(x, np.random.default_rng(7))
    b = augment(x, np.random.default_rng(7))
    c = augment(x, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert (a != x).any(axis=(1, 2, 3)).mean() > 0.8    # most images moved or flipped


def test_channel_normalize_gives_zero_mean_unit_std_per_channel():
    rng = np.random.default_rng(2)
    x = (rng.random((40, 3, 5, 5)) * np.array([1, 2, 3]).reshape(1, 3, 1, 1) + 5).astype(np.float32)
    normalize = ChannelNormalize.fit(x, chunk=7)
    z = normalize(x)
    np.testing.assert_allclose(z.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=(0, 2, 3)), 1, atol=1e-4)
    assert z.dtype == np.float32
    caffe = ChannelNormalize.fit(x, scale_only=1 / 255)
    np.testing.assert_allclose(caffe(x), (x - x.mean(axis=(0, 2, 3), keepdims=True)) * 255,
                               rtol=1e-4, atol=1e-3)
    with pytest.raises(ValueError, match="expects \\(N, 3, H, W\\)"):
        normalize(x[:, :2])


def _tiny_run(tmp_path, epochs, resume=False, transform=RandomCropFlip(2)):
    rng = np.random.default_rng(3)
    x = rng.random((60, 3, 8, 8), dtype=np.float32)
    y = rng.integers(0, 4, 60)
    from minidnn import architectures
    model = architectures.build("mlp:192-16-4", seed=0)
    md.fit(model, (x, y), epochs=epochs, batch_size=16, optimizer=md.SGD(0.1, momentum=0.9),
           seed=5, checkpoint=str(tmp_path / "run.ckpt.h5"), resume=resume, progress=False,
           log=None, transform=transform)
    return np.concatenate([p.ravel() for l in model.layers for p in l.params.values()])


def test_augmented_training_resumes_bit_for_bit(tmp_path):
    straight = _tiny_run(tmp_path / "a", 3)
    _tiny_run(tmp_path / "b", 1)
    resumed = _tiny_run(tmp_path / "b", 3, resume=True)
    np.testing.assert_array_equal(straight, resumed)
    plain = _tiny_run(tmp_path / "c", 3, transform=None)
    assert not np.array_equal(straight, plain)


def test_cli_trains_cifar_with_augment_and_normalize_and_eval_reapplies_it(tmp_path, monkeypatch,
                                                                           capsys):
    from minidnn import io
    from minidnn.cli import main
    from minidnn.data import cifar
    from tests.test_cifar import binary_files, synthetic, write_tar
    monkeypatch.setenv("MINIDNN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(cifar, "shared_data_dirs", lambda: [])
    write_tar(tmp_path / "cifar-10-binary.tar.gz", "cifar-10-batches-bin",
              binary_files(synthetic(cifar.CIFAR10, n_per_train_member=20, n_test=50)))
    out = str(tmp_path / "m.h5")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["train", "--dataset", "cifar10", "--data-dir", str(tmp_path), "--arch",
                     "mlp:3072-8-10", "--epochs", "1", "--batch-size", "20", "--augment",
                     "--normalize", "channel", "--out", out, "--quiet", "--threads", "1"]) == 0
        info = io.read_training_info(out)
        assert info["augment"] == {"type": "random_crop_flip", "padding": 4, "flip": True}
        assert len(info["input_transform"]["mean"]) == 3
        assert main(["eval", out, "--dataset", "cifar10", "--data-dir", str(tmp_path),
                     "--quiet"]) == 0
    test_accuracy = info["test"]["accuracy"]
    assert f"accuracy {100 * test_accuracy:.2f}%" in capsys.readouterr().out


# -- sitting 20: resumption of the CLI's pipeline, the starting loss, evaluation mode ---

def _pipeline_fit(tmp_path, epochs, resume=False, stop_at=None):
    """fit with the CLI's transform (crop + flip, then per-channel normalisation) on a
    small net with batch norm and dropout; ``stop_at=(epoch, batch)`` interrupts the run
    inside that batch, as a killed process would be (nothing of the broken epoch reaches
    the checkpoint). 48 samples in batches of 16: 3 batches an epoch."""
    from minidnn.data.transforms import TrainTransform
    rng = np.random.default_rng(11)
    x = rng.random((48, 3, 8, 8), dtype=np.float32)
    y = rng.integers(0, 3, 48)
    inner = TrainTransform(RandomCropFlip(2), ChannelNormalize.fit(x))
    calls = {"n": 0}

    def transform(xb, generator):
        calls["n"] += 1
        # call 1 maps the divergence rule's starting-loss samples, before any step
        if stop_at is not None and calls["n"] == 1 + (stop_at[0] - 1) * 3 + stop_at[1]:
            raise KeyboardInterrupt
        return inner(xb, generator)

    from minidnn.layers import BatchNorm, Dense, Dropout, Flatten, ReLU
    from minidnn.model import Sequential
    # batch norm (running statistics) and dropout (its own Generator) ride in the checkpoint too
    model = Sequential([Flatten(), Dense(192, 16), BatchNorm(16), ReLU(), Dropout(0.3),
                        Dense(16, 3)], seed=0)
    md.fit(model, (x, y), epochs=epochs, batch_size=16, optimizer=md.SGD(0.05, momentum=0.9),
           seed=9, checkpoint=str(tmp_path / "run.ckpt.h5"), resume=resume, progress=False,
           log=None, transform=transform)
    return np.concatenate([v.ravel() for l in model.layers
                           for v in list(l.params.values()) + list(getattr(l, "buffers", {}).values())])


def test_a_run_killed_mid_epoch_resumes_to_the_uninterrupted_weights(tmp_path):
    straight = _pipeline_fit(tmp_path / "a", 3)
    with pytest.raises(KeyboardInterrupt):
        _pipeline_fit(tmp_path / "b", 3, stop_at=(2, 2))    # killed in epoch 2, batch 2
    resumed = _pipeline_fit(tmp_path / "b", 3, resume=True)
    np.testing.assert_array_equal(straight, resumed)


def test_the_starting_loss_sees_the_transformed_inputs(tmp_path):
    # A model that fits the raw inputs perfectly but is trained through a transform that
    # negates them: the reference loss of the divergence rule must be that of the negated
    # inputs, else the first epoch "diverges" at once (10 x a near-zero raw loss).
    from minidnn.layers import Dense
    from minidnn.model import Sequential
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 4)).astype(np.float32)
    model = Sequential([Dense(4, 3)], seed=0)
    model.layers[0].params["W"][...] = 20 * rng.standard_normal((4, 3))
    model.layers[0].params["b"][...] = 0
    y = (x @ model.layers[0].params["W"]).argmax(1)
    assert md.evaluate(model, (x, y))["loss"] < 0.05
    history = md.fit(model, (x, y), epochs=1, batch_size=16, optimizer=md.SGD(1e-6),
                     progress=False, log=None, transform=lambda xb, generator: -xb)
    assert history.epochs[0]["train_loss"] > 1.0                   # trained on -x


def test_evaluation_is_in_evaluation_mode_and_matches_the_inference_plan():
    from minidnn.layers import BatchNorm, Dense, Dropout, ReLU
    from minidnn.model import Sequential
    rng = np.random.default_rng(1)
    x = rng.standard_normal((40, 6)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    model = Sequential([Dense(6, 8), BatchNorm(8), ReLU(), Dropout(0.5), Dense(8, 3)], seed=0)
    md.fit(model, (x, y), epochs=1, batch_size=10, optimizer=md.SGD(0.1), progress=False,
           log=None)
    bn, dropout = model.layers[1], model.layers[3]
    stats = {k: v.copy() for k, v in bn.buffers.items()}
    rng_state = dropout.rng.bit_generator.state
    first = md.evaluate(model, (x, y))
    assert md.evaluate(model, (x, y)) == first              # no dropout draw: the same twice
    assert dropout.rng.bit_generator.state == rng_state
    for k, v in bn.buffers.items():                         # running statistics untouched
        np.testing.assert_array_equal(v, stats[k])
    # the same numbers as the cache-free inference plan (to float rounding)
    out = model.infer(x)
    assert first["accuracy"] == (out.argmax(1) == y).mean()
    np.testing.assert_allclose(first["loss"], md.SoftmaxCrossEntropy()(out, y)[0], rtol=1e-5)


def test_cli_refuses_to_resume_an_unaugmented_run_with_augment(tmp_path, monkeypatch, capsys):
    from minidnn.cli import main
    from minidnn.data import cifar
    from tests.test_cifar import binary_files, synthetic, write_tar
    monkeypatch.setenv("MINIDNN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(cifar, "shared_data_dirs", lambda: [])
    write_tar(tmp_path / "cifar-10-binary.tar.gz", "cifar-10-batches-bin",
              binary_files(synthetic(cifar.CIFAR10, n_per_train_member=20, n_test=50)))
    base = ["train", "--dataset", "cifar10", "--data-dir", str(tmp_path), "--arch",
            "mlp:3072-8-10", "--batch-size", "20", "--out", str(tmp_path / "m.h5"), "--quiet",
            "--threads", "1"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(base + ["--epochs", "1"]) == 0
        try:
            code = main(base + ["--epochs", "2", "--resume", "--augment"])
        except SystemExit as exit:
            code = exit.code
    assert code not in (0, None)
    err = capsys.readouterr().err
    assert "augment None ->" in err and "--resume-with-changes" in err
