"""What issue 7's safety costs: ReLU that propagates NaN, the call-order
checks on every layer, and fit's per-epoch rollback snapshot + NaN scan.

    python bench/failure_mode_overhead.py --threads 1 --repeats 7

Prints medians of interleaved repeats and writes
bench/results/failure_mode_overhead.json. The reference ReLU is the one
before issue 7 (mask, then np.where), inlined here; both run in this process
on the same arrays, alternating, so load on the machine hits both alike.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="BLAS/Numba threads (default 1)")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved repeats (default 7)")
    parser.add_argument("--out", default="bench/results/failure_mode_overhead.json",
                        help="results file")
    args = parser.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import numpy as np

    import minidnn as md
    from minidnn import architectures
    from minidnn.checks import nonfinite_arrays
    from minidnn.training import _snapshot

    def old_relu(x, grad):
        mask = x > 0
        y = np.where(mask, x, 0).astype(x.dtype, copy=False)
        return y, np.where(mask, grad, 0).astype(grad.dtype, copy=False)

    relu = md.ReLU()

    def new_relu(x, grad):
        return relu.forward(x, True), relu.backward(grad)

    def timed(fn, *a, inner=20):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn(*a)
        return (time.perf_counter() - t0) / inner

    rng = np.random.default_rng(0)
    n = 1024
    m1 = rng.standard_normal((n, n)).astype(np.float32)
    results = {"threads": args.threads, "repeats": args.repeats}
    peaks, rows = [], {}
    shapes = {"mlp (100, 500)": (100, 500), "lenet conv1 (64, 20, 24, 24)": (64, 20, 24, 24)}
    data = {k: (rng.standard_normal(s).astype(np.float32), rng.standard_normal(s).astype(np.float32))
            for k, s in shapes.items()}
    lenet = architectures.build("lenet", seed=0)
    ident, x_small = md.Identity(), np.zeros((2, 2), np.float32)
    plain_identity = lambda x: x  # noqa: E731
    for _ in range(args.repeats):
        t = timed(lambda: m1 @ m1, inner=3)
        peaks.append(2 * n ** 3 / t / 1e9)
        for key, (x, g) in data.items():
            rows.setdefault(f"relu old {key}", []).append(timed(old_relu, x, g))
            rows.setdefault(f"relu new {key}", []).append(timed(new_relu, x, g))
        rows.setdefault("Identity.forward with call-order check", []).append(
            timed(ident.forward, x_small, inner=20000))
        rows.setdefault("plain function call", []).append(timed(plain_identity, x_small, inner=20000))
        rows.setdefault("lenet snapshot + NaN scan per epoch", []).append(
            timed(lambda: (_snapshot(lenet), nonfinite_arrays(lenet)), inner=5))
    results["gemm_gflops_median"] = statistics.median(peaks)
    results["seconds_median"] = {k: statistics.median(v) for k, v in rows.items()}
    for k, v in results["seconds_median"].items():
        print(f"{k:45s} {v * 1e6:10.2f} us")
    print(f"GEMM {n}^3 float32: {results['gemm_gflops_median']:.1f} GFLOP/s")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
