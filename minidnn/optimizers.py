"""SGD with momentum and weight decay, learning-rate schedules, per-layer overrides.

Update rule (the form of Caffe and of the papers in SPEC.md, technique 4):

    ΔW ← α·ΔW − η·(∂L/∂W + λ·W)
    W  ← W + ΔW

with η the learning rate, α the momentum, λ the weight decay (applied only
to a layer's ``decay_params``: weights, not biases or batch-norm scales).
This is the default (``momentum_form="caffe"``), the form the papers use.

``momentum_form="pytorch"`` is torch.optim.SGD's form (dampening 0, no
Nesterov):

    v ← α·v + (∂L/∂W + λ·W)
    W ← W − η·v

The two agree while η is constant (Caffe's ΔW is −η times PyTorch's v), but
not across a learning-rate change: Caffe's velocity still carries the steps
taken at the old rate, PyTorch's is rescaled by the new one at once. After a
×0.1 step the weights differ by about 25 % within 5 steps.

Computing a step is kept apart from applying it (as tinygrad's
``_step``/``_apply_update`` and scikit-learn's ``_get_updates``): ``SGD``
computes the float step ΔW, velocity always in a floating dtype, and hands it
to ``layer.apply_update(name, ΔW)``. A layer that stores integer codes
(technique 1) rounds there; the optimizer never sees the storage.

Seams for update rules:

* ``begin_step(model)`` runs before each minibatch's forward pass (``fit``
  calls it); a rule that must tell layers something before the step
  (semi-synchronous groups) overrides it.
* ``_step_delta(key, layer, pname, grad, hyper)`` computes one parameter's
  float step; a subclass that masks part of the gradient overrides it.
* The step is fused: where ``layer.in_place_param(name)`` hands out the
  parameter array (the default storage) and ``_step_delta`` is SGD's own, the
  velocity and the parameter are updated in place in one pass
  (``kernels.sgd_update``, bit-identical to computing ΔW and adding it), with
  no temporary. Otherwise the float step goes through ``apply_update``.
* ``state_dict()`` is written to checkpoints whole (arrays as datasets, the
  rest as JSON), so a subclass may add state of its own.
* ``after_step`` callbacks run after every step with the model.
"""
from __future__ import annotations

import numpy as np

from .kernels.sgd_update import FORMS, can_fuse, sgd_update_many, sgd_update_prepared


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


class InvLR:
    """Caffe's "inv" policy, per iteration: η(iter) = η₀ · (1 + γ·iter)^(−power).

    Caffe's LeNet solver uses γ = 1e-4, power = 0.75. ``per_iteration`` tells
    ``SGD.hyper`` to pass the step count instead of the epoch."""

    per_iteration = True

    def __init__(self, gamma: float = 1e-4, power: float = 0.75):
        if not (np.isfinite(gamma) and gamma >= 0 and np.isfinite(power) and power >= 0):
            raise ValueError(f"InvLR needs gamma >= 0 and power >= 0, got gamma={gamma}, power={power}")
        self.gamma, self.power = float(gamma), float(power)

    def __call__(self, base_lr, iteration):
        return base_lr * (1.0 + self.gamma * iteration) ** (-self.power)

    def get_config(self):
        return {"type": "inv", "gamma": self.gamma, "power": self.power}


def schedule_from_config(config: dict | None):
    if not config or config.get("type") == "constant":
        return ConstantLR()
    if config["type"] == "step":
        return StepLR(config["step_size"], config["gamma"])
    if config["type"] == "inv":
        return InvLR(config["gamma"], config["power"])
    raise ValueError(f"unknown learning-rate schedule {config!r}")


