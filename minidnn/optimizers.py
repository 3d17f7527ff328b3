"""SGD with momentum and weight decay, learning-rate schedules, parameter groups.

Update rule (the form of Caffe and of the papers in SPEC.md, technique 4):

    ΔW ← α·ΔW − η·(∂L/∂W + λ·W)
    W  ← W + ΔW

with η the learning rate, α the momentum, λ the weight decay (applied only
to a layer's ``decay_params``: weights, not biases or batch-norm scales).

Seams for the compression techniques:

* ``SGD._update(key, param, grad, hyper)`` computes one parameter's new
  value; a subclass that updates only some rows (semi-synchronous updates)
  or rounds the result onto a grid (randomized rounding) overrides it.
* ``after_step`` callbacks run after every step with the model, for
  projections such as re-imposing a sparsity pattern.
"""
from __future__ import annotations

import numpy as np


class ConstantLR:
    """η(epoch) = η₀."""

    def __call__(self, base_lr: float, epoch: int) -> float:
        return base_lr

    def get_config(self):
        return {"type": "constant"}


class StepLR:
    """η(epoch) = η₀ · gamma^(epoch // step_size), epochs counted from 0."""

    def __init__(self, step_size: int, gamma: float = 0.1):
        if int(step_size) <= 0:
            raise ValueError(f"StepLR step_size must be positive, got {step_size}")
        self.step_size, self.gamma = int(step_size), float(gamma)

    def __call__(self, base_lr, epoch):
        return base_lr * self.gamma ** (epoch // self.step_size)

    def get_config(self):
        return {"type": "step", "step_size": self.step_size, "gamma": self.gamma}


def schedule_from_config(config: dict | None):
    if not config or config.get("type") == "constant":
        return ConstantLR()
    if config["type"] == "step":
        return StepLR(config["step_size"], config["gamma"])
    raise ValueError(f"unknown learning-rate schedule {config!r}")


class SGD:
    """Minibatch SGD with momentum, weight decay and per-layer groups.

    ``groups`` maps a layer name to overrides of ``lr``, ``momentum`` and
    ``weight_decay`` for that layer, e.g. ``{"dense_2": {"lr": 0.01}}``.
    """

    def __init__(self, lr: float = 0.01, momentum: float = 0.0, weight_decay: float = 0.0,
                 schedule=None, groups: dict | None = None):
        for label, value in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay)):
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"SGD {label} must be a finite number >= 0, got {value}")
        if momentum >= 1:
            raise ValueError(f"SGD momentum must be < 1, got {momentum}")
        self.lr, self.momentum, self.weight_decay = float(lr), float(momentum), float(weight_decay)
        self.schedule = schedule or ConstantLR()
        self.groups = dict(groups or {})
        self.velocity: dict[str, np.ndarray] = {}
        self.epoch = 0
        self.steps = 0
        self.after_step = []

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def hyper(self, layer) -> dict:
        """The hyperparameters in force for ``layer`` at the current epoch."""
        h = {"lr": self.lr, "momentum": self.momentum, "weight_decay": self.weight_decay}
        h.update(self.groups.get(layer.name, {}))
        h["lr"] = self.schedule(h["lr"], self.epoch)
        return h

    def step(self, model) -> None:
        """Apply one update to every parameter of ``model`` from its ``grads``."""
        for layer in model.layers:
            if not layer.params:
                continue
            h = self.hyper(layer)
            for pname, param in layer.params.items():
                key = f"{layer.name}/{pname}"
                hp = dict(h)
                if pname not in layer.decay_params:
                    hp["weight_decay"] = 0.0
                layer.params[pname] = self._update(key, param, layer.grads[pname], hp)
        self.steps += 1
        for callback in self.after_step:
            callback(model, self)

    def _update(self, key, param, grad, hyper):
        step = grad
        if hyper["weight_decay"]:
            step = grad + hyper["weight_decay"] * param
        lr = param.dtype.type(hyper["lr"])
        if hyper["momentum"]:
            v = self.velocity.get(key)
            if v is None:
                v = np.zeros_like(param)
            v *= param.dtype.type(hyper["momentum"])
            v -= lr * step
            self.velocity[key] = v
            param += v
        else:
            param -= lr * step
        return param

    # -- checkpoint support -------------------------------------------------
    def get_config(self) -> dict:
        return {"type": "sgd", "lr": self.lr, "momentum": self.momentum,
                "weight_decay": self.weight_decay, "schedule": self.schedule.get_config(),
                "groups": self.groups}

    def state_dict(self) -> dict:
        # copies: _update changes velocities in place, which would rewrite a saved snapshot
        return {"velocity": {k: v.copy() for k, v in self.velocity.items()},
                "epoch": self.epoch, "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.velocity = {k: np.array(v) for k, v in state["velocity"].items()}
        self.epoch = int(state["epoch"])
        self.steps = int(state["steps"])


def optimizer_from_config(config: dict) -> SGD:
    if config.get("type") != "sgd":
        raise ValueError(f"unknown optimizer {config!r}")
    return SGD(config["lr"], config["momentum"], config["weight_decay"],
               schedule_from_config(config.get("schedule")), config.get("groups"))
