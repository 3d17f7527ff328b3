"""Inference speed and weight memory of a ternary net: code kernels vs float32 vs PyTorch.

The model is the paper's 6-layer net 784-300-300-300-300-10 (sigmoid) with
ternary weights (Δ = 2^0). Three forwards of the *same* weights are timed:

* ``ternary``: ``minidnn.quantization.FusedTernaryNet`` (``minidnn.kernels.ternary_net``),
  the path it picks itself (``choose_path``, recorded as ``path_auto``): at
  batch < 16 "lut" (``minidnn.kernels.ternary_lut``; "rows" below 8 on a CPU without AVX2),
  one kernel call, one sample at a time: subset sums of the inputs three at a
  time, looked up 8 outputs an instruction from the codes packed as bytes
  (additions only; all-zero groups of inputs skipped), one scale g·Δ per output;
  then "gemm", except for sparse codes
  (≤ 35 % nonzero) from batch 32 on, "columns" (add-only, batch-inner). gemm: per layer
  whole-batch-zero input columns found; a sparse input (MNIST pixels) added straight
  from the int8 codes over each sample's nonzero inputs; otherwise the codes expanded
  into a float32 scratch of one layer made in the call, the zero columns dropped, one
  BLAS product; then s·z + b and σ in one pass;
* ``ternary_layers``: the per-layer reference path, ``DiscreteDense`` with
  ``inference="kernel"`` (the ``quantized_matmul`` add/subtract kernel) and
  separate ``Sigmoid`` layers;
* ``float32``: minidnn ``Dense`` layers holding W = g·c·Δ as float32 (BLAS);
* ``torch``: ``torch.nn.Linear`` float32 with the same W, under ``no_grad``.

At batches 1, 32, 100 and 256 (--batches). Each (implementation, batch) is run in its own clean
subprocess with every thread pool capped at --threads; the repeats are
interleaved (ternary, float32, torch, ternary, …) so a load change hits all
of them alike; each run reports the median seconds per forward over --calls
calls after a warm-up, and the table gives the median over repeats. A float32
GEMM (1024³) is timed in the same run for the machine's peak. The outputs of
the three are compared on a fixed input.

    python bench/discrete_inference_speed.py                      # synthetic ternary net
    python bench/discrete_inference_speed.py --model /work/artifacts/issue9/models/rr_L6_20_s0.h5
    python bench/discrete_inference_speed.py --repeats 1 --calls 20   # a quick check
    python bench/discrete_inference_speed.py --memory-only --model ...  # bytes only
    python bench/discrete_inference_speed.py --crossover --model ...    # each path forced
    python bench/discrete_inference_speed.py --ab --model ...           # one process, under load
    python bench/discrete_inference_speed.py --against 656f509 --model ...  # + that commit's ternary

``--against COMMIT`` adds ``ternary@COMMIT``: the same ``ternary`` worker run from
that commit's tree (``git archive`` into a temporary folder, its own PYTHONPATH),
in its own clean subprocess, interleaved with the others: a before/after of the
ternary kernels in the same run as float32 and torch.

``--ab`` is the guide for a loaded machine: ``ternary`` (auto path) and
``float32`` in ONE process, alternated call by call (--calls pairs per batch,
the order within a pair alternating), reporting the median of the per-pair time
ratios float32/ternary (a load spike hits both calls of a pair alike) and the
ratio of the minima, beside each one's median and minimum; results
in ``discrete_inference_ab.json`` unless --out. Not a speed figure. ``--paths rows lut
gemm`` adds those ternary paths, forced, to the pairs (and, without --ab, as more
implementations ``ternary_<path>`` in their own processes).

Small batches (the lut path), quiet machine:

    python bench/discrete_inference_speed.py --threads 1 --repeats 5 --batches 1 2 4 7 \
        --paths rows --model .../rr_L6_20_s0_long-max.h5 \
        --out bench/results/discrete_inference_small_long-max.json

``--crossover`` times the four ternary paths forced (``ternary_rows``, ``ternary_lut``,
``ternary_columns``, ``ternary_gemm``) against ``float32`` at batches 1–256:
the measurement behind ``GEMM_FROM_BATCH``, ``COLUMNS_FROM_BATCH`` and
``GEMM_ABOVE_DENSITY`` (``minidnn.kernels.ternary_net``).

Weights: without --model, a float net with N(0, 1/fan_in) weights is
discretised by randomized rounding (gain max|W|), which gives a typical
sparsity of the codes; pass a trained model (from the depth study's
``--save-models``) for the real one. Results: bench/results/discrete_inference_speed.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

SIZES = [784, 300, 300, 300, 300, 10]
IMPLS = ("ternary", "ternary_layers", "float32", "torch")
CROSSOVER_IMPLS = ("ternary_rows", "ternary_lut", "ternary_columns", "ternary_gemm", "float32")
FORCED_PATHS = CROSSOVER_IMPLS[:-1]
CROSSOVER_BATCHES = [1, 4, 8, 12, 16, 32, 64, 100, 256]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="a ternary minidnn model file (default: synthetic)")
    p.add_argument("--batches", type=int, nargs="+", default=None,
                   help=f"default 1 100; with --crossover {' '.join(map(str, CROSSOVER_BATCHES))}")
    p.add_argument("--ab", action="store_true",
                   help="in-process paired A/B of ternary (auto) vs float32 (for a loaded machine)")
    p.add_argument("--paths", nargs="+", default=[], choices=["rows", "lut", "columns", "gemm"],
                   help="also time these ternary paths forced (ternary_<path>): as more "
                        "implementations in their own processes, or with --ab in the same pairs")
    p.add_argument("--crossover", action="store_true",
                   help="time each ternary path forced (rows, columns, gemm) against float32")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--calls", type=int, default=300, help="timed forwards per run (batch 1)")
    p.add_argument("--against", default=None,
                   help="also time the ternary worker of this commit's tree (git archive)")
    p.add_argument("--memory-only", action="store_true",
                   help="only report weight bytes (no timing; fine on a loaded machine)")
    p.add_argument("--out", default=str(_common.RESULTS_DIR / "discrete_inference_speed.json"))
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=None, help=argparse.SUPPRESS)
    return p.parse_args()


def ternary_model(path):
    import minidnn as md
    from minidnn.quantization import discretize
    if path:
        model = md.load(path)
    else:
        rng = np.random.default_rng(0)
        layers = []
        for n_in, n_out in zip(SIZES, SIZES[1:]):
            dense = md.Dense(n_in, n_out)
            dense.set_weights(rng.normal(0, 1 / np.sqrt(n_in), (n_in, n_out)))
            layers += [dense, md.Sigmoid()]
        model = discretize(md.Sequential(layers[:-1], seed=None), "2^0", rng=1)
    for layer in model.layers:
        if "codes" in layer.params:
            if not layer.grid.is_ternary:
                raise SystemExit(f"{path}: layer {layer.name} is on {layer.grid!r}, not ternary")
            layer.inference = "kernel"
    return model


def float_twin(model):
    """The same net with float32 Dense layers holding W = g·c·Δ."""
    import minidnn as md
    layers = []
    for layer in model.layers:
        if "codes" in layer.params:
            dense = md.Dense(layer.in_features, layer.out_features, name=layer.name)
            dense.set_weights(layer.float_weights(), layer.params["b"])
            layers.append(dense)
        elif layer.params:
            raise SystemExit(f"unexpected layer {layer!r}")
        else:
            layers.append(type(layer).from_config(layer.get_config()))
    return md.Sequential(layers, seed=None)


def worker(args) -> dict:
    x_all = np.load(os.path.join(args.workdir, "x.npy"))
    x = np.ascontiguousarray(x_all[:args.batch])
    if args.worker == "torch":
        import torch
        torch.set_num_threads(args.threads)
        weights = np.load(os.path.join(args.workdir, "weights.npz"))
        mods = []
        n = len([k for k in weights if k.startswith("W")])
        for i in range(n):
            W, b = weights[f"W{i}"], weights[f"b{i}"]
            lin = torch.nn.Linear(W.shape[0], W.shape[1])
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(W.T.copy()))
                lin.bias.copy_(torch.from_numpy(b))
            mods += [lin, torch.nn.Sigmoid()]
        net = torch.nn.Sequential(*mods[:-1]).eval()
        xt = torch.from_numpy(x)

        def forward():
            with torch.no_grad():
                return net(xt).numpy()
    else:
        from threadpoolctl import threadpool_limits
        threadpool_limits(args.threads)
        model = ternary_model(args.model)
        if args.worker == "float32":
            model = float_twin(model)
        if args.worker == "ternary" or args.worker in FORCED_PATHS:
            from minidnn.quantization import FusedTernaryNet
            net = FusedTernaryNet.from_model(model)
            path = "auto" if args.worker == "ternary" else args.worker.split("_")[1]

            def forward():
                return net.forward(x, path=path)
        else:
            def forward():
                return model.forward(x, training=False)
    for _ in range(20):
        out = forward()
    calls = max(10, args.calls // max(1, args.batch // 10))
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        forward()
        times.append(time.perf_counter() - t0)
    np.save(os.path.join(args.workdir, f"out_{args.worker}_{args.batch}.npy"), out)
    return {"median_s": statistics.median(times), "min_s": min(times), "calls": calls}


def gemm_peak(threads) -> float:
    from threadpoolctl import threadpool_limits
    with threadpool_limits(threads):
        a = np.random.default_rng(0).random((1024, 1024), dtype=np.float32)
        a @ a
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            a @ a
            times.append(time.perf_counter() - t0)
    return 2 * 1024 ** 3 / min(times) / 1e9


def paired_ab(args):
    """ternary (auto path) against float32 in one process, call by call (see --ab)."""
    from threadpoolctl import threadpool_limits
    from minidnn.quantization import FusedTernaryNet
    threadpool_limits(args.threads)
    model = ternary_model(args.model)
    net, twin = FusedTernaryNet.from_model(model), float_twin(model)
    x_all = np.ascontiguousarray(_common.load_splits("mnist").test.flatten()[:max(args.batches)],
                                 dtype=np.float32)
    out = {"machine": _common.machine_info(), "threads": args.threads, "model": args.model,
           "note": "one process, interleaved pairs, taken under load: a guide, not a speed figure",
           "gemm_peak_gflops": gemm_peak(args.threads), "batches": {}}
    for batch in args.batches:
        x = np.ascontiguousarray(x_all[:batch])
        forwards = {"ternary": lambda: net.forward(x), "float32": lambda: twin.forward(x, training=False)}
        for forced in args.paths:
            forwards[f"ternary_{forced}"] = lambda forced=forced: net.forward(x, path=forced)
        for f in forwards.values():
            for _ in range(10):
                f()
        times = {k: [] for k in forwards}
        order = list(forwards)
        for pair in range(args.calls):
            # the order alternates pair by pair (AB, BA, ...): neither call always runs
            # in the other's wake (its cache state, a load burst that starts mid-pair)
            for k in (order if pair % 2 == 0 else order[::-1]):
                t0 = time.perf_counter()
                forwards[k]()
                times[k].append(time.perf_counter() - t0)
        ratios = [f / t for f, t in zip(times["float32"], times["ternary"])]
        forced_ratios = {f"median_float32_over_{k}": statistics.median(
            [f / t for f, t in zip(times["float32"], times[k])]) for k in times
            if k.startswith("ternary_")}
        out["batches"][batch] = {
            "path_auto": net.path_for(batch), "pairs": args.calls,
            "median_float32_over_ternary": statistics.median(ratios), **forced_ratios,
            "float32_over_ternary_of_minima": min(times["float32"]) / min(times["ternary"]),
            **{f"{k}_median_s": statistics.median(v) for k, v in times.items()},
            **{f"{k}_min_s": min(v) for k, v in times.items()}}
        r = out["batches"][batch]
        print(f"batch {batch:>3} [{r['path_auto']}]: float32/ternary median of pairs "
              f"{r['median_float32_over_ternary']:.2f}x, of minima "
              f"{r['float32_over_ternary_of_minima']:.2f}x; medians {1e6 * r['ternary_median_s']:.0f} / "
              f"{1e6 * r['float32_median_s']:.0f} µs, minima {1e6 * r['ternary_min_s']:.0f} / "
              f"{1e6 * r['float32_min_s']:.0f} µs (ternary / float32)"
              + "".join(f"; {k[len('median_float32_over_'):]} {v:.2f}x, median "
                        f"{1e6 * r[k[len('median_float32_over_'):] + '_median_s']:.0f} µs"
                        for k, v in forced_ratios.items()), flush=True)
    path = Path(args.out if args.out != str(_common.RESULTS_DIR / "discrete_inference_speed.json")
                else _common.RESULTS_DIR / "discrete_inference_ab.json")
    _common.write_json(path, out)
    print(f"GEMM peak {out['gemm_peak_gflops']:.1f} GFLOP/s; wrote {path}")


def main():
    args = parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    if args.batches is None:
        args.batches = CROSSOVER_BATCHES if args.crossover else [1, 32, 100, 256]
    impls = CROSSOVER_IMPLS if args.crossover else IMPLS + tuple(
        f"ternary_{p}" for p in args.paths if f"ternary_{p}" not in IMPLS)
    against = f"ternary@{args.against}" if args.against and not args.crossover else None
    if against:
        impls = impls[:1] + (against,) + impls[1:]
    if args.crossover and args.out == str(_common.RESULTS_DIR / "discrete_inference_speed.json"):
        args.out = str(_common.RESULTS_DIR / "discrete_inference_crossover.json")
    if args.ab:
        return paired_ab(args)
    model = ternary_model(args.model)
    twin = float_twin(model)
    from minidnn.quantization import weight_storage_bytes
    ternary_bytes, float_bytes = weight_storage_bytes(model), weight_storage_bytes(twin)
    nonzero = sum(int(np.count_nonzero(l.params["codes"])) for l in model.layers if "codes" in l.params)
    total = sum(l.params["codes"].size for l in model.layers if "codes" in l.params)
    results = {"machine": _common.machine_info(), "threads": args.threads, "model": args.model or
               "synthetic N(0, 1/fan_in) weights, randomized rounding to ternary",
               "sizes": SIZES, "weight_bytes": {"ternary_packed": ternary_bytes,
                                                 "float32": float_bytes,
                                                 "ratio": ternary_bytes / float_bytes},
               "all_stored_bytes": {"ternary": sum(l.storage_bytes() for l in model.layers),
                                    "float32": sum(l.storage_bytes() for l in twin.layers)},
               "nonzero_codes": nonzero / total, "runs": {}}
    from minidnn.quantization import FusedTernaryNet
    fused = FusedTernaryNet.from_model(model)
    results["path_auto"] = {str(b): fused.path_for(b) for b in args.batches}
    from minidnn.kernels import ternary_lut
    if ternary_lut.LUT_AVAILABLE:
        # what the lut path's plan holds beyond the stored weights (its code bytes)
        results["lut_plan_bytes"] = ternary_lut.lut_plan_for(fused.plan).nbytes
        print(f"lut path: code bytes of the inference plan {results['lut_plan_bytes']:,} B "
              f"(int8 codes of the other paths {fused.plan.codes.nbytes:,} B)")
    print(f"weights: ternary {ternary_bytes:,} B vs float32 {float_bytes:,} B "
          f"(ratio 1/{float_bytes / ternary_bytes:.2f}); with biases and gains "
          f"{results['all_stored_bytes']['ternary']:,} B vs {results['all_stored_bytes']['float32']:,} B "
          f"(1/{results['all_stored_bytes']['float32'] / results['all_stored_bytes']['ternary']:.2f}); "
          f"nonzero codes {100 * nonzero / total:.1f}%")
    if args.memory_only:
        path = Path(args.out).with_name("discrete_weight_memory.json")
        _common.write_json(path, {k: v for k, v in results.items() if k != "runs"})
        print(f"wrote {path}")
        return
    with tempfile.TemporaryDirectory() as workdir:
        if against:
            other_tree = os.path.join(workdir, "against")
            os.mkdir(other_tree)
            archive = subprocess.run(["git", "-C", str(Path(__file__).resolve().parents[1]),
                                      "archive", args.against], capture_output=True, check=True)
            subprocess.run(["tar", "-x", "-C", other_tree], input=archive.stdout, check=True)
            results["against"] = args.against
        x = _common.load_splits("mnist").test.flatten()[:max(args.batches)]
        np.save(os.path.join(workdir, "x.npy"), x)
        arrays = {}
        for i, layer in enumerate(l for l in twin.layers if l.params):
            arrays[f"W{i}"], arrays[f"b{i}"] = layer.params["W"], layer.params["b"]
        np.savez(os.path.join(workdir, "weights.npz"), **arrays)
        if against:
            os.mkdir(os.path.join(other_tree, "io"))
            np.save(os.path.join(other_tree, "io", "x.npy"), x)
        env = _common.thread_env(args.threads)
        results["gemm_peak_gflops"] = gemm_peak(args.threads)
        for repeat in range(args.repeats):
            for batch in args.batches:
                for impl in impls:
                    script, run_env, io_dir = __file__, env, workdir
                    if impl == against:       # the same worker, from the other tree
                        script = os.path.join(other_tree, "bench", Path(__file__).name)
                        run_env = dict(env, PYTHONPATH=other_tree)
                        io_dir = os.path.join(other_tree, "io")
                    cmd = [sys.executable, script, "--worker", impl.split("@")[0],
                           "--workdir", io_dir, "--batch", str(batch),
                           "--threads", str(args.threads), "--calls", str(args.calls)] + (
                               ["--model", args.model] if args.model else [])
                    proc = subprocess.run(cmd, env=run_env, capture_output=True, text=True)
                    if proc.returncode != 0:
                        if impl == "torch" and "No module named 'torch'" in proc.stderr:
                            continue
                        raise SystemExit(proc.stderr)
                    run = json.loads(proc.stdout.strip().splitlines()[-1])
                    if impl == against:       # its output file has the plain worker's name
                        os.replace(os.path.join(io_dir, f"out_ternary_{batch}.npy"),
                                   os.path.join(workdir, f"out_{impl}_{batch}.npy"))
                    results["runs"].setdefault(f"{impl}@{batch}", []).append(run)
                    print(f"repeat {repeat + 1}/{args.repeats} batch {batch:>3} {impl:8s} "
                          f"{1e6 * run['median_s']:9.1f} µs/forward", flush=True)
        agreement = {}
        for batch in args.batches:
            ref = np.load(os.path.join(workdir, f"out_float32_{batch}.npy"))
            for impl in [i for i in impls if i != "float32"]:
                path = os.path.join(workdir, f"out_{impl}_{batch}.npy")
                if os.path.exists(path):
                    agreement[f"{impl}@{batch}"] = float(np.abs(np.load(path) - ref).max())
        results["max_abs_difference_vs_float32"] = agreement
    summary = {}
    for batch in args.batches:
        med = {impl: statistics.median(r["median_s"] for r in results["runs"][f"{impl}@{batch}"])
               for impl in impls if f"{impl}@{batch}" in results["runs"]}
        if args.crossover:
            paths = {i: med[i] for i in FORCED_PATHS}
            summary[batch] = {"median_s": med, "fastest_path": min(paths, key=paths.get),
                              "path_auto": results["path_auto"][str(batch)],
                              **{f"float32_over_{i}": med["float32"] / med[i] for i in paths}}
        else:
            summary[batch] = {"median_s": med, "path_auto": results["path_auto"][str(batch)],
                              "float32_over_ternary": med["float32"] / med["ternary"],
                              **({"torch_over_ternary": med["torch"] / med["ternary"]}
                                 if "torch" in med else {}),
                              **({"against_over_ternary": med[against] / med["ternary"]}
                                 if against in med else {})}
    results["summary"] = summary
    _common.write_json(Path(args.out), results)
    for batch, s in summary.items():
        line = f"batch {batch:>3}: " + "  ".join(f"{k} {1e6 * v:.1f} µs" for k, v in s["median_s"].items())
        if args.crossover:
            line += f"  fastest {s['fastest_path']}, auto {s['path_auto']}"
        else:
            line += (f"  [{s['path_auto']}]  float32/ternary {s['float32_over_ternary']:.2f}x"
                     + (f"  torch/ternary {s['torch_over_ternary']:.2f}x"
                        if "torch_over_ternary" in s else "")
                     + (f"  {against}/ternary {s['against_over_ternary']:.2f}x"
                        if "against_over_ternary" in s else ""))
        print(line)
    print(f"GEMM peak {results['gemm_peak_gflops']:.1f} GFLOP/s; wrote {args.out}")


if __name__ == "__main__":
    main()
