"""In-process A/B of the RBM step: the RBM 784x500 PCD-1 epoch (the ``rbm`` workload of
speed_vs_torch.py) in each variant, interleaved in one process.

    python bench/rbm_step20_ab.py --threads 2 --repeats 5          # quiet machine, ~1.5 min
    python bench/rbm_step20_ab.py --threads 1 --images 10000 --repeats 5   # under load

Variants: ``lean``, the step of this tree at ``--threads``; ``lean_1blas`` (sitting 22),
the same fit with OpenBLAS held to one thread (``threadpoolctl``, bench only; other bits,
as OpenBLAS's one-thread products round differently from its two-thread ones; the
largest parameter difference from ``lean`` is printed): whether the second thread helps the RBM step at all (under load at
one thread the 2048^3 sgemm ran at 133 GFLOP/s wall, 147 on the CPU clock, against 150.6
for two threads quiet in sitting 21). Sitting 22 deleted ``general``,
``lean+sigma_split`` and ``lean+overlap_v0`` with the switches that lost their A/Bs.

Each round runs every variant once (an epoch of ``fit`` on the first ``--images``
MNIST training images, batch 100, lr 0.1, no momentum or decay, seed 0, monitors off,
as the benchmark), in an order that rotates from round to round, then times one
2048^3 sgemm (the GEMM peak of the same run). Reported per variant: median wall and
CPU seconds, GFLOP/s and % of the median peak, and per-thread CPU (from
``/proc/self/task/*/schedstat``): the calling thread, the σ helper, and the rest
(OpenBLAS's workers), to show whether the second core works or spins. The fits of
all variants are checked to end with bit-identical parameters. Run it on a quiet
machine for a speed figure; under load only the 1-thread CPU times are a guide.
Results: bench/results/rbm_step20_ab.json (or --out).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench._common import thread_cpu_ns  # noqa: E402

#: name: BLAS threads for the fit (None: the run's ``--threads``). Sitting 22 deleted the
#: variants whose switches lost their A/Bs (general, lean+sigma_split, lean+overlap_v0)
VARIANTS = {"lean": None, "lean_1blas": 1}
#: variants that change the bits (checked against each other, not against the rest):
#: OpenBLAS at one thread rounds a product differently from two threads
OTHER_BITS = {"lean_1blas"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--images", type=int, default=50000)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "rbm_step20_ab.json")
    args = parser.parse_args(argv)

    import minidnn
    threads = minidnn.configure_threads(args.threads)
    from threadpoolctl import threadpool_limits
    from minidnn import data
    from minidnn.pretraining import BernoulliRBM, PretrainConfig

    x = np.ascontiguousarray(data.load("mnist", progress=False).train.x.reshape(-1, 784))
    x = x[:args.images]
    config = PretrainConfig(epochs=1, lr=0.1, weight_decay=0.0, momentum=0.0, final_momentum=0.0,
                            batch_size=100, k=1, persistent=True, monitor_size=0)
    defaults = ()
    finals = {}

    def fit(name):
        rbm = BernoulliRBM(784, 500, rng=0)
        main_tid = str(threading.get_native_id())   # thread_cpu_ns's keys are str tids
        blas = VARIANTS[name] or threads["threads"]
        with threadpool_limits(limits=blas):
            c0, t0, p0 = thread_cpu_ns(), time.perf_counter(), time.process_time()
            rbm.fit(x, config, seed=0)
            seconds, cpu = time.perf_counter() - t0, time.process_time() - p0
        c1 = thread_cpu_ns()
        side = None                         # no helper thread since sitting 22
        split = {"main": 0.0, "sigma_helper": 0.0, "other": 0.0}
        for tid, ns in c1.items():
            used = (ns - c0.get(tid, 0)) / 1e9
            split["main" if tid == main_tid else "sigma_helper" if tid == side else "other"] += used
        digest = hashlib.sha256(b"".join(rbm.params[k].tobytes() for k in sorted(rbm.params)))
        finals[name] = {k: v.copy() for k, v in rbm.params.items()}
        return seconds, cpu, split, digest.hexdigest()[:16]

    for name in args.variants:          # JIT, buffers, BLAS's threads
        with threadpool_limits(limits=VARIANTS[name] or threads["threads"]):
            BernoulliRBM(784, 500, rng=0).fit(x[:1000], config, seed=0)
    A = np.random.default_rng(1).random((2048, 2048), dtype=np.float32)
    C = np.empty_like(A)
    np.matmul(A, A, out=C)
    runs = {name: [] for name in args.variants}
    rates = []
    try:
        for r in range(args.repeats):
            order = args.variants[r % len(args.variants):] + args.variants[:r % len(args.variants)]
            for name in order:
                seconds, cpu, split, digest = fit(name)
                runs[name].append({"seconds": seconds, "cpu_seconds": cpu, "thread_cpu": split,
                                   "sha256": digest})
                print(f"round {r + 1} {name:<18} {seconds:6.3f} s wall {cpu:6.3f} s CPU  "
                      f"threads: main {split['main']:.3f} helper {split['sigma_helper']:.3f} "
                      f"other {split['other']:.3f} s", flush=True)
            t0 = time.perf_counter()
            np.matmul(A, A, out=C)
            rates.append(2 * 2048 ** 3 / (time.perf_counter() - t0) / 1e9)
    finally:
        pass
    peak = statistics.median(rates)
    flops = 5 * 2 * 784 * 500 * len(x)
    summary = {}
    print(f"threads {args.threads}, {len(x)} images, {args.repeats} rounds; 2048^3 sgemm "
          f"median {peak:.1f} GFLOP/s")
    for name, rs in runs.items():
        wall = statistics.median(r["seconds"] for r in rs)
        cpu = statistics.median(r["cpu_seconds"] for r in rs)
        per = {k: statistics.median(r["thread_cpu"][k] for r in rs) for k in rs[0]["thread_cpu"]}
        summary[name] = {"seconds": wall, "cpu_seconds": cpu, "gflops": flops / wall / 1e9,
                         "percent_of_peak": 100 * flops / wall / 1e9 / peak, "thread_cpu": per}
        print(f"median {name:<18} {wall:6.3f} s wall {cpu:6.3f} s CPU  {flops / wall / 1e9:6.1f} "
              f"GFLOP/s = {summary[name]['percent_of_peak']:4.1f} % of peak  threads: main "
              f"{per['main']:.3f} helper {per['sigma_helper']:.3f} other {per['other']:.3f} s")
    same = True
    for group in ({n for n in runs if n not in OTHER_BITS}, *({n} for n in runs if n in OTHER_BITS)):
        digests = {r["sha256"] for n in group for r in runs[n]}
        if not digests:
            continue
        ok = len(digests) == 1
        same = same and ok
        print(f"{', '.join(sorted(group))}: " + ("every fit bit-identical" if ok
                                                 else f"fits DIFFER: {sorted(digests)}"))
    differences = {}
    if "lean" in finals:
        for name in finals:
            if name in OTHER_BITS:
                differences[name] = {k: float(np.max(np.abs(finals[name][k] - finals["lean"][k])))
                                     for k in finals[name]}
                print(f"{name} against lean, largest |difference|: " + ", ".join(
                    f"{k} {v:.3g}" for k, v in differences[name].items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "threads": threads, "images": len(x), "repeats": args.repeats,
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "note": "one process, variants interleaved; taken under load unless stated",
        "gemm_peak_gflops_median": peak, "bit_identical": same, "summary": summary,
        "differences_from_lean": differences,
        "runs": runs, "gemm_rates": rates}, indent=1))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
