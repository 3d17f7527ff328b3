"""The training loop: minibatch SGD with per-epoch metrics, checkpoints and resume.

Reproducibility: the shuffling Generator is seeded from ``seed``; each
layer that draws random numbers (Dropout) has its own Generator. Their
states, the optimizer state and the weights go into a checkpoint written
atomically at the end of every epoch, so ``fit(..., resume=True)`` after an
interruption ends with the same weights, bit for bit, as a run that was
never interrupted.
"""
from __future__ import annotations

import copy
import json
import math
import os
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from . import io
from .checks import NonFiniteWarning, check_positive_int, describe_nonfinite, nonfinite_arrays
from .kernels import finite, gather
from .kernels.softmax_xent import count_correct
from .layers.reshape import Flatten
from .layers.normalization import BatchNorm
from .losses import SoftmaxCrossEntropy
from .model import Sequential


DIVERGENCE_FACTOR = 10.0


#: minibatches' worth of samples over which the loss before the first step is taken
STARTING_LOSS_BATCHES = 10


#: entries of fit's ``info`` that a resumed run must share with its checkpoint: the data
#: set, and the augmentation (``minidnn train --augment`` stores its config, None without):
#: resuming an augmented run without it, or the other way round, is another run
RESUME_INFO_KEYS = ("dataset", "augment")


def _starting_loss(model, loss, x, y, batch_size: int, transform=None, rng=None,
                   checked: bool = True) -> float:
    """The model's mean loss on the first STARTING_LOSS_BATCHES · batch_size samples, in
    evaluation mode (no dropout draw, no batch-norm statistics update, no RNG used), so the
    training run is unchanged by taking it. NaN/Inf outputs are left to the training loop,
    which reports them.

    With fit's ``transform`` the samples go through it first, as training batches do
    (on raw inputs that the transform normalises, the reference would be the loss of
    inputs the model never sees); it draws from a copy of ``rng``, so fit's own
    Generator, and with it the run, is unchanged."""
    m = min(len(x), STARTING_LOSS_BATCHES * batch_size)
    xs = x[:m]
    if transform is not None:
        xs = transform(xs, copy.deepcopy(rng))
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        if checked:
            value = evaluate(model, (xs, y[:m]), loss, batch_size=batch_size)["loss"]
        else:           # fit's gather checks x in the first epoch (``_DeferredCheck``)
            value = _evaluate_arrays(model, xs, y[:m], loss, batch_size)["loss"]
    return value if math.isfinite(value) else math.inf


class TrainingDiverged(RuntimeError):
    """Training met the divergence rule (see ``fit``); nothing diverged was kept.

    ``epoch`` is the 1-based epoch that diverged, ``batch`` the 1-based
    minibatch (None when the rule fired at the end of the epoch), ``reason``
    what was seen and ``kept`` what was kept where, in words."""

    def __init__(self, message: str, epoch: int, batch: int | None, reason: str, kept: str):
        super().__init__(message)
        self.epoch, self.batch, self.reason, self.kept = epoch, batch, reason, kept


@dataclass
class History:
    """Per-epoch records: epoch, lr, train_loss, train_acc, val_loss, val_acc, seconds.

    ``best_epoch`` is the epoch whose weights ``fit(keep_best=True)`` kept."""

    epochs: list = field(default_factory=list)
    best_epoch: int | None = None

    def append(self, record: dict) -> None:
        self.epochs.append(record)

    def __getitem__(self, key: str) -> list:
        return [e.get(key) for e in self.epochs]

    def __len__(self) -> int:
        return len(self.epochs)

    def last(self) -> dict:
        return self.epochs[-1] if self.epochs else {}


