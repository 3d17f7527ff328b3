"""In-process A/Bs behind the inference plan's choices (``minidnn/inference.py``).

    python bench/inference_kernels_ab.py [--threads 1] [--repeats 100] [--clock cpu|wall]
                                         [--out bench/results/inference_kernels_ab.json]

One process, the variants timed alternately call by call (order reversed every
other repeat), medians: a guide under load, not a speed figure. The process's
thread caps come from ``minidnn.configure_threads(--threads)``; run it with
OMP/OPENBLAS/NUMBA_NUM_THREADS set to the same number.

* ``im2row``: LeNet's conv2 rows of 8 samples (512 × 500) from the padded NHWC
  input, ``kernels.im2col._im2row_kernel`` (slice assignments) against
  ``kernels.fused_inference._im2row_nhwc_kernel`` (element loops), both serial.
* ``chunk``: the whole LeNet conv2 + pool stage at batch 50 with
  ``inference.CHUNK_ROWS`` = 64·S for S = 1, 2, 4, 8, 16, 50 samples.
* ``lenet``: LeNet at batch 100, ``forward(training=False)`` against ``infer``;
  at more than one thread also the thread CPU time of each part of the split.
* ``mlp``: the MLP at batch 100, ``forward`` against ``infer`` (BLAS's own threads;
  sitting 22 deleted ``SPLIT_DENSE``, the batch split over threads, after its quiet
  A/B: 1.451 against 0.897 ms a call, ``results/inference_dense_columns_ab_2threads_quiet.json``).
* ``--blocks``: instead of alternating call by call, blocks of calls of one
  variant after another (forward, infer, forward), wall clock: LeNet at batches
  1, 10 and 100 and the MLP at 100. At 2 threads, alternating calls leave each
  variant the other's thread state, which blocks avoid.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def ab(fns: dict, repeats: int, clock, warm: int = 5) -> dict:
    import numpy as np
    for f in fns.values():
        for _ in range(warm):
            f()
    times = {k: [] for k in fns}
    keys = list(fns)
    for r in range(repeats):
        for k in (keys if r % 2 == 0 else keys[::-1]):
            t0 = clock()
            fns[k]()
            times[k].append(clock() - t0)
    out = {k: 1e3 * float(np.median(v)) for k, v in times.items()}
    for k, v in out.items():
        print(f"  {k:<44} {v:9.3f} ms", flush=True)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    parser.add_argument("--blocks", action="store_true",
                        help="blocks of calls per variant, wall clock (see the docstring)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.blocks:
        return blocks(args)
    import numpy as np

    import minidnn
    import minidnn.inference as inference
    from minidnn import architectures
    from minidnn.kernels import fused_inference as fused
    from minidnn.kernels.im2col import _im2row_kernel
    from minidnn.kernels.workers import serial_nogil
    setup = minidnn.configure_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    rng = np.random.default_rng(0)
    result = {"threads": args.threads, "repeats": args.repeats, "clock": args.clock,
              "configure_threads": str(setup),
              "command": "python bench/inference_kernels_ab.py " + " ".join(
                  argv if argv is not None else sys.argv[1:])}

    print("im2row, LeNet conv2, 8 samples:")
    x_pad = rng.random((8, 12, 12, 20), dtype=np.float32)
    rows_a = np.empty((512, 500), np.float32)
    rows_b = np.empty_like(rows_a)
    slices, loops = serial_nogil(_im2row_kernel), serial_nogil(fused._im2row_nhwc_kernel)
    slices(x_pad, 5, 5, 1, 1, 8, 8, rows_a)
    loops(x_pad, 5, 5, 1, 1, 8, 8, rows_b)
    assert np.array_equal(rows_a, rows_b)
    result["im2row"] = ab({"im2col._im2row_kernel (slice copies)":
                           lambda: slices(x_pad, 5, 5, 1, 1, 8, 8, rows_a),
                           "fused._im2row_nhwc_kernel (element loops)":
                           lambda: loops(x_pad, 5, 5, 1, 1, 8, 8, rows_b)},
                          args.repeats * 5, clock)

    print("LeNet conv2 + pool stage, batch 50, by chunk:")
    lenet = architectures.build("lenet", seed=0)
    x50 = rng.random((50, 1, 28, 28), dtype=np.float32)
    lenet.infer(x50)
    plan = lenet._inference_plan
    scratch = plan._scratch_for(0)
    value = plan.stages[0].run(x50, scratch, 0, plan._targets[0])

    def stage_with(samples):
        def run():
            inference.CHUNK_ROWS = 64 * samples
            plan.stages[1].run(value, scratch, 1, None)
        return run
    chunk_rows = inference.CHUNK_ROWS
    result["chunk"] = ab({f"{s} samples ({64 * s} rows)": stage_with(s)
                          for s in (1, 2, 4, 8, 16, 50)}, args.repeats, clock)
    inference.CHUNK_ROWS = chunk_rows

    print("LeNet, batch 100:")
    x100 = rng.random((100, 1, 28, 28), dtype=np.float32)
    result["lenet"] = ab({"forward(training=False)": lambda: lenet.forward(x100, False),
                          "infer": lambda: lenet.infer(x100)}, args.repeats, clock)
    plan = lenet._inference_plan
    if plan.threads_for(100) > 1:
        parts = {}
        run = plan._run

        def timed(x, part):
            t0 = time.thread_time()
            out = run(x, part)
            parts.setdefault(part, []).append(time.thread_time() - t0)
            return out
        plan._run = timed
        for _ in range(args.repeats):
            lenet.infer(x100)
        del plan._run
        result["lenet_part_thread_cpu_ms"] = {str(p): 1e3 * float(np.median(v))
                                              for p, v in parts.items()}
        print("  thread CPU per part of the split: " + ", ".join(
            f"part {p} {v:.3f} ms" for p, v in result["lenet_part_thread_cpu_ms"].items()))

    print("MLP 784-500-10, batch 100:")
    mlp = architectures.build("mlp:784-500-10:relu", seed=0)
    xm = rng.random((100, 784), dtype=np.float32)
    result["mlp"] = ab({"forward(training=False)": lambda: mlp.forward(xm, False),
                        "infer": lambda: mlp.infer(xm)}, args.repeats * 3, clock)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"written {args.out}")
    return 0


def blocks(args) -> int:
    import numpy as np

    import minidnn
    import minidnn.inference as inference
    from minidnn import architectures
    setup = minidnn.configure_threads(args.threads)
    rng = np.random.default_rng(0)

    def block(f, n):
        for _ in range(5):
            f()
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            f()
            times.append(time.perf_counter() - t0)
        return 1e3 * float(np.median(times))
    result = {"threads": args.threads, "repeats": args.repeats, "clock": "wall, blocks",
              "configure_threads": str(setup), "command": "python bench/inference_kernels_ab.py "
              + " ".join(sys.argv[1:]), "lenet": {}, "mlp": {}}
    lenet = architectures.build("lenet", seed=0)
    for batch, n in ((1, args.repeats * 3), (10, args.repeats), (100, max(10, args.repeats // 2))):
        x = rng.random((batch, 1, 28, 28), dtype=np.float32)
        row = {"forward_ms": block(lambda: lenet.forward(x, False), n),
               "infer_ms": block(lambda: lenet.infer(x), n),
               "forward_again_ms": block(lambda: lenet.forward(x, False), n)}
        result["lenet"][str(batch)] = row
        print(f"LeNet batch {batch}: forward {row['forward_ms']:.3f}, infer {row['infer_ms']:.3f}, "
              f"forward {row['forward_again_ms']:.3f} ms", flush=True)
    mlp = architectures.build("mlp:784-500-10:relu", seed=0)
    xm = rng.random((100, 784), dtype=np.float32)
    for _ in range(2):
        row = {"forward_ms": block(lambda: mlp.forward(xm, False), args.repeats * 3),
               "infer_ms": block(lambda: mlp.infer(xm), args.repeats * 3)}
        result["mlp"].setdefault("runs", []).append(row)
        print(f"MLP batch 100: forward {row['forward_ms']:.3f}, "
              f"infer {row['infer_ms']:.3f} ms", flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
