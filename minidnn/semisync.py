"""Semi-synchronous updates of fully connected layers (technique 4).

Hori, Sekiya & Takenaka, "Semi-synchronous updating of neurons in
full-connection layers through backpropagation of deep learning" (SPEC.md,
technique 4; ``seeds/003_*.txt``). A fully connected layer's N output units
(columns of ``Dense.W``, which is (in, out)) are split once, at the start,
into G = ⌈√N⌉ disjoint groups g₁ … g_G, as even as possible (sizes differ by
at most one). At minibatch t only group g_(t mod G) takes the gradient step;
with momentum every unit keeps moving by its momentum term:

    active units   (their column of W and their bias):
        ΔW ← α·ΔW − η·(∂L/∂W + λ·W),   W ← W + ΔW        (paper eq. 5)
    inactive units:
        ΔW ← α·ΔW,                      W ← W + ΔW        (paper eq. 6)

Forward and backward passes use every unit; only the update is restricted.
Weight decay λ acts on active units only (it is part of the gradient step).
The paper applies the rule independently to every FC layer except the output
layer, and combines it with dropout (groups fixed first, dropout draws its
units independently) and batch norm; so does this module.

Cost: ``begin_step`` sets ``layer.active_units``, and ``Dense._weight_grad``
then computes xᵀ·grad only for the active columns, 1/G of the FC
weight-gradient product.

State: the group assignment (the permutations, and the seed and order they
came from) and the step counter are in ``state_dict()``, which checkpoints
store whole, so a run resumed in the middle of a cycle continues with the
same group it would have used.
"""
from __future__ import annotations

import math

import numpy as np

from .kernels.column_scatter import add_columns
from .optimizers import SGD, schedule_from_config

ORDERS = ("contiguous", "random")


