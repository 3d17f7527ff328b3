"""Where an implicit-GEMM Conv2D's step goes: its forward and backward and each part
of them (padding channels last, the kernels, the NCHW output, the bias sum), timed
in one process, interleaved, medians, CPU time at one thread.

    python bench/implicit_conv_parts.py [--repeats 11] [--threads 1]

Layers: Cifar10_quick's conv2 (32→32, 5×5, pad 2, 16×16) and conv3 (32→64 on
8×8), batch 100, random data. A guide on a loaded machine, not a speed figure.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    import numpy as np

    import minidnn
    from minidnn.kernels import implicit_conv as ic
    from minidnn.kernels import layout
    from minidnn.kernels.im2col import weight_rows
    from minidnn.layers import Conv2D
    minidnn.configure_threads(args.threads)
    clock = time.process_time if args.threads == 1 else time.perf_counter
    rng = np.random.default_rng(0)
    for C, O, H in [(32, 32, 16), (32, 64, 8)]:
        layer = Conv2D(C, O, 5, padding=2, rng=0)
        x = rng.standard_normal((100, C, H, H)).astype(np.float32)
        if not layer._implicit_applies(x.shape):
            print("the implicit path does not apply here (no AVX2 + FMA?)")
            return 1
        g = rng.standard_normal((100, O, H, H)).astype(np.float32)
        layer.forward(x, training=True)
        layer.backward(g)
        arrays = layer._scratch._arrays
        x_pad, g_pad = layer._implicit_x_pad, arrays["implicit_g_pad"]
        y_rows, dx_rows = arrays["implicit_y_rows"], arrays["implicit_dx_rows"]
        W = layer.params["W"]
        steps = {
            "forward": lambda: layer.forward(x, training=True),
            "backward": lambda: layer.backward(g),
            "pad x": lambda: layout.pad_channels_last(x, 2, 2, out=x_pad),
            "conv": lambda: ic.conv_rows(x_pad, weight_rows(W), (5, 5), out=y_rows),
            "y to NCHW + bias": lambda: layout.rows_to_nchw(y_rows, 100, H, H, layer.params["b"]),
            "pad dY": lambda: layout.pad_channels_last(g, 2, 2, out=g_pad),
            "weight grad": lambda: ic.weight_grad_rows(x_pad, g_pad, (5, 5), offset=(2, 2)),
            "bias grad": lambda: g.sum(axis=(0, 2, 3)),
            "input grad": lambda: ic.conv_rows(g_pad, ic.flipped_weight_rows(W), (5, 5),
                                               out=dx_rows),
            "dx to NCHW": lambda: layout.rows_to_nchw(dx_rows, 100, H, H),
        }
        times = {name: [] for name in steps}
        for _ in range(args.repeats):
            for name, fn in steps.items():
                t0 = clock()
                fn()
                times[name].append(clock() - t0)
        print(f"Conv2D({C}, {O}, 5, padding=2) on {H}x{H}, batch 100, ms: " + ", ".join(
            f"{name} {1e3 * float(np.median(v)):.2f}" for name, v in times.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
