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
* whole forwards: the gemm path, float32, and variants kept here as evidence:
  sitting 16's gemm path (rebuilt from the same kernels with its two-pass
  epilogue and no sparse-input kernel), and sitting 16's layers (BLAS on
  every layer) with the new epilogue and the one-layer scratch made in the
  call, held across calls, or replaced by panels of 64 output columns expanded
  into a small reused buffer, one BLAS call a panel;
* minor page faults per call of each whole forward (getrusage), which says
  whether the per-call scratch costs first-touch faults;
* agreement over the whole MNIST test set (batches of --batch): the gemm path
  against sitting 16's and against the twin, max |Δ| and labels that differ.

    python bench/discrete_gemm_profile.py --model /work/artifacts/issue9/models/rr_L6_20_s0_long-mse.h5
    python bench/discrete_gemm_profile.py --sparse-crossover --model ... --out ...   # layer 1 only

``--sparse-crossover``: layer 1 alone, scan + gather + expansion + BLAS against
scan + ``sparse_input_product_kernel``, on MNIST batches 8–256 and on random
zero patterns of density 0.15, 0.30, 0.45 at batch 100 (the measurement behind
``SPARSE_INPUT_DENSITY``). The whole-forward section also checks, on a dense
input (no column dropped), that the gemm path is bit for bit the twin and
whether the panel variant is.
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
    """The sitting-16 layer loop (BLAS on every layer) with the new epilogue and the
    one-layer scratch made in the call, or ``held`` across calls, or the codes
    expanded ``panel`` columns at a time into a small reused buffer."""
    h, batch = x, x.shape[0]
    keep = np.empty(plan.width, dtype=np.int64)
    for l in range(plan.n_layers):
        n_in, n_out = int(plan.sizes[l]), int(plan.sizes[l + 1])
        codes = plan.layer_codes(l)
        n_keep = tn.nonzero_columns_kernel(h, keep)[0]
        z = np.empty((batch, n_out), dtype=np.float32)
        if panel is None:
            scratch = held if held is not None else np.empty(
                max(int(plan.sizes[k] * plan.sizes[k + 1]) for k in range(plan.n_layers)),
                dtype=np.float32)
            w = scratch[:n_keep * n_out].reshape(n_keep, n_out)
            if n_keep == n_in:
                h_kept = h
                tn.expand_codes_kernel(plan.codes[plan.code_ptr[l]:plan.code_ptr[l + 1]], scratch)
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


def sparse_crossover(tn, plan, repeats):
    """Layer 1 (784 → 300): scan + gather + expansion + BLAS against scan + the sparse-input
    kernel, on MNIST batches of 8–256 and on random zero patterns (a 200-pixel zero border,
    then each pixel nonzero with probability d) at batch 100."""
    codes = plan.layer_codes(0)
    n0, n1 = codes.shape
    test_x = np.ascontiguousarray(_common.load_splits("mnist").test.flatten()[:256], np.float32)
    rng = np.random.default_rng(0)
    cases = [(f"mnist batch {b}", np.ascontiguousarray(test_x[:b])) for b in (8, 16, 32, 64, 100, 256)]
    for d in (0.15, 0.3, 0.45):
        xr = rng.random((100, n0)).astype(np.float32)
        xr[rng.random(xr.shape) > d] = 0
        xr[:, :200] = 0
        cases.append((f"random density {d}, batch 100", xr))
    rows = {}
    for name, x in cases:
        batch = x.shape[0]
        keep, index = np.empty(n0, np.int64), np.empty(n0, np.int64)
        z = np.empty((batch, n1), np.float32)

        def blas():
            n_keep = tn.nonzero_columns_kernel(x, keep)[0]
            x_kept, w = np.empty((batch, n_keep), np.float32), np.empty((n_keep, n1), np.float32)
            tn.gather_expand_kernel(x, codes, keep[:n_keep], x_kept, w)
            np.matmul(x_kept, w, out=z)

        def sparse():
            tn.nonzero_columns_kernel(x, keep)
            tn.sparse_input_product_kernel(x, codes, z, index)
        fs = {"blas": blas, "sparse": sparse}
        for f in fs.values():
            f()
        t = {k: [] for k in fs}
        for it in range(max(20, repeats * 20 // batch)):
            for k in (list(fs) if it % 2 else list(fs)[::-1]):
                t0 = time.perf_counter()
                fs[k]()
                t[k].append(time.perf_counter() - t0)
        n_keep, entries = tn.nonzero_columns_kernel(x, keep)
        rows[name] = {"kept_columns": int(n_keep), "nonzero_fraction_of_kept": entries / (batch * n_keep),
                      "blas_min_us": 1e6 * min(t["blas"]), "sparse_min_us": 1e6 * min(t["sparse"]),
                      "blas_over_sparse_of_minima": min(t["blas"]) / min(t["sparse"]),
                      "blas_over_sparse_of_medians": statistics.median(t["blas"]) / statistics.median(t["sparse"])}
        r = rows[name]
        print(f"{name:30s} kept {n_keep:3d}, nonzero {r['nonzero_fraction_of_kept']:.3f} of kept: "
              f"BLAS {r['blas_min_us']:6.0f} µs, sparse {r['sparse_min_us']:6.0f} µs (minima), "
              f"BLAS/sparse {r['blas_over_sparse_of_minima']:.2f}x (medians {r['blas_over_sparse_of_medians']:.2f}x)",
              flush=True)
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=200)
    p.add_argument("--out", default=str(_common.RESULTS_DIR / "discrete_gemm_profile.json"))
    p.add_argument("--sparse-crossover", action="store_true",
                   help="only layer 1: BLAS on the kept columns against the sparse-input kernel "
                        "over batches and input densities (the measurement behind SPARSE_INPUT_DENSITY)")
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
    if args.sparse_crossover:
        rows = sparse_crossover(tn, plan, args.repeats)
        _common.write_json(Path(args.out), {
            "machine": _common.machine_info(), "model": args.model, "threads": args.threads,
            "note": "one process, interleaved, likely under load: a guide, not a speed figure",
            "sparse_input_density": tn.SPARSE_INPUT_DENSITY, "cases": rows})
        print(f"wrote {args.out}")
        return
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
        "whole forward, s16 layers + new epilogue, scratch per call": lambda: _variant_forward(
            tn, x, plan),
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
    dense_x = np.random.default_rng(1).uniform(0.1, 1, x.shape).astype(np.float32)  # no zero column
    panel_bits = bool(np.array_equal(_variant_forward(tn, dense_x, plan, panel=panel),
                                     tn.ternary_net_forward_numpy(dense_x, plan)))
    full_bits = bool(np.array_equal(tn.ternary_net_forward(dense_x, plan, path="gemm"),
                                    tn.ternary_net_forward_numpy(dense_x, plan)))
    print(f"no column dropped (dense input): bit for bit the twin: gemm path {full_bits}, "
          f"panels of {PANEL} {panel_bits}")
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
              "whole_minor_page_faults_per_call": faults, "test_set_agreement": test_set,
              "dense_input_bit_identical_to_twin": {"gemm path": full_bits,
                                                    f"panels of {PANEL}": panel_bits}}
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
