"""The weight-gradient sweep of the implicit-GEMM kernels (``kernels.implicit_conv``)
A/B, one process, interleaved, medians, on Cifar10_quick's conv2 (32→32 on 16×16) and
conv3 (32→64 on 8×8), batch 100: ``WEIGHT_GRAD_POSITIONS``, the output positions the
weight gradient sums per tile (whole output rows: R = max(1, positions // OW)), 32, 64
and 128. (Until sitting 22 also ``FLAT_TILES``, the forward and input-gradient tiles
across output rows against within one row: on, 8.3 against 8.9-9.5 ms for conv3 under
load, ``results/implicit_conv_tiles_ab_1t_load.json``; the switch went with its row
tiles.)

    python bench/implicit_conv_tiles_ab.py [--repeats 15] [--threads 1] [--clock auto|cpu|wall]
                                           [--out bench/results/implicit_conv_tiles_ab.json]

CPU time at one thread (fair on a loaded machine for single-thread kernel work),
wall time at more. A guide for the kernel's constants, not a speed figure.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=("auto", "cpu", "wall"), default="auto")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    import numpy as np

    import minidnn
    from minidnn.kernels import implicit_conv as ic
    minidnn.configure_threads(args.threads)
    if not ic.SIMD_AVAILABLE:
        print("no AVX2 + FMA in Numba's target: nothing to compare")
        return 1
    use_cpu = args.clock == "cpu" or (args.clock == "auto" and args.threads == 1)
    clock = time.process_time if use_cpu else time.perf_counter
    rng = np.random.default_rng(0)
    default = ic.WEIGHT_GRAD_POSITIONS
    results = {}
    for name, (C, O, H) in {"conv2": (32, 32, 16), "conv3": (32, 64, 8)}.items():
        x_pad = np.zeros((100, H + 4, H + 4, C), np.float32)
        x_pad[:, 2:-2, 2:-2] = rng.standard_normal((100, H, H, C))
        g_pad = np.zeros((100, H + 4, H + 4, O), np.float32)
        g_pad[:, 2:-2, 2:-2] = rng.standard_normal((100, H, H, O))
        variants = {}
        for positions in (32, 64, 128):
            variants[f"dW positions={positions}"] = (
                lambda p=positions: setattr(ic, "WEIGHT_GRAD_POSITIONS", p),
                lambda: ic.weight_grad_rows(x_pad, g_pad, (5, 5), offset=(2, 2)))
        names = list(variants)
        for set_, fn in variants.values():          # warm-up, JIT
            set_()
            fn()
        times = {v: [] for v in names}
        for r in range(args.repeats):
            for v in (names if r % 2 == 0 else names[::-1]):
                set_, fn = variants[v]
                set_()
                t0 = clock()
                fn()
                times[v].append(clock() - t0)
        ic.WEIGHT_GRAD_POSITIONS = default
        results[name] = {v: 1e3 * float(np.median(t)) for v, t in times.items()}
        print(f"{name}: " + ", ".join(f"{v} {ms:.2f}" for v, ms in results[name].items())
              + " ms", flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"threads": args.threads, "repeats": args.repeats,
                                        "clock": "process_time" if use_cpu else "perf_counter",
                                        "ms": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
