"""A/B of fit's data path for dense nets (sitting 23): the row gather that checks the
training inputs in the first epoch against the pass before training plus ``x[idx]``.

    python bench/fit_rows_ab.py                        # 1 thread, ~2 min
    python bench/fit_rows_ab.py --threads 2 --clock wall

One process, one tree: the "before" arm is this tree with
``kernels.gather.rows_apply`` patched to False, which is main's path exactly (fit checks
x with ``kernels.finite`` up front and takes ``x[idx]``; tests/test_fit_epoch_cuts.py
trains the same bits both ways). Three measurements, each arm alternating first from
round to round, medians over ``--rounds``:

* ``data path``: what fit's data handling costs per step of a one-epoch fit, with no
  model: the up-front check (spread over the epoch's steps) plus ``x[idx]`` per batch,
  against ``training._gather_batch(..., check=True)`` per batch;
* ``logreg 784-10`` and ``mlp 784-500-10``: one-epoch fits (batch 100, SGD momentum
  0.9, no divergence check: ``bench._common.fit_epoch_us_per_step``) of a net where the
  data path is a large share and of issue #8's net, where it is ~1 % (a full-epoch A/B
  under load cannot resolve it; the data path figure says what moved).

``--self-check`` gives both arms the row gather: the harness's reading of no change.
Not a README speed figure: a guide taken on a loaded machine.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (RESULTS_DIR, fit_epoch_us_per_step, mnist_fit_setup,  # noqa: E402
                           mnist_net, rotated, save_result)


def data_path_us_per_step(training, x, order, batch, now, kernel: bool) -> float:
    steps = -(-len(x) // batch)
    t0 = now()
    if not kernel:
        training._refuse_nonfinite(x, "training data", "x", "inputs")
    for b in range(steps):
        idx = order[b * batch:(b + 1) * batch]
        xb, bad = training._gather_batch(x, idx, None, kernel)
        assert bad < 0
    return (now() - t0) / 1e3 / steps


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=10000)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--clock", choices=("thread", "wall"), default="thread")
    p.add_argument("--self-check", action="store_true",
                   help="both arms take the row gather: what the harness reads for no change")
    p.add_argument("--out", default=str(RESULTS_DIR / "fit_rows_ab.json"))
    args = p.parse_args(argv)
    from threadpoolctl import threadpool_limits
    import minidnn as md
    from minidnn import training
    from minidnn.kernels import gather
    now, x, y = mnist_fit_setup(args.threads, args.clock, args.images)
    x = np.ascontiguousarray(x)
    rows_apply = gather.rows_apply
    order = np.random.default_rng(0).permutation(len(x))

    def arm(kernel: bool):
        gather.rows_apply = (rows_apply if kernel or args.self_check
                             else (lambda x: False))

    def run(what, kernel):
        arm(kernel)
        try:
            if what == "data path":
                return data_path_us_per_step(training, x, order, 100, now,
                                             kernel or args.self_check)
            rng = np.random.default_rng(0)
            model = (md.Sequential([md.Flatten(), md.Dense(784, 10, rng=rng)], seed=None,
                                   input_shape=(784,)) if what == "logreg 784-10"
                     else mnist_net(md, 1.0, rng))
            return fit_epoch_us_per_step(md, model, x, y, now)
        finally:
            arm(True)

    whats = ("data path", "logreg 784-10", "mlp 784-500-10")
    times = {(w, k): [] for w in whats for k in (True, False)}
    result = {"threads": args.threads, "clock": args.clock, "images": len(x),
              "self_check": args.self_check,
              "rounds": args.rounds, "load_average": os.getloadavg()}
    with threadpool_limits(args.threads):
        for w in whats:                                  # compile / load, untimed
            for k in (True, False):
                run(w, k)
        for r in range(args.rounds):
            for w in whats:
                run(w, r % 2 == 0)                       # a primer of this measurement
                for k in rotated((True, False), r):
                    times[(w, k)].append(run(w, k))
    print(f"µs per step, median of {args.rounds} rounds of {len(x)} images ({args.clock} "
          f"clock, {args.threads} thread(s)); load {result['load_average'][0]:.1f}")
    summary = {}
    for w in whats:
        a, b = times[(w, True)], times[(w, False)]
        paired = float(np.median(np.subtract(b, a)))
        summary[w] = {"row gather": float(np.median(a)), "before": float(np.median(b)),
                      "median_paired_saving": paired,
                      "rounds_faster": int(np.sum(np.less(a, b)))}
        print(f"    {w:16s} row gather {np.median(a):8.1f}   before {np.median(b):8.1f}   "
              f"median paired saving {paired:7.1f}   faster in "
              f"{summary[w]['rounds_faster']}/{args.rounds}")
    result["summary"] = summary
    result["us_per_step"] = {f"{w} {'row gather' if k else 'before'}": v
                             for (w, k), v in times.items()}
    result["load_average_after"] = os.getloadavg()
    save_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
