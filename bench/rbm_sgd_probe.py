"""Why the RBM step's SGD update costs more inside the step than alone (sitting 24).

    python bench/rbm_sgd_probe.py --threads 2 --rounds 7 --reps 100

One process; the 784x500 RBM of the PCD-1 benchmark after 20 real steps. Each probe is
"a context, then the SGD update timed" (``SGD.step`` on the RBM, W 784x500 float32),
repeated ``--reps`` times; the probes' order rotates each round; medians of the rounds.
Contexts:

* ``alone``: nothing (the update back to back: W and G hot);
* ``after grad gemm``: the step's gradient GEMM [v0;vk]ᵀ[p0;pk] → G (as in the step);
* ``after grad gemm 1T``: the same GEMM at one BLAS thread (threadpoolctl), so G is
  written by this core only and no BLAS worker is left spinning;
* ``after grad gemm, sleep 2 ms``: the BLAS worker has gone to sleep by then;
* ``after grad gemm, G read``/``W read``: this core reads G (W) first (np.sum), timed
  apart: where does the miss cost sit;
* ``after 32 MB sweep``: every cache cold (the update from memory);
* ``after step``: the real step's ``train_rows`` (the whole context);
* ``kernel after grad gemm``: ``sgd_update_many`` called directly (no optimizer plumbing).

Also /proc/self/stat minor faults over the timed updates (fresh pages would show here).
Results: bench/results/rbm_sgd_probe.json (or --out).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def minflt() -> int:
    with open("/proc/self/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[7])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--reps", type=int, default=100)
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "rbm_sgd_probe.json")
    args = parser.parse_args(argv)

    import minidnn
    minidnn.configure_threads(args.threads)
    from threadpoolctl import threadpool_limits
    from minidnn import data
    from minidnn.kernels.sgd_update import sgd_update_many
    from minidnn.optimizers import SGD
    from minidnn.pretraining import BernoulliRBM, PretrainConfig

    x = np.ascontiguousarray(data.load("mnist", progress=False).train.x.reshape(-1, 784))[:args.images]
    config = PretrainConfig(epochs=1, lr=0.1, momentum=0.0, final_momentum=0.0, weight_decay=0.0,
                            batch_size=100, k=1, persistent=True, monitor_size=0)
    rbm = BernoulliRBM(784, 500, rng=0)
    rbm.init_from_data(x)
    rng = np.random.default_rng(0)
    opt = SGD(config.lr)
    holder = SimpleNamespace(layers=[rbm])
    state = rbm.new_train_state(x, config, rng)
    order = rng.permutation(len(x))
    cursor = [0]

    def train_rows():
        b = cursor[0] % (len(x) // 100)
        cursor[0] += 1
        rbm.train_rows(x, np.sort(order[b * 100:(b + 1) * 100]), rng, config, state)

    for _ in range(20):
        train_rows()
        opt.step(holder)
    buf = rbm._lean_buffers(100, 100)
    G, W = rbm.grads["W"], rbm.params["W"]
    sweep = np.ones(8 * 2 ** 20, np.float32)          # 32 MiB
    blas1 = threadpool_limits(limits=1)
    blas1.restore_original_limits()
    # the updates must not run W away over thousands of repetitions: a tiny rate
    opt.lr = 1e-12
    plan = None

    def grad_gemm():
        np.matmul(buf.v.T, buf.p, out=G)

    def gemm_1t():
        blas1._set_threadpool_limits()
        np.matmul(buf.v.T, buf.p, out=G)
        blas1.restore_original_limits()

    def kernel():
        sgd_update_many(plan.ws, plan.flat_grads(), plan.vs, plan.scalars, plan.decays, plan.form)

    contexts = {
        "alone": (None, None),
        "after grad gemm": (grad_gemm, None),
        "after grad gemm 1T": (gemm_1t, None),
        "after grad gemm, sleep 2 ms": (lambda: (grad_gemm(), time.sleep(0.002)), None),
        "after grad gemm, G read": (grad_gemm, lambda: G.sum()),
        "after grad gemm, W read": (grad_gemm, lambda: W.sum()),
        "after 32 MB sweep": (lambda: sweep.sum(), None),
        "after step": (train_rows, None),
        "kernel after grad gemm": (grad_gemm, "kernel"),
    }
    opt.step(holder)
    plan = opt._plan
    times = {k: [] for k in contexts}
    pre_times = {k: [] for k in contexts}
    cpu_times = {k: [] for k in contexts}
    faults = {k: [] for k in contexts}
    gemm_rates = []
    A = np.random.default_rng(1).random((2048, 2048), dtype=np.float32)
    C = np.empty_like(A)
    clock = time.perf_counter
    names = list(contexts)
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            before, middle = contexts[name]
            update = kernel if middle == "kernel" else (lambda: opt.step(holder))
            pre_fn = middle if callable(middle) else None
            total = pre = cpu = 0.0
            f = 0
            for _ in range(args.reps):
                if before is not None:
                    before()
                if pre_fn is not None:
                    t0 = clock()
                    pre_fn()
                    pre += clock() - t0
                f0 = minflt()
                c0 = time.thread_time()
                t0 = clock()
                update()
                total += clock() - t0
                cpu += time.thread_time() - c0
                f += minflt() - f0
            times[name].append(total / args.reps)
            cpu_times[name].append(cpu / args.reps)
            pre_times[name].append(pre / args.reps)
            faults[name].append(f / args.reps)
        t0 = clock()
        np.matmul(A, A, out=C)
        gemm_rates.append(2 * 2048 ** 3 / (clock() - t0) / 1e9)

    med = statistics.median
    print(f"threads {args.threads}, {args.reps} reps x {args.rounds} rounds; 2048^3 sgemm "
          f"{med(gemm_rates):.1f} GFLOP/s (rounds {' '.join(f'{g:.0f}' for g in gemm_rates)})")
    print(f"{'context':<30} {'SGD ms':>8} {'CPU ms':>8} {'pre ms':>8} {'minflt':>7}")
    rows = {}
    for name in names:
        rows[name] = {"sgd_s": med(times[name]), "sgd_thread_cpu_s": med(cpu_times[name]),
                      "pre_s": med(pre_times[name]),
                      "minflt_per_update": med(faults[name])}
        print(f"{name:<30} {1e3 * med(times[name]):8.3f} {1e3 * med(cpu_times[name]):8.3f} "
              f"{1e3 * med(pre_times[name]):8.3f} "
              f"{med(faults[name]):7.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "threads": args.threads, "reps": args.reps, "rounds": args.rounds,
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "gemm_peak_gflops_median": med(gemm_rates), "probes": rows,
        "raw": {"sgd": times, "sgd_thread_cpu": cpu_times, "pre": pre_times, "minflt": faults, "gemm_rates": gemm_rates}},
        indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
