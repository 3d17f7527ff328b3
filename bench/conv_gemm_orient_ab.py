"""LeNet conv2's three im2row products in the orientation ``Conv2D`` uses and the
transposed one, interleaved in one process (bench only; threadpoolctl).

    python bench/conv_gemm_orient_ab.py [--threads 2] [--repeats 40] [--batch 64]

rows (N·64, 500), W_r (500, 50), dY_r (N·64, 50), as the layer holds them (views, no
copies): forward rows·W_r against (W_rᵀ·rowsᵀ)ᵀ, dW rowsᵀ·dY_r against (dY_rᵀ·rows)ᵀ,
dx dY_r·W_rᵀ (into a reused buffer) against (W_r·dY_rᵀ)ᵀ. Sitting 22, one thread, under
load (thread CPU time, medians of 25): dW 2.88 against 2.61 ms, the forward 3.10 against
3.59, dx 3.04 against 3.35; at two threads the load made every figure meaningless (the
transposed dW took 88 ms). A transposed form is worth taking into ``Conv2D`` only if it
wins here at two threads on a quiet machine.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args(argv)
    from threadpoolctl import threadpool_limits
    threadpool_limits(args.threads)
    clock = time.thread_time if args.threads == 1 else time.perf_counter
    rng = np.random.default_rng(0)
    M, K, O = args.batch * 64, 500, 50
    rows = rng.standard_normal((M, K), dtype=np.float32)
    W = rng.standard_normal((K, O), dtype=np.float32)
    g = rng.standard_normal((M, O), dtype=np.float32)
    out_dx, out_dxt = np.empty((M, K), np.float32), np.empty((K, M), np.float32)
    cases = {
        "forward rows @ W_r (Conv2D)": lambda: rows @ W,
        "forward (W_r.T @ rows.T).T": lambda: (W.T @ rows.T).T,
        "dW rows.T @ dY_r (Conv2D)": lambda: rows.T @ g,
        "dW (dY_r.T @ rows).T": lambda: (g.T @ rows).T,
        "dx dY_r @ W_r.T (Conv2D)": lambda: np.matmul(g, W.T, out=out_dx),
        "dx (W_r @ dY_r.T).T": lambda: np.matmul(W, g.T, out=out_dxt).T,
    }
    for f in cases.values():
        f()
        f()
    times = {k: [] for k in cases}
    for _ in range(args.repeats):
        for k, f in cases.items():
            t0 = clock()
            f()
            times[k].append(clock() - t0)
    print(f"LeNet conv2 products, batch {args.batch}, {args.threads} thread(s), "
          f"{'thread CPU' if args.threads == 1 else 'wall'} clock, medians of {args.repeats}")
    for k, v in times.items():
        m = float(np.median(v))
        print(f"  {k:30s} {1e3 * m:7.3f} ms  {2 * M * K * O / m / 1e9:5.0f} GFLOP/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