class NeuronGroups:
    """A fixed partition of ``n_units`` output units into ``n_groups`` groups.

    Args:
        n_units: N, the layer's output units.
        n_groups: G (default ⌈√N⌉); 1 ≤ G ≤ N. Sizes are ⌊N/G⌋ or ⌈N/G⌉.
        order: ``"contiguous"`` (group i holds consecutive units, so the
            active columns are a slice and no gather is needed) or
            ``"random"`` (units assigned by a random permutation from
            ``seed``; each group's indices sorted).
        seed: int seed of the permutation for ``order="random"``.

    ``active(step)`` is group ``step mod G``: a ``slice`` for contiguous
    groups, a sorted int64 index array for random ones.
    """

    def __init__(self, n_units: int, n_groups: int | None = None, order: str = "contiguous",
                 seed: int = 0, permutation=None):
        n_units = int(n_units)
        if n_units < 1:
            raise ValueError(f"NeuronGroups needs n_units >= 1, got {n_units}")
        if n_groups is None:
            n_groups = math.ceil(math.sqrt(n_units))
        if not 1 <= int(n_groups) <= n_units:
            raise ValueError(f"NeuronGroups: n_groups must be in 1..{n_units} (the layer's "
                             f"units), got {n_groups}")
        if order not in ORDERS:
            raise ValueError(f"NeuronGroups order must be one of {ORDERS}, got {order!r}")
        self.n_units, self.n_groups, self.order, self.seed = n_units, int(n_groups), order, int(seed)
        if permutation is None:
            permutation = (np.arange(n_units) if order == "contiguous"
                           else np.random.default_rng(self.seed).permutation(n_units))
        permutation = np.asarray(permutation, dtype=np.int64)
        if permutation.shape != (n_units,) or not np.array_equal(np.sort(permutation),
                                                                 np.arange(n_units)):
            raise ValueError(f"NeuronGroups: permutation must be a permutation of "
                             f"0..{n_units - 1}, got shape {permutation.shape}")
        self.permutation = permutation
        # array_split: the first N mod G groups get one unit more
        parts = np.array_split(permutation, self.n_groups)
        if order == "contiguous":
            bounds = np.cumsum([0] + [len(p) for p in parts])
            self.groups = [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
        else:
            self.groups = [np.sort(p) for p in parts]

    def __len__(self) -> int:
        return self.n_groups

    def active(self, step: int):
        """The units of group ``step mod G`` (a slice or a sorted index array)."""
        return self.groups[int(step) % self.n_groups]

    def members(self, i: int) -> np.ndarray:
        """Group ``i``'s units as an index array."""
        g = self.groups[i]
        return np.arange(self.n_units)[g] if isinstance(g, slice) else g

    def sizes(self) -> list[int]:
        return [len(self.members(i)) for i in range(self.n_groups)]

    def state(self) -> dict:
        return {"n_units": self.n_units, "n_groups": self.n_groups, "order": self.order,
                "seed": self.seed, "permutation": self.permutation.copy()}

    @classmethod
    def from_state(cls, state: dict) -> "NeuronGroups":
        return cls(int(state["n_units"]), int(state["n_groups"]), str(state["order"]),
                   int(state["seed"]), permutation=np.asarray(state["permutation"]))

    def __repr__(self) -> str:
        sizes = sorted(set(self.sizes()))
        return (f"NeuronGroups({self.n_units} units, {self.n_groups} groups of "
                f"{'/'.join(map(str, sizes))}, {self.order})")


def default_layers(model) -> list[str]:
    """The paper's choice: every Dense layer except the last (the output layer)."""
    from .layers import Dense
    dense = [layer.name for layer in model.layers if isinstance(layer, Dense)]
    return dense[:-1]


class SemiSyncSGD(SGD):
    """Momentum SGD with semi-synchronous updates on chosen Dense layers.

    Args:
        lr, momentum, weight_decay, schedule, per_layer: as ``SGD``.
        layers: names of the Dense layers updated semi-synchronously; None
            (default) means every Dense layer but the last one (the output
            layer), resolved at the first step. Other layers get plain SGD.
        n_groups: G for every chosen layer (None: ⌈√N⌉ per layer), or a dict
            layer name → G.
        order: ``"contiguous"`` or ``"random"`` group assignment.
        seed: seed of the random assignment (layer i uses ``seed + i``).

    Per minibatch ``fit`` calls ``begin_step(model)``, which sets each chosen
    layer's ``active_units`` to group ``steps mod G`` (so its weight gradient
    is computed for those columns only); ``step`` then applies the rule in
    the module docstring and clears ``active_units``.
    """

    def __init__(self, lr: float = 0.01, momentum: float = 0.0, weight_decay: float = 0.0,
                 schedule=None, per_layer: dict | None = None, *, layers=None, n_groups=None,
                 order: str = "contiguous", seed: int = 0):
        super().__init__(lr, momentum, weight_decay, schedule=schedule, per_layer=per_layer)
        if order not in ORDERS:
            raise ValueError(f"SemiSyncSGD order must be one of {ORDERS}, got {order!r}")
        if n_groups is not None and not isinstance(n_groups, dict) and int(n_groups) < 1:
            raise ValueError(f"SemiSyncSGD n_groups must be >= 1 (or None for ⌈√N⌉), got {n_groups}")
        self.layers = None if layers is None else [str(name) for name in layers]
        self.n_groups = n_groups
        self.order, self.seed = order, int(seed)
        self.neuron_groups: dict[str, NeuronGroups] = {}

    # -- groups ---------------------------------------------------------------
    def attach(self, model) -> dict[str, NeuronGroups]:
        """Fix the groups of ``model``'s chosen layers (done once; idempotent)."""
        if self.neuron_groups:
            return self.neuron_groups
        from .layers import Dense
        names = self.layers if self.layers is not None else default_layers(model)
        by_name = {layer.name: layer for layer in model.layers}
        for i, name in enumerate(names):
            layer = by_name.get(name)
            if layer is None:
                raise ValueError(f"SemiSyncSGD: no layer named {name!r}; layers: {sorted(by_name)}")
            if not isinstance(layer, Dense):
                raise ValueError(f"SemiSyncSGD applies to Dense layers; {name!r} is a "
                                 f"{type(layer).__name__}")
            g = self.n_groups.get(name) if isinstance(self.n_groups, dict) else self.n_groups
            self.neuron_groups[name] = NeuronGroups(layer.out_features, g, self.order,
                                                    self.seed + i)
        self.layers = list(names)
        return self.neuron_groups

    def active_units(self, name: str):
        """The units of layer ``name`` that take the gradient step at this step."""
        return self.neuron_groups[name].active(self.steps)

    def begin_step(self, model) -> None:
        self.attach(model)
        for layer in model.layers:
            if layer.name in self.neuron_groups:
                layer.active_units = self.active_units(layer.name)

    def step(self, model) -> None:
        self.attach(model)
        super().step(model)
        for layer in model.layers:
            if layer.name in self.neuron_groups:
                layer.active_units = None

    def _step_delta(self, key, layer, pname, grad, hyper) -> np.ndarray:
        groups = self.neuron_groups.get(layer.name)
        if groups is None or pname not in ("W", "b"):
            return super()._step_delta(key, layer, pname, grad, hyper)
        cols = groups.active(self.steps)
        # W is (in, out): a unit is a column; b is (out,): a unit is an entry
        sel = (slice(None), cols) if pname == "W" else (cols,)

        def gather(a):  # np.take: a faster gather of index-array columns than a[:, cols]
            return np.take(a, cols, axis=1) if pname == "W" and not isinstance(cols, slice) else a[sel]
        step = gather(grad)
        if hyper["weight_decay"]:
            step = step + grad.dtype.type(hyper["weight_decay"]) * gather(layer.param_value(pname))
        lr = grad.dtype.type(hyper["lr"])
        v = self.velocity.get(key)
        if v is None:
            v = np.zeros_like(grad)
        if hyper["momentum"]:
            v *= grad.dtype.type(hyper["momentum"])
        else:
            v[...] = 0
        if pname == "W" and not isinstance(cols, slice):
            # random groups: one Numba sweep instead of NumPy's 2-D fancy
            # update (same arithmetic: v + (−η)·step == v − η·step exactly)
            add_columns(v, cols, step, -lr)
        else:
            v[sel] -= lr * step
        self.velocity[key] = v
        return v

    # -- checkpoint support -----------------------------------------------------
    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"type": "semisync_sgd", "layers": self.layers, "n_groups": self.n_groups,
                       "order": self.order, "seed": self.seed})
        return config

    @classmethod
    def from_config(cls, config: dict) -> "SemiSyncSGD":
        if config.get("type") != "semisync_sgd":
            raise ValueError(f"not a SemiSyncSGD config: {config!r}")
        return cls(config["lr"], config["momentum"], config["weight_decay"],
                   schedule_from_config(config.get("schedule")), config.get("per_layer"),
                   layers=config.get("layers"), n_groups=config.get("n_groups"),
                   order=config.get("order", "contiguous"), seed=config.get("seed", 0))

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["semisync"] = {"layers": list(self.neuron_groups),
                             "groups": {name: g.state() for name, g in self.neuron_groups.items()}}
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        saved = state.get("semisync")
        if saved is None:
            raise ValueError("SemiSyncSGD.load_state_dict: the state has no 'semisync' entry "
                             "(it was written by plain SGD); cannot resume its groups")
        names = list(saved.get("layers", []))
        if isinstance(names, np.ndarray):
            names = [str(n) for n in names]
        groups = saved.get("groups", {})
        self.neuron_groups = {name: NeuronGroups.from_state(groups[name]) for name in names}
        if names:
            self.layers = names


