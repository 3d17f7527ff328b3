"""A/B inside ONE process, layer by layer: a Cifar10_quick (or LeNet) training
step with the convnet paths of sittings 17-18 on and off, interleaved.

    python bench/conv_step_ab.py [--arch cifar10-quick|lenet|vgg-cifar|mlp] [--repeats 20]
                                 [--threads 1] [--toggle all|dense|relu ...]
                                 [--clock auto|cpu|wall]
                                 [--out bench/results/conv_step_ab_NAME.json]

Toggles (default: ``dense``; ``all``: both at once). Sitting 22 deleted the decided
switches' toggles with the switches (their results stay in ``results/``):

* ``implicit`` (``Conv2D.IMPLICIT``, on): quiet, 2 threads, with ``dense``, 106.2
  against 142.7 ms a Cifar10_quick step (``conv_step_ab_2threads_wall_quiet.json``);
* ``stream`` (``Conv2D.STREAMED``, off): 187 against 158 ms (sitting 17, quiet);
* ``tiled`` (``Conv2D.DIRECT_TILED``, on): 92.5 against 93.3 ms, LeNet 18.6 against
  19.2 ms (``conv_step_ab_tiled*_2threads_wall_quiet.json``);
* ``parallel`` (``Conv2D.IMPLICIT_PARALLEL``, on): 83.0 against 118.6 ms
  (``conv_step_ab_parallel_2threads_quiet.json``);
* ``fused`` (``Conv2D.IMPLICIT_FUSED``, on): 84.7 against 81.8 ms, then 105.8 against
  118.0 ms (``conv_step_ab_fused_2threads_wall_quiet*.json``);
* ``pool`` (``MaxPool2D.OFFSETS``, ``AvgPool2D.SEPARABLE``, on): 101.9 against
  103.0 ms (``pool_step_ab_2threads_wall_quiet.json``);
* ``tiles`` (``implicit_conv.FLAT_TILES``, ``WEIGHT_GRAD_ROWS``: sitting 19's tile
  shapes against sitting 18's, on; under load only, ``conv_step_ab_tiles_1thread_load.json``).

The toggles left:

* ``dense``: ``Dense.SERIAL_TRAINING_BELOW``, Dense's mid-sized training products on
  one BLAS thread (on: 2^20 to 2^23 multiply-adds) against BLAS's own thread count (off);
  it only differs at more than one thread;
* ``relu``: ReLU as one Numba pass each way (``kernels.activation.relu_kernel`` /
  ``relu_grad_kernel``) against NumPy's ``maximum`` / ``where``;
Each repeat runs one whole minibatch step (forward with training=True, loss,
backward without the data's input gradient, as ``fit`` does, no update) with
the paths on, then one with them off (the order alternating), on random data
of the real shape, timing every layer's forward and backward. The clock is the
process's CPU time at one thread (``time.process_time``: a process waiting for
a core accrues none) and wall time at more; medians are reported. Both sides
share the process, its allocator and its load, so the ratio is a fair guide on
a loaded machine; absolute times are not. The same run prints the one-thread
(or n-thread) GEMM rate of a 1024³ float32 product as the machine's peak.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import gemm_peak_gflops, rotated, save_result  # noqa: E402

SETUPS = {"lenet": ((1, 28, 28), 64), "cifar10-quick": ((3, 32, 32), 100),
          "vgg-cifar": ((3, 32, 32), 100), "mlp": ((784,), 100)}
TOGGLES = ("dense", "relu")


def _switches():
    """name -> function(on) that turns one of sitting 17's paths on or off."""
    from minidnn.layers import activations
    from minidnn.layers.dense import Dense

    def dense(on):
        Dense.SERIAL_TRAINING_BELOW = (1 << 23) if on else 0

    def relu(on):
        activations.RELU_KERNEL = on

    return {"dense": dense, "relu": relu}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="cifar10-quick", choices=sorted(SETUPS))
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--toggle", nargs="+", default=["dense"],
                        choices=("all",) + TOGGLES,
                        help="paths to switch on and off together (default: dense)")
    parser.add_argument("--clock", choices=("auto", "cpu", "wall"), default="auto",
                        help="auto: CPU time at one thread, wall time at more; cpu: the "
                             "process's CPU time (all threads) at any thread count")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    import numpy as np

    import minidnn
    from minidnn import architectures
    from minidnn.losses import SoftmaxCrossEntropy
    minidnn.configure_threads(args.threads)
    toggles = TOGGLES if "all" in args.toggle else tuple(args.toggle)
    switches = _switches()
    shape, batch = SETUPS[args.arch]
    model = architectures.build(args.arch, input_shape=shape, seed=0)
    rng = np.random.default_rng(0)
    x = rng.random((batch,) + shape, dtype=np.float32)
    y = rng.integers(0, 10, batch)
    loss = SoftmaxCrossEntropy()
    names = [f"{i}:{layer!r}" for i, layer in enumerate(model.layers)]
    use_cpu = args.clock == "cpu" or (args.clock == "auto" and args.threads == 1)
    clock = time.process_time if use_cpu else time.perf_counter

    def step(on: bool):
        for name in toggles:
            switches[name](on)
        fwd, bwd = [], []
        out = x
        for layer in model.layers:
            t0 = clock()
            out = layer.forward(out, training=True)
            fwd.append(clock() - t0)
        _, grad = loss(out, y)
        for i in range(len(model.layers) - 1, -1, -1):
            t0 = clock()
            if i == 0:
                model.layers[0].backward_params(grad)
            else:
                grad = model.layers[i].backward(grad)
            bwd.append(clock() - t0)
        first = next(layer for layer in model.layers if layer.grads)   # (a Flatten has none)
        return fwd, bwd[::-1], {k: np.array(v, copy=True) for k, v in first.grads.items()}

    for on in (True, False, True, False):           # warm-up: JIT, buffers
        step(on)
    _, _, grads_on = step(True)
    _, _, grads_off = step(False)
    grad_diff = max(float(np.max(np.abs(grads_on[k] - grads_off[k])) /
                        max(float(np.max(np.abs(grads_off[k]))), 1e-30)) for k in grads_on)
    times = {True: [], False: []}
    for r in range(args.repeats):
        for on in rotated((True, False), r):
            fwd, bwd, _ = step(on)
            times[on].append((fwd, bwd))
    for name in toggles:           # back to the defaults (every toggle is on by default)
        switches[name](True)
    peak = gemm_peak_gflops(clock)

    def medians(on):
        arr = np.array(times[on])                      # (repeats, 2, layers)
        per = np.median(arr, axis=0)
        step_ms = 1e3 * float(np.median(arr.sum(axis=(1, 2))))
        return step_ms, per
    on_ms, per_on = medians(True)
    off_ms, per_off = medians(False)
    layers = [{"layer": n, "on_forward_ms": 1e3 * per_on[0][i], "on_backward_ms": 1e3 * per_on[1][i],
               "off_forward_ms": 1e3 * per_off[0][i], "off_backward_ms": 1e3 * per_off[1][i]}
              for i, n in enumerate(names)]
    result = {"arch": args.arch, "batch": batch, "threads": args.threads, "toggles": list(toggles),
              "repeats": args.repeats, "clock": ("process_time" if use_cpu
                                                 else "perf_counter") + ", one process, interleaved",
              "gemm_peak_gflops": peak, "on_step_ms": on_ms, "off_step_ms": off_ms,
              "ratio": on_ms / off_ms, "first_layer_grad_max_rel_diff": grad_diff,
              "layers": layers}
    print(f"{args.arch} train batch {batch}, {args.threads} thread(s), toggles "
          f"{'+'.join(toggles)}; GEMM 1024^3 {peak:.1f} GFLOP/s")
    print(f"  {'layer':<52} {'on fwd':>7} {'on bwd':>7} {'off fwd':>8} {'off bwd':>8}  (ms)")
    for row in layers:
        print(f"  {row['layer'][:52]:<52} {row['on_forward_ms']:7.2f} {row['on_backward_ms']:7.2f} "
              f"{row['off_forward_ms']:8.2f} {row['off_backward_ms']:8.2f}")
    print(f"  step: on {on_ms:.1f} ms, off {off_ms:.1f} ms, ratio {on_ms / off_ms:.3f} (medians "
          f"of {args.repeats}); first layer's gradients differ by {grad_diff:.1e} (relative)")
    if args.out:
        save_result(args.out, result, announce=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
