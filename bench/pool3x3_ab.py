"""In-process A/B of Cifar10_quick's pooling kernels: this tree's ``kernels.pooling``
against the same file from a base commit, on the three pools' shapes (batch 100):
pool1 MaxPool2D(3, 2, ceil) on (100, 32, 32, 32), pool2 and pool3 AvgPool2D(3, 2, ceil)
on (100, 32, 16, 16) and (100, 64, 8, 8); forward and backward kernels (the average's
backward: the base tree's layer scatter, ``layers.pooling._avgpool_backward_kernel`` into
a zeroed dx, against the gather where this tree has one).

    python bench/pool3x3_ab.py [--base 9164eca] [--threads 1 2] [--repeats 40]
                               [--out bench/results/pool3x3_ab_s24p.json]

The base file is read with ``git show BASE:minidnn/kernels/pooling.py`` and imported
from a temporary folder. Both get the same inputs and preallocated outputs; their
outputs are checked bit-equal first; then they alternate (order flipped every round),
timed on the wall clock (a parallel kernel's work runs on Numba's workers), medians of
``--repeats``, beside a control: ``np.copyto`` of the kernel's input (memory speed).
The thread counts run in one process each (``configure_threads`` is once a process).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import base_kernel_module  # noqa: E402


def _cases(module, rng):
    """(name, call, outputs, control) per kernel, on fresh buffers for ``module``."""
    import numpy as np
    from minidnn.layers import AvgPool2D, MaxPool2D
    rng = np.random.default_rng(0)
    cases = []
    x = rng.standard_normal((100, 32, 32, 32)).astype(np.float32)
    geometry = MaxPool2D(3, 2, ceil_mode=True)._geometry(x.shape)
    kh, kw, sh, sw, ph, pw, OH, OW = geometry
    out = np.empty((100, 32, OH, OW), np.float32)
    offsets = np.empty(out.shape, np.uint8)
    nan_seen = np.empty(100, np.bool_)
    module._maxpool_offsets_kernel(x, kh, kw, sh, sw, ph, pw, out, offsets, nan_seen)
    copy = np.empty_like(x)
    cases.append(("pool1 max forward", lambda: module._maxpool_offsets_kernel(
        x, kh, kw, sh, sw, ph, pw, out, offsets, nan_seen), (out, offsets, nan_seen),
        lambda: np.copyto(copy, x)))
    grad = rng.standard_normal(out.shape).astype(np.float32)
    rows, cols = module.offset_tables(kw)
    dx = np.empty_like(x)
    cases.append(("pool1 max backward", lambda: module._maxpool_offsets_backward_kernel(
        grad, offsets, rows, cols, sh, sw, ph, pw, dx), (dx,), lambda: np.copyto(copy, x)))
    for name, shape in (("pool2", (100, 32, 16, 16)), ("pool3", (100, 64, 8, 8))):
        xa = np.maximum(rng.standard_normal(shape), 0).astype(np.float32)   # after a ReLU
        geometry = AvgPool2D(3, 2, ceil_mode=True)._geometry(shape)
        kh, kw, sh, sw, ph, pw, OH, OW = geometry
        divisor = module.avg_divisors(shape, geometry, np.float32)
        outa = np.empty(shape[:2] + (OH, OW), np.float32)
        ca = np.empty_like(xa)
        cases.append((f"{name} avg forward", lambda xa=xa, d=divisor, o=outa, g=geometry:
                      module._avgpool_sep_forward_kernel(xa, *g[:6], d, o), (outa,),
                      lambda xa=xa, ca=ca: np.copyto(ca, xa)))
        # the backward: the gather where the module has it (sitting 24), else the layer's
        # per-window scatter into a zeroed dx (np.zeros in the layer: a fill here)
        ga = rng.standard_normal(outa.shape).astype(np.float32)
        dxa = np.empty_like(xa)
        if hasattr(module, "_avgpool3x3s2_backward_kernel"):
            d64 = module.avg_divisors(shape, geometry, np.float64)
            call = (lambda ga=ga, d=d64, dxa=dxa:
                    module._avgpool3x3s2_backward_kernel(ga, d, dxa))
        else:
            from minidnn.layers.pooling import _avgpool_backward_kernel

            def call(ga=ga, dxa=dxa, g=geometry):
                dxa.fill(0)
                _avgpool_backward_kernel(ga, *g[:6], dxa)
        cases.append((f"{name} avg backward", call, (dxa,),
                      lambda xa=xa, ca=ca: np.copyto(ca, xa)))
    return cases


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="9164eca")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--out", default=None)
    parser.add_argument("--_one", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._one is None:
        results = []
        for threads in args.threads:
            run = subprocess.run([sys.executable, __file__, "--base", args.base, "--repeats",
                                  str(args.repeats), "--_one", str(threads)],
                                 capture_output=True, text=True, check=True)
            sys.stdout.write(run.stderr)
            results.append(json.loads(run.stdout))
        if args.out:
            Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
        return 0
    import numpy as np

    import minidnn
    from minidnn.kernels import pooling as new
    minidnn.configure_threads(args._one)
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        old = base_kernel_module(args.base, "minidnn/kernels/pooling.py", Path(tmp), "pooling_base")
        pairs = list(zip(_cases(old, rng), _cases(new, rng)))
        print(f"{args._one} thread(s), wall clock, medians of {args.repeats}: base "
              f"{args.base} → this tree (copy: np.copyto of the kernel's input)",
              file=sys.stderr)
        for (name, call_a, outs_a, control), (_, call_b, outs_b, _) in pairs:
            for call in (call_a, call_b, call_a, call_b):
                call()
            for a, b in zip(outs_a, outs_b):
                assert np.array_equal(a.view(np.uint8), b.view(np.uint8)), name  # same bits
            times = [[], [], []]
            for r in range(args.repeats):
                order = (0, 1, 2) if r % 2 == 0 else (2, 1, 0)
                for i in order:
                    f = (call_a, call_b, control)[i]
                    t0 = time.perf_counter()
                    f()
                    times[i].append(time.perf_counter() - t0)
            a, b, c = (1e3 * float(np.median(t)) for t in times)
            print(f"  {name:20s} base {a:6.3f} ms  new {b:6.3f} ms  (new/base {b / a:.2f})  "
                  f"copy {c:6.3f} ms", file=sys.stderr)
            rows.append({"kernel": name, "threads": args._one, "base_ms": a, "new_ms": b,
                         "copy_ms": c, "same_bits": True})
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
