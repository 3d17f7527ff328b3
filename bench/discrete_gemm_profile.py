"""Component profile of the ternary gemm path (technique 1) against the float32 forward.

One batch of MNIST test images through the study's 6-layer ternary model, each
piece timed in ONE process, interleaved (the order reversed every other
repeat), many repeats, minima and medians, at the thread count given (a guide
for optimisation on a loaded machine, not a speed figure):

* layer 1 (784 → 300, MNIST pixels): the GEMM on all columns (float32's) and on
  the kept columns, the zero-column scan, gather + expansion of the kept code
  rows, and the sparse-input kernel on the int8 codes (what the gemm path runs
  there now);
* a 300 × 300 layer: its GEMM, the int8 → float32 expansion, the one-pass fused
  epilogue, sitting 16's two-pass epilogue, and float32's bias + sigmoid;
* whole forwards: the gemm path, float32, and three variants kept here as
  evidence: sitting 16's gemm path (rebuilt from the same kernels with its
  two-pass epilogue and no sparse-input kernel), the gemm path with the
  one-layer scratch held across calls instead of made in the call, and the
  codes expanded in panels of 64 output columns into a small reused buffer,
  one BLAS call a panel;
* minor page faults per call of each whole forward (getrusage), which says
  whether the per-call scratch costs first-touch faults;
* agreement over the whole MNIST test set (batches of --batch): the gemm path
  against sitting 16's and against the twin, max |Δ| and labels that differ.

    python bench/discrete_gemm_profile.py --model /work/artifacts/issue9/models/rr_L6_20_s0_long-mse.h5
"""
from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

import numba
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
from discrete_inference_speed import float_twin, ternary_model  # noqa: E402

PANEL = 64


@numba.njit(cache=True)
def _affine_two_pass_sigmoid(z, s, bias, bits, sigmoid):
    """Sitting 16's epilogue: z·s + b in one pass, then (sigmoid) the two-pass in-place
    poly sigmoid, under Numba's Python error model (the division stayed scalar)."""
    batch, n_out = z.shape
    for b in range(batch):
        row = z[b]
        for j in range(n_out):
            row[j] = row[j] * s + bias[j]
    if sigmoid:
        from_kernels_sigmoid(z.reshape(batch * n_out), bits)


def _sitting16_forward(tn, x, plan):
    """Sitting 16's gemm path (same results, bit for bit)."""
    h, batch = x, x.shape[0]
    scratch = np.empty(max(int(plan.sizes[l] * plan.sizes[l + 1]) for l in range(plan.n_layers)),
                       dtype=np.float32)
    keep = np.empty(plan.width, dtype=np.int64)
    bits = np.empty(batch * plan.width, dtype=np.int32)
    for l in range(plan.n_layers):
        n_in, n_out = int(plan.sizes[l]), int(plan.sizes[l + 1])
        n_keep = tn.nonzero_columns_kernel(h, keep)[0]
        w = scratch[:n_keep * n_out].reshape(n_keep, n_out)
        if n_keep == n_in:
            h_kept = h
            tn.expand_codes_kernel(plan.codes[plan.code_ptr[l]:plan.code_ptr[l + 1]], scratch)
        else:
            h_kept = np.empty((batch, n_keep), dtype=np.float32)
            tn.gather_expand_kernel(h, plan.layer_codes(l), keep[:n_keep], h_kept, w)
        z = np.empty((batch, n_out), dtype=np.float32)
        np.matmul(h_kept, w, out=z)
        _affine_two_pass_sigmoid(z, plan.scales[l], plan.layer_bias(l), bits[:batch * n_out],
                                 plan.acts[l] == tn.SIGMOID)
        h = z
    return h


@numba.njit(cache=True)
def _expand_panel(codes, keep, n_keep, j0, j1, w):
    for r in range(n_keep):
        row = codes[keep[r]]
        dst = w[r]
        for j in range(j1 - j0):
            dst[j] = np.float32(row[j0 + j])


