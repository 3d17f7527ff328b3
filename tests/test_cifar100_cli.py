"""CIFAR-100 through the CLI: ``minidnn data fetch cifar100`` and ``train --dataset
cifar100`` on a synthetic archive in the official layout (fine and coarse
labels), and the message a user gets where there is no CIFAR-100 (as on the
development machines, ../shared/DATA.md)."""
import numpy as np
import pytest

from minidnn import io
from minidnn.cli import main
from minidnn.data import cifar
from tests.test_cifar import binary_files, isolated_cache, synthetic, write_tar  # noqa: F401


def _cifar100_dir(tmp_path):
    members = synthetic(cifar.CIFAR100, n_per_train_member=60, n_test=20, seed=4)
    folder = tmp_path / "data"
    folder.mkdir()
    write_tar(folder / "cifar-100-binary.tar.gz", "cifar-100-binary", binary_files(members))
    return folder, members


def _exit_code(argv):
    try:
        return main(argv)
    except SystemExit as exit:
        return exit.code


def test_fetch_cifar100_without_data_fails_clearly(capsys):
    assert _exit_code(["data", "fetch", "cifar100", "--quiet"]) not in (0, None)
    err = capsys.readouterr().err
    assert "could not get CIFAR-100" in err
    for where in ("cache", "mirror", "cifar-100-binary.tar.gz", "cifar-100-python.tar.gz",
                  "MINIDNN_DATA"):
        assert where in err


def test_train_dataset_cifar100_without_data_fails_clearly(tmp_path, capsys):
    assert _exit_code(["train", "--dataset", "cifar100", "--arch", "cifar10-quick", "--epochs",
                       "1", "--quiet", "--out", str(tmp_path / "m.h5")]) not in (0, None)
    assert "could not get CIFAR-100" in capsys.readouterr().err
    assert not (tmp_path / "m.h5").exists()


def test_fetch_cifar100_reports_fine_and_coarse_labels(tmp_path, capsys):
    folder, _ = _cifar100_dir(tmp_path)
    with pytest.warns(UserWarning, match="not a known"):     # synthetic: no pinned checksum
        assert main(["data", "fetch", "cifar100", "--data-dir", str(folder), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "60 training images" in out and "20 test images" in out
    assert "fine labels (0..99)" in out and "coarse labels (0..19)" in out


@pytest.mark.parametrize("dataset, classes", [("cifar100", 100), ("cifar100-coarse", 20)])
def test_train_dataset_cifar100_end_to_end(tmp_path, capsys, dataset, classes):
    folder, members = _cifar100_dir(tmp_path)
    out = tmp_path / f"{dataset}.h5"
    with pytest.warns(UserWarning, match="not a known"):
        code = main(["train", "--dataset", dataset, "--data-dir", str(folder), "--arch",
                     "cifar10-quick", "--epochs", "1", "--batch-size", "20", "--lr", "0.001",
                     "--threads", "1", "--quiet", "--out", str(out)])
    assert code == 0
    model = io.load(str(out))
    assert model.layers[-1].params["W"].shape[-1] == classes      # one logit per class
    images, labels = members["test.bin"]
    x = images.astype(np.float32) / 255
    assert model.forward(x[:4], training=False).shape == (4, classes)


def test_class_count_is_the_documented_count_not_the_largest_label_seen():
    from minidnn.data import Dataset, class_count
    few = Dataset(np.zeros((3, 3, 32, 32), np.float32), np.array([0, 5, 7]))
    assert class_count("cifar100", (few,)) == 100
    assert class_count("cifar100-coarse", (few,)) == 20
    assert class_count("cifar10", (few,)) == 10
    assert class_count("mnist") == class_count("embedded") == 10
    too_big = Dataset(np.zeros((1, 3, 32, 32), np.float32), np.array([25]))
    with pytest.raises(ValueError, match="cifar100-coarse has 20 classes, but a label 25"):
        class_count("cifar100-coarse", (few, too_big))
    with pytest.raises(ValueError):
        class_count("cifar1000")
