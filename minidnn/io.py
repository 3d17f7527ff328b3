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
import re
import tempfile
import warnings

import h5py
import numpy as np

from . import __version__
from .checks import NonFiniteWarning, describe_nonfinite, nonfinite_arrays
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
        for kind, store in zip(("params", "buffers"), layer.state_for_file()):
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
            stored = [{key: group[kind][key][()] for key in group[kind]}
                      for kind in ("params", "buffers")]
            try:
                layer.load_state(*stored)
            except ValueError as err:
                raise ModelFileError(f"{where}: {err}") from err
    except ModelFileError:
        raise
    except (KeyError, ValueError, OSError, json.JSONDecodeError) as err:
        raise ModelFileError(f"{where} is damaged or incomplete: {err}") from err
    return model


def write_state(group: h5py.Group, state: dict) -> None:
    """Write a nested dict into ``group``: arrays as datasets, dicts as
    subgroups, everything else as JSON attributes. Keys may contain "/"
    (they are escaped as "|"). ``read_state`` gives it back."""
    for key, value in state.items():
        name = str(key).replace("/", "|")
        if isinstance(value, dict):
            write_state(group.create_group(name), value)
        elif isinstance(value, np.ndarray):
            group.create_dataset(name, data=value)
        else:
            group.attrs[name] = to_json(value)


def read_state(group: h5py.Group) -> dict:
    """The nested dict ``write_state`` wrote, with the original keys."""
    state = {key.replace("|", "/"): json.loads(value) for key, value in group.attrs.items()}
    for key, item in group.items():
        state[key.replace("|", "/")] = read_state(item) if isinstance(item, h5py.Group) else item[()]
    return state


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


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:        # someone else's process: alive
        return True
    return True


def remove_stale_temporaries(path) -> list[str]:
    """Delete the temporary files that writes of ``path`` by processes that no
    longer exist left behind (a ``kill -9`` mid-write); returns their paths.

    Temporaries are named ``.tmp-<file name>.<pid>.<random>.h5`` beside
    ``path``, so only those of this file, written by dead processes, go."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    pattern = re.compile(r"\.tmp-" + re.escape(os.path.basename(path)) + r"\.(\d+)\.[^.]+\.h5$")
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        match = pattern.match(name)
        if match and int(match.group(1)) != os.getpid() and not _process_alive(int(match.group(1))):
            try:
                os.remove(os.path.join(directory, name))
                removed.append(os.path.join(directory, name))
            except OSError:
                pass
    return removed


def atomic_write(path, write) -> None:
    """Call ``write(h5file)`` on a temporary file, then rename it over ``path``.

    A crash mid-write leaves the previous file intact, never a half-written
    one; the temporary a killed process leaves is removed by the next write
    of the same file (``remove_stale_temporaries``)."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{os.path.basename(path)}.{os.getpid()}.",
                               suffix=".h5", dir=directory)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as h5:
            write(h5)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save(model: Sequential, path, training: dict | None = None,
         allow_nonfinite: bool = False) -> None:
    """Save ``model`` (architecture, weights, buffers, training info) to ``path``.

    Refuses (ValueError) a model with NaN or Inf weights or buffers, which
    could only give NaN outputs, unless ``allow_nonfinite=True``."""
    bad = nonfinite_arrays(model)
    if bad and not allow_nonfinite:
        raise ValueError(f"refusing to save a model with NaN or Inf weights to "
                         f"{os.fspath(path)!r}: {describe_nonfinite(bad)} (a diverged training "
                         f"run?); pass allow_nonfinite=True to save it anyway")
    atomic_write(path, lambda h5: write_model(h5, model, training))


def load(path) -> Sequential:
    """Load a model saved by ``save`` (or a checkpoint written by ``fit``).

    Warns (``NonFiniteWarning``) when the file holds NaN or Inf weights."""
    with open_h5(path) as h5:
        model = read_model(h5, where=repr(os.fspath(path)))
    bad = nonfinite_arrays(model)
    if bad:
        warnings.warn(f"{os.fspath(path)!r} holds NaN or Inf weights: {describe_nonfinite(bad)}; "
                      f"its outputs will not be finite (saved from a diverged run?)",
                      NonFiniteWarning, stacklevel=2)
    return model


def read_training_info(path) -> dict:
    with open_h5(path) as h5:
        return json.loads(h5.attrs.get("training", "{}"))