def _variant_forward(tn, x, plan, held=None, panel=None):
    """The sitting-16 layer loop with the new epilogue and either the one-layer
    scratch ``held`` across calls or the codes expanded ``panel`` columns at a time."""
    h, batch = x, x.shape[0]
    keep = np.empty(plan.width, dtype=np.int64)
    for l in range(plan.n_layers):
        n_in, n_out = int(plan.sizes[l]), int(plan.sizes[l + 1])
        codes = plan.layer_codes(l)
        n_keep = tn.nonzero_columns_kernel(h, keep)[0]
        z = np.empty((batch, n_out), dtype=np.float32)
        if panel is None:
            w = held[:n_keep * n_out].reshape(n_keep, n_out)
            if n_keep == n_in:
                h_kept = h
                tn.expand_codes_kernel(plan.codes[plan.code_ptr[l]:plan.code_ptr[l + 1]], held)
            else:
                h_kept = np.empty((batch, n_keep), dtype=np.float32)
                tn.gather_expand_kernel(h, codes, keep[:n_keep], h_kept, w)
            np.matmul(h_kept, w, out=z)
        else:
            h_kept = h if n_keep == n_in else np.ascontiguousarray(h[:, keep[:n_keep]])
            for j0 in range(0, n_out, PANEL):
                j1 = min(n_out, j0 + PANEL)
                w = panel[:n_keep * (j1 - j0)].reshape(n_keep, j1 - j0)
                _expand_panel(codes, keep, n_keep, j0, j1, w)
                np.matmul(h_kept, w, out=z[:, j0:j1])
        tn.scale_bias_activate_kernel(z, plan.scales[l], plan.layer_bias(l), plan.acts[l])
        h = z
    return h


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
    global from_kernels_sigmoid
    from_kernels_sigmoid = tn.sigmoid_poly_kernel

    x = np.ascontiguousarray(_common.load_splits("mnist").test.flatten()[:args.batch], np.float32)
    model = ternary_model(args.model)
    twin, plan = float_twin(model), FusedTernaryNet.from_model(model).plan
    W = [l.params["W"] for l in twin.layers if "W" in l.params]
    b1 = [l.params["b"] for l in twin.layers if "W" in l.params][1]
    n0, n1 = int(plan.sizes[0]), int(plan.sizes[1])
    keep = np.empty(n0, np.int64)
    n_keep, entries = tn.nonzero_columns_kernel(x, keep)
    kept = keep[:n_keep].copy()
    x_kept, w_kept = np.empty((args.batch, kept.size), np.float32), np.empty((kept.size, n1), np.float32)
    W0_kept = np.ascontiguousarray(W[0][kept])
    z = np.empty((args.batch, n1), np.float32)
    index = np.empty(n0, np.int64)
    h1 = np.random.default_rng(0).random((args.batch, int(plan.sizes[1]))).astype(np.float32)
    c1 = plan.codes[plan.code_ptr[1]:plan.code_ptr[2]]
    w1 = np.empty(c1.size, np.float32)
    z1 = np.empty((args.batch, int(plan.sizes[2])), np.float32)
    bits = np.empty(z1.size, np.int32)
    held = np.empty(max(int(plan.sizes[l] * plan.sizes[l + 1]) for l in range(plan.n_layers)),
                    np.float32)
    panel = np.empty(plan.width * PANEL, np.float32)
    whole = {
        "whole forward, gemm path": lambda: tn.ternary_net_forward(x, plan, path="gemm"),
        "whole forward, float32": lambda: twin.forward(x, training=False),
        "whole forward, sitting 16's gemm path": lambda: _sitting16_forward(tn, x, plan),
        "whole forward, s16 layers + new epilogue, scratch held": lambda: _variant_forward(
            tn, x, plan, held=held),
        f"whole forward, s16 layers + new epilogue, panels of {PANEL}": lambda: _variant_forward(
            tn, x, plan, panel=panel),
    }
    pieces = {
        "layer 1 GEMM, all columns": lambda: x @ W[0],
        f"layer 1 GEMM, {kept.size} kept columns": lambda: np.matmul(x_kept, W0_kept, out=z),
        "layer 1 zero-column scan": lambda: tn.nonzero_columns_kernel(x, keep),
        "layer 1 gather + expansion": lambda: tn.gather_expand_kernel(x, plan.layer_codes(0), kept,
                                                                      x_kept, w_kept),
        "layer 1 sparse-input kernel (int8 codes)": lambda: tn.sparse_input_product_kernel(
            x, plan.layer_codes(0), z, index),
        "layer 2 GEMM": lambda: np.matmul(h1, W[1], out=z1),
        "layer 2 expansion": lambda: tn.expand_codes_kernel(c1, w1),
        "layer 2 epilogue, one pass (now)": lambda: tn.scale_bias_activate_kernel(
            z1, plan.scales[1], plan.layer_bias(1), tn.SIGMOID),
        "layer 2 epilogue, two passes (sitting 16)": lambda: _affine_two_pass_sigmoid(
            z1, plan.scales[1], plan.layer_bias(1), bits, True),
        "layer 2 float32 bias + sigmoid": lambda: sigmoid(z1 + b1),
        **whole,
    }
    ref = tn.ternary_net_forward_numpy(x, plan)
    agreement = {k: float(np.abs(f() - ref).max()) for k, f in whole.items()}
    s16 = _sitting16_forward(tn, x, plan)
    vs_s16 = {k: float(np.abs(f() - s16).max()) for k, f in whole.items()}
    faults = {}
    for k, f in whole.items():
        for _ in range(5):
            f()
        r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(20):
            f()
        faults[k] = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0) / 20
    # the whole test set in batches of --batch: the gemm path against sitting 16's and the twin
    test_x = np.ascontiguousarray(_common.load_splits("mnist").test.flatten(), np.float32)
    chunks = [test_x[i:i + args.batch] for i in range(0, len(test_x), args.batch)]
    now = np.concatenate([tn.ternary_net_forward(c, plan, path="gemm") for c in chunks])
    before = np.concatenate([_sitting16_forward(tn, c, plan) for c in chunks])
    twin_out = tn.ternary_net_forward_numpy(test_x, plan)
    test_set = {"max_abs_difference_vs_sitting16": float(np.abs(now - before).max()),
                "max_abs_difference_vs_twin": float(np.abs(now - twin_out).max()),
                "argmax_differs_vs_sitting16": int((now.argmax(1) != before.argmax(1)).sum()),
                "argmax_differs_vs_twin": int((now.argmax(1) != twin_out.argmax(1)).sum()),
                "images": len(test_x)}
    print(f"MNIST test set, batches of {args.batch}: gemm path vs sitting 16's max |Δ| "
          f"{test_set['max_abs_difference_vs_sitting16']:.1e}, labels differing "
          f"{test_set['argmax_differs_vs_sitting16']}; vs the twin {test_set['max_abs_difference_vs_twin']:.1e}, "
          f"{test_set['argmax_differs_vs_twin']}")
    times = {k: [] for k in pieces}
    for f in pieces.values():
        f()
    order = list(pieces)
    for repeat in range(args.repeats):
        for k in (order if repeat % 2 == 0 else order[::-1]):
            t0 = time.perf_counter()
            pieces[k]()
            times[k].append(time.perf_counter() - t0)
    f32 = times["whole forward, float32"]
    result = {"machine": _common.machine_info(), "model": args.model, "batch": args.batch,
              "threads": args.threads, "repeats": args.repeats,
              "first_layer": {"kept_columns": int(n_keep), "nonzero_entries": int(entries),
                              "nonzero_fraction_of_kept": entries / (args.batch * n_keep)},
              "note": "one process, interleaved, likely under load: a guide, not a speed figure",
              "pieces_us": {k: {"min": 1e6 * min(v), "median": 1e6 * statistics.median(v)}
                            for k, v in times.items()},
              "whole_float32_over_this_median_of_pairs": {
                  k: statistics.median(a / b for a, b in zip(f32, times[k])) for k in whole},
              "whole_max_abs_difference_vs_twin": agreement,
              "whole_max_abs_difference_vs_sitting16_gemm_path": vs_s16,
              "whole_minor_page_faults_per_call": faults, "test_set_agreement": test_set}
    for k, v in result["pieces_us"].items():
        extra = ""
        if k in whole:
            extra = (f"  float32/this {result['whole_float32_over_this_median_of_pairs'][k]:.2f}x"
                     f"  faults/call {faults[k]:.2f}  |Δ| vs twin {agreement[k]:.1e}")
        print(f"{k:58s} min {v['min']:8.1f} µs   median {v['median']:8.1f} µs{extra}")
    _common.write_json(Path(args.out), result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
