"""Component profile of the ternary gemm path (technique 1) against the float32 forward.

One batch of MNIST test images through the study's 6-layer ternary model, each
piece timed in ONE process, interleaved, many repeats, minima and medians, at
the thread count given (a guide for optimisation on a loaded machine, not a
speed figure): the first layer's GEMM with and without the whole-batch-zero
input columns, the scan, gather + expansion, a 300×300 layer's GEMM and
expansion, the fused epilogue against minidnn's bias + sigmoid, and both whole
forwards.

    python bench/discrete_gemm_profile.py --model /work/artifacts/issue9/models/rr_L6_20_s0_long-mse.h5
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
from discrete_inference_speed import float_twin, ternary_model  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=200)
    p.add_argument("--out", default=str(_common.RESULTS_DIR / "discrete_gemm_profile.json"))
    args = p.parse_args()
    from threadpoolctl import threadpool_limits
    threadpool_limits(args.threads)
    from minidnn.kernels import ternary_net as tn
    from minidnn.layers.activations import sigmoid
    from minidnn.quantization import FusedTernaryNet

    x = np.ascontiguousarray(_common.load_splits("mnist").test.flatten()[:args.batch], np.float32)
    model = ternary_model(args.model)
    twin, plan = float_twin(model), FusedTernaryNet.from_model(model).plan
    W = [l.params["W"] for l in twin.layers if "W" in l.params]
    b1 = [l.params["b"] for l in twin.layers if "W" in l.params][1]
    n0, n1 = int(plan.sizes[0]), int(plan.sizes[1])
    keep = np.empty(n0, np.int64)
    kept = keep[:tn.nonzero_columns_kernel(x, keep)[0]].copy()
    x_kept, w_kept = np.empty((args.batch, kept.size), np.float32), np.empty((kept.size, n1), np.float32)
    W0_kept = np.ascontiguousarray(W[0][kept])
    z = np.empty((args.batch, n1), np.float32)
    h1 = np.random.default_rng(0).random((args.batch, int(plan.sizes[1]))).astype(np.float32)
    c1 = plan.codes[plan.code_ptr[1]:plan.code_ptr[2]]
    w1 = np.empty(c1.size, np.float32)
    z1 = np.empty((args.batch, int(plan.sizes[2])), np.float32)
    pieces = {
        "layer 1 GEMM, all columns": lambda: x @ W[0],
        f"layer 1 GEMM, {kept.size} kept columns": lambda: np.matmul(x_kept, W0_kept, out=z),
        "layer 1 zero-column scan": lambda: tn.nonzero_columns_kernel(x, keep),
        "layer 1 gather + expansion": lambda: tn.gather_expand_kernel(x, plan.layer_codes(0), kept,
                                                                      x_kept, w_kept),
        "layer 2 GEMM": lambda: np.matmul(h1, W[1], out=z1),
        "layer 2 expansion": lambda: tn.expand_codes_kernel(c1, w1),
        "layer 2 epilogue s·z + b, poly σ": lambda: tn.scale_bias_activate_kernel(
            z1, plan.scales[1], plan.layer_bias(1), tn.SIGMOID),
        "layer 2 float32 bias + sigmoid": lambda: sigmoid(z1 + b1),
        "whole forward, gemm path": lambda: tn.ternary_net_forward(x, plan, path="gemm"),
        "whole forward, float32": lambda: twin.forward(x, training=False),
    }
    times = {k: [] for k in pieces}
    for f in pieces.values():
        f()
    for _ in range(args.repeats):
        for k, f in pieces.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    result = {"machine": _common.machine_info(), "model": args.model, "batch": args.batch,
              "threads": args.threads, "repeats": args.repeats,
              "note": "one process, interleaved, likely under load: a guide, not a speed figure",
              "pieces_us": {k: {"min": 1e6 * min(v), "median": 1e6 * statistics.median(v)}
                            for k, v in times.items()}}
    for k, v in result["pieces_us"].items():
        print(f"{k:40s} min {v['min']:8.1f} µs   median {v['median']:8.1f} µs")
    _common.write_json(Path(args.out), result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
