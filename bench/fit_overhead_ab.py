"""Paired in-process A/B of sitting 17's cuts to the per-step cost of ``fit`` (issue #11).

    python bench/fit_overhead_ab.py                       # 1 thread, 10,000 images, ~2 min
    python bench/fit_overhead_ab.py --threads 2 --images 50000 --repeats 5

Each cut can be switched back to the code it replaced, in the same process:

* ``loss``: SoftmaxCrossEntropy's Numba passes (``kernels.softmax_xent``) / its NumPy twin
* ``accuracy``: fit's correct-prediction count in one Numba pass / ``argmax == y``
* ``gather``: the Fortran-ordered minibatch gather for a sparse first layer
  (``kernels.gather``) / ``x[idx]`` and the layer's own transpose
* ``sgd``: SGD's fused step without the second operand check / ``sgd_update``
* ``sigmoid``: Sigmoid.backward's one mixed-order pass / a Fortran copy of grad first

and sitting 18's (these change the last bits of a sparse run, see each module):

* ``finite``: fit's NaN/Inf check of the data in one Numba pass (``kernels.finite``) /
  ``np.isfinite`` by chunks
* ``loss32``: float32 softmax cross-entropy in one pass (``FUSED_FLOAT32``) / the
  bit-exact four passes of sitting 17
* ``dx_order``: Dense's input gradient in its input's memory order / always ``g @ W.T``
* ``sgd_cache``: SGD's cached per-parameter scalars / recomputed every step
* ``sigmoid_fma``: the sigmoid kernel's contracted multiply-adds / without
* ``sigmoid_parallel``: the sigmoid split between the Numba threads from 32,768
  elements / always one thread (no effect at ``--threads 1``)

Arms ``new`` (all cuts), ``old`` (none), ``sitting 17`` (sitting 18's cuts reverted) and
``new-X`` (all but sitting 18's cut X: what X saves on its own) run one epoch each
of the 784-500-10 MNIST net (batch 100, SGD momentum 0.9), interleaved, for
``--repeats`` rounds; the figure is each arm's median µs per step (``--clock thread``:
this thread's CPU time, right at 1 thread; use ``wall`` at 2). Every arm computes
the same bits (the suite holds each cut to the code it replaced), so the arms train
the same net: the model is rebuilt from one seed for each epoch. Results:
``bench/results/fit_overhead_ab.json``.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (RESULTS_DIR, fit_epoch_us_per_step, mnist_fit_setup,  # noqa: E402
                           save_result)

CUTS_17 = ("loss", "accuracy", "gather", "sgd", "sigmoid")
CUTS_18 = ("finite", "loss32", "dx_order", "sgd_cache", "sigmoid_fma", "sigmoid_parallel")
CUTS = CUTS_17 + CUTS_18


def _sigmoid_flat_uncontracted():
    """The sigmoid kernel as sitting 17 built it (no fused multiply-adds)."""
    import numba
    from minidnn.kernels import activation
    global _UNCONTRACTED
    if _UNCONTRACTED is None:
        _UNCONTRACTED = numba.njit(error_model="numpy")(activation._sigmoid_flat.py_func)
    return _UNCONTRACTED


_UNCONTRACTED = None


@contextlib.contextmanager
def reverted(cuts):
    """Put back the code that the named cuts replaced, for the duration."""
    import minidnn as md
    from minidnn import optimizers, training
    from minidnn.kernels import activation, finite, softmax_xent, sgd_update
    from minidnn.layers import activations
    saved = []

    def patch(obj, name, value):
        saved.append((obj, name, getattr(obj, name)))
        setattr(obj, name, value)
    if "loss" in cuts:
        patch(softmax_xent, "applies", lambda logits, target: False)
    if "accuracy" in cuts:
        patch(training, "count_correct", softmax_xent.count_correct_numpy)
    if "gather" in cuts:
        patch(md.SparseDense, "fortran_input", False)
    if "sgd" in cuts:
        def checked_twice(w, g, v, lr, momentum, weight_decay, decay, form):
            # sitting 16's entry: sgd_update's own operand checks again
            sgd_update.sgd_update(w, g, None if v is w else v, lr, momentum, weight_decay,
                                  ("caffe", "pytorch")[form])
        patch(optimizers, "sgd_update_prepared", checked_twice)
    if "finite" in cuts:
        patch(finite, "first_nonfinite_row", finite.first_nonfinite_row_numpy)
    if "loss32" in cuts:
        patch(softmax_xent, "FUSED_FLOAT32", False)
    if "dx_order" in cuts:
        patch(md.Dense, "_input_grad", lambda self, grad: grad @ self.params["W"].T)
    if "sgd_cache" in cuts:
        prepared = optimizers.SGD._prepared

        def uncached(self, *args):
            self.__dict__.pop("_prepared_cache", None)
            return prepared(self, *args)
        patch(optimizers.SGD, "_prepared", uncached)
    if "sigmoid_parallel" in cuts:
        patch(activation, "PARALLEL_MIN_ELEMENTS", 1 << 62)
    if "sigmoid_fma" in cuts:
        patch(activation, "_sigmoid_flat", _sigmoid_flat_uncontracted())
        if "sigmoid_parallel" not in cuts:      # the parallel build is contracted too
            patch(activation, "PARALLEL_MIN_ELEMENTS", 1 << 62)
    if "sigmoid" in cuts:
        fast = activation.sigmoid_grad32

        def copy_first(y, grad):
            if y.flags.f_contiguous and not y.flags.c_contiguous and grad.flags.c_contiguous:
                grad = np.asfortranarray(grad)
            return fast(y, grad)
        patch(activations, "sigmoid_grad32", copy_first)
    try:
        yield
    finally:
        for obj, name, value in reversed(saved):
            setattr(obj, name, value)


def build(density):
    import minidnn as md
    rng = np.random.default_rng(0)
    first = (md.Dense(784, 500, rng=rng) if density >= 1.0
             else md.SparseDense(784, 500, density=density, rng=rng))
    return md.Sequential([md.Flatten(), first, md.Sigmoid(), md.Dense(500, 10, rng=rng)],
                         seed=None, input_shape=(784,))


def epoch_us_per_step(density, x, y, cuts, now):
    import minidnn as md
    model = build(density)
    with reverted(cuts):
        return fit_epoch_us_per_step(md, model, x, y, now)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=10000)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--densities", type=float, nargs="+", default=[0.04, 1.0])
    p.add_argument("--clock", choices=("thread", "wall"), default="thread")
    p.add_argument("--out", default=str(RESULTS_DIR / "fit_overhead_ab.json"))
    args = p.parse_args(argv)
    from threadpoolctl import threadpool_limits
    now, x, y = mnist_fit_setup(args.threads, args.clock, args.images)
    arms = {"new": (), "sitting 17": CUTS_18, "old": CUTS,
            **{f"new-{c}": (c,) for c in CUTS_18}}
    result = {"threads": args.threads, "clock": args.clock, "images": len(x),
              "repeats": args.repeats, "load_average": os.getloadavg(), "densities": {}}
    with threadpool_limits(args.threads):
        for density in args.densities:
            for cuts in (CUTS, ()):                  # compile / warm up both paths
                epoch_us_per_step(density, x[:1000], y[:1000], cuts, now)
            times = {arm: [] for arm in arms}
            for _ in range(args.repeats):
                for arm, cuts in arms.items():
                    times[arm].append(epoch_us_per_step(density, x, y, cuts, now))
            med = {arm: float(np.median(v)) for arm, v in times.items()}
            label = f"sparse γ={density:g}" if density < 1 else "dense"
            print(f"{label}: µs per step, median of {args.repeats} ({args.clock} clock, "
                  f"{args.threads} thread(s))")
            for arm in arms:
                if arm.startswith("new-"):
                    note = f"(cut {arm[4:]} saves {med[arm] - med['new']:7.1f})"
                else:
                    note = f"(saves {med['old'] - med[arm]:7.1f} against old)"
                print(f"    {arm:18s} {med[arm]:8.1f}   {note}")
            result["densities"][str(density)] = {"median_us_per_step": med,
                                                 "us_per_step": times}
    result["load_average_after"] = os.getloadavg()
    save_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