def _refuse_nonfinite(array, what: str, name: str, kind: str, first: int | None = None) -> None:
    """The ValueError for a data array holding NaN or Inf (``first``: its first such
    sample, found here when None); nothing when it holds none."""
    if first is None:
        # one pass, no boolean copy of the data set (kernels.finite): ~4x faster than
        # np.isfinite by chunks, which cost 15 % of a sparse 784-500-10 MNIST epoch
        first = finite.first_nonfinite_row(array)
    if first >= 0:
        raise ValueError(f"{what} contains NaN or Inf {kind} (first in sample {first}, "
                         f"{name}[{first}])")


def _split_xy(data, what: str, check_x: bool = True):
    """Accept a Dataset / (x, y) pair; validate it (``check_x=False``: all but the
    finiteness of x, which the caller then checks itself)."""
    try:
        x, y = data
    except (TypeError, ValueError):
        raise TypeError(f"{what} must be an (x, y) pair or a Dataset, got {type(data).__name__}") from None
    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y):
        raise ValueError(f"{what}: {len(x)} inputs but {len(y)} targets")
    if len(x) == 0:
        raise ValueError(f"{what} is empty")
    for array, name, kind, check in ((x, "x", "inputs", check_x), (y, "y", "targets", True)):
        if check and np.issubdtype(array.dtype, np.floating):
            _refuse_nonfinite(array, what, name, kind)
    return x, y


def _accuracy(outputs: np.ndarray, y: np.ndarray) -> float | None:
    if outputs.ndim != 2 or y.ndim != 1:
        return None
    return float((outputs.argmax(axis=1) == y).mean())


def evaluate(model: Sequential, data, loss=None, batch_size: int = 1000) -> dict:
    """Mean loss and accuracy (for integer labels) of ``model`` on ``data``.

    Warns (``NonFiniteWarning``) when the model holds NaN/Inf weights or its
    outputs are not finite: such a loss and accuracy mean nothing.

    Runs ``model.forward(x, training=False)``, not ``model.infer``: both are the
    evaluation mode (Dropout passes its input through, BatchNorm uses its running
    statistics and leaves them alone, no layer RNG draws) and agree to float
    rounding, but on Cifar10_quick at 1 thread the layers' own evaluation forward
    took 2.01 s of CPU per 2,000 test images against 2.32 s for the inference plan
    (sitting 20, ``bench/eval_path_ab.py``, under load, same accuracy and 0
    changed predictions on the 10,000 test images), and it keeps ``fit``'s thread
    use the training one (the plan splits batches over threads)."""
    batch_size = check_positive_int(batch_size, "evaluate: batch_size")
    x, y = _split_xy(data, "evaluation data")
    return _evaluate_arrays(model, x, y, loss, batch_size, stacklevel=3)


