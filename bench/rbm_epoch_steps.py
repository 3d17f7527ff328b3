"""Where the RBM 784x500 PCD-1 epoch's time goes between its steps (sitting 23): one
``fit`` of speed_vs_torch.py's ``rbm`` workload with every step timed.

    python bench/rbm_epoch_steps.py --threads 2 --repeats 2      # quiet, ~20 s

The quiet run of sitting 23 measured the epoch at 6.69 and 7.82 s (speed_vs_torch.py)
while ``rbm_step_trace.py`` put the step at ~9.1 ms (500 steps: 4.6 s). This script says
whether the epoch is the sum of its steps: the fit's wall time beside the sum of
``train_rows`` and ``SGD.step`` (timed by wrapping them), the median and 90th percentile
step, and the mean step of each block of 50 (a slow start, a slow stretch under load).
Same data (the 50,000 MNIST training images), recipe (batch 100, lr 0.1, no momentum or
decay, persistent chains, monitors off), warm-up and seed as the benchmark.
Results: bench/results/rbm_epoch_steps.json (or --out).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path,
                        default=ROOT / "bench" / "results" / "rbm_epoch_steps.json")
    args = parser.parse_args(argv)

    import minidnn
    threads = minidnn.configure_threads(args.threads)
    from minidnn import data
    from minidnn.optimizers import SGD
    from minidnn.pretraining import BernoulliRBM, PretrainConfig
    x = np.ascontiguousarray(data.load("mnist", progress=False).train.x.reshape(-1, 784))
    config = PretrainConfig(epochs=1, lr=0.1, weight_decay=0.0, momentum=0.0, final_momentum=0.0,
                            batch_size=100, k=1, persistent=True, monitor_size=0)
    BernoulliRBM(784, 16, rng=0).fit(x[:200], config, seed=0)            # JIT warm-up
    runs = []
    plain_step = SGD.step
    for repeat in range(args.repeats):
        rbm = BernoulliRBM(784, 500, rng=0)
        steps, updates = [], []
        train_rows = rbm.train_rows

        def timed_rows(*a, **k):
            t0 = time.perf_counter()
            out = train_rows(*a, **k)
            steps.append(time.perf_counter() - t0)
            return out

        def timed_update(self, holder):
            t0 = time.perf_counter()
            plain_step(self, holder)
            updates.append(time.perf_counter() - t0)

        rbm.train_rows = timed_rows
        SGD.step = timed_update
        try:
            t0 = time.perf_counter()
            rbm.fit(x, config, seed=0)
            fit = time.perf_counter() - t0
        finally:
            SGD.step = plain_step
        whole = np.array(steps) + np.array(updates)
        blocks = [float(b.mean()) for b in np.array_split(whole, max(1, len(whole) // 50))]
        runs.append({"fit_s": fit, "steps": len(whole), "sum_steps_s": float(whole.sum()),
                     "sum_train_rows_s": float(np.sum(steps)), "sum_sgd_s": float(np.sum(updates)),
                     "median_step_s": float(np.median(whole)),
                     "p90_step_s": float(np.percentile(whole, 90)), "block_mean_step_s": blocks})
        print(f"repeat {repeat + 1}: fit {fit:.3f} s; {len(whole)} steps sum {whole.sum():.3f} s "
              f"(train_rows {np.sum(steps):.3f}, SGD {np.sum(updates):.3f}); outside the steps "
              f"{fit - whole.sum():.3f} s; step median {1e3 * np.median(whole):.2f} ms, "
              f"p90 {1e3 * np.percentile(whole, 90):.2f} ms")
        print("  mean step per block of 50 (ms): " + " ".join(f"{1e3 * b:.2f}" for b in blocks))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "threads": threads, "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "note": "taken under load unless stated", "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
