"""In-process A/B of the 2×2/2 max pool's forward kernel: this tree's
``kernels.pooling._maxpool_offsets_kernel`` (the one-pass ``_maxpool2x2_plane`` for
whole 2×2 windows, sitting 22) against the same function from a base commit's
pooling.py (the separable row and column passes), on LeNet's two pool shapes.

    python bench/conv_pool2x2_ab.py [--base 5e573b2] [--threads 2] [--repeats 60]
                                    [--batch 64]

The base file is read with ``git show BASE:minidnn/kernels/pooling.py`` and imported
from a temporary folder (its own Numba cache there); both kernels get the same inputs
and preallocated outputs, their outputs and offsets are checked equal first, then
they alternate, timed on the wall clock (a parallel kernel's work runs on Numba's
workers), medians of ``--repeats``.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import base_kernel_module  # noqa: E402


def _takes_relu(module) -> bool:
    import inspect
    return "relu" in inspect.signature(module._maxpool_offsets_kernel.py_func).parameters


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="5e573b2")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args(argv)
    import numpy as np

    import minidnn
    from minidnn.kernels import pooling as new
    minidnn.configure_threads(args.threads)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        old = base_kernel_module(args.base, "minidnn/kernels/pooling.py", Path(tmp), "pooling_base")
        print(f"2×2/2 max pool forward, batch {args.batch}, {args.threads} thread(s), wall "
              f"clock, medians of {args.repeats}: base {args.base} → this tree")
        for shape in ((args.batch, 20, 24, 24), (args.batch, 50, 8, 8)):
            x = rng.standard_normal(shape).astype(np.float32)
            N, C, H, W = shape
            outs = [(np.empty((N, C, H // 2, W // 2), np.float32),
                     np.empty((N, C, H // 2, W // 2), np.uint8), np.empty(N, np.bool_))
                    for _ in range(2)]
            # (kernels before sitting 23 take a ``relu`` flag before the outputs: False)
            calls = [lambda m=m, o=o: m._maxpool_offsets_kernel(
                         x, 2, 2, 2, 2, 0, 0, *((False,) if _takes_relu(m) else ()), *o)
                     for m, o in zip((old, new), outs)]
            for call in calls:
                call()
                call()
            for a, b in zip(outs[0], outs[1]):
                np.testing.assert_array_equal(a, b)
            times = [[], []]
            for r in range(args.repeats):
                for i in ((0, 1) if r % 2 == 0 else (1, 0)):
                    t0 = time.perf_counter()
                    calls[i]()
                    times[i].append(time.perf_counter() - t0)
            a, b = (1e3 * float(np.median(t)) for t in times)
            print(f"  {str(shape):18s} base {a:6.3f} ms  new {b:6.3f} ms  (new/base {b / a:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
