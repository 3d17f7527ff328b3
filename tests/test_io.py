"""HDF5 model files: exact round trips and clear errors on bad files."""
import h5py
import numpy as np
import pytest

import minidnn as md
from minidnn.io import ModelFileError


def model_with_everything():
    model = md.Sequential([md.Dense(6, 5), md.BatchNorm(5), md.Tanh(), md.Dropout(0.3),
                           md.Dense(5, 4), md.Sigmoid(), md.Dense(4, 2, bias=False)], seed=4)
    rng = np.random.default_rng(0)
    model.forward(rng.standard_normal((8, 6)), training=True)   # move BN running stats
    return model


def test_save_load_gives_bit_identical_predictions(tmp_path):
    model = model_with_everything()
    path = tmp_path / "m.h5"
    md.save(model, path, training={"note": "unit test"})
    loaded = md.load(path)
    x = np.random.default_rng(1).standard_normal((16, 6)).astype(np.float32)
    assert np.array_equal(model.predict(x), loaded.predict(x))
    assert [l.name for l in loaded.layers] == [l.name for l in model.layers]
    assert np.array_equal(loaded.layer("batchnorm_1").buffers["running_var"],
                          model.layer("batchnorm_1").buffers["running_var"])


def test_file_is_self_describing_for_plain_h5py(tmp_path):
    path = tmp_path / "m.h5"
    md.save(model_with_everything(), path)
    with h5py.File(path, "r") as h5:
        assert h5.attrs["format"] == "minidnn-model"
        assert h5["layers/dense_0/params/W"].shape == (6, 5)
        assert "running_mean" in h5["layers/batchnorm_1/buffers"]


def test_float64_model_round_trips_in_float64(tmp_path):
    model = md.Sequential([md.Dense(3, 2)], dtype="float64")
    md.save(model, tmp_path / "m.h5")
    assert md.load(tmp_path / "m.h5").layers[0].params["W"].dtype == np.float64


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        md.load(tmp_path / "nope.h5")


def test_truncated_file(tmp_path):
    path = tmp_path / "m.h5"
    md.save(model_with_everything(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError):
        md.load(path)


def test_foreign_files(tmp_path):
    text = tmp_path / "notes.h5"
    text.write_text("this is not HDF5")
    with pytest.raises(ModelFileError, match="not a readable HDF5 file"):
        md.load(text)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as h5:
        h5["x"] = np.arange(3)
    with pytest.raises(ModelFileError, match="not a minidnn model"):
        md.load(other)


def test_damaged_weights_are_reported(tmp_path):
    path = tmp_path / "m.h5"
    md.save(model_with_everything(), path)
    with h5py.File(path, "a") as h5:
        del h5["layers/dense_0/params/W"]
        h5["layers/dense_0/params/W"] = np.zeros((2, 2), np.float32)
    with pytest.raises(ModelFileError, match="dense_0/params/W has shape"):
        md.load(path)


def test_newer_format_version_is_refused(tmp_path):
    path = tmp_path / "m.h5"
    md.save(model_with_everything(), path)
    with h5py.File(path, "a") as h5:
        h5.attrs["format_version"] = 999
    with pytest.raises(ModelFileError, match="upgrade minidnn"):
        md.load(path)


def test_interrupted_save_leaves_previous_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "m.h5"
    first = model_with_everything()
    md.save(first, path)

    def boom(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr("minidnn.io.write_model", boom)
    with pytest.raises(KeyboardInterrupt):
        md.save(md.Sequential([md.Dense(1, 1)]), path)
    monkeypatch.undo()
    assert md.load(path).layers[0].params["W"].shape == (6, 5)
    assert [p.name for p in tmp_path.iterdir()] == ["m.h5"]
