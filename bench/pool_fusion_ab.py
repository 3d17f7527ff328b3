"""A/B inside ONE process: a whole Cifar10_quick training step (``Sequential.forward``,
loss, ``Sequential.backward(input_grad=False)``, as ``fit`` does; no update) with
the ReLU fused into its neighbouring pools and without, interleaved.

    python bench/pool_fusion_ab.py [--threads 1] [--repeats 20] [--clock auto|cpu|wall]
                                   [--variants fused separate]
                                   [--out bench/results/pool_fusion_ab_NAME.json]

Variants: ``fused`` (ReLU fused into the neighbouring pools, ``layers.fusion.FUSE_PAIRS``),
``separate`` (every layer on its own, the default). Sitting 22 deleted the ``old``
variant (sitting 18's per-window pooling kernels) with ``MaxPool2D.OFFSETS`` and
``AvgPool2D.SEPARABLE``. Each repeat runs every
variant once, the order rotating; medians are reported. The clock is the process's CPU
time at one thread and wall time at more (``auto``). The same run prints the GEMM rate
of a 1024³ float32 product. Both sides share the process and its load, so the ratios
are a fair guide on a loaded machine; absolute times are not.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import gemm_peak_gflops, rotated, save_result  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--clock", choices=("auto", "cpu", "wall"), default="auto")
    parser.add_argument("--variants", nargs="+", default=["fused", "separate"],
                        choices=("fused", "separate"))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    import numpy as np

    import minidnn
    from minidnn import architectures
    from minidnn.layers import fusion
    from minidnn.losses import SoftmaxCrossEntropy
    minidnn.configure_threads(args.threads)
    use_cpu = args.clock == "cpu" or (args.clock == "auto" and args.threads == 1)
    clock = time.process_time if use_cpu else time.perf_counter
    model = architectures.build("cifar10-quick", input_shape=(3, 32, 32), seed=0)
    rng = np.random.default_rng(0)
    x = rng.random((100, 3, 32, 32), dtype=np.float32)
    y = rng.integers(0, 10, 100)
    loss = SoftmaxCrossEntropy()

    default = fusion.FUSE_PAIRS

    def setup(variant):
        fusion.FUSE_PAIRS = variant == "fused"

    def step(variant):
        setup(variant)
        t0 = clock()
        out = model.forward(x, training=True)
        _, grad = loss(out, y)
        model.backward(grad, input_grad=False)
        return clock() - t0

    variants = list(args.variants)
    for v in variants * 2:                          # warm-up: JIT, buffers
        step(v)
    times = {v: [] for v in variants}
    for r in range(args.repeats):
        for v in rotated(variants, r):
            times[v].append(step(v))
    fusion.FUSE_PAIRS = default                     # back to the default
    peak = gemm_peak_gflops(clock)
    med = {v: 1e3 * float(np.median(t)) for v, t in times.items()}
    print(f"cifar10-quick train step, batch 100, {args.threads} thread(s), "
          f"{'CPU' if use_cpu else 'wall'} clock, medians of {args.repeats}; "
          f"GEMM 1024^3 {peak:.1f} GFLOP/s")
    for v in variants:
        print(f"  {v:<9} {med[v]:7.1f} ms" + (f"   ({med[v] / med['separate']:.3f} of separate)"
                                               if "separate" in med else ""))
    if args.out:
        save_result(args.out, {"threads": args.threads, "repeats": args.repeats,
                                        "clock": "process_time" if use_cpu else "perf_counter",
                                        "gemm_peak_gflops": peak, "step_ms": med,
                                        "times_ms": {v: [1e3 * t for t in ts]
                                                     for v, ts in times.items()}}, announce=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