# -- command line ---------------------------------------------------------------------

def add_train_options(parser) -> None:
    """``--semi-sync``, ``--semi-sync-groups``, ``--semi-sync-order`` for ``minidnn train``."""
    parser.add_argument("--semi-sync", default=None, metavar="fc|LAYER[,LAYER...]",
                        help="semi-synchronous updates (Hori et al.): 'fc' for every Dense "
                             "layer but the output layer, or a comma-separated list of Dense "
                             "layer names. Default: off")
    parser.add_argument("--semi-sync-groups", type=int, default=None, metavar="G",
                        help="neuron groups per layer (default ⌈√N⌉ for N units)")
    parser.add_argument("--semi-sync-order", choices=ORDERS, default="contiguous",
                        help="how units are assigned to groups (default %(default)s)")


def optimizer_from_args(args, optimizer: SGD) -> SGD:
    """``optimizer`` itself, or a SemiSyncSGD with its hyperparameters when
    ``--semi-sync`` was given."""
    spec = getattr(args, "semi_sync", None)
    if not spec:
        return optimizer
    layers = None if spec == "fc" else [s.strip() for s in spec.split(",") if s.strip()]
    if layers == []:
        raise ValueError(f"--semi-sync expects 'fc' or layer names, got {spec!r}")
    if getattr(optimizer, "momentum_form", "caffe") != "caffe":
        # the paper's rule (inactive units move by αΔW) is written in Caffe's form
        raise ValueError(f"--semi-sync follows the paper's rule in Caffe's momentum form; "
                         f"--momentum-form {optimizer.momentum_form} is not supported with it")
    return SemiSyncSGD(optimizer.lr, optimizer.momentum, optimizer.weight_decay,
                       schedule=optimizer.schedule, per_layer=optimizer.per_layer,
                       layers=layers, n_groups=args.semi_sync_groups,
                       order=args.semi_sync_order, seed=getattr(args, "seed", 0))
