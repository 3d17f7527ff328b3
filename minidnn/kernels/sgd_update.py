"""The fused, in-place SGD step: momentum and weight decay in one pass, no temporary.

For one parameter w with gradient g, learning rate η, momentum α and weight
decay λ (``minidnn.optimizers.SGD``; Caffe's form is the default, see there):

    caffe:    v ← α·v − η·(g + λ·w);   w ← w + v
    pytorch:  v ← α·v + (g + λ·w);     w ← w − η·v
    α = 0:    w ← w − η·(g + λ·w)     (no velocity is kept)

(the first is Caffe's SGDSolver, Jia et al., 2014, "Caffe: convolutional
architecture for fast feature embedding"; the second torch.optim.SGD's; the
momentum method itself is Polyak's heavy ball, as used by Sutskever et al.,
2013, "On the importance of initialization and momentum in deep learning").

The unfused NumPy path (``SGD._step_delta`` then ``apply_update``) makes
``g + λw`` and ``η·(…)`` as temporaries and reads w, g and v two or three
times: on the 784×500 RBM it cost about as much as a sigmoid pass. The kernel
reads each of w, g, v once and writes w (and v) once, element by element.

Each element's arithmetic is the NumPy path's, in the same order and in the
parameter's dtype (the scalars are cast to it first, as ``_step_delta`` casts
them), with no fused multiply-add (Numba does not contract without fastmath),
so the kernel is bit-identical to ``sgd_update_numpy``; tests hold it there.

One thread, on purpose: the step is memory-bound and short (784×500 float32,
0.06 ms, as fast as ``W += g``); a ``prange`` build over 16k-element chunks
took 0.6 ms at one Numba thread and 1.4 ms at two on the loaded 2-core
machine (waking the pool costs more than the pass). It is built ``nogil`` so that
worker threads may run it side by side.
"""
from __future__ import annotations

import numba
import numpy as np

FORMS = {"caffe": 0, "pytorch": 1}


def sgd_update_numpy(w: np.ndarray, g: np.ndarray, v: np.ndarray | None, lr, momentum,
                     weight_decay, form: str = "caffe") -> None:
    """The definition, in place on w (and v): the operations of the unfused path."""
    t = w.dtype.type
    step = g + t(weight_decay) * w if weight_decay else g
    if not momentum:
        w += -t(lr) * step
        return
    v *= t(momentum)
    if form == "pytorch":
        v += step
        w += -t(lr) * v
    else:
        v -= t(lr) * step
        w += v


@numba.njit(cache=True, inline="always")
def _update_range(w, g, v, lr, momentum, weight_decay, decay, form):
    # one branch-free loop per case over whole (sliced) arrays from index 0: a test
    # inside the loop, or an index that might be negative (Numba's wraparound check),
    # stops LLVM vectorising it
    n = w.shape[0]
    if momentum == 0:
        if decay:
            for i in range(n):
                w[i] = w[i] + (-lr) * (g[i] + weight_decay * w[i])
        else:
            for i in range(n):
                w[i] = w[i] + (-lr) * g[i]
    elif form == 1:
        if decay:
            for i in range(n):
                vi = v[i] * momentum + (g[i] + weight_decay * w[i])
                v[i] = vi
                w[i] = w[i] + (-lr) * vi
        else:
            for i in range(n):
                vi = v[i] * momentum + g[i]
                v[i] = vi
                w[i] = w[i] + (-lr) * vi
    else:
        if decay:
            for i in range(n):
                vi = v[i] * momentum - lr * (g[i] + weight_decay * w[i])
                v[i] = vi
                w[i] = w[i] + vi
        else:
            for i in range(n):
                vi = v[i] * momentum - lr * g[i]
                v[i] = vi
                w[i] = w[i] + vi


@numba.njit(cache=True, nogil=True)
def _sgd_update_kernel(w, g, v, lr, momentum, weight_decay, decay, form):
    # w, g, v 1-D of one dtype; lr, momentum, weight_decay already of that dtype.
    # momentum == 0 is the plain step (v unused); decay says whether λw is added at
    # all, as the NumPy path skips it when λ = 0 (g + 0·w differs for w = inf, NaN).
    _update_range(w, g, v, lr, momentum, weight_decay, decay, form)


def can_fuse(w, g, v) -> bool:
    """Whether the kernel can update w (and v) in place: float arrays of one dtype and
    shape, w and v C-contiguous (g is read through a flat copy when it is not)."""
    if not (isinstance(w, np.ndarray) and isinstance(g, np.ndarray)):
        return False
    if w.dtype not in (np.float32, np.float64) or g.dtype != w.dtype or g.shape != w.shape:
        return False
    if not w.flags.c_contiguous or not w.flags.writeable:
        return False
    if v is not None and (not isinstance(v, np.ndarray) or v.dtype != w.dtype
                          or v.shape != w.shape or not v.flags.c_contiguous):
        return False
    return True


