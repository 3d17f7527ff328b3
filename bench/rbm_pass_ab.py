"""The RBM step's non-GEMM passes, this tree against an older commit's kernels, in one
process, arms interleaved (sitting 23).

    python bench/rbm_pass_ab.py --base cfa194e --threads 1 --rounds 15     # ~30 s

The base's ``minidnn/kernels/rbm_kernels.py`` is read with ``git show`` into a temporary
file and imported beside this tree's. Passes, on the 784x500 PCD-1 step's shapes:

* ``visible``: the PCD visible sample (100x784): the step's kernel now
  (``_bernoulli_states_kernel``: states only, Philox rounds in registers) against the
  base's ``_sigmoid_bernoulli_kernel``; the states are checked equal;
* ``hidden``: ``_hidden_pass_kernel`` on [p0; pk] (200x500), outputs checked equal;
* ``gather``: 100 sorted random rows of the 50,000 MNIST images from cold memory
  (``gather_rows`` against ``np.take``; a 64 MiB write between calls evicts them).

CPU clock at 1 thread (``--clock wall`` for a quiet machine). Reported: median ms per
call per arm and the median of the rounds' paired ratios.
Results: bench/results/rbm_pass_ab.json (or --out).
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

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="cfa194e")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="cpu")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "rbm_pass_ab.json")
    args = parser.parse_args(argv)

    import minidnn
    threads = minidnn.configure_threads(args.threads)
    from minidnn import data
    from minidnn.kernels import rbm_kernels as new
    from minidnn.kernels.gather import gather_rows_into as new_gather_rows
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    source = subprocess.run(["git", "-C", str(ROOT), "show",
                             f"{args.base}:minidnn/kernels/rbm_kernels.py"],
                            check=True, capture_output=True, text=True).stdout
    tmp = tempfile.TemporaryDirectory()
    path = Path(tmp.name) / "rbm_kernels_base.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("rbm_kernels_base", path)
    old = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(old)

    rng = np.random.default_rng(0)
    pre0 = (3 * rng.standard_normal((100, 784))).astype(np.float32)
    p0 = (3 * rng.standard_normal((200, 500))).astype(np.float32)
    bv, c = rng.standard_normal(784).astype(np.float32), rng.standard_normal(500).astype(np.float32)
    key = np.array([11, 22, 33, 44], np.uint32)
    one, pos, neg = np.float32(1), np.float32(-0.01), np.float32(0.01)
    x = np.ascontiguousarray(data.load("mnist", progress=False).train.x.reshape(-1, 784))
    order = rng.permutation(len(x))
    evict = np.empty(16 << 20, np.float32)
    bufs = {arm: SimpleBufs() for arm in ("new", "old")}

    def visible(arm):
        b = bufs[arm]
        b.pre[...] = pre0
        if arm == "new":
            new._bernoulli_states_kernel(b.pre, bv, key, b.states, 0)
        else:
            old._sigmoid_bernoulli_kernel(b.pre, bv, key, b.states, 0, one)

    def hidden(arm):
        b = bufs[arm]
        b.p[...] = p0
        (new if arm == "new" else old)._hidden_pass_kernel(b.p, c, 100, key, b.h, pos, neg,
                                                          0, 100, 0, 100)

    cursor = [0]

    def gather(arm):
        b = bufs[arm]
        i = cursor[0] % (len(x) // 100)
        cursor[0] += 1
        idx = np.sort(order[i * 100:(i + 1) * 100])
        evict[::16] = 1.0
        t0 = clock()
        if arm == "new":
            new_gather_rows(x, idx, b.rows)
        else:
            np.take(x, idx, axis=0, out=b.rows)
        return clock() - t0

    for f in (visible, hidden):
        f("new"), f("old")
    same = np.array_equal(bufs["new"].states, bufs["old"].states) \
        and np.array_equal(bufs["new"].p, bufs["old"].p) \
        and np.array_equal(bufs["new"].h, bufs["old"].h)
    gather("new")                                   # rows of batch 0
    same = same and np.array_equal(bufs["new"].rows, np.take(x, np.sort(order[:100]), axis=0))
    times = {(name, arm): [] for name in ("visible", "hidden", "gather") for arm in ("new", "old")}
    for r in range(args.rounds):
        arms = ("new", "old") if r % 2 == 0 else ("old", "new")
        for name, f in (("visible", visible), ("hidden", hidden)):
            for arm in arms:
                t0 = clock()
                for _ in range(args.calls):
                    f(arm)
                times[name, arm].append((clock() - t0) / args.calls)
        for arm in arms:
            times["gather", arm].append(statistics.median(gather(arm) for _ in range(args.calls)))
    print(f"threads {args.threads}, {args.clock} clock, {args.rounds} rounds; outputs "
          f"{'SAME' if same else 'DIFFER'}; this tree vs {args.base} (ms per call, medians)")
    result = {}
    for name in ("visible", "hidden", "gather"):
        a, b = times[name, "new"], times[name, "old"]
        ratio = statistics.median(p / q for p, q in zip(a, b))
        result[name] = {"new_s": statistics.median(a), "base_s": statistics.median(b),
                        "median_paired_ratio": ratio, "new_raw": a, "base_raw": b}
        print(f"  {name:8s} {1e3 * statistics.median(a):.3f} vs {1e3 * statistics.median(b):.3f}"
              f"  (paired ratio {ratio:.3f}, faster in {sum(p < q for p, q in zip(a, b))} of "
              f"{args.rounds})")
    print("  (visible and hidden include a copy of their input, ~0.02 ms)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "base": args.base, "threads": threads, "clock": args.clock, "rounds": args.rounds,
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "same_outputs": same,
        "note": "one process, arms interleaved; taken under load unless stated",
        "passes": result}, indent=1))
    return 0 if same else 1


class SimpleBufs:
    def __init__(self):
        self.pre = np.empty((100, 784), np.float32)
        self.states = np.empty((100, 784), np.float32)
        self.p = np.empty((200, 500), np.float32)
        self.h = np.empty((100, 500), np.float32)
        self.rows = np.empty((100, 784), np.float32)


if __name__ == "__main__":
    sys.exit(main())
