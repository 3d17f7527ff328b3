"""How close the implicit-GEMM passes run to this CPU's FMA peak, and whether the
Cifar10_quick step scales from one thread to two, in ONE process, interleaved.

    python bench/implicit_conv_peak.py [--repeats 9] [--out bench/results/implicit_conv_peak.json]

Three measurements, each against a control that needs no memory at all:

* ``peak``: the register tile of ``kernels.implicit_conv`` (6 × 16, 12 ymm accumulators,
  ``_tile_avx2``) on operands that stay in L1 (a 51 KB weight stream from L2 in the
  second variant: Cifar10_quick conv2's panel), one thread, CPU time: the FMA rate a
  core gives this kernel (on Zen 1, two 128-bit FMA pipes: 16 flops a cycle);
* ``passes``: Cifar10_quick's conv2 (32→32 on 16×16) and conv3 (32→64 on 8×8), batch
  100: ``conv_rows`` (forward) and ``weight_grad_rows`` at one thread, CPU time, in
  GFLOP/s and as a fraction of ``peak`` measured in the same rounds;
* ``scaling``: the whole training step (forward, loss, backward; as
  ``bench/profile_layers.py``) at one and at two threads, wall clock, rounds
  alternating, next to a control, a two-iteration ``prange`` of the hot tile, timed the same
  way (its 1T/2T speed-up: 2.0 when both cores are free, 1.0 when only one is).
  The step's 1T/2T speed-up means something only where the control says both cores
  were free; on a shared machine it rarely does, so read the two side by side. With
  them, the cores the step kept busy (all threads' CPU time over its wall time,
  ``/proc/self/task/*/schedstat``): near 2 at two threads with no speed-up means each
  thread ran slower (shared caches, a host-level sibling), near 1 that the workers
  waited for a vCPU.

A diagnosis tool, not a speed figure: absolute rates move with the machine's load.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import thread_cpu_ns  # noqa: E402  (bench/ is on sys.path: the script's own folder)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    import numba
    import numpy as np

    import minidnn
    from minidnn import architectures
    from minidnn.kernels import implicit_conv as ic
    from minidnn.kernels.im2col import weight_rows
    from minidnn.losses import SoftmaxCrossEntropy
    if not ic.SIMD_AVAILABLE:
        print("no AVX2 + FMA in Numba's target: nothing to measure")
        return 1
    tile = ic._tile_avx2

    @numba.njit(parallel=True)
    def hot(out, a, b, reps, tiles, b_inner):
        # ``tiles`` independent tiles, one per prange iteration; n_inner 800 taps
        for t in numba.prange(tiles):
            for _ in range(reps):
                tile(out, a, b, t * 512, 0, 0, 6, 2, 1, 0, 0, 800, 1, b_inner, 1, 16, True)

    ha = np.random.default_rng(0).random(1 << 16, dtype=np.float32)
    hb = np.random.default_rng(1).random(1 << 20, dtype=np.float32)
    hout = np.zeros(4096, np.float32)
    hot_flops = 2 * 6 * 16 * 800

    def median(v):
        return float(np.median(v))

    # -- peak and passes, one thread, CPU time ------------------------------------
    minidnn.configure_threads(1)
    rng = np.random.default_rng(0)
    cases = {}
    for name, (C, O, H) in {"conv2": (32, 32, 16), "conv3": (32, 64, 8)}.items():
        x_pad = np.zeros((100, H + 4, H + 4, C), np.float32)
        x_pad[:, 2:-2, 2:-2] = rng.standard_normal((100, H, H, C))
        g_pad = np.zeros((100, H + 4, H + 4, O), np.float32)
        g_pad[:, 2:-2, 2:-2] = rng.standard_normal((100, H, H, O))
        W_r = weight_rows((rng.standard_normal((O, C, 5, 5)) * 0.1).astype(np.float32))
        y = np.empty((100 * H * H, O), np.float32)
        flops = 2 * 100 * H * H * 25 * C * O
        cases[f"{name} forward"] = (flops, lambda x_pad=x_pad, W_r=W_r, y=y: ic.conv_rows(
            x_pad, W_r, (5, 5), out=y, parallel=False))
        cases[f"{name} dW"] = (flops, lambda x_pad=x_pad, g_pad=g_pad: ic.weight_grad_rows(
            x_pad, g_pad, (5, 5), offset=(2, 2), parallel=False))
    reps = 400
    variants = {"peak L1": (reps * hot_flops, lambda: hot(hout, ha, hb, reps, 1, 0)),
                "peak L2 weights": (reps * hot_flops, lambda: hot(hout, ha, hb, reps, 1, 16))}
    variants.update(cases)
    times = {k: [] for k in variants}
    for _, fn in variants.values():
        fn()
    for r in range(args.repeats):
        order = list(variants) if r % 2 == 0 else list(reversed(variants))
        for k in order:
            t0 = time.process_time()
            variants[k][1]()
            times[k].append(time.process_time() - t0)
    rates = {k: variants[k][0] / median(times[k]) / 1e9 for k in variants}
    peak = rates["peak L1"]
    print(f"one thread, CPU time, medians of {args.repeats}:")
    for k, v in rates.items():
        print(f"  {k:18s} {1e3 * median(times[k]):8.2f} ms  {v:6.1f} GFLOP/s  "
              f"{v / peak:5.2f} of the L1 peak")

    # -- scaling: the step at 1 and 2 threads, with the two-tile control ------------
    model = architectures.build("cifar10-quick", input_shape=(3, 32, 32), seed=0)
    x = rng.random((100, 3, 32, 32), dtype=np.float32)
    labels = rng.integers(0, 10, 100)
    loss = SoftmaxCrossEntropy()

    def step():
        out = x
        for layer in model.layers:
            out = layer.forward(out, training=True)
        _, grad = loss(out, labels)
        for i in range(len(model.layers) - 1, -1, -1):
            if i == 0:
                model.layers[i].backward_params(grad)
            else:
                grad = model.layers[i].backward(grad)

    scale = {t: {"step": [], "control": [], "cores": []} for t in (1, 2)}
    for r in range(args.repeats + 1):
        for threads in ((1, 2) if r % 2 == 0 else (2, 1)):
            minidnn.configure_threads(threads)
            t0 = time.perf_counter()
            hot(hout, ha, hb, 1500, 2, 0)       # two tiles: one per thread at 2 threads
            cpu0 = thread_cpu_ns()
            t1 = time.perf_counter()
            step()
            t2 = time.perf_counter()
            cpu1 = thread_cpu_ns()
            busy = sum(v - cpu0.get(k, 0) for k, v in cpu1.items()) / 1e9
            if r:                               # round 0: warm-up (JIT, buffers)
                scale[threads]["control"].append(t1 - t0)
                scale[threads]["step"].append(t2 - t1)
                scale[threads]["cores"].append(busy / (t2 - t1))
    step_1, step_2 = median(scale[1]["step"]), median(scale[2]["step"])
    ctl_1, ctl_2 = median(scale[1]["control"]), median(scale[2]["control"])
    print(f"Cifar10_quick step, wall clock: 1 thread {1e3 * step_1:.1f} ms, 2 threads "
          f"{1e3 * step_2:.1f} ms (speed-up {step_1 / step_2:.2f}); control speed-up "
          f"{ctl_1 / ctl_2:.2f} (2.0 = two free cores); cores busy during the step "
          f"(all threads' CPU time / wall): {median(scale[1]['cores']):.2f} at 1 thread, "
          f"{median(scale[2]['cores']):.2f} at 2")
    if args.out:
        payload = {"benchmark": "implicit_conv_peak", "command": " ".join(sys.argv),
                   "repeats": args.repeats, "one_thread_gflops": rates,
                   "one_thread_ms": {k: 1e3 * median(v) for k, v in times.items()},
                   "step_ms": {"1": 1e3 * step_1, "2": 1e3 * step_2},
                   "control_ms": {"1": 1e3 * ctl_1, "2": 1e3 * ctl_2},
                   "cores_busy": {str(t): median(scale[t]["cores"]) for t in (1, 2)}}
        args.out.write_text(json.dumps(payload, indent=1))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