def sgd_update(w: np.ndarray, g: np.ndarray, v: np.ndarray | None, lr, momentum,
               weight_decay, form: str = "caffe") -> None:
    """w (and v) ← one SGD step, in place, in one pass (see the module docstring).

    ``v`` is the velocity (same shape and dtype as w), needed when momentum > 0."""
    if not can_fuse(w, g, v):
        raise ValueError(f"sgd_update needs float32/float64 w and g of one dtype and shape, "
                         f"w and v C-contiguous; got w {getattr(w, 'dtype', type(w))} "
                         f"{np.shape(w)}, g {getattr(g, 'dtype', type(g))} {np.shape(g)}, "
                         f"v {None if v is None else (v.dtype, v.shape)}")
    if form not in FORMS:
        raise ValueError(f"sgd_update form must be one of {tuple(FORMS)}, got {form!r}")
    if momentum and v is None:
        raise ValueError("sgd_update with momentum needs the velocity v")
    t = w.dtype.type
    flat_w = w.reshape(-1)
    flat_g = np.ascontiguousarray(g).reshape(-1)
    flat_v = flat_w if v is None else v.reshape(-1)     # unused without momentum
    _sgd_update_kernel(
        flat_w, flat_g, flat_v, t(lr), t(momentum), t(weight_decay), bool(weight_decay),
        FORMS[form])


def sgd_update_unchecked(w: np.ndarray, g: np.ndarray, v: np.ndarray | None, lr, momentum,
                         weight_decay, form: str = "caffe") -> None:
    """``sgd_update`` for a caller that has just checked ``can_fuse(w, g, v)`` and the
    form (``SGD._fused_step``): the same kernel call without repeating those checks,
    which cost about as much as the update of a small parameter (a bias)."""
    t = w.dtype.type
    flat_w = w.reshape(-1)
    flat_g = g.reshape(-1) if g.flags.c_contiguous else np.ascontiguousarray(g).reshape(-1)
    flat_v = flat_w if v is None else v.reshape(-1)
    _sgd_update_kernel(flat_w, flat_g, flat_v, t(lr), t(momentum), t(weight_decay),
                       bool(weight_decay), FORMS[form])


#: the kernel itself, for a caller that hands it flat, checked operands and the scalars
#: already cast to their dtype (``SGD._fused_step``, which caches the casts): each
#: Python-level step above it costs about a microsecond, the dispatch itself about 3
sgd_update_prepared = _sgd_update_kernel


# -- every parameter of a step in one call ------------------------------------------------
# ``SGD.step`` on a small net spends most of its time around the kernel: per parameter the
# hyperparameter lookup, the checks, the reshapes and a dispatch (~3 µs) cost ~11 µs where
# the pass itself over the 784-500-10 sparse net's 25.5k weights takes ~5 µs in all.
# ``sgd_update_many`` steps a whole list of parameters in one dispatch; the list, with its
# flat views and scalars, is made once and reused while nothing changes (``SGD._fused_plan``).

@numba.njit(cache=True, nogil=True)
def _sgd_update_many_kernel(ws, gs, vs, scalars, decays, form):
    # ws, gs, vs: tuples of flat arrays of one dtype; scalars[p] = (η, α, λ) of parameter
    # p in that dtype; decays[p] whether λ is applied. Each parameter's pass is
    # _update_range's, so each element's arithmetic is the one-parameter kernel's.
    for p in range(len(ws)):
        _update_range(ws[p], gs[p], vs[p], scalars[p, 0], scalars[p, 1], scalars[p, 2],
                      decays[p], form)


def sgd_update_many_numpy(ws, gs, vs, scalars, decays, form: int) -> None:
    """The twin of ``sgd_update_many``: ``sgd_update_numpy`` on each parameter in turn."""
    name = {code: key for key, code in FORMS.items()}[int(form)]
    for w, g, v, (lr, momentum, weight_decay), decay in zip(ws, gs, vs, scalars, decays):
        sgd_update_numpy(w, g, v if momentum else None, lr, momentum,
                         weight_decay if decay else 0.0, name)


def sgd_update_many(ws: tuple, gs: tuple, vs: tuple, scalars: np.ndarray, decays: np.ndarray,
                    form: int) -> None:
    """One SGD step of every parameter p, in place, in one call: ws[p] (and vs[p]) from
    gs[p] with (η, α, λ) = scalars[p] and λ applied where decays[p] (module docstring).

    A caller-checked fast path (``SGD._fused_plan``): ws, gs, vs are tuples of flat
    C-contiguous arrays of one float dtype, ws[p], gs[p], vs[p] of one length (vs[p] may
    be ws[p] when α = 0: it is not read then), scalars a (P, 3) array of that dtype,
    decays a (P,) bool array, form a ``FORMS`` code. Bit for bit ``sgd_update`` on each
    parameter, and ``sgd_update_many_numpy``."""
    _sgd_update_many_kernel(ws, gs, vs, scalars, decays, form)
