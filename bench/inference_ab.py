"""A/B of two source trees on LeNet inference: batch-1 latency (median, p99)
and batch-100 throughput (median of 5 passes over 2,000 images), alternately
in fresh processes. Each tree runs ``Sequential.infer`` where it has one
(``--call infer``, the default), else ``forward(training=False)``.

    python bench/inference_ab.py --base /tmp/base_tree [--rounds 5] [--threads 1]
                                 [--calls 1000] [--call infer|forward]
                                 [--out bench/results/inference_ab.json]
    python bench/inference_ab.py --dense-columns [--threads 2] [--rounds 10]
                                 [--calls 200] [--no-torch] [--out ...]

``--dense-columns`` (sitting 21): how the MLP 784-500-10 ReLU of
``speed_vs_torch.py`` (and LeNet) spend the threads at batch 100 and batch 1,
in ONE process, in blocks of ``--calls`` calls per arm, the arms in rotating
order every round: ``blas`` (``InferencePlan.DENSE_COLUMNS`` off: BLAS's own
threads, sitting 20), ``columns`` (on: the products split by output columns,
BLAS at one thread per thread), ``rows`` (``SPLIT_DENSE``: the batch split by
samples), and ``torch`` (PyTorch eager under no_grad, the same weights, in a
clean subprocess per round, ``torch.set_num_threads(threads)``). Each block
starts with 20 untimed calls (the previous arm's threads settle), then every
call is timed (wall); per arm: the median and p99 over all rounds' calls, the
median of the block medians, and process CPU per call (two busy threads: about
twice the wall time). The GEMM peak (2048³ float32, NumPy) is measured in the
same run. Inputs: 2,000 random MNIST-shaped images cycled in batches of 100.

Random inputs of MNIST's shape, the model of ``architectures.build("lenet")``;
each process calls ``minidnn.configure_threads(threads)``. Wall-clock times,
interleaved (base, this, base, ...), medians over the rounds: a relative guide
on a loaded machine; ``bench/speed_vs_torch.py --only inference`` is the figure.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from _common import interleaved_ab  # noqa: E402

WORKER = r"""
import json, sys, time
import numpy as np
import minidnn
from minidnn import architectures
minidnn.configure_threads(int(sys.argv[1]))
calls = int(sys.argv[2])
model = architectures.build("lenet", input_shape=(1, 28, 28), seed=0)
# the inference path where the tree has one (Sequential.infer, sitting 18), else forward
forward = model.infer if (sys.argv[3] == "infer" and hasattr(model, "infer")) else model.forward
rng = np.random.default_rng(0)
x1 = rng.random((1, 1, 28, 28), dtype=np.float32)
xb = rng.random((2000, 1, 28, 28), dtype=np.float32)
for _ in range(50):
    forward(x1)
times = []
for _ in range(calls):
    t0 = time.perf_counter(); forward(x1); times.append(time.perf_counter() - t0)
forward(xb[:100])
passes = []
for _ in range(5):
    t0 = time.perf_counter()
    for i in range(0, len(xb), 100):
        forward(xb[i:i + 100])
    passes.append(time.perf_counter() - t0)
seconds = float(np.median(passes))
print(json.dumps({"batch1_median_ms": 1e3 * float(np.median(times)),
                  "batch1_p99_ms": 1e3 * float(np.percentile(times, 99)),
                  "batch100_images_per_s": len(xb) / seconds}))
"""


def run_once(tree: Path, threads: int, calls: int, call: str = "infer") -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree))
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                 "NUMBA_NUM_THREADS"):
        env[name] = str(threads)
    out = subprocess.run([sys.executable, "-c", WORKER, str(threads), str(calls), call], env=env,
                         cwd=tree, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


TORCH_WORKER = r"""
import json, sys, time
import numpy as np
import torch
threads, calls, blocks = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
torch.set_num_threads(threads)
init = np.load(sys.argv[4])
net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 500), torch.nn.ReLU(),
                          torch.nn.Linear(500, 10)).eval()
with torch.no_grad():
    for i, p in enumerate(net.parameters()):
        p.copy_(torch.from_numpy(init[f"p{i}"]))
