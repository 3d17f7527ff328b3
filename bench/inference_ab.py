"""A/B of two source trees on LeNet inference: batch-1 latency (median, p99)
and batch-100 throughput (median of 5 passes over 2,000 images), alternately
in fresh processes. Each tree runs ``Sequential.infer`` where it has one
(``--call infer``, the default), else ``forward(training=False)``.

    python bench/inference_ab.py --base /tmp/base_tree [--rounds 5] [--threads 1]
                                 [--calls 1000] [--call infer|forward]
                                 [--out bench/results/inference_ab.json]

Sitting 21's ``--dense-columns`` mode (the MLP's batch-100 products split by output
columns, ``InferencePlan.DENSE_COLUMNS``, against BLAS's own threads and PyTorch, in one
process) went with the switch in sitting 22: it lost its quiet A/B, 1.426 against
0.897 ms a call (``bench/results/inference_dense_columns_ab_2threads_quiet.json``).

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


def main(argv=None) -> int:
    import numpy as np
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, help="the earlier source tree")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--call", choices=("infer", "forward"), default="infer",
                        help="Sequential.infer where the tree has it (default), or "
                             "forward(training=False)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.base is None:
        parser.error("--base is needed")
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
