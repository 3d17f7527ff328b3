"""The two im2row kernels' inner copies, A/B in one process (sitting 20): the slice
assignment of ``kernels.im2col._im2row_kernel`` against the element loop over 1-D views
of ``kernels.fused_inference._im2row_nhwc_kernel`` — the same layout, the same result.

    python bench/im2row_copy_ab.py [--threads 1] [--repeats 200]

Geometries (channels-last, zero-padded, float32): LeNet's conv2 (20 -> 5x5 on 12x12,
a batch of 64 and the inference plan's chunk of 8), Cifar10_quick's conv2 and conv3
(32 channels, 5x5, padding 2, batch 100). Each repeat runs both kernels in turn
(order rotating), their serial builds timed by this thread's CPU clock; medians in µs.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import rotated  # noqa: E402

#: name -> (N, C, H (= W, padded), kernel)
GEOMETRIES = {"lenet conv2, batch 64": (64, 20, 12, 5), "lenet conv2, chunk 8": (8, 20, 12, 5),
              "cifar conv2, batch 100": (100, 32, 20, 5), "cifar conv3, batch 100": (100, 32, 12, 5)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args(argv)
    import numpy as np

    import minidnn
    from minidnn.kernels.fused_inference import _im2row_nhwc_kernel
    from minidnn.kernels.im2col import _im2row_kernel, kernel_for
    minidnn.configure_threads(args.threads)
    rng = np.random.default_rng(0)
    print(f"µs, median of {args.repeats} (thread CPU clock, {args.threads} thread(s)): "
          "slice copy (im2col) / element loop (fused_inference)")
    for name, (N, C, Hp, k) in GEOMETRIES.items():
        x_pad = rng.random((N, Hp, Hp, C), dtype=np.float32)
        OH = OW = Hp - k + 1
        outs = {v: np.empty((N * OH * OW, k * k * C), np.float32) for v in ("slice", "loop")}
        # the serial builds (kernel_for below SERIAL_BELOW): all the work on this thread,
        # which the thread clock then sees (a parallel build's worker thread it does not)
        kernels = {"slice": kernel_for(_im2row_kernel, 0),
                   "loop": kernel_for(_im2row_nhwc_kernel, 0)}
        for v in kernels:
            kernels[v](x_pad, k, k, 1, 1, OH, OW, outs[v])
        assert np.array_equal(outs["slice"], outs["loop"])
        times = {v: [] for v in kernels}
        for r in range(args.repeats):
            for v in rotated(kernels, r):
                t0 = time.thread_time_ns()
                kernels[v](x_pad, k, k, 1, 1, OH, OW, outs[v])
                times[v].append(time.thread_time_ns() - t0)
        med = {v: float(np.median(t)) / 1e3 for v, t in times.items()}
        print(f"    {name:24s} {med['slice']:9.1f} / {med['loop']:9.1f}   "
              f"(loop/slice {med['loop'] / med['slice']:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
