"""A/B of a whole 784-500-10 training epoch: this tree against a git revision, in ONE
process, interleaved (issue #11, sitting 18: the non-sparse-kernel part of the step).

    python bench/fit_epoch_ab.py --base fffa29e                      # 1 thread, ~3 min
    python bench/fit_epoch_ab.py --base fffa29e --threads 2 --clock wall --images 50000

The revision's ``minidnn`` is unpacked as ``minidnn_base`` (as bench/sparse_step_ab.py
does) and imported beside this tree's. Each round trains one epoch of the sparse
(γ = ``--density``, per_unit pattern) and of the dense 784-500-10 sigmoid net (softmax
cross-entropy, SGD momentum 0.9, batch 100) with each package: the densities one after
the other, each opened by an untimed primer epoch of that density, the packages in an
order alternating from round to round (``grouped_rounds``: every timed epoch follows
one of its own density; sitting 21's plain rotation biased the ``--base HEAD``
self-check by −100 µs a sparse step at two threads). The
model is rebuilt from one seed every time, so every epoch does the same work. The
figure per arm is the median over ``--rounds`` of the µs per step (``--clock thread``:
this thread's CPU time, right at one thread; ``wall`` at two). Not a speed figure for
the README: a guide taken on a loaded machine. Results: bench/results/fit_epoch_ab.json.

Threads: ``numba.set_num_threads(--threads)`` and threadpoolctl's BLAS limit, but NOT
``minidnn.configure_threads``: Numba keeps its default threading layer (OpenMP, i.e.
libgomp, whose idle threads spin, where Numba has it; the CLI picks ``workqueue``), so its
2-thread figures are that set-up's, not the CLI's.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (RESULTS_DIR, fit_epoch_us_per_step, mnist_net,  # noqa: E402
                           rotated, save_result)
from bench.sparse_step_ab import unpack_base  # noqa: E402


def epoch_us_per_step(md, density, x, y, now):
    return fit_epoch_us_per_step(md, mnist_net(md, density, np.random.default_rng(0)), x, y, now)


def grouped_rounds(names, densities, rounds: int, run) -> dict:
    """(name, density) -> [run(name, density) for each round], every timed epoch right
    after an epoch of the same density.

    Sitting 21's order (the four arms rotated as one list) put "this tree"'s sparse
    epoch right after a dense one in every round and the base's after a sparse one in
    most, and at two threads a sparse epoch is much slower just after a dense one
    (sitting 22, under load, 10,000 images: 1428 against 671 µs a step, medians of 5
    and 6): the −100 µs of the ``--base HEAD`` self-check. So each round takes the
    densities one after the other (their order rotating), opens each with an untimed
    primer epoch of that density on the package timed first, and times the packages
    in an order that alternates from round to round."""
    times = {(name, density): [] for density in densities for name in names}
    for r in range(rounds):
        for k, density in enumerate(rotated(densities, r)):
            order = rotated(names, r + k)
            run(order[0], density)                       # the primer: not timed
            for name in order:
                times[(name, density)].append(run(name, density))
    return times


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True, help="git revision to compare against")
    p.add_argument("--density", type=float, default=0.04)
    p.add_argument("--images", type=int, default=10000)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--clock", choices=("thread", "wall"), default="thread")
    p.add_argument("--sparse-only", action="store_true", help="leave out the dense net")
    p.add_argument("--out", default=str(RESULTS_DIR / "fit_epoch_ab.json"))
    args = p.parse_args(argv)
    import numba
    from threadpoolctl import threadpool_limits
    import minidnn
    import minidnn.data
    numba.set_num_threads(args.threads)
    now = time.thread_time_ns if args.clock == "thread" else time.perf_counter_ns
    splits = minidnn.data.load("mnist")
    x, y = splits.train.flatten()[:args.images], splits.train.y[:args.images]
    result = {"threads": args.threads, "clock": args.clock, "images": len(x),
              "rounds": args.rounds, "load_average": os.getloadavg()}
    with tempfile.TemporaryDirectory() as folder, threadpool_limits(args.threads):
        result["base"] = unpack_base(args.base, folder)
        sys.path.insert(0, folder)
        packages = {"this tree": minidnn, "base": importlib.import_module("minidnn_base")}
        densities = (args.density,) if args.sparse_only else (args.density, 1.0)
        arms = [(name, density) for density in densities for name in packages]
        for name, density in arms:                       # compile / load every kernel
            epoch_us_per_step(packages[name], density, x[:1000], y[:1000], now)
        times = grouped_rounds(list(packages), densities, args.rounds,
                               lambda name, density: epoch_us_per_step(packages[name], density,
                                                                       x, y, now))
    med = {arm: float(np.median(v)) for arm, v in times.items()}
    print(f"µs per step, median of {args.rounds} epochs of {len(x)} images ({args.clock} "
          f"clock, {args.threads} thread(s)); base {result['base'][:7]}")
    paired = {}
    for density in densities:
        label = f"sparse γ={density:g}" if density < 1 else "dense"
        a, b = med[("this tree", density)], med[("base", density)]
        # the same round's two epochs ran seconds apart: their difference is less noisy
        paired[density] = float(np.median(np.subtract(times[("base", density)],
                                                      times[("this tree", density)])))
        print(f"    {label:14s} this tree {a:8.1f}   base {b:8.1f}   saves {b - a:7.1f} "
              f"({100 * (b - a) / b:5.1f} %); median of the rounds' differences "
              f"{paired[density]:7.1f}")
    if not args.sparse_only:
        s, d = med[("this tree", args.density)], med[("this tree", 1.0)]
        sb, db = med[("base", args.density)], med[("base", 1.0)]
        print(f"    dense/sparse step ratio: this tree {d / s:.2f}, base {db / sb:.2f}")
    result["median_paired_saving_us_per_step"] = {f"{d:g}": v for d, v in paired.items()}
    result["median_us_per_step"] = {f"{n} {d:g}": v for (n, d), v in med.items()}
    result["us_per_step"] = {f"{n} {d:g}": v for (n, d), v in times.items()}
    result["load_average_after"] = os.getloadavg()
    save_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
