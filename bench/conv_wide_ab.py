"""In-process A/B of the direct convolution's forward and weight-gradient tiles on 16 lanes (zmm, where
Numba's target has AVX-512F: ``direct_conv.WIDE_AVAILABLE``) against 8 lanes (ymm), on
LeNet's conv1 (1→20, 28×28, batch 64) and Cifar10_quick's (3→32, pad 2, 32×32, batch
100): ``direct_conv_tiled(..., wide=True / False)`` with the same inputs and reused
buffers, outputs checked bit for bit first (the weight gradient,
``direct_conv_weight_grad_tiled(..., wide=)``, sums in other lanes: checked to 1e-4
relative), then alternated, wall clock (a parallel kernel runs on Numba's workers),
medians of ``--repeats``.

    python bench/conv_wide_ab.py [--threads 2] [--repeats 100]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=100)
    args = parser.parse_args(argv)
    import numpy as np

    import minidnn
    from minidnn.kernels import direct_conv as dc
    minidnn.configure_threads(args.threads)
    if not dc.WIDE_AVAILABLE:
        print("Numba's target has no AVX-512F: the layer runs the 8-lane tiles only")
    rng = np.random.default_rng(0)
    print(f"direct conv, {args.threads} thread(s), wall clock, medians of "
          f"{args.repeats}: 8 lanes → 16 lanes")
    for name, (N, C, H, O, pad) in {"lenet conv1": (64, 1, 28, 20, 0),
                                    "cifar10-quick conv1": (100, 3, 32, 32, 2)}.items():
        x = rng.standard_normal((N, C, H, H)).astype(np.float32)
        W = rng.standard_normal((O, C, 5, 5)).astype(np.float32)
        b = rng.standard_normal(O).astype(np.float32)
        Hp, OH = H + 2 * pad, H + 2 * pad - 4
        bufs = [(np.empty((N, Hp, C, Hp), np.float32), np.empty((N, O, OH, OH), np.float32))
                for _ in range(2)]
        calls = [lambda w=w, r=r: dc.direct_conv_tiled(x, W, b, pad, rows_buffer=r[0],
                                                       out=r[1], wide=w)
                 for w, r in zip((False, True), bufs)]
        for call in calls:
            call()
            call()
        np.testing.assert_array_equal(bufs[0][1], bufs[1][1])
        g = rng.standard_normal(bufs[0][1].shape).astype(np.float32)
        grads = [lambda w=w: dc.direct_conv_weight_grad_tiled(bufs[0][0], g, (5, 5), wide=w)
                 for w in (False, True)]
        (dw8, db8), (dw16, db16) = grads[0](), grads[1]()
        np.testing.assert_allclose(dw16, dw8, rtol=1e-4, atol=1e-4 * float(np.abs(dw8).max()))
        np.testing.assert_allclose(db16, db8, rtol=1e-4, atol=1e-4 * float(np.abs(db8).max()))
        _time(name + " fwd", calls, args.repeats)
        _time(name + " dW+db", grads, args.repeats)
    return 0


def _time(name, calls, repeats):
    import numpy as np
    times = [[], []]
    for r in range(repeats):
        for i in ((0, 1) if r % 2 == 0 else (1, 0)):
            t0 = time.perf_counter()
            calls[i]()
            times[i].append(time.perf_counter() - t0)
    a, c = (1e3 * float(np.median(t)) for t in times)
    print(f"  {name:26s} 8 lanes {a:6.3f} ms  16 lanes {c:6.3f} ms  (16/8 {c / a:.2f})")


if __name__ == "__main__":
    sys.exit(main())
