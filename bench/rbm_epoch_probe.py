"""One 784x500 RBM PCD-1 epoch (the ``rbm`` workload of speed_vs_torch.py): time, CPU time
and peak RSS, for this tree and optionally an older commit, in clean interleaved processes.

    python bench/rbm_epoch_probe.py                          # this tree, 1 thread, 3 runs
    python bench/rbm_epoch_probe.py --against e188c2a        # A/B against a commit
    python bench/rbm_epoch_probe.py --threads 2 --against 5c0a50c --against-monitor-size 0

Each run is its own subprocess (environment built from scratch, as speed_vs_torch.py
does) with the same warm-up, data (the 50,000 MNIST training images), PCD-1 recipe
(batch 100, lr 0.1, no momentum or decay) and seed. ``--against COMMIT`` extracts that
commit with ``git archive`` into a temporary folder and alternates the two trees run by
run. Peak RSS is the worker's VmHWM. The older tree runs with the per-epoch monitors on
(it has no ``monitor_size=0``); ``--monitor-size 1000`` puts them on in this tree too,
for like with like. CPU seconds (``time.process_time``) are the steadier figure on a
loaded machine; wall seconds are the benchmark's. Results: bench/results/rbm_epoch_probe.json.
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

ROOT = Path(__file__).resolve().parent.parent

WORKER = r"""
import json, sys, time, inspect
import numpy as np
import minidnn
minidnn.configure_threads(int(sys.argv[1]))
from minidnn import data
from minidnn.pretraining import BernoulliRBM, PretrainConfig
x = np.ascontiguousarray(data.load("mnist", progress=False).train.x.reshape(-1, 784))
kw = dict(epochs=1, lr=0.1, weight_decay=0.0, momentum=0.0, final_momentum=0.0,
          batch_size=100, k=1, persistent=True)
if int(sys.argv[2]) != 1000:
    kw["monitor_size"] = int(sys.argv[2])
config = PretrainConfig(**kw)
BernoulliRBM(784, 16, rng=0).fit(x[:200], config, seed=0)      # JIT warm-up, as the benchmark
rbm = BernoulliRBM(784, 500, rng=0)
t0, c0 = time.perf_counter(), time.process_time()
history = rbm.fit(x, config, seed=0)
seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
rss = [int(l.split()[1]) / 1024 for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "peak_rss_mib": rss,
                  "gflops": 5 * 2 * 784 * 500 * len(x) / seconds / 1e9}))
"""


def clean_env(threads: int, tree: Path) -> dict:
    env = {"PATH": os.pathsep.join([os.path.dirname(sys.executable), "/usr/bin", "/bin"]),
           "HOME": os.environ.get("HOME", "/tmp"), "LANG": "C.UTF-8",
           "PYTHONPATH": str(tree), "PYTHONHASHSEED": "0"}
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[var] = str(threads)
    for var in ("MINIDNN_CACHE", "MINIDNN_DATA"):
        if os.environ.get(var):
            env[var] = os.environ[var]
    return env


def run(tree: Path, threads: int, monitor_size: int) -> dict:
    """One epoch in a clean process."""
    done = subprocess.run([sys.executable, "-c", WORKER, str(threads), str(monitor_size)],
                          env=clean_env(threads, tree), capture_output=True, text=True, cwd=tree)
    if done.returncode != 0:
        raise RuntimeError(f"worker in {tree} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--monitor-size", type=int, default=0,
                        help="this tree's monitor_size (0 = off, as the benchmark; 1000 = the "
                             "default, what an older tree always does)")
    parser.add_argument("--against", help="a commit to compare with (git archive)")
    parser.add_argument("--against-monitor-size", type=int, default=1000,
                        help="the older tree's monitor_size (1000: its default, for trees "
                             "before monitor_size=0 existed; 0 for sitting 15's and later)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "rbm_epoch_probe.json")
    args = parser.parse_args(argv)
    trees = {"this tree": (ROOT, args.monitor_size)}
    with tempfile.TemporaryDirectory(prefix="rbm-probe-") as tmp:
        if args.against:
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.against],
                                     capture_output=True, check=True).stdout
            subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
            trees[args.against] = (Path(tmp), args.against_monitor_size)
        runs = {name: [] for name in trees}
        for r in range(args.repeats):
            for name in (list(trees) if r % 2 == 0 else list(trees)[::-1]):
                tree, monitor = trees[name]
                result = run(tree, args.threads, monitor)
                runs[name].append(result)
                print(f"{name:<12} run {r + 1}: {result['seconds']:.2f} s wall, "
                      f"{result['cpu_seconds']:.2f} s CPU, {result['gflops']:.1f} GFLOP/s, "
                      f"peak RSS {result['peak_rss_mib']:.0f} MiB", flush=True)
    summary = {name: {key: statistics.median(r[key] for r in results)
                      for key in ("seconds", "cpu_seconds", "peak_rss_mib", "gflops")}
               for name, results in runs.items()}
    for name, row in summary.items():
        print(f"median {name:<12} {row['seconds']:.2f} s wall, {row['cpu_seconds']:.2f} s CPU, "
              f"peak RSS {row['peak_rss_mib']:.0f} MiB")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"threads": args.threads, "monitor_size": args.monitor_size,
                                    "against": args.against,
                                    "against_monitor_size": args.against_monitor_size, "when": time.strftime("%Y-%m-%d %H:%M"),
                                    "summary": summary, "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
