"""HDF5 model files (h5py). No pickle anywhere.

Layout, readable with plain h5py::

    /                      attrs: format="minidnn-model", format_version,
                                  minidnn_version, architecture (JSON),
                                  training (JSON: what produced the weights)
    /layers/<name>/params/<param>     e.g. /layers/dense_0/params/W
    /layers/<name>/buffers/<buffer>   e.g. batch-norm running statistics
    /checkpoint            only in checkpoints written by ``fit``: optimizer
                           state, RNG states, epoch, history

Arrays are stored with their own dtype, so a layer that holds int8 codes or
CSR index arrays round-trips exactly; its config in ``architecture`` says how
to interpret them.
"""
from __future__ import annotations

import json
import os
import tempfile

import h5py
import numpy as np

from . import __version__
from .model import Sequential

FORMAT = "minidnn-model"
FORMAT_VERSION = 1


class ModelFileError(ValueError):
    """A model file that is missing, truncated, foreign or from a newer format."""


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot store {type(value).__name__} in a model file")


def to_json(value) -> str:
    return json.dumps(value, default=_json_default)


def write_model(h5: h5py.Group, model: Sequential, training: dict | None = None) -> None:
    """Write ``model`` into an open HDF5 file or group."""
    h5.attrs["format"] = FORMAT
    h5.attrs["format_version"] = FORMAT_VERSION
    h5.attrs["minidnn_version"] = __version__
    h5.attrs["architecture"] = to_json(model.get_config())
    h5.attrs["training"] = to_json(training or {})
    layers = h5.create_group("layers")
    for layer in model.layers:
        group = layers.create_group(layer.name)
        for kind in ("params", "buffers"):
            store = getattr(layer, kind)
            sub = group.create_group(kind)
            for key, value in store.items():
                sub.create_dataset(key, data=np.asarray(value))


def read_model(h5: h5py.Group, where: str = "model file") -> Sequential:
    """Rebuild a model from an open HDF5 file or group written by ``write_model``."""
    if h5.attrs.get("format") != FORMAT:
        raise ModelFileError(f"{where} is an HDF5 file but not a minidnn model "
                             f"(no format={FORMAT!r} attribute)")
    version = int(h5.attrs.get("format_version", -1))
    if version > FORMAT_VERSION:
        raise ModelFileError(f"{where} has format version {version}; this minidnn reads "
                             f"up to {FORMAT_VERSION}: upgrade minidnn")
    try:
        model = Sequential.from_config(json.loads(h5.attrs["architecture"]))
        for layer in model.layers:
            group = h5["layers"][layer.name]
            for kind in ("params", "buffers"):
                store = getattr(layer, kind)
                saved = group[kind]
                if set(saved.keys()) != set(store.keys()):
                    raise ModelFileError(
                        f"{where}: layer {layer.name} has {kind} {sorted(saved.keys())}, "
                        f"its architecture expects {sorted(store.keys())}")
                for key in saved:
                    value = saved[key][()]
                    if value.shape != store[key].shape:
                        raise ModelFileError(
                            f"{where}: {layer.name}/{kind}/{key} has shape {value.shape}, "
                            f"expected {store[key].shape}")
                    store[key] = value
            layer.zero_grads()
    except ModelFileError:
        raise
    except (KeyError, ValueError, OSError, json.JSONDecodeError) as err:
        raise ModelFileError(f"{where} is damaged or incomplete: {err}") from err
    return model


def open_h5(path, mode="r") -> h5py.File:
    """Open an HDF5 file, turning h5py's low-level errors into clear ones."""
    path = os.fspath(path)
    if mode == "r" and not os.path.exists(path):
        raise FileNotFoundError(f"model file {path!r} does not exist")
    try:
        return h5py.File(path, mode)
    except OSError as err:
        raise ModelFileError(f"{path!r} is not a readable HDF5 file (truncated, or not a "
                             f"minidnn model): {err}") from err


def atomic_write(path, write) -> None:
    """Call ``write(h5file)`` on a temporary file, then rename it over ``path``.

    A crash mid-write leaves the previous file intact, never a half-written one."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".h5", dir=directory)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as h5:
            write(h5)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save(model: Sequential, path, training: dict | None = None) -> None:
    """Save ``model`` (architecture, weights, buffers, training info) to ``path``."""
    atomic_write(path, lambda h5: write_model(h5, model, training))


def load(path) -> Sequential:
    """Load a model saved by ``save`` (or a checkpoint written by ``fit``)."""
    with open_h5(path) as h5:
        return read_model(h5, where=repr(os.fspath(path)))


def read_training_info(path) -> dict:
    with open_h5(path) as h5:
        return json.loads(h5.attrs.get("training", "{}"))
