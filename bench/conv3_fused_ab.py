"""Cifar10_quick's conv2 and conv3 in ONE process: the implicit passes as one parallel
region each (``Conv2D.IMPLICIT_FUSED``, on) against sitting 19's separate passes (off:
padding pass, kernels, NCHW copy pass), interleaved, medians.

    python bench/conv3_fused_ab.py [--threads 2] [--repeats 40] [--clock auto|cpu|wall]
                                   [--layers conv3 conv2] [--out bench/results/X.json]

Per repeat and side (the order alternating): ``forward(x, training=True)``,
``backward_params(dY)`` (dW + db), ``forward`` again, ``backward(dY)`` (dx, dW, db);
dx is reported as backward − dW. Both sides run the same tile kernels on the same
threads and give the same bits (checked here before timing). No BLAS runs in the
loop, so no OpenBLAS thread spins into either side. The clock is the process's CPU
time at one thread and wall time at more (``--clock`` overrides); two-thread wall
times are fair only on a quiet machine. The same run prints, for each side, each
thread's CPU time over a whole forward + backward (``/proc/self/task/*/schedstat``).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LAYERS = {"conv2": (32, 32, 16), "conv3": (32, 64, 8)}     # C in, O out, H = W
BATCH = 100


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--clock", choices=("auto", "cpu", "wall"), default="auto")
    parser.add_argument("--layers", nargs="+", default=["conv3", "conv2"], choices=sorted(LAYERS))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    import numpy as np

    import minidnn
    from bench._common import conv_pass_times, thread_cpu_split_ms
    from minidnn.layers.conv import Conv2D
    print(minidnn.configure_threads(args.threads))
    use_cpu = args.clock == "cpu" or (args.clock == "auto" and args.threads == 1)
    clock = time.process_time if use_cpu else time.perf_counter
    rng = np.random.default_rng(0)
    result = {"threads": args.threads, "repeats": args.repeats,
              "clock": ("process_time" if use_cpu else "perf_counter")
              + ", one process, interleaved", "layers": {}}
    for name in args.layers:
        C, O, H = LAYERS[name]
        x = rng.standard_normal((BATCH, C, H, H)).astype(np.float32)
        g = rng.standard_normal((BATCH, O, H, H)).astype(np.float32)
        sides = {}
        for fused in (True, False):
            layer = Conv2D(C, O, 5, padding=2, rng=0)
            layer.IMPLICIT_FUSED = fused
            sides[fused] = layer
        assert sides[True]._implicit_applies(x.shape), "no AVX2 + FMA here?"

        def run(fused):
            return conv_pass_times(sides[fused], x, g, clock)

        outs = {}
        for _ in range(3):                                    # JIT, buffers
            for fused in (True, False):
                _, dx = run(fused)
                outs[fused] = (sides[fused].forward(x, training=True), dx,
                               sides[fused].grads["W"].copy())
        same = all(np.array_equal(a, b) for a, b in zip(outs[True], outs[False]))
        times = {True: [], False: []}
        for r in range(args.repeats):
            for fused in ((True, False) if r % 2 == 0 else (False, True)):
                times[fused].append(run(fused)[0])
        rows = {}
        for fused, values in times.items():
            fwd, dW, bwd = (1e3 * float(np.median([v[i] for v in values])) for i in range(3))
            rows["fused" if fused else "separate"] = {
                "forward_ms": fwd, "dW_ms": dW, "dx_ms": bwd - dW, "backward_ms": bwd,
                "fwd_plus_bwd_ms": fwd + bwd}
        split = {}
        for fused in (True, False):
            def fwd_bwd(layer=sides[fused]):
                layer.forward(x, training=True)
                layer.backward(g)
            split["fused" if fused else "separate"] = thread_cpu_split_ms(
                fwd_bwd, max(5, args.repeats // 4))
        result["layers"][name] = {"same_bits": same, "ms": rows, "thread_cpu_ms_fwd_bwd": split}
        print(f"{name}: batch {BATCH}, {args.threads} thread(s), {result['clock']}, medians of "
              f"{args.repeats}; same bits: {same}")
        for side, row in rows.items():
            s = split[side]
            print(f"  {side:<9} fwd {row['forward_ms']:6.2f}  dx {row['dx_ms']:6.2f}  dW "
                  f"{row['dW_ms']:6.2f}  fwd+bwd {row['fwd_plus_bwd_ms']:6.2f} ms   thread CPU "
                  f"(fwd+bwd): calling {s['calling_thread_ms']:.2f} | workers "
                  + " + ".join(f"{w:.2f}" for w in s["worker_threads_ms"]))
        f, s = rows["fused"]["fwd_plus_bwd_ms"], rows["separate"]["fwd_plus_bwd_ms"]
        print(f"  fused / separate: {f / s:.3f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
