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

Arms ``new`` (all cuts), ``old`` (none) and ``old+X`` (only cut X) run one epoch each
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
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import RESULTS_DIR  # noqa: E402

CUTS = ("loss", "accuracy", "gather", "sgd", "sigmoid")


@contextlib.contextmanager
def reverted(cuts):
    """Put back the code that the named cuts replaced, for the duration."""
    import minidnn as md
    from minidnn import optimizers, training
    from minidnn.kernels import activation, softmax_xent, sgd_update
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
        patch(optimizers, "sgd_update_prepared", sgd_update.sgd_update_prepared)
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
        t0 = now()
        md.fit(model, (x, y), epochs=1, batch_size=100, optimizer=md.SGD(0.1, momentum=0.9),
               progress=False, log=None, divergence_factor=None)
        return (now() - t0) / 1e3 / int(np.ceil(len(x) / 100))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=10000)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--densities", type=float, nargs="+", default=[0.04, 1.0])
    p.add_argument("--clock", choices=("thread", "wall"), default="thread")
    p.add_argument("--out", default=str(RESULTS_DIR / "fit_overhead_ab.json"))
    args = p.parse_args(argv)
    import numba
    from threadpoolctl import threadpool_limits
    import minidnn.data
    numba.set_num_threads(args.threads)
    now = time.thread_time_ns if args.clock == "thread" else time.perf_counter_ns
    splits = minidnn.data.load("mnist")
    x, y = splits.train.flatten()[:args.images], splits.train.y[:args.images]
    arms = {"new": (), "old": CUTS, **{f"old+{c}": tuple(k for k in CUTS if k != c)
                                        for c in CUTS}}
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
                gain = med["old"] - med[arm] if arm != "old" else 0.0
                print(f"    {arm:14s} {med[arm]:8.1f}   saves {gain:7.1f} against old")
            result["densities"][str(density)] = {"median_us_per_step": med,
                                                 "us_per_step": times}
    result["load_average_after"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
