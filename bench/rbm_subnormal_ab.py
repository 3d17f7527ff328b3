"""In-process A/B of the RBM σ kernels that store no subnormal probabilities (sitting 22)
against the kernels of an older commit, on the 784x500 PCD-1 step, interleaved.

    python bench/rbm_subnormal_ab.py --threads 1 --clock cpu                      # under load
    python bench/rbm_subnormal_ab.py --threads 2 --rounds 7                       # quiet, ~2 min
    python bench/rbm_subnormal_ab.py --momentum 0 --weight-decay 0                # the benchmark's recipe

The step stores hidden probabilities scaled by ∓1/batch; for a unit far below threshold
σ ≈ 1e-38, and σ/100 is subnormal in float32, which sends the GEMMs that read the
statistics (the gradient [v0; vk]ᵀ[p0; pk], the bias GEMVs) down the CPU's slow path.
This tree's kernels store 0 there (``rbm_kernels.scaled_probabilities_numpy``). The old
kernels come from ``git show COMMIT:minidnn/kernels/rbm_kernels.py`` (``--against``,
default 5c0a50c) loaded as a module of its own; the step (``BernoulliRBM._lean_step``) is
this tree's, with its three kernel names pointed at one module or the other.

Each arm trains its own RBM from the same start (lr 0.1, ``--momentum``, ``--weight-decay``,
the DBN default's final momentum 0.9 and decay 0.002 unless given) on the first
``--images`` MNIST images; rounds of ``--steps`` steps alternate the arms. Printed per
round and arm: ms a step and the share of subnormal entries in the stored statistics.
Results: bench/results/rbm_subnormal_ab.json (or --out).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

KERNELS = ("_hidden_pass_kernel", "_sigmoid_bernoulli_kernel", "_sigmoid_bias_kernel")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--weight-decay", type=float, default=0.002)
    parser.add_argument("--against", default="5c0a50c")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "rbm_subnormal_ab.json")
    args = parser.parse_args(argv)

    import minidnn
    threads = minidnn.configure_threads(args.threads)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    from minidnn import data
    from minidnn.optimizers import SGD
    from minidnn.pretraining import BernoulliRBM, PretrainConfig
    from minidnn.pretraining import rbm as rbm_module

    source = subprocess.run(["git", "-C", str(ROOT), "show",
                             f"{args.against}:minidnn/kernels/rbm_kernels.py"],
                            capture_output=True, text=True, check=True).stdout
    tmp = tempfile.TemporaryDirectory(prefix="rbm-kernels-")
    path = Path(tmp.name) / "rbm_kernels_old.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("rbm_kernels_old", path)
    old = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(old)
    from minidnn.kernels import rbm_kernels as new
    modules = {"this tree": new, args.against: old}

    x = np.ascontiguousarray(data.load("mnist", progress=False).train.x.reshape(-1, 784))[:args.images]
    config = PretrainConfig(epochs=1, lr=0.1, momentum=args.momentum, final_momentum=args.momentum,
                            weight_decay=args.weight_decay, batch_size=100, k=1, persistent=True,
                            monitor_size=0)
    n_batches = len(x) // 100
    tiny = np.finfo(np.float32).tiny

    def make():
        rbm = BernoulliRBM(784, 500, rng=0)
        rbm.init_from_data(x)
        rng = np.random.default_rng(0)
        return SimpleNamespace(rbm=rbm, rng=rng, opt=SGD(config.lr, args.momentum, args.weight_decay),
                               holder=SimpleNamespace(layers=[rbm]),
                               state=rbm.new_train_state(x, config, rng),
                               order=rng.permutation(len(x)), cursor=0)

    def use(module):
        for name in KERNELS:
            setattr(rbm_module, name, getattr(module, name))

    def step(s):
        b = s.cursor % n_batches
        s.cursor += 1
        idx = np.sort(s.order[b * 100:(b + 1) * 100])
        s.rbm.train_rows(x, idx, s.rng, config, s.state)
        s.opt.step(s.holder)

    states = {name: make() for name in modules}
    try:
        for name, module in modules.items():        # compile both
            use(module)
            step(make())
        times = {name: [] for name in modules}
        shares = {name: [] for name in modules}
        names = list(modules)
        for r in range(args.rounds):
            for name in (names if r % 2 == 0 else names[::-1]):
                use(modules[name])
                s = states[name]
                t0 = clock()
                for _ in range(args.steps):
                    step(s)
                times[name].append(1e3 * (clock() - t0) / args.steps)
                p = s.rbm._lean_buffers(100, 100).p
                shares[name].append(float(np.mean((p != 0) & (np.abs(p) < tiny))))
                print(f"round {r + 1} {name:<10} {times[name][-1]:7.3f} ms a step, subnormal "
                      f"share of the statistics {shares[name][-1]:.4f}", flush=True)
    finally:
        use(new)
        tmp.cleanup()
    summary = {name: {"ms_per_step_median": statistics.median(ts), "round_ms": ts,
                      "subnormal_share": shares[name]} for name, ts in times.items()}
    a, b = names
    ratio = statistics.median(x / y for x, y in zip(times[a], times[b]))
    print(f"threads {args.threads}, clock {args.clock}, momentum {args.momentum}, weight decay "
          f"{args.weight_decay}: median {a} {summary[a]['ms_per_step_median']:.3f} ms, {b} "
          f"{summary[b]['ms_per_step_median']:.3f} ms a step; median round ratio {ratio:.3f}")
    diff = float(np.max(np.abs(states[a].rbm.params["W"] - states[b].rbm.params["W"])))
    print(f"largest |W difference| between the arms after {args.rounds * args.steps} steps: {diff:.3g}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "threads": threads, "clock": args.clock, "momentum": args.momentum,
        "weight_decay": args.weight_decay, "against": args.against, "rounds": args.rounds,
        "steps": args.steps, "images": len(x),
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "note": "one process, arms interleaved; taken under load unless stated",
        "summary": summary, "median_round_ratio": ratio, "max_abs_W_difference": diff}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
