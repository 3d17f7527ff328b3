"""The training loop: minibatch SGD with per-epoch metrics, checkpoints and resume.

Reproducibility: the shuffling Generator is seeded from ``seed``; each
layer that draws random numbers (Dropout) has its own Generator. Their
states, the optimizer state and the weights go into a checkpoint written
atomically at the end of every epoch, so ``fit(..., resume=True)`` after an
interruption ends with the same weights, bit for bit, as a run that was
never interrupted.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from . import io
from .losses import SoftmaxCrossEntropy
from .model import Sequential


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class History:
    """Per-epoch records: epoch, lr, train_loss, train_acc, val_loss, val_acc, seconds."""

    epochs: list = field(default_factory=list)

    def append(self, record: dict) -> None:
        self.epochs.append(record)

    def __getitem__(self, key: str) -> list:
        return [e.get(key) for e in self.epochs]

    def __len__(self) -> int:
        return len(self.epochs)

    def last(self) -> dict:
        return self.epochs[-1] if self.epochs else {}


def _split_xy(data, what: str):
    """Accept a Dataset / (x, y) pair; validate it."""
    try:
        x, y = data
    except (TypeError, ValueError):
        raise TypeError(f"{what} must be an (x, y) pair or a Dataset, got {type(data).__name__}") from None
    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y):
        raise ValueError(f"{what}: {len(x)} inputs but {len(y)} targets")
    if len(x) == 0:
        raise ValueError(f"{what} is empty")
    if np.issubdtype(x.dtype, np.floating):
        # in chunks: a whole-array isfinite would hold a boolean copy of the data set
        for start in range(0, len(x), 4096):
            if not np.isfinite(x[start:start + 4096]).all():
                raise ValueError(f"{what} contains NaN or Inf inputs "
                                 f"(first in samples {start}..{start + 4095})")
    return x, y


def _accuracy(outputs: np.ndarray, y: np.ndarray) -> float | None:
    if outputs.ndim != 2 or y.ndim != 1:
        return None
    return float((outputs.argmax(axis=1) == y).mean())


def evaluate(model: Sequential, data, loss=None, batch_size: int = 1000) -> dict:
    """Mean loss and accuracy (for integer labels) of ``model`` on ``data``."""
    x, y = _split_xy(data, "evaluation data")
    loss = loss or SoftmaxCrossEntropy()
    total_loss, correct, n = 0.0, 0, len(x)
    for start in range(0, n, batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        out = model.forward(xb, training=False)
        batch_loss, _ = loss(out, yb)
        total_loss += batch_loss * len(xb)
        if out.ndim == 2 and yb.ndim == 1:
            correct += int((out.argmax(axis=1) == yb).sum())
    result = {"loss": total_loss / n}
    if y.ndim == 1:
        result["accuracy"] = correct / n
    return result


# -- checkpoints -----------------------------------------------------------------

def _rng_states(model: Sequential, shuffle_rng: np.random.Generator) -> dict:
    states = {"shuffle": shuffle_rng.bit_generator.state}
    for layer in model.layers:
        if isinstance(getattr(layer, "rng", None), np.random.Generator):
            states[layer.name] = layer.rng.bit_generator.state
    return states


def _set_rng_states(model, shuffle_rng, states: dict) -> None:
    shuffle_rng.bit_generator.state = states["shuffle"]
    for layer in model.layers:
        if layer.name in states:
            layer.rng.bit_generator.state = states[layer.name]


def write_checkpoint(path, model, optimizer, shuffle_rng, epoch: int, history: History,
                     training: dict) -> None:
    def write(h5):
        io.write_model(h5, model, training)
        ck = h5.create_group("checkpoint")
        ck.attrs["epoch"] = epoch
        ck.attrs["history"] = io.to_json(history.epochs)
        ck.attrs["rng_states"] = io.to_json(_rng_states(model, shuffle_rng))
        ck.attrs["optimizer"] = io.to_json(optimizer.get_config())
        io.write_state(ck.create_group("optimizer_state"), optimizer.state_dict())
    io.atomic_write(path, write)


def read_checkpoint(path, model, optimizer, shuffle_rng) -> tuple[int, History]:
    """Load weights, optimizer and RNG states from ``path`` into the live objects."""
    with io.open_h5(path) as h5:
        if "checkpoint" not in h5:
            raise io.ModelFileError(f"{os.fspath(path)!r} is a model file, not a training checkpoint")
        saved = io.read_model(h5, where=repr(os.fspath(path)))
        mine = [(l.name, {k: v.shape for k, v in l.params.items()}) for l in model.layers]
        theirs = [(l.name, {k: v.shape for k, v in l.params.items()}) for l in saved.layers]
        if mine != theirs:
            raise ValueError(f"checkpoint {os.fspath(path)!r} holds a different architecture "
                             f"than the model being trained; start a new run or match the model")
        for live, stored in zip(model.layers, saved.layers):
            live.load_state(*stored.state_for_file())
        ck = h5["checkpoint"]
        if "optimizer_state" not in ck:
            raise io.ModelFileError(f"checkpoint {os.fspath(path)!r} was written by an older "
                                    f"minidnn (no optimizer_state); start a new run")
        optimizer.load_state_dict(io.read_state(ck["optimizer_state"]))
        _set_rng_states(model, shuffle_rng, json.loads(ck.attrs["rng_states"]))
        history = History(json.loads(ck.attrs["history"]))
        return int(ck.attrs["epoch"]), history


# -- the loop ------------------------------------------------------------------------

def fit(model: Sequential, train, val=None, *, epochs: int, batch_size: int, optimizer,
        loss=None, seed: int = 0, checkpoint=None, resume: bool = False,
        progress: bool = True, log=print, info: dict | None = None,
        transform=None) -> History:
    """Train ``model`` on ``train`` = (x, y) with minibatch SGD.

    Each epoch reshuffles the training set with a Generator seeded by
    ``seed``, runs forward/backward/``optimizer.step`` per minibatch, then
    evaluates on ``val`` (if given) and writes ``checkpoint`` (if given)
    atomically. ``resume=True`` continues from ``checkpoint`` when it exists.
    A NaN/Inf loss raises TrainingDiverged and leaves the last checkpoint as
    it was. ``log`` receives one line per epoch (``None`` silences it).
    ``transform(xb, rng)``, if given, maps each training minibatch before the
    forward pass (augmentation, e.g. ``minidnn.data.transforms.RandomCropFlip``);
    it draws from the Generator that shuffles, which every checkpoint saves, so
    a resumed run sees the same augmented batches bit for bit.
    """
    x, y = _split_xy(train, "training data")
    if val is not None:
        _split_xy(val, "validation data")
    if int(epochs) < 1 or int(batch_size) < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    loss = loss or SoftmaxCrossEntropy()
    log = log or (lambda line: None)
    shuffle_rng = np.random.default_rng(seed)
    history, start_epoch = History(), 0
    training_info = {"epochs": int(epochs), "batch_size": int(batch_size), "seed": seed,
                     "loss": getattr(loss, "name", type(loss).__name__),
                     "optimizer": optimizer.get_config(), **(info or {})}

    if resume:
        if checkpoint is None:
            raise ValueError("resume=True needs a checkpoint path")
        if os.path.exists(checkpoint):
            start_epoch, history = read_checkpoint(checkpoint, model, optimizer, shuffle_rng)
            log(f"resumed from {checkpoint} after epoch {start_epoch}")
        else:
            log(f"no checkpoint at {checkpoint}; starting from scratch")

    n = len(x)
    n_batches = math.ceil(n / batch_size)
    for epoch in range(start_epoch, int(epochs)):
        optimizer.set_epoch(epoch)
        t0 = time.perf_counter()
        order = shuffle_rng.permutation(n)
        total_loss, correct = 0.0, 0
        # disable=None: a bar on terminals only, not in redirected logs
        bar = tqdm(range(n_batches), desc=f"epoch {epoch + 1}/{epochs}", leave=False,
                   disable=None if progress else True, unit="batch")
        for b in bar:
            idx = order[b * batch_size:(b + 1) * batch_size]
            xb, yb = x[idx], y[idx]
            if transform is not None:
                xb = transform(xb, shuffle_rng)
            optimizer.begin_step(model)
            out = model.forward(xb, training=True)
            batch_loss, grad = loss(out, yb)
            if not math.isfinite(batch_loss):
                kept = (f"the last good checkpoint (epoch {start_epoch if epoch == start_epoch else epoch}) "
                        f"is kept at {checkpoint}" if checkpoint and os.path.exists(checkpoint)
                        else "no checkpoint was written")
                raise TrainingDiverged(
                    f"loss became {batch_loss} at epoch {epoch + 1}, batch {b + 1}; "
                    f"try a smaller learning rate; {kept}")
            model.backward(grad, input_grad=False)
            optimizer.step(model)
            total_loss += batch_loss * len(idx)
            if out.ndim == 2 and yb.ndim == 1:
                correct += int((out.argmax(axis=1) == yb).sum())
            if progress and b % 20 == 0:
                bar.set_postfix(loss=f"{batch_loss:.4f}")
        bar.close()
        record = {"epoch": epoch + 1, "lr": optimizer.hyper(model.layers[0])["lr"],
                  "train_loss": total_loss / n}
        if y.ndim == 1:
            record["train_acc"] = correct / n
        if val is not None:
            metrics = evaluate(model, val, loss)
            record["val_loss"] = metrics["loss"]
            if "accuracy" in metrics:
                record["val_acc"] = metrics["accuracy"]
        record["seconds"] = time.perf_counter() - t0
        history.append(record)
        log(format_record(record, epochs))
        if checkpoint is not None:
            write_checkpoint(checkpoint, model, optimizer, shuffle_rng, epoch + 1, history,
                             {**training_info, "history": history.epochs})
    return history


def format_record(record: dict, epochs: int) -> str:
    parts = [f"epoch {record['epoch']:>3}/{epochs}"]
    for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
        if key in record:
            value = record[key]
            parts.append(f"{key} {value:.4f}" if "loss" in key else f"{key} {100 * value:6.2f}%")
    parts.append(f"{record['seconds']:.1f}s")
    return "  ".join(parts)