def _evaluate_arrays(model, x, y, loss, batch_size: int, stacklevel: int = 2) -> dict:
    """``evaluate`` on arrays already validated (``fit``'s own calls: its data were
    checked when it started, or are checked by its first epoch's gather)."""
    loss = loss or SoftmaxCrossEntropy()
    total_loss, correct, n, nonfinite_outputs = 0.0, 0, len(x), 0
    for start in range(0, n, batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        out = model.forward(xb, training=False)
        if np.issubdtype(out.dtype, np.floating):
            nonfinite_outputs += int(np.count_nonzero(~np.isfinite(out)))
        batch_loss, _ = loss(out, yb)
        total_loss += batch_loss * len(xb)
        if out.ndim == 2 and yb.ndim == 1:
            correct += int((out.argmax(axis=1) == yb).sum())
    if nonfinite_outputs:
        bad = nonfinite_arrays(model)
        cause = (f"it holds non-finite weights: {describe_nonfinite(bad)}" if bad
                 else "its weights are finite, so an activation overflowed")
        warnings.warn(f"evaluate: {nonfinite_outputs} model outputs are NaN or Inf ({cause}); "
                      f"the loss and accuracy are meaningless", NonFiniteWarning,
                      stacklevel=stacklevel)
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


def _snapshot(model: Sequential) -> list[tuple[dict, dict]]:
    """A copy of every layer's stored arrays (``state_for_file``), for rollback."""
    return [tuple({k: np.array(v, copy=True) for k, v in store.items()}
                  for store in layer.state_for_file()) for layer in model.layers]


def _restore(model: Sequential, snapshot: list[tuple[dict, dict]]) -> None:
    for layer, (params, buffers) in zip(model.layers, snapshot):
        layer.load_state(params, buffers)


def write_checkpoint(path, model, optimizer, shuffle_rng, epoch: int, history: History,
                     training: dict, best: tuple[int, float, list] | None = None) -> None:
    """Write model, optimizer state, RNG states, history (and the best epoch's
    weights for ``keep_best``) atomically to ``path``."""
    def write(h5):
        io.write_model(h5, model, training)
        ck = h5.create_group("checkpoint")
        ck.attrs["epoch"] = epoch
        ck.attrs["history"] = io.to_json(history.epochs)
        ck.attrs["rng_states"] = io.to_json(_rng_states(model, shuffle_rng))
        ck.attrs["optimizer"] = io.to_json(optimizer.get_config())
        io.write_state(ck.create_group("optimizer_state"), optimizer.state_dict())
        if best is not None:
            best_epoch, best_acc, snapshot = best
            ck.attrs["best_epoch"], ck.attrs["best_val_acc"] = best_epoch, best_acc
            io.write_state(ck.create_group("best_state"),
                           {layer.name: {"params": params, "buffers": buffers}
                            for layer, (params, buffers) in zip(model.layers, snapshot)})
    io.atomic_write(path, write)


def read_checkpoint(path, model, optimizer, shuffle_rng) -> tuple[int, History]:
    """Load weights, optimizer and RNG states from ``path`` into the live objects.

    A checkpoint that lacks a part or holds unreadable JSON is a ModelFileError."""
    try:
        return _read_checkpoint(path, model, optimizer, shuffle_rng)
    except (KeyError, json.JSONDecodeError) as err:
        raise io.ModelFileError(f"checkpoint {os.fspath(path)!r} is damaged or incomplete "
                                f"({type(err).__name__}: {err}); start a new run or restore "
                                f"it") from err


def _read_checkpoint(path, model, optimizer, shuffle_rng) -> tuple[int, History]:
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
        if "best_epoch" in ck.attrs:
            history.best_epoch = int(ck.attrs["best_epoch"])
        return int(ck.attrs["epoch"]), history


def read_best_state(path, model) -> tuple[int, float, list] | None:
    """(best epoch, its val_acc, its arrays) stored by ``fit(keep_best=True)``, or None."""
    with io.open_h5(path) as h5:
        ck = h5["checkpoint"]
        if "best_state" not in ck:
            return None
        state = io.read_state(ck["best_state"])
        snapshot = [(state[l.name]["params"], state[l.name]["buffers"]) for l in model.layers]
        return int(ck.attrs["best_epoch"]), float(ck.attrs["best_val_acc"]), snapshot


def _checkpoint_epoch(path) -> int | None:
    """The epoch a checkpoint file holds, or None when it is not a readable checkpoint."""
    try:
        with io.open_h5(path) as h5:
            return int(h5["checkpoint"].attrs["epoch"])
    except (OSError, KeyError, ValueError):
        return None


def _changed_settings(path, settings: dict) -> dict:
    """{setting: [checkpoint's value, this run's value]} for the settings that
    differ; a setting the checkpoint did not record is not compared."""
    stored = io.read_training_info(path)
    compared = ("batch_size", "seed", "drop_last", "shuffle") + RESUME_INFO_KEYS
    before = {k: stored[k] for k in compared if k in stored}
    before.update({f"optimizer.{k}": v for k, v in stored.get("optimizer", {}).items()})
    now = {k: settings[k] for k in compared if k in settings}
    now.update({f"optimizer.{k}": v for k, v in settings["optimizer"].items()})
    now = json.loads(io.to_json(now))          # compare as the file stores them
    return {k: [before[k], now[k]] for k in now if k in before and before[k] != now[k]}


def _describe_changes(changes: dict) -> str:
    return ", ".join(f"{k.removeprefix('optimizer.')} {old!r} -> {new!r}"
                     for k, (old, new) in changes.items())


# -- the loop ------------------------------------------------------------------------

def _gathers_feature_major(model, x, transform):
    """The layer that ``fit`` gathers minibatches for Fortran-ordered, or None: the
    net's first layer when it reads them so without a transpose
    (``Layer.fortran_input``, after a Flatten that leaves 2-D data as it is) and the
    data are a C-ordered float array of the model's dtype. The gather writes into that
    layer's ``input_buffer`` where it has one. The same values reach the layer, so the
    run is the same bit for bit."""
    if transform is not None or not gather.applies(x) or x.dtype != model.dtype:
        return None
    layers = model.layers
    first = layers[1] if type(layers[0]) is Flatten and len(layers) > 1 else layers[0]
    return first if getattr(first, "fortran_input", False) else None


def _gather_batch(x, idx, reader, check: bool = False):
    """(x[idx], the first position in idx of a row holding NaN or Inf, or -1); for a
    ``fortran_input`` ``reader`` (``_gathers_feature_major``) in Fortran order, into its
    ``input_buffer`` where it has one, else for a C-ordered float x in one row-gather
    pass (``kernels.gather.gather_rows_checked``: every dense or conv net's data), with
    ``check`` each row tested as it is copied; otherwise (``x[idx]``) -1."""
    if reader is not None:
        return gather.gather_feature_major_checked(x, idx, reader.input_buffer(len(idx)),
                                                   check)
    if gather.rows_apply(x):
        return gather.gather_rows_checked(x, idx, check)
    return x[idx], -1


def _checks_in_gather(x, reader, transform) -> bool:
    """Whether fit's first epoch's gather checks x for NaN / Inf (``_DeferredCheck``)
    instead of a pass over x before training: for float x that ``_gather_batch`` takes
    with a kernel, and no ``transform`` (the divergence rule's starting loss runs it on
    the first samples before any gather has checked them)."""
    return transform is None and (reader is not None or gather.rows_apply(x))


class _DeferredCheck:
    """fit's NaN / Inf check of the training inputs, done by its first epoch's gather.

    The check of the whole data set before training (``_refuse_nonfinite``) reads it
    from memory once more: 16 ms of CPU on the 50,000 MNIST images, 33 µs a step of a
    one-epoch sparse fit (sitting 22, one thread, under load), where the first epoch's
    gather, which reads every row anyway, tests each row in L1 for ~4 µs a batch of 100.
    Where fit gathers with a kernel (``_checks_in_gather``: sitting 22 for a sparse first
    layer's feature-major gather, sitting 23 for every other net's row gather) it
    refuses the same data with the same error as before, and leaves the model as the
    check before training did: at the first row found bad (or at the end of the first
    epoch, for the rows ``drop_last`` left out of it; or before a divergence is
    reported, or when no epoch is left to run), the whole set is checked to name its first bad sample, every layer's arrays,
    its RNG and the optimizer's state go back to what they were when fit was called,
    and the ValueError is raised. Nothing was written to the checkpoint by then."""

    def __init__(self, model, optimizer, x):
        self.model, self.optimizer, self.x = model, optimizer, x
        self.pending = True
        self.arrays = _snapshot(model)
        self.optimizer_state = copy.deepcopy(optimizer.state_dict())
        self.rngs = [(layer, layer.rng, layer.rng.bit_generator.state)
                     for layer in model.layers
                     if isinstance(getattr(layer, "rng", None), np.random.Generator)]
        self.rngs_seeded = model.layer_rngs_seeded

    def refuse(self) -> None:
        """Raise the error of ``_refuse_nonfinite`` after rolling back, if x holds a
        NaN or Inf; nothing otherwise."""
        if not self.pending:
            return
        first = finite.first_nonfinite_row(self.x)
        if first < 0:
            return
        _restore(self.model, self.arrays)
        self.optimizer.load_state_dict(self.optimizer_state)
        for layer, rng, state in self.rngs:
            layer.rng = rng
            rng.bit_generator.state = state
        self.model.layer_rngs_seeded = self.rngs_seeded
        self.pending = False
        _refuse_nonfinite(self.x, "training data", "x", "inputs", first)

    def epoch_done(self, order, n_seen: int) -> None:
        """After the first epoch's batch loop: the rows it left out, then done."""
        if self.pending:
            left = order[n_seen:]
            if len(left) and finite.first_nonfinite_row(self.x[left]) >= 0:
                self.refuse()
            self.pending = False


def resolve_drop_last(model, drop_last) -> bool:
    """``drop_last=None`` means: drop the short last batch iff the model has batch norm."""
    if drop_last is None:
        return any(isinstance(layer, BatchNorm) for layer in model.layers)
    return bool(drop_last)


def fit(model: Sequential, train, val=None, *, epochs: int, batch_size: int, optimizer,
        loss=None, seed: int = 0, checkpoint=None, resume: bool = False,
        progress: bool = True, log=print, info: dict | None = None,
        drop_last: bool | None = None, keep_best: bool = False,
        divergence_factor: float | None = DIVERGENCE_FACTOR,
        resume_with_changes: bool = False, transform=None, shuffle: bool = True) -> History:
    """Train ``model`` on ``train`` = (x, y) with minibatch SGD.

    Each epoch reshuffles the training set with a Generator seeded by
    ``seed``, runs forward/backward/``optimizer.step`` per minibatch, then
    evaluates on ``val`` (if given) and writes ``checkpoint`` (if given)
    atomically. ``resume=True`` continues from ``checkpoint`` when it exists;
    it refuses a checkpoint written with another batch size, seed,
    drop_last, data set (``info["dataset"]``), augmentation
    (``info["augment"]``) or optimizer setting (lr, momentum, ...) unless ``resume_with_changes=True``, which logs the change
    and records it in the history (``"changed"``).
    ``log`` receives one line per epoch (``None`` silences it).

    Divergence rule: training has diverged when (1) a minibatch loss is NaN
    or Inf, (2) a weight or buffer is NaN or Inf at the end of an epoch, or
    (3) an epoch's mean training loss exceeds ``divergence_factor`` (10) times
    the lowest seen so far, that is, the best epoch's training loss or the
    model's loss before this call's first step, whichever is lower (``None``
    turns (3) off). The starting loss is the mean over the first ten
    minibatches' worth of samples, in evaluation mode: one minibatch is too
    noisy a reference for a model that is already trained, whose epoch mean
    can exceed ten times a lucky minibatch's loss (sitting 16: a fine-tuned
    sparse net at epoch 71, mean 0.027 against one minibatch at 0.0026). Then ``TrainingDiverged`` is raised, saying at which epoch and what
    was kept: the diverged epoch is never written to ``checkpoint`` (the last
    good one stays there), and the model in memory is rolled back to its state
    after the last good epoch (weights, buffers, optimizer state), or with
    ``keep_best`` to the best epoch's weights.

    Training data whose inputs or targets hold NaN or Inf are refused with a
    ValueError naming the first such sample, and the model, its RNGs and the optimizer
    are left as they were. For C-ordered float inputs and no ``transform`` (the usual
    case: dense, sparse and conv nets alike) fit's minibatch gather checks the inputs
    row by row in the first epoch (``_DeferredCheck``: no extra pass over the data set),
    and fit rolls everything back to the call's state before it raises.

    ``drop_last``: skip the short last minibatch of each epoch. The default
    (None) drops it when the model has batch norm, whose statistics are wrong
    on a tiny batch (a batch of one is refused outright); the epoch's shuffle
    decides which samples sit out, so none is left out for good.

    ``keep_best=True`` (needs ``val`` with class labels): at the end the model
    holds the weights of the epoch with the highest validation accuracy (the
    first such epoch), ``history.best_epoch``; checkpoints keep them too, so
    this works across resumes.

    Random layers (Dropout) of a model that was loaded from a file or built
    with ``Sequential(seed=None)`` are seeded from ``seed`` first.
    ``shuffle=False`` reads the training set in its given order every epoch
    (minibatch b is always samples [b·batch_size, (b+1)·batch_size)), as
    Caffe's data layer reads its LMDB; then ``seed`` only seeds random layers
    and ``transform``. The setting is stored in checkpoints and compared on resume.

    ``transform(xb, rng)``, if given, maps each training minibatch before the
    forward pass (augmentation, e.g. ``minidnn.data.transforms.RandomCropFlip``);
    it draws from the Generator that shuffles, which every checkpoint saves, so
    a resumed run sees the same augmented batches bit for bit. Before the first
    step it is also called once on the first ``STARTING_LOSS_BATCHES`` batches'
    worth of samples, with a copy of that Generator (which is left as it was),
    so that the divergence rule's starting loss is that of the inputs the model
    is trained on.
    """
    x, y = _split_xy(train, "training data", check_x=False)
    reader = _gathers_feature_major(model, x, transform)
    checked_later = _checks_in_gather(x, reader, transform)
    if not checked_later and np.issubdtype(x.dtype, np.floating):
        _refuse_nonfinite(x, "training data", "x", "inputs")   # else: _DeferredCheck
    if val is not None:
        val = _split_xy(val, "validation data")
    epochs = check_positive_int(epochs, "fit: epochs")
    batch_size = check_positive_int(batch_size, "fit: batch_size")
    if divergence_factor is not None and not divergence_factor > 1:
        raise ValueError(f"fit: divergence_factor must be > 1 (or None), got {divergence_factor}")
    if keep_best and (val is None or val[1].ndim != 1):
        raise ValueError("fit: keep_best=True needs validation data with class labels (val=)")
    loss = loss or SoftmaxCrossEntropy()
    log = log or (lambda line: None)
    n = len(x)
    drop_last = resolve_drop_last(model, drop_last)
    n_batches = n // batch_size if drop_last else math.ceil(n / batch_size)
    if n_batches == 0:
        raise ValueError(f"fit: {n} training samples make no full batch of {batch_size}, and "
                         f"drop_last drops the short one; use a smaller batch_size"
                         + (" (the model has batch norm, so drop_last is on by default)"
                            if drop_last else ""))
    n_seen = n_batches * batch_size if drop_last else n
    # a gather of fit's own checks x in the first epoch, from the state fit was called in
    deferred = _DeferredCheck(model, optimizer, x) if checked_later else None
    if not model.layer_rngs_seeded:
        model.seed_random_layers(seed)
    shuffle_rng = np.random.default_rng(seed)
    history, start_epoch = History(), 0
    settings = {"batch_size": batch_size, "seed": seed, "drop_last": drop_last,
                "shuffle": bool(shuffle), "optimizer": optimizer.get_config()}
    for key in RESUME_INFO_KEYS:        # the data pipeline, where the caller names it
        if info and key in info:
            settings[key] = info[key]
    training_info = {"epochs": epochs, **settings,
                     "loss": getattr(loss, "name", type(loss).__name__), **(info or {})}

    resumed, changes = False, {}
    if resume:
        if checkpoint is None:
            raise ValueError("resume=True needs a checkpoint path")
        if os.path.exists(checkpoint):
            changes = _changed_settings(checkpoint, settings)
            if changes and not resume_with_changes:
                raise ValueError(
                    f"checkpoint {os.fspath(checkpoint)!r} was written with other settings than "
                    f"this run asks for: {_describe_changes(changes)}. Resume with the same "
                    f"settings, start a new run (another checkpoint, or no resume), or pass "
                    f"resume_with_changes=True (--resume-with-changes) to continue with the "
                    f"new ones; the change is then recorded in the history")
            start_epoch, history = read_checkpoint(checkpoint, model, optimizer, shuffle_rng)
            if start_epoch > epochs:
                raise ValueError(f"checkpoint {os.fspath(checkpoint)!r} is already at epoch "
                                 f"{start_epoch}, beyond epochs={epochs}; ask for epochs >= "
                                 f"{start_epoch} to continue it, or start a new run")
            resumed = True
            log(f"resumed from {checkpoint} after epoch {start_epoch}")
            if changes:
                log(f"resuming with changed settings: {_describe_changes(changes)}")
        else:
            log(f"no checkpoint at {checkpoint}; starting from scratch")
    best = None                       # (epoch, val_acc, snapshot) for keep_best
    if keep_best and resumed:
        best = read_best_state(checkpoint, model)
    if drop_last and n % batch_size:
        log(f"drop_last: each epoch skips its short last batch ({n % batch_size} of {n} "
            f"samples, chosen by the shuffle)")

    lowest_loss = min((r["train_loss"] for r in history.epochs), default=math.inf)
    if divergence_factor is not None and start_epoch < epochs:
        lowest_loss = min(lowest_loss, _starting_loss(model, loss, x, y, batch_size,
                                                      transform, shuffle_rng,
                                                      checked=deferred is None))
    if deferred is not None and start_epoch >= epochs:
        deferred.refuse()               # no epoch left to check x: check it now
    written_epoch = None              # the epoch this call last wrote to the checkpoint

    def diverged(epoch, batch, reason, good_state):
        if deferred is not None:        # data with NaN / Inf are refused, as before
            deferred.refuse()
        _restore(model, good_state[0])
        optimizer.load_state_dict(good_state[1])
        where = f"epoch {epoch + 1}/{epochs}" + (f", batch {batch + 1}/{n_batches}"
                                                 if batch is not None else "")
        rolled = (f"the model in memory was rolled back to its state after epoch {epoch}"
                  if epoch else "the model in memory was rolled back to its initial weights")
        if keep_best and best is not None:      # what the caller asked to keep
            _restore(model, best[2])
            rolled = (f"the model in memory holds the weights of epoch {best[0]}, the best by "
                      f"validation accuracy ({100 * best[1]:.2f}%)")
        if checkpoint is None:
            kept = "no checkpoint was asked for"
        elif written_epoch is not None:
            kept = f"the checkpoint {checkpoint} holds epoch {written_epoch}, the last good one"
        elif resumed:
            kept = (f"the checkpoint {checkpoint} (epoch {start_epoch}, resumed from) was "
                    f"not replaced")
        elif os.path.exists(checkpoint):
            earlier = _checkpoint_epoch(checkpoint)
            kept = (f"the checkpoint {checkpoint} left by an earlier run"
                    + (f" (after its epoch {earlier})" if earlier is not None else "")
                    + " was not replaced")
        else:
            kept = f"no checkpoint was written to {checkpoint} (no epoch completed)"
        raise TrainingDiverged(f"training diverged at {where}: {reason}; try a smaller learning "
                               f"rate. {rolled[0].upper() + rolled[1:]}; {kept}.",
                               epoch + 1, None if batch is None else batch + 1, reason,
                               f"{rolled}; {kept}")

    for epoch in range(start_epoch, epochs):
        good_state = (_snapshot(model), copy.deepcopy(optimizer.state_dict()))
        optimizer.set_epoch(epoch)
        t0 = time.perf_counter()
        order = shuffle_rng.permutation(n) if shuffle else np.arange(n)
        total_loss, correct = 0.0, 0
        checking = deferred is not None and deferred.pending
        # disable=None: a bar on terminals only, not in redirected logs
        bar = tqdm(range(n_batches), desc=f"epoch {epoch + 1}/{epochs}", leave=False,
                   disable=None if progress else True, unit="batch")
        # Overflow on the way to a divergence is reported by the rule below,
        # once and clearly, not as NumPy warnings printed above it.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for b in bar:
                idx = order[b * batch_size:(b + 1) * batch_size]
                xb, bad = _gather_batch(x, idx, reader, checking)
                if bad >= 0:
                    bar.close()
                    deferred.refuse()
                yb = y[idx]
                if transform is not None:
                    xb = transform(xb, shuffle_rng)
                optimizer.begin_step(model)
                out = model.forward(xb, training=True)
                batch_loss, grad = loss(out, yb)
                if not math.isfinite(batch_loss):
                    bar.close()
                    diverged(epoch, b, f"the minibatch loss became {batch_loss}", good_state)
                model.backward(grad, input_grad=False)
                optimizer.step(model)
                total_loss += batch_loss * len(idx)
                if out.ndim == 2 and yb.ndim == 1:
                    correct += count_correct(out, yb)   # one Numba pass, NumPy's argmax rule
                if progress and b % 20 == 0:
                    bar.set_postfix(loss=f"{batch_loss:.4f}")
        bar.close()
        if checking:
            deferred.epoch_done(order, n_seen)
        train_loss = total_loss / n_seen
        bad = nonfinite_arrays(model)
        if bad:
            diverged(epoch, None, f"weights became NaN or Inf: {describe_nonfinite(bad)}",
                     good_state)
        if not math.isfinite(train_loss):
            diverged(epoch, None, f"the epoch's mean training loss is {train_loss}", good_state)
        if divergence_factor is not None and train_loss > divergence_factor * lowest_loss:
            diverged(epoch, None, f"the epoch's mean training loss {train_loss:.4g} exceeds "
                                  f"{divergence_factor:g} x the lowest so far ({lowest_loss:.4g})",
                     good_state)
        lowest_loss = min(lowest_loss, train_loss)
        record = {"epoch": epoch + 1, "lr": optimizer.hyper(model.layers[0])["lr"],
                  "train_loss": train_loss}
        if y.ndim == 1:
            record["train_acc"] = correct / n_seen
        if val is not None:
            metrics = _evaluate_arrays(model, *val, loss, 1000)   # val checked above
            record["val_loss"] = metrics["loss"]
            if "accuracy" in metrics:
                record["val_acc"] = metrics["accuracy"]
        if changes and epoch == start_epoch:
            record["changed"] = changes
        record["seconds"] = time.perf_counter() - t0
        history.append(record)
        if keep_best and (best is None or record["val_acc"] > best[1]):
            best = (epoch + 1, record["val_acc"], _snapshot(model))
        log(format_record(record, epochs))
        if checkpoint is not None:
            write_checkpoint(checkpoint, model, optimizer, shuffle_rng, epoch + 1, history,
                             {**training_info, "history": history.epochs},
                             best=best if keep_best else None)
            written_epoch = epoch + 1
    if keep_best and best is not None:
        _restore(model, best[2])
        history.best_epoch = best[0]
        log(f"keep_best: the model holds the weights of epoch {best[0]} "
            f"(val_acc {100 * best[1]:.2f}%)")
    return history


def format_record(record: dict, epochs: int) -> str:
    parts = [f"epoch {record['epoch']:>3}/{epochs}"]
    for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
        if key in record:
            value = record[key]
            parts.append(f"{key} {value:.4f}" if "loss" in key else f"{key} {100 * value:6.2f}%")
    parts.append(f"{record['seconds']:.1f}s")
    return "  ".join(parts)
