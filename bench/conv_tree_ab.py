"""A/B of two source trees (e.g. main before and after a merge) on a convnet's training
step: ``minidnn.fit`` for one epoch of random data of the real shape, each arm in its
own child process importing minidnn from its own tree, the arms alternated.

    python bench/conv_tree_ab.py --a /tmp/pre --b /work/main [--arch lenet|cifar10-quick]
                                 [--threads 2] [--steps 150] [--rounds 4]
                                 [--out bench/results/conv_tree_ab_NAME.json]

For a change that cannot be switched off in one process (a kernel replaced inside a
dispatch: sitting 22's 2×2 max pool). A tree is any checkout of the repository (``git
worktree add /tmp/pre <commit>``). Each child warms up (JIT, 20 steps), then times
``--steps`` steps of batch 64 (LeNet) or 100 (Cifar10_quick), SGD with momentum, as
``bench/speed_vs_torch.py``'s recipe; it reports wall ms per step and the process's CPU
ms per step. Medians over the rounds are printed with their ratio b / a. Wall time at
more than one thread: a guide only on a loaded machine.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import sys, time, json
sys.path.insert(0, {tree!r})
import numpy as np, minidnn
from minidnn import architectures
assert minidnn.__file__.startswith({tree!r}), minidnn.__file__
minidnn.configure_threads({threads})
shape, batch = {shape!r}, {batch}
rng = np.random.default_rng(0)
x = rng.random(({steps} * batch,) + shape, dtype=np.float32)
y = rng.integers(0, 10, len(x))
def run(n):
    model = architectures.build({arch!r}, input_shape=shape, seed=0)
    opt = minidnn.SGD(lr=0.01, momentum=0.9, weight_decay=5e-4)
    t0, c0 = time.perf_counter(), time.process_time()
    minidnn.fit(model, (x[:n], y[:n]), epochs=1, batch_size=batch, optimizer=opt, seed=0,
                progress=False, log=None)
    return 1e3 * (time.perf_counter() - t0) / (n // batch), \
        1e3 * (time.process_time() - c0) / (n // batch)
run(20 * batch)
wall, cpu = run(len(x))
print(json.dumps({{"wall_ms": wall, "cpu_ms": cpu}}))
"""

SETUPS = {"lenet": ((1, 28, 28), 64), "cifar10-quick": ((3, 32, 32), 100)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", required=True, help="tree A (the baseline)")
    parser.add_argument("--b", required=True, help="tree B")
    parser.add_argument("--arch", choices=sorted(SETUPS), default="lenet")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    shape, batch = SETUPS[args.arch]
    runs = {"a": [], "b": []}
    for r in range(args.rounds):
        for arm in (("a", "b") if r % 2 == 0 else ("b", "a")):
            tree = str(Path(getattr(args, arm)).resolve())
            code = CHILD.format(tree=tree, threads=args.threads, shape=shape, batch=batch,
                                steps=args.steps, arch=args.arch)
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                 check=True, cwd=tree)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            runs[arm].append(result)
            print(f"round {r + 1} {arm}: {result['wall_ms']:.2f} ms/step wall, "
                  f"{result['cpu_ms']:.2f} CPU", flush=True)
    med = {arm: {k: statistics.median(x[k] for x in runs[arm]) for k in ("wall_ms", "cpu_ms")}
           for arm in runs}
    print(f"{args.arch}, {args.threads} thread(s), medians of {args.rounds}: "
          f"A {med['a']['wall_ms']:.2f} / B {med['b']['wall_ms']:.2f} ms a step wall "
          f"(B/A {med['b']['wall_ms'] / med['a']['wall_ms']:.3f}); CPU "
          f"{med['a']['cpu_ms']:.2f} / {med['b']['cpu_ms']:.2f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"a": args.a, "b": args.b, "arch": args.arch,
                                        "threads": args.threads, "steps": args.steps,
                                        "runs": runs, "medians": med}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
