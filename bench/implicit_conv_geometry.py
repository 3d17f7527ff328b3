"""Per pass and per geometry: the implicit-GEMM kernels (``kernels.implicit_conv``)
against the im2row + BLAS products they replace, in ONE process, interleaved.

    python bench/implicit_conv_geometry.py [--threads 1] [--repeats 15] [--batch 100]
                                           [--clock auto|cpu|wall]
                                           [--out bench/results/implicit_conv_geometry.json]

For each stride-1 "same" geometry (C in, O out, k×k window, H×W input, batch N):

* forward:        implicit ``conv_rows(x_pad, W_r)``  vs  im2row(x_pad) + rows · W_r
* input gradient: implicit ``conv_rows(dY_pad, W_t)`` vs  dY_r · W_rᵀ + row2im
  (the rows path's products; Conv2D's old default for a "same" layer with O <= C
  was im2row(dY_pad) · W_t, about as fast)
* weight grad:    implicit ``weight_grad_rows``       vs  rowsᵀ · dY_r on the rows
  the forward kept (im2row not counted: the rows path builds it in the forward)

The layout passes around both (padding x and dY channels last, the NCHW output)
are the same on both sides and not timed. The clock is the process's CPU time
at one thread (a process waiting for a core accrues none) and wall time at more;
medians are reported, with GFLOP/s (2·N·OH·OW·k²·C·O per pass) and the GEMM rate
of a 1024³ float32 product in the same run. Both sides share the process and its
load, so the ratio guides choices on a loaded machine; absolute times do not.
``Conv2D._implicit_applies`` (IMPLICIT_MAX_CHANNELS) follows these figures.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# (name, C, O, k, H): Cifar10_quick's conv2 and conv3 and its conv3 input gradient
# side (64 -> 32), LeNet-like and VGG-like layers around them
GEOMETRIES = [("c10q-conv2", 32, 32, 5, 16), ("c10q-conv3", 32, 64, 5, 8),
              ("16to16-3x3-32", 16, 16, 3, 32), ("32to32-3x3-32", 32, 32, 3, 32),
              ("64to64-3x3-16", 64, 64, 3, 16), ("64to64-3x3-8", 64, 64, 3, 8),
              ("128to128-3x3-8", 128, 128, 3, 8)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--only", nargs="+", default=None, help="geometry names")
    parser.add_argument("--clock", choices=("auto", "cpu", "wall"), default="auto")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    import numpy as np

    import minidnn
    from minidnn.kernels import implicit_conv as ic
    from minidnn.kernels.im2col import _im2row_kernel, _row2im_kernel, kernel_for
    minidnn.configure_threads(args.threads)
    if not ic.SIMD_AVAILABLE:
        print("no AVX2 + FMA in Numba's target: nothing to compare")
        return 1
    use_cpu = args.clock == "cpu" or (args.clock == "auto" and args.threads == 1)
    clock = time.process_time if use_cpu else time.perf_counter
    rng = np.random.default_rng(0)
    results = []
    for name, C, O, k, H in GEOMETRIES:
        if args.only and name not in args.only:
            continue
        N, p = args.batch, k // 2
        x_pad = np.zeros((N, H + 2 * p, H + 2 * p, C), np.float32)
        x_pad[:, p:p + H, p:p + H] = rng.standard_normal((N, H, H, C))
        W = (rng.standard_normal((O, C, k, k)) * 0.1).astype(np.float32)
        from minidnn.kernels.im2col import weight_rows
        W_r, W_t = weight_rows(W), ic.flipped_weight_rows(W)
        P = N * H * H
        g_pad = np.zeros((N, H + 2 * p, H + 2 * p, O), np.float32)
        g_pad[:, p:p + H, p:p + H] = rng.standard_normal((N, H, H, O))
        g_rows = np.ascontiguousarray(g_pad[:, p:p + H, p:p + H]).reshape(P, O)
        rows = np.empty((P, k * k * C), np.float32)
        y = np.empty((P, O), np.float32)
        dx = np.empty((P, C), np.float32)
        drows = np.empty((P, k * k * C), np.float32)
        dx_pad = np.zeros_like(x_pad)
        im2row_ = kernel_for(_im2row_kernel, rows.size)
        row2im_ = kernel_for(_row2im_kernel, rows.size)

        def forward_implicit():
            ic.conv_rows(x_pad, W_r, (k, k), out=y)

        def forward_rows():
            im2row_(x_pad, k, k, 1, 1, H, H, rows)
            np.matmul(rows, W_r, out=y)

        def input_implicit():
            ic.conv_rows(g_pad, W_t, (k, k), out=dx)

        def input_rows():
            np.matmul(g_rows, W_r.T, out=drows)
            dx_pad.fill(0)
            row2im_(drows, k, k, 1, 1, H, H, dx_pad)

        def weight_implicit():
            ic.weight_grad_rows(x_pad, g_pad, (k, k), offset=(p, p))

        def weight_rows_():
            rows.T @ g_rows

        passes = {"forward": (forward_implicit, forward_rows),
                  "input_grad": (input_implicit, input_rows),
                  "weight_grad": (weight_implicit, weight_rows_)}
        forward_rows()                              # rows for the weight gradient
        for fns in passes.values():                 # warm-up: JIT, caches
            for fn in fns:
                fn()
        times = {(pas, side): [] for pas in passes for side in (0, 1)}
        for r in range(args.repeats):
            for pas, fns in passes.items():
                for side in ((0, 1) if r % 2 == 0 else (1, 0)):
                    t0 = clock()
                    fns[side]()
                    times[(pas, side)].append(clock() - t0)
        flops = 2 * P * k * k * C * O
        row = {"geometry": name, "C": C, "O": O, "k": k, "H": H, "batch": N}
        for pas in passes:
            imp, ref = (float(np.median(times[(pas, s)])) for s in (0, 1))
            row[pas] = {"implicit_ms": 1e3 * imp, "im2row_blas_ms": 1e3 * ref,
                        "implicit_gflops": flops / imp / 1e9, "im2row_blas_gflops": flops / ref / 1e9,
                        "ratio": imp / ref}
        results.append(row)
        print(f"{name:<16} " + "  ".join(
            f"{pas} {row[pas]['implicit_ms']:6.1f} vs {row[pas]['im2row_blas_ms']:6.1f} ms "
            f"({row[pas]['implicit_gflops']:3.0f}/{row[pas]['im2row_blas_gflops']:3.0f} GF/s)"
            for pas in passes), flush=True)
    a = np.random.default_rng(1).random((1024, 1024), dtype=np.float32)
    gemm = []
    for _ in range(5):
        t0 = clock()
        a @ a
        gemm.append(clock() - t0)
    peak = 2 * 1024 ** 3 / float(np.median(gemm)) / 1e9
    print(f"threads {args.threads}, batch {args.batch}, clock "
          f"{'process_time' if use_cpu else 'perf_counter'}; GEMM 1024^3 {peak:.1f} GFLOP/s")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"threads": args.threads, "repeats": args.repeats,
                                        "clock": "process_time" if use_cpu else "perf_counter",
                                        "gemm_peak_gflops": peak, "geometries": results},
                                       indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
