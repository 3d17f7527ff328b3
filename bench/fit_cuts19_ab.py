"""Paired in-process A/B of sitting 19's cuts to the 784-500-10 training step (issue #11).

    python bench/fit_cuts19_ab.py                                   # 1 thread, 10,000 images, ~4 min
    python bench/fit_cuts19_ab.py --threads 2 --clock wall --images 50000 --rounds 5

Each cut can be switched back to the code it replaced, in the same process; every cut
keeps the bits (the suite holds each to what it replaced, and ``fit_same_bits.py``
holds the whole run to a revision), so all arms train the same net:

* ``plan``: SGD steps every parameter in one kernel call (``SGD.FUSED_PLAN``) / one
  fused call per parameter
* ``input_buffer``: fit gathers the sparse layer's minibatch into its kernels' padded xᵀ
  buffer (``Layer.input_buffer``) / into a new array that the forward copies there
* ``gather_tiles``: the float32 gather's AVX2 register-tile transposes (``gather.TILES``)
  / its scalar kernel
* ``loss_columns``: the float32 loss pass along the batch (``softmax_xent.COLUMNS_PASS``)
  / along each row
* ``column_sums``: Dense's bias gradient by ``kernels.column_sums`` / ``grad.sum(axis=0)``
* ``thread_count``: ``threads.numba_thread_count`` in the CSR kernel choice /
  ``numba.get_num_threads()``

Arms: ``new`` (all cuts), ``old`` (none) and ``new-X`` (all but X: what X saves alone),
one epoch each per round in rotating order, the model rebuilt from one seed each time;
the figure is each arm's median µs per step over ``--rounds`` (``--clock thread``: this
thread's CPU time, right at 1 thread; ``wall`` at 2), and for ``new-X`` also the median
of the per-round differences to ``new``. Results: ``bench/results/fit_cuts19_ab.json``.
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

from bench._common import (RESULTS_DIR, fit_epoch_us_per_step, interleaved,  # noqa: E402
                           mnist_fit_setup, mnist_net, save_result)

CUTS = ("plan", "input_buffer", "gather_tiles", "loss_columns", "column_sums", "thread_count")


@contextlib.contextmanager
def reverted(cuts):
    """Put back the code that the named cuts replaced, for the duration."""
    import numba
    import minidnn as md
    from minidnn.kernels import column_sums, csr, gather, softmax_xent
    from minidnn.layers import dense
    from minidnn.layers.base import Layer
    saved = []

    def patch(obj, name, value):
        saved.append((obj, name, getattr(obj, name)))
        setattr(obj, name, value)
    if "plan" in cuts:
        patch(md.SGD, "FUSED_PLAN", False)
    if "input_buffer" in cuts:
        patch(md.SparseDense, "input_buffer", Layer.input_buffer)
    if "gather_tiles" in cuts:
        patch(gather, "TILES", False)
    if "loss_columns" in cuts:
        patch(softmax_xent, "COLUMNS_PASS", False)
    if "column_sums" in cuts:
        patch(dense, "column_sums", column_sums.column_sums_numpy)
    if "thread_count" in cuts:
        patch(csr, "numba_thread_count", numba.get_num_threads)
    try:
        yield
    finally:
        for obj, name, value in reversed(saved):
            setattr(obj, name, value)


def epoch_us_per_step(density, x, y, cuts, now):
    import minidnn as md
    model = mnist_net(md, density, np.random.default_rng(0))
    with reverted(cuts):
        return fit_epoch_us_per_step(md, model, x, y, now)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=10000)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--densities", type=float, nargs="+", default=[0.04, 1.0])
    p.add_argument("--clock", choices=("thread", "wall"), default="thread")
    p.add_argument("--out", default=str(RESULTS_DIR / "fit_cuts19_ab.json"))
    args = p.parse_args(argv)
    from threadpoolctl import threadpool_limits
    now, x, y = mnist_fit_setup(args.threads, args.clock, args.images)
    arms = {"new": (), "old": CUTS, **{f"new-{c}": (c,) for c in CUTS}}
    names = list(arms)
    result = {"threads": args.threads, "clock": args.clock, "images": len(x),
              "rounds": args.rounds, "load_average": os.getloadavg(), "densities": {}}
    with threadpool_limits(args.threads):
        for density in args.densities:
            for cuts in (CUTS, ()):                  # compile / warm up both paths
                epoch_us_per_step(density, x[:1000], y[:1000], cuts, now)
            times = interleaved(names, args.rounds,
                                lambda arm: epoch_us_per_step(density, x, y, arms[arm], now))
            med = {arm: float(np.median(v)) for arm, v in times.items()}
            paired = {arm: float(np.median(np.subtract(times[arm], times["new"])))
                      for arm in arms if arm != "new"}
            label = f"sparse γ={density:g}" if density < 1 else "dense"
            print(f"{label}: µs per step, median of {args.rounds} ({args.clock} clock, "
                  f"{args.threads} thread(s)); paired: median of the rounds' differences")
            for arm in names:
                note = "" if arm == "new" else (f"(reverting costs {med[arm] - med['new']:7.1f};"
                                                f" paired {paired[arm]:7.1f})")
                print(f"    {arm:18s} {med[arm]:8.1f}   {note}")
            result["densities"][str(density)] = {"median_us_per_step": med,
                                                 "median_paired_cost_us": paired,
                                                 "us_per_step": times}
    result["load_average_after"] = os.getloadavg()
    save_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
