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
