"""The RBM 784x500 PCD-1 step of this tree against an older commit's, in one process,
rounds interleaved (sitting 23).

    python bench/rbm_tree_ab.py --base cfa194e --threads 1 --clock cpu --rounds 15   # under load
    python bench/rbm_tree_ab.py --base cfa194e --threads 2 --rounds 15               # quiet

``--base COMMIT``'s ``minidnn`` is extracted with ``git archive`` into a temporary folder
and imported under another package name (the package imports itself relatively), so
both steps share one process, one OpenBLAS and one data array. Each arm is the fit
loop's body for the benchmark's recipe (``train_rows`` then ``SGD.step``; batch 100,
lr 0.1, no momentum or decay, persistent chains, on the first ``--images`` MNIST
training images), from the same seeded state; a round runs ``--steps`` steps of each
arm, the order alternating. Both arms are checked to end with bit-identical
parameters, chains and Generator states (after the same number of steps). Reported:
the median step of each arm and the median of the rounds' paired ratios.
Results: bench/results/rbm_tree_ab.json (or --out).
"""
from __future__ import annotations

import argparse
import importlib
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


def import_base(commit: str, folder: Path):
    """``commit``'s minidnn package, imported as ``minidnn_base``."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "minidnn"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    (folder / "minidnn").rename(folder / "minidnn_base")
    sys.path.insert(0, str(folder))
    return importlib.import_module("minidnn_base")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="cfa194e")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "rbm_tree_ab.json")
    args = parser.parse_args(argv)

    import minidnn
    import minidnn.data
    import minidnn.optimizers
    import minidnn.pretraining
    threads = minidnn.configure_threads(args.threads)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    tmp = tempfile.TemporaryDirectory()
    base = import_base(args.base, Path(tmp.name))
    importlib.import_module("minidnn_base.pretraining")
    importlib.import_module("minidnn_base.optimizers")
    x = np.ascontiguousarray(minidnn.data.load("mnist", progress=False)
                             .train.x.reshape(-1, 784))[:args.images]
    n_batches = len(x) // 100

    def make(pkg):
        config = pkg.pretraining.PretrainConfig(
            epochs=1, lr=0.1, momentum=0.0, final_momentum=0.0, weight_decay=0.0,
            batch_size=100, k=1, persistent=True, monitor_size=0)
        rbm = pkg.pretraining.BernoulliRBM(784, 500, rng=0)
        rbm.init_from_data(x)
        rng = np.random.default_rng(0)
        return SimpleNamespace(rbm=rbm, rng=rng, opt=pkg.optimizers.SGD(config.lr),
                               config=config, holder=SimpleNamespace(layers=[rbm]),
                               state=rbm.new_train_state(x, config, rng),
                               order=rng.permutation(len(x)), cursor=0)

    def run(s, steps):
        for _ in range(steps):
            b = s.cursor % n_batches
            s.cursor += 1
            idx = np.sort(s.order[b * 100:(b + 1) * 100])
            s.rbm.train_rows(x, idx, s.rng, s.config, s.state)
            s.opt.step(s.holder)

    arms = {"this tree": make(minidnn), f"base {args.base}": make(base)}
    for s in arms.values():
        run(s, 20)                                      # compile, warm up
    times = {name: [] for name in arms}
    names = list(arms)
    for r in range(args.rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            t0 = clock()
            run(arms[name], args.steps)
            times[name].append((clock() - t0) / args.steps)
    a, b = arms.values()
    same = all(np.array_equal(a.rbm.params[k], b.rbm.params[k]) for k in a.rbm.params) \
        and np.array_equal(a.state["chain"], b.state["chain"]) \
        and a.rng.bit_generator.state == b.rng.bit_generator.state
    med = {name: statistics.median(v) for name, v in times.items()}
    ratios = [p / q for p, q in zip(*times.values())]
    faster = sum(p < q for p, q in zip(*times.values()))
    print(f"threads {args.threads}, {args.clock} clock, {args.rounds} rounds x {args.steps} steps, "
          f"{args.images} images; parameters after {a.cursor} steps: "
          f"{'SAME bits' if same else 'DIFFER'}")
    for name in arms:
        print(f"  {name:<16} median step {1e3 * med[name]:.3f} ms  "
              f"(min {1e3 * min(times[name]):.3f})")
    print(f"  median paired ratio this/base {statistics.median(ratios):.4f}; "
          f"this tree faster in {faster} of {args.rounds} rounds")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "base": args.base, "threads": threads, "clock": args.clock, "rounds": args.rounds,
        "steps": args.steps, "images": args.images, "same_bits": same,
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "note": "one process, arms interleaved; taken under load unless stated",
        "median_step_s": med, "median_paired_ratio": statistics.median(ratios),
        "faster_rounds": faster, "step_s": times}, indent=1))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