class SGD:
    """Minibatch SGD with momentum, weight decay and per-layer overrides.

    Args:
        lr: learning rate η (before the schedule).
        momentum: α in [0, 1).
        weight_decay: λ, L2 decay on each layer's ``decay_params``.
        schedule: epoch → learning rate (``ConstantLR`` by default, ``StepLR``).
        per_layer: layer name → overrides of ``lr``, ``momentum`` and
            ``weight_decay`` for that layer, e.g. ``{"dense_2": {"lr": 0.01}}``.
        groups: old name of ``per_layer`` (kept so existing code runs).
        param_mult: parameter name → multipliers ``{"lr": m, "weight_decay": m}``
            applied in every layer on top of the per-layer values: Caffe's
            ``lr_mult`` / ``decay_mult``. ``{"b": {"lr": 2, "weight_decay": 1}}``
            is the bias setting of Caffe's example nets (twice the rate, decayed
            like the weights). A ``weight_decay`` multiplier given for a
            parameter decays it even if it is not in the layer's ``decay_params``.
        momentum_form: ``"caffe"`` (default, ΔW ← αΔW − η(g + λW); W ← W + ΔW)
            or ``"pytorch"`` (v ← αv + g + λW; W ← W − ηv), see the module
            docstring; they differ only when the learning rate changes.
    """

    MOMENTUM_FORMS = ("caffe", "pytorch")
    #: step all parameters in one kernel call where each can take the fused path
    #: (``_planned_step``; bit for bit the per-parameter steps). False: one call each
    FUSED_PLAN = True

    def __init__(self, lr: float = 0.01, momentum: float = 0.0, weight_decay: float = 0.0,
                 schedule=None, per_layer: dict | None = None, groups: dict | None = None,
                 momentum_form: str = "caffe", param_mult: dict | None = None):
        if groups is not None:
            if per_layer is not None:
                raise ValueError("SGD: give per_layer= (groups= is its old name), not both")
            per_layer = groups
        for label, value in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay)):
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"SGD {label} must be a finite number >= 0, got {value}")
        if momentum >= 1:
            raise ValueError(f"SGD momentum must be < 1, got {momentum}")
        if momentum_form not in self.MOMENTUM_FORMS:
            raise ValueError(f"SGD momentum_form must be one of {self.MOMENTUM_FORMS}, "
                             f"got {momentum_form!r}")
        self.momentum_form = momentum_form
        self.lr, self.momentum, self.weight_decay = float(lr), float(momentum), float(weight_decay)
        self.schedule = schedule or ConstantLR()
        self.per_layer = dict(per_layer or {})
        self.param_mult = _checked_param_mult(param_mult)
        self.velocity: dict[str, np.ndarray] = {}
        self.epoch = 0
        self.steps = 0
        self.after_step = []
        self._prepared_cache: dict = {}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def hyper(self, layer) -> dict:
        """The hyperparameters in force for ``layer`` at the current epoch."""
        h = {"lr": self.lr, "momentum": self.momentum, "weight_decay": self.weight_decay}
        h.update(self.per_layer.get(layer.name, {}))
        when = self.steps if getattr(self.schedule, "per_iteration", False) else self.epoch
        h["lr"] = self.schedule(h["lr"], when)
        return h

    def begin_step(self, model) -> None:
        """Called before each minibatch's forward pass; plain SGD does nothing."""

    def step(self, model) -> None:
        """Apply one update to every parameter of ``model`` from its ``grads``.

        ``model`` is anything with ``.layers`` (a ``Sequential``, a list holder
        for pretraining units); each layer has ``name``, ``params``, ``grads``,
        ``decay_params`` and ``apply_update``."""
        fusable = type(self)._step_delta is SGD._step_delta   # a subclass's own step: unfused
        if fusable and self.FUSED_PLAN and self._planned_step(model):
            self.steps += 1
            for callback in self.after_step:
                callback(model, self)
            return
        for layer in model.layers:
            if not layer.params:
                continue
            h = self.hyper(layer)
            in_place = getattr(layer, "in_place_param", None) if fusable else None
            for pname in layer.params:
                grad = layer.grads[pname]
                if in_place is not None and self._fused_step(layer, pname, in_place(pname),
                                                             grad, h):
                    continue
                hp = self._param_hyper(layer, pname, h)
                delta = self._step_delta(f"{layer.name}/{pname}", layer, pname, grad, hp)
                layer.apply_update(pname, delta)
        self.steps += 1
        for callback in self.after_step:
            callback(model, self)

    def _param_hyper(self, layer, pname: str, layer_hyper: dict) -> dict:
        """One parameter's hyperparameters: the layer's, with weight decay only
        on ``decay_params``, then the ``param_mult`` multipliers."""
        hp = dict(layer_hyper)
        mult = self.param_mult.get(pname, {})
        if "weight_decay" in mult:
            hp["weight_decay"] *= mult["weight_decay"]
        elif pname not in layer.decay_params:
            hp["weight_decay"] = 0.0
        hp["lr"] *= mult.get("lr", 1.0)
        return hp

    def _prepared(self, layer, pname: str, layer_hyper: dict, dtype) -> tuple:
        """(velocity key, η, α, λ as scalars of ``dtype``, whether λ is applied, the
        kernel's form code) for one parameter: what ``_fused_step`` hands the kernel.

        Kept per (layer name and class, parameter, dtype, the layer's η, α, λ, form),
        so a step with unchanged hyperparameters (every step of a constant or
        per-epoch schedule) skips the per-parameter dictionaries, the key string and
        the casts: about 5 µs a parameter, a quarter of the 784-500-10 net's step.
        ``param_mult`` and ``decay_params`` are fixed when the SGD and the layer
        class are made, so they need no place in the key."""
        cache_key = (layer.name, type(layer), pname, dtype, layer_hyper["lr"],
                     layer_hyper["momentum"], layer_hyper["weight_decay"], self.momentum_form)
        cache = self.__dict__.setdefault("_prepared_cache", {})
        prepared = cache.get(cache_key)
        if prepared is None:
            hp = self._param_hyper(layer, pname, layer_hyper)
            t = np.dtype(dtype).type
            prepared = (f"{layer.name}/{pname}", t(hp["lr"]), t(hp["momentum"]),
                        t(hp["weight_decay"]), bool(hp["weight_decay"]),
                        FORMS[self.momentum_form])
            if len(cache) > 4096:      # a per-iteration schedule: no unbounded growth
                cache.clear()
            cache[cache_key] = prepared
        return prepared

    def _planned_step(self, model) -> bool:
        """Step every parameter of ``model`` in one kernel call (``sgd_update_many``),
        bit for bit the per-parameter ``_fused_step``s, when every parameter can take
        that path; False (nothing done) otherwise, and ``step`` takes the general path.

        The list of parameters, their flat views, velocities and scalars (a
        ``_StepPlan``) is made once and reused while the layers, their parameter
        arrays, the velocities and every layer's hyperparameters stay the same
        objects and values (checked at every step, ~0.3 µs a parameter): on the
        784-500-10 net the step's four parameters then cost one dispatch instead of
        four passes through the per-parameter bookkeeping."""
        layers = model.layers
        plan = self.__dict__.get("_plan")
        # the hyperparameters are a function of these (``hyper``): while they are
        # unchanged, the plan's are still right (a per-iteration schedule changes at
        # every step, and so recomputes them)
        when = self.steps if getattr(self.schedule, "per_iteration", False) else self.epoch
        hyper_key = (self.lr, self.momentum, self.weight_decay, when, self.schedule,
                     self.per_layer)
        fresh = plan is None or plan.hyper_key != hyper_key
        hypers = ([self.hyper(layer) for layer in layers if layer.params] if fresh
                  else plan.hypers)
        if plan is None or not plan.matches(layers, hypers, self.velocity):
            plan = self._plan = _StepPlan.build(self, layers, hypers)
            if plan is None:
                return False
        if fresh:       # a copy: a per_layer dict changed in place must not match
            plan.hyper_key = (*hyper_key[:5], {k: dict(v) for k, v in self.per_layer.items()})
        grads = plan.flat_grads()
        if grads is None:
            return False
        sgd_update_many(plan.ws, grads, plan.vs, plan.scalars, plan.decays, plan.form)
        return True

    def _fused_step(self, layer, pname, param, grad, layer_hyper) -> bool:
        """Step ``param`` in place in one pass (``kernels.sgd_update``), bit-identical
        to ``_step_delta`` + the default ``apply_update``; False (nothing done) when
        the arrays do not allow it (dtypes, layout), and the caller takes that path."""
        if param is None or not can_fuse(param, grad, None):
            return False
        key, lr, momentum, weight_decay, decay, form = self._prepared(
            layer, pname, layer_hyper, param.dtype)
        flat_w = param.reshape(-1)
        flat_v = flat_w                       # unused without momentum
        if momentum:
            v = self.velocity.get(key)
            if v is None:
                v = self.velocity[key] = np.zeros_like(grad)
            elif not (v.dtype == param.dtype and v.shape == param.shape
                      and v.flags.c_contiguous):
                return False
            flat_v = v.reshape(-1)
        flat_g = grad.reshape(-1) if grad.flags.c_contiguous else \
            np.ascontiguousarray(grad).reshape(-1)
        # operands checked above, scalars cast once per hyperparameter setting
        sgd_update_prepared(flat_w, flat_g, flat_v, lr, momentum, weight_decay, decay, form)
        return True

    def _step_delta(self, key, layer, pname, grad, hyper) -> np.ndarray:
        """The float step ΔW = α·ΔW − η·(g + λ·W) for one parameter (Caffe's
        form), or ΔW = −η·v with v ← α·v + g + λ·W (``momentum_form="pytorch"``).

        Returns the velocity itself when Caffe's momentum is on (the layer must
        not keep a reference to ``delta``)."""
        step = grad
        if hyper["weight_decay"]:
            step = grad + grad.dtype.type(hyper["weight_decay"]) * layer.param_value(pname)
        lr = grad.dtype.type(hyper["lr"])
        if not hyper["momentum"]:
            return -lr * step
        v = self.velocity.get(key)
        if v is None:
            v = np.zeros_like(grad)
        v *= grad.dtype.type(hyper["momentum"])
        self.velocity[key] = v
        if self.momentum_form == "pytorch":
            v += step
            return -lr * v
        v -= lr * step
        return v

    # -- checkpoint support -------------------------------------------------
    def get_config(self) -> dict:
        return {"type": "sgd", "lr": self.lr, "momentum": self.momentum,
                "weight_decay": self.weight_decay, "schedule": self.schedule.get_config(),
                "per_layer": self.per_layer, "momentum_form": self.momentum_form,
                "param_mult": self.param_mult}

    def state_dict(self) -> dict:
        """Everything a resumed run needs: nested dicts of arrays and JSON values.

        Checkpoints store it whole, so a subclass extends it with its own keys."""
        # copies: steps change velocities in place, which would rewrite a saved snapshot
        return {"velocity": {k: v.copy() for k, v in self.velocity.items()},
                "epoch": self.epoch, "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.velocity = {k: np.array(v) for k, v in state.get("velocity", {}).items()}
        self.epoch = int(state["epoch"])
        self.steps = int(state["steps"])


class _StepPlan:
    """What ``SGD._planned_step`` hands ``sgd_update_many``, for one list of layers."""

    __slots__ = ("layers", "hypers", "entries", "ws", "vs", "scalars", "decays", "form",
                 "dtype", "counts", "hyper_key")

    @classmethod
    def build(cls, sgd, layers, hypers):
        """The plan, or None when a parameter cannot be stepped in place in one pass
        (the storage is not the default one, dtypes differ, a gradient or velocity does
        not fit)."""
        entries, scalars, decays, dtype = [], [], [], None
        holders = [layer for layer in layers if layer.params]
        for layer, hyper in zip(holders, hypers):
            for pname in layer.params:
                w = layer.in_place_param(pname)
                if w is None or not can_fuse(w, layer.grads.get(pname), None):
                    return None
                dtype = w.dtype if dtype is None else dtype
                if w.dtype != dtype:
                    return None
                key, lr, momentum, weight_decay, decay, form = sgd._prepared(
                    layer, pname, hyper, w.dtype)
                v = w
                if momentum:
                    v = sgd.velocity.get(key)
                    if v is None:
                        v = sgd.velocity[key] = np.zeros_like(w)
                    elif not (v.dtype == w.dtype and v.shape == w.shape
                              and v.flags.c_contiguous):
                        return None
                entries.append((layer, pname, w, key, v))
                scalars.append((lr, momentum, weight_decay))
                decays.append(decay)
        if not entries:
            return None
        plan = cls()
        plan.layers, plan.hypers, plan.entries, plan.dtype = tuple(layers), hypers, entries, dtype
        plan.ws = tuple(w.reshape(-1) for _, _, w, _, _ in entries)
        plan.vs = tuple(v.reshape(-1) for _, _, _, _, v in entries)
        plan.scalars = np.array(scalars, dtype=dtype).reshape(len(entries), 3)
        plan.decays = np.array(decays, dtype=np.bool_)
        plan.form = FORMS[sgd.momentum_form]
        plan.counts = [len(layer.params) for layer in holders]
        plan.hyper_key = None
        return plan

    def matches(self, layers, hypers, velocity) -> bool:
        """Whether the plan still describes these layers, hyperparameters and velocities."""
        if tuple(layers) != self.layers or hypers != self.hypers:
            return False
        for layer, pname, w, key, v in self.entries:
            if layer.params.get(pname) is not w or (v is not w and velocity.get(key) is not v):
                return False
        return self.counts == [len(layer.params) for layer in layers if layer.params]

    def flat_grads(self):
        """This step's gradients as flat views, or None when one does not fit its parameter."""
        grads = []
        for layer, pname, w, _, _ in self.entries:
            g = layer.grads[pname]
            if g.dtype != self.dtype or g.shape != w.shape or not g.flags.c_contiguous:
                return None
            grads.append(g.reshape(-1))
        return tuple(grads)


def optimizer_from_config(config: dict) -> SGD:
    if config.get("type") != "sgd":
        raise ValueError(f"unknown optimizer {config!r}")
    per_layer = config.get("per_layer", config.get("groups"))
    return SGD(config["lr"], config["momentum"], config["weight_decay"],
               schedule_from_config(config.get("schedule")), per_layer=per_layer,
               momentum_form=config.get("momentum_form", "caffe"),
               param_mult=config.get("param_mult"))


def _checked_param_mult(param_mult) -> dict:
    """``param_mult`` as a plain dict of float multipliers, or a clear error."""
    checked = {}
    for pname, mult in dict(param_mult or {}).items():
        if not isinstance(mult, dict) or not set(mult) <= {"lr", "weight_decay"}:
            raise ValueError(f"SGD param_mult[{pname!r}] must be a dict with keys 'lr' and/or "
                             f"'weight_decay', got {mult!r}")
        for label, value in mult.items():
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"SGD param_mult[{pname!r}][{label!r}] must be a finite "
                                 f"number >= 0, got {value}")
        checked[str(pname)] = {k: float(v) for k, v in mult.items()}
    return checked
