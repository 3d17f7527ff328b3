"""Greedy layer-wise pretraining: deep belief nets (and the loop stacked autoencoders share).

A deep belief net is a stack of RBMs trained one at a time, bottom up: RBM 0
models the data, RBM i models the hidden probabilities P(h | ·) that RBM i−1
gives the data (Hinton, Osindero & Teh, 2006, "A fast learning algorithm for
deep belief nets"). The same greedy recipe with autoencoders in place of RBMs
is Bengio, Lamblin, Popovici & Larochelle, 2007, "Greedy layer-wise training
of deep networks", so both stacks share ``GreedyStack`` here. Afterwards each
unit's encoder becomes Dense + activation of an MLP; a fresh Dense output
layer is added for softmax cross-entropy fine-tuning (``to_mlp``).

The minibatch loop is the engine's: SGD with momentum and weight decay on W
(ΔW ← αΔW − η(∂L/∂W + λW)), reshuffled every epoch, with the momentum
schedule of the seed-000 recipe (α = 0.5 for epochs 1–20, then 0.9). All
randomness (shuffles, Gibbs samples, PCD chains) comes from one Generator
seeded by ``seed``; its state, the momentum buffers, the persistent chains
and the weights are written atomically to ``checkpoint`` after every epoch,
so ``resume=True`` finishes with the same weights, bit for bit, as a run that
was never interrupted.

File layout (HDF5, readable with plain h5py)::

    /            attrs: format="minidnn-pretrained", format_version, kind
                        ("DBN" | "StackedAutoencoder"), units (JSON list of
                        {"class", "config"}), pretrain (JSON configs), progress
                        (JSON {"layer", "epochs_done"}), complete, history,
                        rng_state
    /units/<i>/params/<name>            W, visible_bias, hidden_bias, ...
    /train_state/velocity/<key>         momentum of the layer in progress
    /train_state/chain                  persistent chains (PCD)
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
from tqdm.auto import tqdm

from .. import io
from ..layers import Dense, Flatten
from ..model import Sequential
from ..optimizers import SGD
from .rbm import BernoulliRBM, check_array

FORMAT = "minidnn-pretrained"
FORMAT_VERSION = 1


@dataclass
class PretrainConfig:
    """Hyperparameters of one layer's pretraining; defaults are the seed-000 recipe.

    ``momentum`` applies for epochs 1 … momentum_switch_epoch − 1 and
    ``final_momentum`` from epoch ``momentum_switch_epoch`` on (epochs
    counted from 1). ``k``, ``persistent`` and ``sample_reconstruction`` are
    RBM-only (CD-k, PCD, sampled last visible step); autoencoders ignore them.
    ``corruption`` is autoencoder-only: the denoising autoencoder's masking
    noise (Vincent et al., 2008), each input set to 0 with that probability
    while the target stays the clean x; RBMs ignore it.
    ``monitor_size`` rows of the training data are used for the per-epoch
    likelihood / reconstruction monitors; 0 turns the monitors off (PCD then
    reports no reconstruction error)."""

    epochs: int = 50
    lr: float = 0.1
    weight_decay: float = 0.002
    momentum: float = 0.5
    final_momentum: float = 0.9
    momentum_switch_epoch: int = 21
    batch_size: int = 100
    k: int = 1
    persistent: bool = False
    sample_reconstruction: bool = False
    monitor_size: int = 1000
    corruption: float = 0.0

    def __post_init__(self):
        if int(self.epochs) < 1 or int(self.batch_size) < 1:
            raise ValueError(f"PretrainConfig needs epochs >= 1 and batch_size >= 1, got "
                             f"epochs={self.epochs}, batch_size={self.batch_size}")
        if int(self.k) < 1:
            raise ValueError(f"PretrainConfig needs k >= 1 (CD-k), got k={self.k}")
        if int(self.monitor_size) < 0:
            raise ValueError(f"PretrainConfig needs monitor_size >= 0, got {self.monitor_size}")
        for label in ("lr", "weight_decay", "momentum", "final_momentum"):
            value = getattr(self, label)
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"PretrainConfig {label} must be a finite number >= 0, got {value}")
        if not 0.0 <= self.corruption < 1.0:
            raise ValueError(f"PretrainConfig corruption must be in [0, 1), got {self.corruption}")
        for label in ("momentum", "final_momentum"):
            if getattr(self, label) >= 1:
                raise ValueError(f"PretrainConfig {label} must be < 1, got {getattr(self, label)}")
        self.epochs, self.batch_size, self.k = int(self.epochs), int(self.batch_size), int(self.k)
        self.momentum_switch_epoch = int(self.momentum_switch_epoch)
        self.monitor_size = int(self.monitor_size)

    def momentum_at(self, epoch: int) -> float:
        """Momentum in force during ``epoch`` (counted from 1)."""
        return self.momentum if epoch < self.momentum_switch_epoch else self.final_momentum

    @classmethod
    def make(cls, config=None, **overrides) -> "PretrainConfig":
        if config is None:
            return cls(**overrides)
        if isinstance(config, dict):
            return cls(**{**config, **overrides})
        return dataclasses.replace(config, **overrides)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# -- one layer ------------------------------------------------------------------------

def train_unit(unit, x: np.ndarray, config: PretrainConfig, rng: np.random.Generator, *,
               start_epoch: int = 0, optimizer: SGD | None = None, state: dict | None = None,
               monitor_seed=0, on_epoch=None, progress: bool = False, log=None,
               desc: str = "") -> list:
    """Train one unit (RBM or autoencoder) for epochs start_epoch+1 … config.epochs.

    ``unit.train_batch(xb, rng, config, state)`` fills ``unit.grads`` and
    returns batch statistics; the engine's SGD applies them. A unit with
    ``train_rows(x, idx, rng, config, state)`` gets the rows' indices instead
    and gathers ``x[idx]`` itself (the RBM's threads each gather their rows). ``on_epoch(epoch,
    record, optimizer, state)`` runs after each epoch (checkpointing)."""
    log = log or (lambda line: None)
    optimizer = optimizer or SGD(config.lr, config.momentum, config.weight_decay)
    state = state if state is not None else unit.new_train_state(x, config, rng)
    holder = SimpleNamespace(layers=[unit])
    n = len(x)
    n_batches = math.ceil(n / config.batch_size)
    x_monitor = x[:min(config.monitor_size, n)]
    train_rows = getattr(unit, "train_rows", None)
    history = []
    for epoch in range(start_epoch, config.epochs):
        t0 = time.perf_counter()
        optimizer.momentum = config.momentum_at(epoch + 1)
        optimizer.set_epoch(epoch)
        order = rng.permutation(n)
        totals: dict[str, float] = {}
        bar = tqdm(range(n_batches), desc=f"{desc}epoch {epoch + 1}/{config.epochs}",
                   leave=False, disable=None if progress else True, unit="batch")
        for b in bar:
            idx = np.sort(order[b * config.batch_size:(b + 1) * config.batch_size])
            stats = train_rows(x, idx, rng, config, state) if train_rows is not None \
                else unit.train_batch(x[idx], rng, config, state)
            for key, value in stats.items():
                if not math.isfinite(value):
                    raise FloatingPointError(
                        f"{unit!r}: {key} became {value} at epoch {epoch + 1}, batch {b + 1}; "
                        f"try a smaller learning rate")
                totals[key] = totals.get(key, 0.0) + value * len(idx)
            optimizer.step(holder)
        bar.close()
        record = {"epoch": epoch + 1, "lr": config.lr, "momentum": optimizer.momentum,
                  **{key: total / n for key, total in totals.items()}}
        if len(x_monitor):
            record.update(unit.monitor(x_monitor, np.random.default_rng(
                [*np.atleast_1d(monitor_seed), epoch])))
        if "reconstruction_error" not in record and "monitor_reconstruction_error" in record:
            record["reconstruction_error"] = record["monitor_reconstruction_error"]  # PCD
        record["seconds"] = time.perf_counter() - t0
        history.append(record)
        log(f"{desc}epoch {epoch + 1:>3}/{config.epochs}  " + "  ".join(
            f"{k} {v:.5g}" for k, v in record.items() if k not in ("epoch", "lr", "momentum")))
        if on_epoch is not None:
            on_epoch(epoch + 1, record, optimizer, state)
    return history


# -- stacks ---------------------------------------------------------------------------------

def _unit_classes() -> dict:
    from .autoencoder import Autoencoder
    return {"BernoulliRBM": BernoulliRBM, "Autoencoder": Autoencoder}


def _stack_classes() -> dict:
    from .autoencoder import StackedAutoencoder
    return {"DBN": DBN, "StackedAutoencoder": StackedAutoencoder}


def parse_layer_sizes(text) -> list[int]:
    """"784-300-300" (or a list) -> [784, 300, 300], at least two positive sizes."""
    if isinstance(text, str):
        try:
            sizes = [int(part) for part in text.replace(",", "-").split("-") if part.strip()]
        except ValueError:
            raise ValueError(f"layer sizes must look like 784-300-300, got {text!r}") from None
    else:
        sizes = [int(s) for s in text]
    if len(sizes) < 2 or min(sizes) <= 0:
        raise ValueError(f"need at least two positive layer sizes (input and one hidden), got {text!r}")
    return sizes


class GreedyStack:
    """Units trained bottom-up, each on the encodings of the one below."""

    unit_prefix = "unit"

    def __init__(self, units: list):
        if not units:
            raise ValueError(f"{type(self).__name__} needs at least one unit")
        for below, above in zip(units, units[1:]):
            if below.n_hidden != above.n_visible:
                raise ValueError(f"{type(self).__name__}: {below!r} outputs {below.n_hidden} "
                                 f"units but {above!r} expects {above.n_visible}")
        self.units = list(units)
        for i, unit in enumerate(self.units):
            unit.name = f"{self.unit_prefix}_{i}"
        self.history: list[list[dict]] = [[] for _ in self.units]

    @classmethod
    def from_units(cls, units: list) -> "GreedyStack":
        stack = cls.__new__(cls)
        GreedyStack.__init__(stack, units)
        return stack

    @property
    def layer_sizes(self) -> list[int]:
        return [self.units[0].n_visible] + [u.n_hidden for u in self.units]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({'-'.join(map(str, self.layer_sizes))})"

    def transform(self, x: np.ndarray, n_layers: int | None = None,
                  batch_size: int = 10000) -> np.ndarray:
        """Encodings after the first ``n_layers`` units (all by default), in batches."""
        n_layers = len(self.units) if n_layers is None else int(n_layers)
        x = check_array(x, self.units[0].n_visible, repr(self))
        out = np.asarray(x, dtype=self.units[0].dtype)
        for unit in self.units[:n_layers]:
            out = np.concatenate([unit.encode(out[i:i + batch_size])
                                  for i in range(0, len(out), batch_size)]) if len(out) else out
        return out

    def to_mlp(self, n_classes: int | None, seed: int = 0, dtype="float32") -> Sequential:
        """Flatten, then each unit's Dense + activation, plus Dense(last, n_classes)
        drawn (Glorot) from a Generator seeded by ``seed`` when n_classes is given.

        The leading Flatten lets the MLP take images (N, 1, 28, 28) as the
        rest of the engine does; it is the identity on (N, 784)."""
        layers = [Flatten()] + [layer for unit in self.units for layer in unit.to_layers()]
        if n_classes is not None:
            if int(n_classes) < 1:
                raise ValueError(f"n_classes must be >= 1, got {n_classes}")
            layers.append(Dense(self.layer_sizes[-1], int(n_classes),
                                rng=np.random.default_rng(seed)))
        return Sequential(layers, seed=None, dtype=dtype,
                          input_shape=(self.layer_sizes[0],))

    # -- training ------------------------------------------------------------------------
    def _check_training_data(self, x) -> np.ndarray:
        x, low, high = check_array(x, self.units[0].n_visible, repr(self), "training data",
                                   with_range=True)
        if len(x) == 0:
            raise ValueError(f"{self!r}: training data is empty")
        first = self.units[0]
        if getattr(first, "visible", None) == "bernoulli" and (low < 0 or high > 1):
            raise ValueError(f"{first!r} has Bernoulli visible units and expects data in [0, 1], "
                             f"got values in [{low:.4g}, {high:.4g}]; scale the data or "
                             f"use visible='gaussian'")
        return np.ascontiguousarray(x, dtype=first.dtype)

    def pretrain(self, x, config=None, seed: int = 0, checkpoint=None, resume: bool = False,
                 progress: bool = False, log=None) -> list[list[dict]]:
        """Greedy layer-wise training; returns one list of epoch records per unit.

        ``config`` is one PretrainConfig for every unit or a list, one per unit."""
        log = log or (lambda line: None)
        configs = config if isinstance(config, (list, tuple)) else [config] * len(self.units)
        if len(configs) != len(self.units):
            raise ValueError(f"{self!r}: got {len(configs)} configs for {len(self.units)} units")
        configs = [PretrainConfig.make(c) for c in configs]
        x = self._check_training_data(x)
        rng = np.random.default_rng(seed)
        start_layer, start_epoch, saved_state = 0, 0, None
        if resume:
            if checkpoint is None:
                raise ValueError("resume=True needs a checkpoint path")
            if os.path.exists(checkpoint):
                start_layer, start_epoch, saved_state = self._restore(checkpoint, rng, log)
            else:
                log(f"no checkpoint at {checkpoint}; starting from scratch")
        for i in range(start_layer, len(self.units)):
            unit, cfg = self.units[i], configs[i]
            inputs = self.transform(x, n_layers=i) if i else x
            optimizer = SGD(cfg.lr, cfg.momentum, cfg.weight_decay)
            state = None
            if i == start_layer and saved_state is not None:
                optimizer.load_state_dict({"velocity": saved_state["velocity"],
                                           "epoch": start_epoch, "steps": 0})
                state = saved_state["state"]
            if i != start_layer or start_epoch == 0:
                unit.init_from_data(inputs)
                start = 0
            else:
                start = start_epoch

            def on_epoch(epoch, record, opt, st, i=i):
                self.history[i].append({"layer": i, **record})
                if checkpoint is not None:
                    self._write(checkpoint, configs, {"layer": i, "epochs_done": epoch},
                                rng, opt, st, complete=False)

            train_unit(unit, inputs, cfg, rng, start_epoch=start, optimizer=optimizer,
                       state=state, monitor_seed=[seed, i], on_epoch=on_epoch,
                       progress=progress, log=log, desc=f"{unit.name} ")
        if checkpoint is not None:
            self._write(checkpoint, configs, {"layer": len(self.units), "epochs_done": 0}, rng)
        return self.history

    # -- files -------------------------------------------------------------------------------
    def _write(self, path, configs=None, progress=None, rng=None, optimizer=None, state=None,
               complete: bool = True):
        def write(h5):
            h5.attrs["format"] = FORMAT
            h5.attrs["format_version"] = FORMAT_VERSION
            h5.attrs["minidnn_version"] = __import__("minidnn").__version__
            h5.attrs["kind"] = type(self).__name__
            h5.attrs["units"] = io.to_json([{"class": type(u).__name__, "config": u.get_config()}
                                            for u in self.units])
            h5.attrs["layer_sizes"] = "-".join(map(str, self.layer_sizes))
            h5.attrs["complete"] = bool(complete)
            h5.attrs["pretrain"] = io.to_json([c.to_dict() for c in configs] if configs else [])
            h5.attrs["progress"] = io.to_json(progress or {})
            h5.attrs["history"] = io.to_json(self.history)
            h5.attrs["rng_state"] = io.to_json(rng.bit_generator.state if rng is not None else {})
            units = h5.create_group("units")
            for i, unit in enumerate(self.units):
                group = units.create_group(str(i))
                params = group.create_group("params")
                for key, value in unit.params.items():
                    params.create_dataset(key, data=value)
                if getattr(unit, "buffers", None):   # a sparse unit's CSR pattern
                    buffers = group.create_group("buffers")
                    for key, value in unit.buffers.items():
                        buffers.create_dataset(key, data=value)
            train_state = h5.create_group("train_state")
            velocity = train_state.create_group("velocity")
            if optimizer is not None:
                for key, value in optimizer.velocity.items():
                    velocity.create_dataset(key.replace("/", "|"), data=value)
            for key, value in (state or {}).items():
                train_state.create_dataset(key, data=value)
        io.atomic_write(path, write)

    def save(self, path) -> None:
        """Write the stack (architecture, weights, training history) to an HDF5 file."""
        self._write(path)

    def _restore(self, path, rng, log):
        stack, meta = read_pretrained(path)
        if stack.layer_sizes != self.layer_sizes or type(stack) is not type(self) or \
                [u.get_config() for u in stack.units] != [u.get_config() for u in self.units]:
            raise ValueError(f"checkpoint {os.fspath(path)!r} holds {stack!r} "
                             f"({[u.get_config() for u in stack.units]}), not {self!r}; "
                             f"start a new run or match the architecture")
        for live, saved in zip(self.units, stack.units):
            if hasattr(live, "load_state"):      # units whose stored arrays change shape
                live.load_state(saved.params, saved.buffers)
            else:
                live.params = {k: v.astype(live.dtype) for k, v in saved.params.items()}
        self.history = stack.history
        if meta["rng_state"]:
            rng.bit_generator.state = meta["rng_state"]
        layer, done = int(meta["progress"].get("layer", 0)), int(meta["progress"].get("epochs_done", 0))
        log(f"resumed from {os.fspath(path)} at layer {layer}, after epoch {done}")
        return layer, done, {"velocity": meta["velocity"], "state": meta["state"]}


class DBN(GreedyStack):
    """Deep belief net: ``DBN([784, 500, 500, 2000], rng=0)`` = RBMs 784×500, 500×500, 500×2000.

    Only the bottom RBM may have Gaussian visible units; the ones above
    model hidden probabilities in [0, 1]."""

    unit_prefix = "rbm"

    def __init__(self, layer_sizes, visible: str = "bernoulli", rng=None, init_std: float = 0.01):
        sizes = parse_layer_sizes(layer_sizes)
        rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
        units = [BernoulliRBM(n_in, n_out, visible=visible if i == 0 else "bernoulli", rng=rng,
                              init_std=init_std)
                 for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:]))]
        super().__init__(units)

    @property
    def rbms(self) -> list[BernoulliRBM]:
        return self.units


def read_pretrained(path):
    """(stack, meta) from a file written by ``GreedyStack.save`` or a pretraining checkpoint."""
    where = repr(os.fspath(path))
    with io.open_h5(path) as h5:
        if h5.attrs.get("format") != FORMAT:
            raise io.ModelFileError(f"{where} is an HDF5 file but not a minidnn pretrained "
                                    f"stack (no format={FORMAT!r} attribute)")
        version = int(h5.attrs.get("format_version", -1))
        if version > FORMAT_VERSION:
            raise io.ModelFileError(f"{where} has pretrained-format version {version}; this "
                                    f"minidnn reads up to {FORMAT_VERSION}")
        try:
            unit_classes = _unit_classes()
            units = []
            for i, item in enumerate(json.loads(h5.attrs["units"])):
                unit = unit_classes[item["class"]](**item["config"])
                saved = h5["units"][str(i)]["params"]
                if set(saved) != set(unit.params):
                    raise io.ModelFileError(f"{where}: unit {i} has params {sorted(saved)}, "
                                            f"expected {sorted(unit.params)}")
                if hasattr(unit, "load_state"):     # checks its own invariant (CSR)
                    group = h5["units"][str(i)]
                    buffers = group["buffers"] if "buffers" in group else {}
                    unit.load_state({k: saved[k][()] for k in saved},
                                    {k: buffers[k][()] for k in buffers})
                    units.append(unit)
                    continue
                for key in saved:
                    value = saved[key][()]
                    if value.shape != unit.params[key].shape:
                        raise io.ModelFileError(f"{where}: unit {i} {key} has shape {value.shape}, "
                                                f"expected {unit.params[key].shape}")
                    unit.params[key] = value
                units.append(unit)
            stack = _stack_classes()[str(h5.attrs["kind"])].from_units(units)
            stack.history = json.loads(h5.attrs["history"]) or [[] for _ in units]
            complete = bool(h5.attrs["complete"])
            meta = {"complete": complete, "progress": json.loads(h5.attrs["progress"]),
                    "pretrain": json.loads(h5.attrs["pretrain"]),
                    "rng_state": json.loads(h5.attrs["rng_state"]),
                    "velocity": {k.replace("|", "/"): v[()]
                                 for k, v in h5["train_state"]["velocity"].items()},
                    "state": {k: v[()] for k, v in h5["train_state"].items() if k != "velocity"}}
        except io.ModelFileError:
            raise
        except (KeyError, TypeError, ValueError, json.JSONDecodeError) as err:
            raise io.ModelFileError(f"{where} is damaged or incomplete: {err}") from err
    return stack, meta


def load_pretrained(path) -> GreedyStack:
    """A DBN or StackedAutoencoder from an HDF5 file."""
    return read_pretrained(path)[0]


def load_single_unit(path, unit_class):
    """The one unit (an RBM or an autoencoder) a file saved by ``unit.save`` holds."""
    stack = load_pretrained(path)
    if len(stack.units) != 1 or not isinstance(stack.units[0], unit_class):
        raise ValueError(f"{os.fspath(path)!r} holds {stack!r}, not a single "
                         f"{unit_class.__name__}")
    return stack.units[0]


def mlp_from_pretrained(path, n_classes: int, seed: int = 0) -> Sequential:
    """The MLP a pretrained stack initialises: its encoders + Dense(last, n_classes).

    This is what ``minidnn train --init-from FILE.h5`` calls. A checkpoint of
    an unfinished pretraining run is refused (resume it first)."""
    stack, meta = read_pretrained(path)
    if not meta["complete"]:
        raise ValueError(f"{os.fspath(path)!r} is an unfinished pretraining checkpoint "
                         f"(stopped at {meta['progress']}); finish it with --resume first")
    return stack.to_mlp(n_classes, seed=seed)