xb = torch.from_numpy(np.random.default_rng(0).random((2000, 1, 28, 28), dtype=np.float32))
out = {}
with torch.no_grad():
    for batch in (100, 1):
        starts = list(range(0, len(xb), batch))
        for i in range(20):
            net(xb[starts[i % len(starts)]:][:batch])
        times, c0 = [], time.process_time()
        for i in range(calls if batch == 100 else 3 * calls):
            x = xb[starts[i % len(starts)]:][:batch]
            t0 = time.perf_counter(); net(x); times.append(time.perf_counter() - t0)
        out[str(batch)] = {"times": times, "cpu": time.process_time() - c0}
print(json.dumps(out))
"""


def dense_columns_ab(args) -> int:
    """The ``--dense-columns`` A/B (see the module docstring)."""
    import tempfile
    import time

    import numpy as np

    sys.path.insert(0, str(ROOT))
    import minidnn
    import minidnn.inference as inference
    from minidnn import architectures
    from _common import clean_env, gemm_peak_gflops, rotated
    setup = minidnn.configure_threads(args.threads)
    mlp = architectures.build("mlp:784-500-10:relu", input_shape=(1, 28, 28), seed=0)
    lenet = architectures.build("lenet", input_shape=(1, 28, 28), seed=0)
    xb = np.random.default_rng(0).random((2000, 1, 28, 28), dtype=np.float32)
    init = Path(tempfile.mkdtemp()) / "init_mlp.npz"
    dense = [layer for layer in mlp.layers if hasattr(layer, "in_features")]
    arrays = {}
    for d in dense:     # torch's Linear: weight (out, in), bias
        arrays[f"p{len(arrays)}"] = np.ascontiguousarray(d.params["W"].T)
        arrays[f"p{len(arrays)}"] = d.params["b"]
    np.savez(init, **arrays)
    plan = inference.InferencePlan(mlp.layers)
    lenet_plan = inference.InferencePlan(lenet.layers)
    reference = plan(xb[:100])
    arms = ["blas", "columns", "rows"] + ([] if args.no_torch else ["torch"])
    times = {arm: {"100": [], "1": [], "lenet 100": [], "lenet 1": []} for arm in arms}
    cpu = {arm: {"100": 0.0, "1": 0.0, "lenet 100": 0.0, "lenet 1": 0.0} for arm in arms}
    block_medians = {arm: {"100": [], "1": []} for arm in arms}

    def set_arm(arm):
        inference.InferencePlan.DENSE_COLUMNS = arm == "columns"
        inference.SPLIT_DENSE = arm == "rows"

    def block(f, batch, n):
        starts = list(range(0, len(xb), batch))
        for i in range(20):
            f(xb[starts[i % len(starts)]:][:batch])
        out, c0 = [], time.process_time()
        for i in range(n):
            x = xb[starts[i % len(starts)]:][:batch]
            t0 = time.perf_counter()
            f(x)
            out.append(time.perf_counter() - t0)
        return out, time.process_time() - c0

    peak = gemm_peak_gflops(time.perf_counter, n=2048, repeats=3)
    print(f"configure_threads: {setup}\nGEMM peak (2048^3, NumPy, {args.threads} threads): "
          f"{peak:.1f} GFLOP/s", flush=True)
    for r in range(args.rounds):
        for arm in rotated(arms, r):
            if arm == "torch":
                done = subprocess.run(
                    [sys.executable, "-c", TORCH_WORKER, str(args.threads), str(args.calls),
                     "", str(init)], env=clean_env(args.threads), check=True,
                    capture_output=True, text=True)
                got = json.loads(done.stdout.strip().splitlines()[-1])
                for batch in ("100", "1"):
                    times[arm][batch] += got[batch]["times"]
                    cpu[arm][batch] += got[batch]["cpu"]
                    block_medians[arm][batch].append(float(np.median(got[batch]["times"])))
                continue
            set_arm(arm)
            for batch, n in (("100", args.calls), ("1", 3 * args.calls)):
                t, c = block(plan, int(batch), n)
                times[arm][batch] += t
                cpu[arm][batch] += c
                block_medians[arm][batch].append(float(np.median(t)))
            for batch, n in (("lenet 100", max(5, args.calls // 10)), ("lenet 1", args.calls)):
                t, c = block(lenet_plan, int(batch.split()[1]), n)
                times[arm][batch] += t
                cpu[arm][batch] += c
            np.testing.assert_allclose(plan(xb[:100]), reference, rtol=1e-5, atol=1e-5)
        print(f"round {r + 1}/{args.rounds}: batch 100 " + ", ".join(
            f"{arm} {1e3 * block_medians[arm]['100'][-1]:.3f}" for arm in arms) + " ms",
            flush=True)
    set_arm("columns" if inference.InferencePlan.DENSE_COLUMNS else "blas")
    summary = {"mode": "dense-columns", "threads": args.threads, "rounds": args.rounds,
               "calls": args.calls, "gemm_peak_gflops": peak, "configure_threads": str(setup),
               "clock": "wall, blocks per arm in one process (torch: a clean subprocess)",
               "command": "python bench/inference_ab.py " + " ".join(sys.argv[1:]), "arms": {}}
    flops = 2 * 100 * (784 * 500 + 500 * 10)
    print(f"{'arm':<8} {'batch-100 median':>16} {'p99':>8} {'block med':>10} {'CPU/call':>9} "
          f"{'GFLOP/s':>8} {'batch-1 median':>15} {'p99':>8} {'LeNet 100':>10} {'LeNet 1':>8}")
    for arm in arms:
        row = {}
        for batch, values in times[arm].items():
            if not values:
                continue
            row[batch] = {"median_ms": 1e3 * float(np.median(values)),
                          "p99_ms": 1e3 * float(np.percentile(values, 99)),
                          "cpu_per_call_ms": 1e3 * cpu[arm][batch] / len(values),
                          "calls": len(values)}
            if batch in block_medians[arm]:
                row[batch]["block_median_ms"] = 1e3 * float(np.median(block_medians[arm][batch]))
        summary["arms"][arm] = row
        b100, b1 = row["100"], row["1"]
        lenet100 = row.get("lenet 100", {}).get("median_ms", float("nan"))
        lenet1 = row.get("lenet 1", {}).get("median_ms", float("nan"))
        print(f"{arm:<8} {b100['median_ms']:13.3f} ms {b100['p99_ms']:8.3f} "
              f"{b100['block_median_ms']:10.3f} {b100['cpu_per_call_ms']:9.3f} "
              f"{flops / b100['median_ms'] / 1e6:8.1f} {b1['median_ms']:12.4f} ms "
              f"{b1['p99_ms']:8.4f} {lenet100:10.3f} {lenet1:8.4f}")
    if "torch" in arms:
        for arm in ("blas", "columns", "rows"):
            summary["arms"][arm]["ratio_to_torch_batch100"] = (
                summary["arms"][arm]["100"]["median_ms"] / summary["arms"]["torch"]["100"]["median_ms"])
            print(f"{arm} / torch, batch-100 median: "
                  f"{summary['arms'][arm]['ratio_to_torch_batch100']:.3f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=1) + "\n")
        print(f"written {args.out}")
    return 0


def main(argv=None) -> int:
    import numpy as np
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, help="the earlier source tree")
    parser.add_argument("--dense-columns", action="store_true",
                        help="the in-process A/B of InferencePlan.DENSE_COLUMNS (docstring)")
    parser.add_argument("--no-torch", action="store_true",
                        help="--dense-columns without the PyTorch arm")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--call", choices=("infer", "forward"), default="infer",
                        help="Sequential.infer where the tree has it (default), or "
                             "forward(training=False)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.dense_columns:
        if args.calls == 1000:      # the default of the tree A/B
            args.calls = 200
        if args.rounds == 5:
            args.rounds = 10
        return dense_columns_ab(args)
    if args.base is None:
        parser.error("--base is needed (or --dense-columns)")
    sides, runs = interleaved_ab(
        parser, args.base, args.rounds, lambda tree: run_once(tree, args.threads, args.calls, args.call),
        lambda runs: ", ".join(f"{n} {runs[n][-1]['batch1_median_ms']:.3f} ms" for n in runs))
    summary = {"threads": args.threads, "rounds": args.rounds, "calls": args.calls,
               "base": str(sides["base"]), "clock": "wall, interleaved fresh processes"}
    for name in sides:
        summary[name] = {key: float(np.median([run[key] for run in runs[name]]))
                         for key in runs[name][0]}
        s = summary[name]
        print(f"{name}: batch-1 median {s['batch1_median_ms']:.3f} ms, p99 "
              f"{s['batch1_p99_ms']:.3f} ms, batch-100 {s['batch100_images_per_s']:.0f} img/s")
    if args.out:
        args.out.write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
