"""What one Numba parallel region's wake-up + join costs, per threading layer and libgomp
wait policy, and what each set-up does to the sparse layer step and to a LeNet step
(issue #11, sitting 21: the thread hand-off between the sparse step's 4 regions).

    python bench/region_wakeup.py --tiny                    # checks that it runs (~30 s)
    python bench/region_wakeup.py --threads 2 --rounds 4    # the quiet run (~2.5 min)

Set-ups (each worker a fresh process, environment built from nothing by
``bench._common.clean_env``, then ``minidnn.configure_threads(threads, **options)``,
the documented call, before anything parallel runs):

* ``workqueue``: ``configure_threads(n)``, what the ``minidnn`` command did until sitting
  21 (Numba's workqueue pool; its threads block on a condition variable);
* ``workqueue_par``: the same, with the sparse kernels' parallel threshold at the omp
  layer's (``kernels.csr._layer_factor = 1``; by default the workqueue layer's threshold
  is 10× higher, so at γ = 0.04 the sparse kernels run serial there);
* ``omp``: ``numba_layer="omp"`` (libgomp, its default wait: spin ~300,000 iterations,
  then sleep on a futex);
* ``omp_active`` / ``omp_passive``: ``wait_policy="active"`` (spin for ever) / ``"passive"``
  (sleep at once);
* ``omp_spin3k`` / ``omp_spin30k`` (/ ``omp_spin3M``, not in the default ``--setups``):
  ``spin_count=3_000`` / ``30_000`` / ``3_000_000`` (GOMP_SPINCOUNT: spin iterations
  before an idle thread sleeps; on this AMD EPYC one iteration, a ``pause``, is some
  tens of ns, so 30,000 is of the order of a millisecond — see the per-thread CPU);
* ``omp_bind`` (on request): ``omp`` with OMP_PROC_BIND=true in the worker's environment
  (libgomp pins each thread, the caller included, to one core: fewer migrations, but every
  thread the caller starts later inherits its one-core mask, so minidnn offers no call for
  it; measured only to see whether migrations are part of the step's spread).

In each worker, interleaved nothing (one set-up per process; the processes are
interleaved over ``--rounds`` rounds in rotating order, and figures are medians over
rounds of the per-process medians):

* ``regions``: a ``prange`` over one block per thread, each block a dependent chain of
  multiply-adds calibrated to ``--region-us`` µs on one thread (``work``) or nothing
  (``empty``); called ``--calls`` times back to back (``gap 0``), with ``gap`` µs of
  busy Python between calls (20: as between the sparse step's kernels; 500: as between
  the layer's forward and backward in an epoch). ``overhead_us`` = the call's median
  minus the serial build's median for one block (what one thread's share costs alone):
  the wake-up + join + imbalance. Per thread (``/proc/self/task/*/schedstat``): CPU µs
  and run-queue wait µs per call (a spinning idle thread shows CPU between calls).
* ``sparse_step``: ``SparseDense(784, 500, density=γ)`` forward + backward at batch 100,
  float32 (bench/sparse_speed.py's step), γ = 0.04 and 0.01, median µs, and its per-thread
  CPU split.
* ``dense_step``: ``Dense(784, 500)`` forward + backward (OpenBLAS, bench/sparse_speed.py's
  dense peer).
* ``lenet_step``: Caffe LeNet, batch 64, float32, forward + loss + backward + SGD step
  (Numba im2row/pooling kernels and OpenBLAS): set-ups whose idle threads spin must
  not slow it.

Taken under load, 2-thread figures are not fair (other processes hold the cores); the
coordinator runs it quiet. Results: printed, and JSON at ``--out`` (default
bench/results/region_wakeup.json).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._common import RESULTS_DIR, clean_env, rotated  # noqa: E402

#: set-up name -> (configure_threads keyword arguments, kernels.csr._layer_factor or None)
SETUPS = {
    "workqueue": ({}, None),
    "workqueue_par": ({}, 1),
    "omp": ({"numba_layer": "omp"}, None),
    "omp_active": ({"numba_layer": "omp", "wait_policy": "active"}, None),
    "omp_passive": ({"numba_layer": "omp", "wait_policy": "passive"}, None),
    "omp_spin3k": ({"numba_layer": "omp", "spin_count": 3_000}, None),
    "omp_spin30k": ({"numba_layer": "omp", "spin_count": 30_000}, None),
    "omp_spin3M": ({"numba_layer": "omp", "spin_count": 3_000_000}, None),
}
#: set-ups that also need a variable in the worker's environment (measurement only: no
#: minidnn call sets these): libgomp binding its threads to cores, one each
SETUP_ENV = {"omp_bind": {"OMP_PROC_BIND": "true"}}
SETUPS["omp_bind"] = ({"numba_layer": "omp"}, None)
#: the set-ups run by default (omp_spin3M: next to libgomp's default 300,000, and
#: omp_bind, on request)
DEFAULT_SETUPS = ("workqueue", "workqueue_par", "omp", "omp_active", "omp_passive",
                  "omp_spin3k", "omp_spin30k")
GAPS_US = (0, 20, 500)
DENSITIES = (0.04, 0.01)


# -- inside a worker ----------------------------------------------------------------------

def _kernels():
    import numba

    @numba.njit(parallel=True, cache=True)
    def region_parallel(out, reps):
        for b in numba.prange(out.size):     # one block per thread
            x = out[b]
            for _ in range(reps):            # a dependent chain: no SIMD, no shortcut
                x = x * 0.9999999 + 1e-7
            out[b] = x

    @numba.njit(cache=True)
    def region_serial(out, reps):            # one block of region_parallel, on this thread
        x = out[0]
        for _ in range(reps):
            x = x * 0.9999999 + 1e-7
        out[0] = x

    return region_parallel, region_serial


def thread_stats() -> dict:
    """tid -> (CPU ns, run-queue wait ns) of every thread of this process."""
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                cpu, wait = f.read().split()[:2]
            out[tid] = (int(cpu), int(wait))
        except (OSError, ValueError):
            pass
    return out


def thread_split(before: dict, after: dict, calls: int) -> list:
    """[[CPU µs, wait µs] per call] per thread, the calling thread first, then by CPU."""
    main = str(os.getpid())
    rows = []
    for tid, (cpu, wait) in after.items():
        cpu0, wait0 = before.get(tid, (cpu, wait))
        rows.append((tid != main, -(cpu - cpu0),
                     [round((cpu - cpu0) / 1e3 / calls, 1), round((wait - wait0) / 1e3 / calls, 1)]))
    return [r[2] for r in sorted(rows)]


def _busy_wait(seconds: float, clock=time.perf_counter) -> None:
    end = clock() + seconds
    while clock() < end:
        pass


def _timed_calls(fn, calls: int, gap_us: float):
    now = time.perf_counter_ns
    for _ in range(5):
        fn()
    times = np.empty(calls)
    before = thread_stats()
    for i in range(calls):
        if gap_us:
            _busy_wait(gap_us * 1e-6)
        t0 = now()
        fn()
        times[i] = now() - t0
    after = thread_stats()
    return times / 1e3, thread_split(before, after, calls)


def _percentiles(times) -> dict:
    p10, p50, p90 = np.percentile(times, [10, 50, 90])
    return {"p10_us": float(p10), "median_us": float(p50), "p90_us": float(p90)}


def worker(setup: str, threads: int, calls: int, region_us: float, steps: int) -> dict:
    import warnings
    warnings.filterwarnings("ignore")
    import minidnn as md
    options, factor = SETUPS[setup]
    report = md.configure_threads(threads, **options)
    if factor is not None:
        from minidnn.kernels import csr
        csr._layer_factor = factor
    region_parallel, region_serial = _kernels()
    out = np.zeros(threads)
    one = np.zeros(1)
    region_serial(one, 10)
    region_parallel(out, 10)
    # calibrate the chain to region_us on one thread
    probe = 20_000
    t = min(_timed_calls(lambda: region_serial(one, probe), 20, 0)[0])
    reps = max(1, int(probe * region_us / t))
    result = {"configure_threads": {k: str(v) for k, v in report.items()},
              "omp_env": {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT",
                                                      "OMP_PROC_BIND")},
              "reps": reps, "regions": {}}
    for kind, r in (("empty", 0), ("work", reps)):
        serial, _ = _timed_calls(lambda: region_serial(one, r), calls, 0)
        serial_us = float(np.median(serial))
        for gap in GAPS_US:
            times, split = _timed_calls(lambda: region_parallel(out, r), calls, gap)
            row = _percentiles(times)
            row.update(serial_us=serial_us, overhead_us=row["median_us"] - serial_us,
                       threads_cpu_wait_us_per_call=split)
            result["regions"][f"{kind}_gap{gap}"] = row
    rng = np.random.default_rng(1)
    x = rng.random((100, 784), dtype=np.float32)
    g = rng.standard_normal((100, 500)).astype(np.float32)
    for density in DENSITIES:
        layer = md.SparseDense(784, 500, density=density, rng=0)

        def step():
            layer.forward(x, training=True)
            layer.backward(g)
        times, split = _timed_calls(step, steps * 10, 0)
        result[f"sparse_step_{density}"] = dict(_percentiles(times),
                                                threads_cpu_wait_us_per_call=split)
    dense = md.Dense(784, 500, rng=0)

    def dense_step():
        dense.forward(x, training=True)
        dense.backward(g)
    times, split = _timed_calls(dense_step, steps * 3, 0)
    result["dense_step"] = dict(_percentiles(times), threads_cpu_wait_us_per_call=split)
    from minidnn.architectures import lenet
    model = lenet(seed=0)
    loss = md.SoftmaxCrossEntropy()
    opt = md.SGD(0.01, momentum=0.9, weight_decay=5e-4)
    xl = rng.random((64, 1, 28, 28), dtype=np.float32)
    yl = rng.integers(0, 10, 64)

    def lenet_step():
        opt.begin_step(model)
        _, grad = loss(model.forward(xl, training=True), yl)
        model.backward(grad, input_grad=False)
        opt.step(model)
    times, split = _timed_calls(lenet_step, steps, 0)
    result["lenet_step"] = dict(_percentiles(times), threads_cpu_wait_us_per_call=split)
    import numba
    result["numba_layer"] = numba.threading_layer()
    return result


# -- the driver ---------------------------------------------------------------------------

def run_worker(setup: str, args) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", setup,
           "--threads", str(args.threads), "--calls", str(args.calls),
           "--region-us", str(args.region_us), "--steps", str(args.steps)]
    env = clean_env(args.threads)
    env.update(SETUP_ENV.get(setup, {}))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {setup} failed:\n{proc.stderr[-3000:]}")
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def _median_of(runs, *keys):
    vals = []
    for run in runs:
        v = run
        for k in keys:
            v = v[k]
        vals.append(v)
    return float(np.median(vals))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=4, help="interleaved rounds of subprocesses")
    p.add_argument("--calls", type=int, default=400, help="timed region calls per pattern")
    p.add_argument("--region-us", type=float, default=60.0, help="one block's work, µs")
    p.add_argument("--steps", type=int, default=40, help="timed LeNet steps (sparse: 10×)")
    p.add_argument("--setups", default=",".join(DEFAULT_SETUPS), help="comma-separated, of " +
                   ", ".join(SETUPS))
    p.add_argument("--tiny", action="store_true", help="1 round, few calls: does it run")
    p.add_argument("--label", default="", help="stored with the result (e.g. 'under load')")
    p.add_argument("--out", default=str(RESULTS_DIR / "region_wakeup.json"))
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(worker(args.worker, args.threads, args.calls,
                                            args.region_us, args.steps)), flush=True)
        return 0
    if args.tiny:
        args.rounds, args.calls, args.steps = 1, 40, 4
    setups = args.setups.split(",")
    bad = [s for s in setups if s not in SETUPS]
    if bad:
        p.error(f"unknown set-ups {bad}; choose from {list(SETUPS)}")
    load_before = os.getloadavg()
    runs = {s: [] for s in setups}
    t_start = time.time()
    for r in range(args.rounds):
        for setup in rotated(setups, r):
            runs[setup].append(run_worker(setup, args))
            row = runs[setup][-1]
            print(f"round {r + 1}/{args.rounds} {setup:>14}: work gap20 "
                  f"{row['regions']['work_gap20']['median_us']:.1f} µs (serial "
                  f"{row['regions']['work_gap20']['serial_us']:.1f}), sparse 0.04 "
                  f"{row['sparse_step_0.04']['median_us']:.0f} µs, lenet "
                  f"{row['lenet_step']['median_us'] / 1e3:.2f} ms", flush=True)
    summary = {}
    for setup, rs in runs.items():
        s = {name: {"median_us": _median_of(rs, "regions", name, "median_us"),
                    "overhead_us": _median_of(rs, "regions", name, "overhead_us")}
             for name in rs[0]["regions"]}
        for key in [f"sparse_step_{d}" for d in DENSITIES] + ["dense_step", "lenet_step"]:
            s[key] = {"median_us": _median_of(rs, key, "median_us")}
        s["numba_layer"] = rs[0]["numba_layer"]
        summary[setup] = s
    names = list(runs[setups[0]][0]["regions"])
    print(f"\nwake-up + join overhead per region, µs (median over {args.rounds} processes of "
          f"medians of {args.calls} calls; {args.threads} threads; region work "
          f"{args.region_us:g} µs per thread)")
    print(f"{'set-up':>14} " + " ".join(f"{n:>14}" for n in names))
    for setup in setups:
        print(f"{setup:>14} " + " ".join(f"{summary[setup][n]['overhead_us']:>14.1f}"
                                         for n in names))
    print(f"\nsteps, median µs")
    cols = [f"sparse_step_{d}" for d in DENSITIES] + ["dense_step", "lenet_step"]
    print(f"{'set-up':>14} " + " ".join(f"{c:>18}" for c in cols) + "   sparse 0.04 vs dense")
    for setup in setups:
        s = summary[setup]
        print(f"{setup:>14} " + " ".join(f"{s[c]['median_us']:>18.0f}" for c in cols) +
              f"   {s['dense_step']['median_us'] / s['sparse_step_0.04']['median_us']:.2f}×")
    print("\nper-thread CPU / run-queue wait, µs per call (calling thread first), last round:")
    for setup in setups:
        last = runs[setup][-1]
        print(f"{setup:>14}  work_gap20 {last['regions']['work_gap20']['threads_cpu_wait_us_per_call']}"
              f"  sparse 0.04 {last['sparse_step_0.04']['threads_cpu_wait_us_per_call']}"
              f"  lenet {last['lenet_step']['threads_cpu_wait_us_per_call']}")
    result = {"label": args.label, "command": "python bench/region_wakeup.py " +
              " ".join(argv if argv is not None else sys.argv[1:]),
              "threads": args.threads, "rounds": args.rounds, "calls": args.calls,
              "region_us": args.region_us, "load_before": load_before,
              "load_after": os.getloadavg(), "seconds": time.time() - t_start,
              "summary": summary, "runs": runs}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out} (load average {load_before} -> {result['load_after']}, "
          f"{result['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
