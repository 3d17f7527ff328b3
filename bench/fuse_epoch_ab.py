"""A/B of sitting 20's switches for the 784-500-10 epoch (issue #11), in ONE process, interleaved.

    python bench/fuse_epoch_ab.py                                       # 1 thread, ~2 min
    python bench/fuse_epoch_ab.py --threads 2 --clock wall --images 50000 --rounds 9   # quiet

Arms: every switch off ("off"), each switch on alone, every switch on ("on"). The switches:

* ``fuse``: ``layers.fusion.FUSE_DENSE_ACTIVATION`` (SparseDense → Sigmoid in one CSR kernel
  call each way, Dense → Sigmoid bias + activation in one pass; ``kernels.csr_fused``).
(``gather``, sitting 22: ``kernels.gather.PARALLEL``, fit's feature-major minibatch gather
split over the Numba threads, saved 12.9 µs of a 637 µs sparse step in the quiet run,
``bench/results/fuse_epoch_ab_gather_s22_quiet.json``: a tie, deleted with its kernel.)

(Sitting 20's second switch, ``head``, ``Dense.SMALL_TRAINING_THREADS``, is gone since
sitting 22: NumPy's OpenBLAS runs the head's products on one thread at any thread count,
so it could only add its per-call cost.)

Each round trains one epoch of the sparse (γ = ``--density``, per_unit pattern) and of
the dense 784-500-10 sigmoid net (softmax cross-entropy, SGD momentum 0.9, batch 100)
under each arm (the densities one after the other, each opened by an untimed primer
epoch, the arms in rotating order: ``fit_epoch_ab.grouped_rounds``); the model is rebuilt from one seed every time, so
every epoch does the same work (and every arm computes the same bits: checked at the
end). The figure per arm is the median over ``--rounds`` of the µs per step
(``--clock thread``: this thread's CPU time, right at one thread; ``wall`` at two).
Results: bench/results/fuse_epoch_ab.json.

Threads: ``numba.set_num_threads(--threads)`` and threadpoolctl's BLAS limit, but NOT
``minidnn.configure_threads``: Numba keeps its default threading layer (OpenMP, i.e.
libgomp, whose idle threads spin, where Numba has it; the CLI picks ``workqueue``), so its
2-thread figures are that set-up's, not the CLI's.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import RESULTS_DIR  # noqa: E402
from bench.fit_epoch_ab import grouped_rounds  # noqa: E402

SWITCHES = ("fuse",)
DEFAULTS = {"fuse": True}


def set_switches(on: set, chosen=SWITCHES) -> None:
    """The ``chosen`` switches on where named in ``on``, off otherwise; the others at
    their defaults."""
    from minidnn.layers import fusion
    value = {name: (name in on) if name in chosen else DEFAULTS[name] for name in SWITCHES}
    fusion.FUSE_DENSE_ACTIVATION = value["fuse"]


def epoch(md, density, x, y, now):
    rng = np.random.default_rng(0)
    first = (md.Dense(784, 500, rng=rng) if density >= 1 else
             md.SparseDense(784, 500, density=density, pattern="per_unit", rng=rng))
    model = md.Sequential([md.Flatten(), first, md.Sigmoid(), md.Dense(500, 10, rng=rng)],
                          seed=None, input_shape=(784,))
    opt = md.SGD(0.1, momentum=0.9)
    t0 = now()
    md.fit(model, (x, y), epochs=1, batch_size=100, optimizer=opt, progress=False, log=None,
           divergence_factor=None)
    us = (now() - t0) / 1e3 / int(np.ceil(len(x) / 100))
    return us, [p.copy() for _, p in model.named_params()]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--density", type=float, default=0.04)
    p.add_argument("--images", type=int, default=10000)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--clock", choices=("thread", "wall"), default="thread")
    p.add_argument("--switches", default=",".join(SWITCHES),
                   help="comma-separated subset of " + ",".join(SWITCHES))
    p.add_argument("--sparse-only", action="store_true", help="leave out the dense net")
    p.add_argument("--out", default=str(RESULTS_DIR / "fuse_epoch_ab.json"))
    args = p.parse_args(argv)
    switches = [s for s in args.switches.split(",") if s]
    unknown = sorted(set(switches) - set(SWITCHES))
    if unknown:
        p.error(f"unknown switches {unknown}; choose from {SWITCHES}")
    import numba
    from threadpoolctl import threadpool_limits
    import minidnn as md
    import minidnn.data
    numba.set_num_threads(args.threads)
    now = time.thread_time_ns if args.clock == "thread" else time.perf_counter_ns
    splits = minidnn.data.load("mnist")
    x, y = splits.train.flatten()[:args.images], splits.train.y[:args.images]
    arms = {"off": set()}
    if len(switches) > 1:
        arms.update({s: {s} for s in switches})
    arms["on"] = set(switches)
    densities = (args.density,) if args.sparse_only else (args.density, 1.0)
    result = {"threads": args.threads, "clock": args.clock, "images": len(x),
              "rounds": args.rounds, "switches": switches, "load_average": os.getloadavg()}
    keys = [(arm, d) for d in densities for arm in arms]
    params = {}
    with threadpool_limits(args.threads):
        for arm, d in keys:                                 # compile / load every kernel
            set_switches(arms[arm], switches)
            epoch(md, d, x[:1000], y[:1000], now)

        def run(arm, d):
            set_switches(arms[arm], switches)
            us, final = epoch(md, d, x, y, now)
            params.setdefault((arm, d), final)
            return us
        times = grouped_rounds(list(arms), densities, args.rounds, run)
    set_switches({name for name, on in DEFAULTS.items() if on})     # the defaults again
    same = {f"{d:g}": all(all(np.array_equal(a, b) for a, b in zip(params[(arm, d)],
                                                                    params[("off", d)]))
                          for arm in arms) for d in densities}
    med = {key: float(np.median(v)) for key, v in times.items()}
    print(f"µs per step, median of {args.rounds} epochs of {len(x)} images ({args.clock} clock, "
          f"{args.threads} thread(s)); same weights in every arm: {same}")
    for d in densities:
        label = f"sparse γ={d:g}" if d < 1 else "dense"
        base = med[("off", d)]
        for arm in arms:
            paired = float(np.median(np.subtract(times[("off", d)], times[(arm, d)])))
            print(f"    {label:14s} {arm:5s} {med[(arm, d)]:8.1f}   saves {base - med[(arm, d)]:7.1f}"
                  f" ({100 * (base - med[(arm, d)]) / base:5.1f} %); median of the rounds' "
                  f"differences {paired:7.1f}")
    if not args.sparse_only:
        for arm in arms:
            print(f"    dense/sparse step ratio, {arm}: "
                  f"{med[(arm, 1.0)] / med[(arm, args.density)]:.2f}")
    result["same_weights"] = same
    result["median_us_per_step"] = {f"{a} {d:g}": v for (a, d), v in med.items()}
    result["us_per_step"] = {f"{a} {d:g}": v for (a, d), v in times.items()}
    result["load_average_after"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
