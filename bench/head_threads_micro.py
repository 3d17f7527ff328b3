"""The 784-500-10 net's 500→10 head: its three training products on 1 and 2 BLAS threads.

    python bench/head_threads_micro.py                 # ~30 s

Issue #11, sitting 20: is OpenBLAS at two threads slower than at one on these small GEMMs?
The products are the Dense layer's own, as they run after a sparse layer (x
Fortran-ordered (100, 500)): forward x W, weight gradient xᵀ g, input gradient (W gᵀ)ᵀ.
Each arm runs them in one process, interleaved, ``--repeats`` times. It reports the
median wall time and the median CPU time of the whole process (all threads: a spinning
second BLAS thread shows up there). The thread count is switched by
``threads.serial_blas_if_small`` around each call, the way sitting 20's per-call switch
``Dense.SMALL_TRAINING_THREADS = 1`` did it, so the "1 thread" arm includes that switch's
cost (the switch is gone since sitting 22: with NumPy's OpenBLAS 0.3.31 the "2 threads"
arm's products already run on one thread, 1.0 CPU second per wall second). Not a quiet figure unless it is run on a
quiet machine. Results: bench/results/head_threads_micro.json.
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


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=1000)
    p.add_argument("--out", default=str(RESULTS_DIR / "head_threads_micro.json"))
    args = p.parse_args(argv)
    from threadpoolctl import threadpool_limits
    from minidnn.threads import serial_blas_if_small
    rng = np.random.default_rng(0)
    x = np.asfortranarray(rng.random((100, 500), dtype=np.float32))
    W = rng.random((500, 10), dtype=np.float32)
    g = rng.random((100, 10), dtype=np.float32)
    products = {"forward x W": lambda: x @ W, "weight grad xᵀ g": lambda: x.T @ g,
                "input grad (W gᵀ)ᵀ": lambda: (W @ g.T).T}

    def all_three():
        for f in products.values():
            f()
    arms = {"2 threads": all_three, "1 thread (serial_blas_if_small)": None}
    wall = {a: [] for a in arms}
    cpu = {a: [] for a in arms}
    alone = {(a, k): [] for a in arms for k in products}
    with threadpool_limits(2):
        for r in range(args.repeats):
            for arm in (arms if r % 2 else reversed(list(arms))):
                c0, t0 = time.process_time_ns(), time.perf_counter_ns()
                if arm == "2 threads":
                    all_three()
                else:
                    with serial_blas_if_small(0):
                        all_three()
                wall[arm].append((time.perf_counter_ns() - t0) / 1e3)
                cpu[arm].append((time.process_time_ns() - c0) / 1e3)
                for k, f in products.items():
                    t0 = time.perf_counter_ns()
                    if arm == "2 threads":
                        f()
                    else:
                        with serial_blas_if_small(0):
                            f()
                    alone[(arm, k)].append((time.perf_counter_ns() - t0) / 1e3)
    result = {"repeats": args.repeats, "load_average": os.getloadavg(), "arms": {}}
    for arm in arms:
        row = {"wall_us_p50": float(np.median(wall[arm])),
               "process_cpu_us_p50": float(np.median(cpu[arm])),
               "each_wall_us_p50": {k: float(np.median(alone[(arm, k)])) for k in products}}
        result["arms"][arm] = row
        print(f"{arm:32s} three products: wall {row['wall_us_p50']:6.1f} µs, process CPU "
              f"{row['process_cpu_us_p50']:6.1f} µs;  each: "
              + ", ".join(f"{k} {v:.1f}" for k, v in row["each_wall_us_p50"].items()))
    result["load_average_after"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out} (load average {result['load_average']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
