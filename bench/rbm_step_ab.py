"""A/B of the non-GEMM parts of the RBM 784x500 PCD-1 step, inside one process, interleaved.

    python bench/rbm_step_ab.py [--threads 1] [--repeats 9] [--images 10000]

Variants (each a full PCD-1 pass over ``--images`` MNIST training images, batch 100,
lr 0.1, no momentum or decay: the recipe of speed_vs_torch.py's ``rbm`` workload):

* ``split``:        this tree: the rows of each PCD step split over the threads, each on
                    one BLAS thread (``BernoulliRBM.SPLIT_ROWS``, ``_split_step``); at one
                    thread it is ``fused``
* ``fused``:        ``SPLIT_ROWS = False``: multi-threaded BLAS products between one-thread
                    σ kernels (sitting 17's path), fused in-place SGD step (kernels/sgd_update.py)
* ``unfused``:      as ``fused`` with the SGD step of sitting 15 (ΔW = −η·g as a temporary,
                    then W += ΔW)

(The σ kernels' changes are compared as whole trees by rbm_epoch_probe.py --against.)

The variants run in rotation (the order shifted each round), so slow phases of a loaded
machine fall on all of them alike; the medians of the rounds are reported, with the
GEMM time of the same step (the five products alone, measured in the same rounds) and
the 2048^3 GEMM rate, so a fraction of peak can be read off; "gemm only, split" runs
the same products as ``split`` does (rows over the threads, one-thread BLAS each), the
ceiling of that path. CPU seconds
(time.process_time) are given beside wall seconds: at one thread on a loaded machine
they leave out the time the process waited for a core, and are the steadier A/B. Timings taken while other
jobs run are only for A/B; the quiet figure is speed_vs_torch.py --only rbm.
Results: bench/results/rbm_step_ab.json (or --out).
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "rbm_step_ab.json")
    args = parser.parse_args(argv)

    import minidnn
    threads = minidnn.configure_threads(args.threads)
    from minidnn import data
    from minidnn.optimizers import SGD
    from minidnn.pretraining import BernoulliRBM, PretrainConfig

    class UnfusedSGD(SGD):
        """SGD's step of sitting 15: a subclass with its own _step_delta is never fused."""

        def _step_delta(self, key, layer, pname, grad, hyper):
            return super()._step_delta(key, layer, pname, grad, hyper)

    x = np.ascontiguousarray(data.load("mnist", progress=False).train.x.reshape(-1, 784))
    x = x[:args.images]
    config = PretrainConfig(epochs=1, lr=0.1, momentum=0.0, final_momentum=0.0,
                            weight_decay=0.0, batch_size=100, k=1, persistent=True,
                            monitor_size=0)
    def epoch(optimizer_cls, split=False):
        rbm = BernoulliRBM(784, 500, rng=0)
        rbm.SPLIT_ROWS = split
        rng = np.random.default_rng(0)
        rbm.init_from_data(x)
        opt = optimizer_cls(config.lr)
        holder = SimpleNamespace(layers=[rbm])
        state = rbm.new_train_state(x, config, rng)
        order = rng.permutation(len(x))
        t0, c0 = time.perf_counter(), time.process_time()
        for b in range(0, len(x), 100):
            xb = x[np.sort(order[b:b + 100])]
            rbm.train_batch(xb, rng, config, state)
            opt.step(holder)
        return (time.perf_counter() - t0, time.process_time() - c0), rbm.params["W"].copy()

    rng = np.random.default_rng(1)
    W = (0.01 * rng.standard_normal((784, 500))).astype(np.float32)
    h = (rng.random((100, 500)) < 0.5).astype(np.float32)
    v = (rng.random((200, 784)) < 0.2).astype(np.float32)
    pre_v, p, g = np.empty((100, 784), np.float32), np.empty((200, 500), np.float32), np.empty_like(W)
    A = rng.random((2048, 2048), dtype=np.float32)
    C = np.empty_like(A)

    def gemms():
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(len(x) // 100):
            np.matmul(h, W.T, out=pre_v)
            np.matmul(v, W, out=p)
            np.matmul(v.T, p, out=g)
        return time.perf_counter() - t0, time.process_time() - c0

    def gemms_split():
        # the same five products as the split step runs them: rows over the threads, each
        # on one BLAS thread, one barrier before the statistics (the ceiling of ``split``)
        import threading
        from minidnn.kernels.workers import _get_pool, _one_blas_thread, ranges
        parts = max(1, threads["numba_threads"])
        chains, visible = ranges(100, parts), ranges(784, parts)
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(len(x) // 100):
            barrier = threading.Barrier(parts)

            def work(t):
                lo, hi = chains[t]
                np.matmul(h[lo:hi], W.T, out=pre_v[lo:hi])
                np.matmul(v[2 * lo:2 * hi], W, out=p[2 * lo:2 * hi])
                barrier.wait()
                e, f = visible[t]
                np.matmul(v[:, e:f].T, p, out=g[e:f])
            with _one_blas_thread():
                futures = [_get_pool().submit(work, t) for t in range(1, parts)]
                work(0)
                for future in futures:
                    future.result()
        return time.perf_counter() - t0, time.process_time() - c0

    def peak():
        np.matmul(A, A, out=C)
        t0 = time.perf_counter()
        for _ in range(3):
            np.matmul(A, A, out=C)
        return 3 * 2 * 2048 ** 3 / (time.perf_counter() - t0) / 1e9

    variants = {"split": lambda: epoch(SGD, split=True), "fused": lambda: epoch(SGD),
                "unfused": lambda: epoch(UnfusedSGD)}
    for run in variants.values():       # JIT and caches warm
        run()
    weights = {}
    times = {name: [] for name in variants}
    times["gemm only"], times["gemm only, split"], rates = [], [], []
    cpu = {name: [] for name in times}
    names = list(variants)
    for r in range(args.repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            (seconds, cpu_seconds), weights[name] = variants[name]()
            times[name].append(seconds)
            cpu[name].append(cpu_seconds)
        seconds, cpu_seconds = gemms()
        times["gemm only"].append(seconds)
        cpu["gemm only"].append(cpu_seconds)
        seconds, cpu_seconds = gemms_split()
        times["gemm only, split"].append(seconds)
        cpu["gemm only, split"].append(cpu_seconds)
        rates.append(peak())
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.3f} s" for k, v in times.items())
              + f", peak {rates[-1]:.1f} GFLOP/s", flush=True)
    same = all(np.array_equal(weights["fused"], w) for w in weights.values())
    # the split path rounds its products differently (rows of a GEMM split): not the same bits
    largest_difference = max(float(np.abs(weights["fused"] - w).max()) for w in weights.values())
    flops = 5 * 2 * 784 * 500 * len(x)
    summary = {name: {"median_seconds": statistics.median(t),
                      "median_cpu_seconds": statistics.median(cpu[name]),
                      "gflops": flops / statistics.median(t) / 1e9,
                      "fraction_of_peak": flops / statistics.median(t) / 1e9
                      / statistics.median(rates)} for name, t in times.items()}
    for name, row in summary.items():
        print(f"median {name:<15} {row['median_seconds']:.3f} s wall, "
              f"{row['median_cpu_seconds']:.3f} s CPU  {row['gflops']:6.1f} GFLOP/s  "
              f"{100 * row['fraction_of_peak']:.0f} % of the 2048^3 rate")
    print(f"2048^3 GEMM rate (median) {statistics.median(rates):.1f} GFLOP/s; "
          f"weights identical across variants: {same} (largest difference {largest_difference:.2g})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "threads": threads, "images": len(x), "repeats": args.repeats,
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "note": "in-process interleaved A/B; taken under load unless stated",
        "gemm_peak_gflops_median": statistics.median(rates), "weights_identical": same,
        "largest_weight_difference": largest_difference,
        "summary": summary, "times": times, "cpu_times": cpu, "peak_rates": rates}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
