"""Each layer's share of a training step: forward and backward time per layer.

    python bench/profile_layers.py [--arch lenet|cifar10-quick|both] [--repeats 20]
                                   [--threads 1] [--clock cpu|wall]
                                   [--out bench/results/profile_layers_NAME.json]

Times one minibatch step (forward with training=True, loss, backward without the
data's input gradient, as ``fit`` does) layer by layer on random data of the
real shape, and prints the median per layer over the repeats. The clock is
the process's CPU time (``time.process_time``), single-threaded by default, so
the shares stay meaningful on a loaded machine where wall time is not (a
process waiting for a core accrues no CPU time); cache effects of the
neighbours remain. ``--clock wall`` (``time.perf_counter``) for runs at more than one
thread, where CPU time also counts the workers' (and their spinning). The coordinator's quiet-machine run of
bench/speed_vs_torch.py gives wall-clock figures.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SETUPS = {"lenet": ((1, 28, 28), 64), "cifar10-quick": ((3, 32, 32), 100)}


def profile(arch: str, repeats: int, seed: int = 0, clock: str = "cpu") -> dict:
    import numpy as np

    from minidnn import architectures
    from minidnn.losses import SoftmaxCrossEntropy
    shape, batch = SETUPS[arch]
    model = architectures.build(arch, input_shape=shape, seed=seed)
    rng = np.random.default_rng(seed)
    x = rng.random((batch,) + shape, dtype=np.float32)
    y = rng.integers(0, 10, batch)
    loss = SoftmaxCrossEntropy()
    names = [f"{i}:{layer!r}" for i, layer in enumerate(model.layers)]
    now = time.process_time if clock == "cpu" else time.perf_counter
    fwd = {n: [] for n in names}
    bwd = {n: [] for n in names}
    for step in range(repeats + 3):            # 3 warm-up steps (JIT, caches)
        out = x
        for name, layer in zip(names, model.layers):
            t0 = now()
            out = layer.forward(out, training=True)
            fwd[name].append(now() - t0)
        _, grad = loss(out, y)
        for i in range(len(model.layers) - 1, -1, -1):
            layer, name = model.layers[i], names[i]
            t0 = now()
            if i == 0:
                layer.backward_params(grad)
            else:
                grad = layer.backward(grad)
            bwd[name].append(now() - t0)
    med = {n: (float(np.median(fwd[n][3:])), float(np.median(bwd[n][3:]))) for n in names}
    total = sum(f + b for f, b in med.values())
    return {"arch": arch, "batch": batch, "threads": os.environ.get("OMP_NUM_THREADS"),
            "repeats": repeats,
            "clock": "process_time" if clock == "cpu" else "perf_counter", "step_ms": 1e3 * total,
            "layers": [{"layer": n, "forward_ms": 1e3 * f, "backward_ms": 1e3 * b,
                        "share": (f + b) / total} for n, (f, b) in med.items()]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="both", choices=("lenet", "cifar10-quick", "both"))
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1,
                        help="thread cap for BLAS and Numba (default 1: relative shares)")
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                        help="process CPU time (default) or wall time (more than one thread)")
    parser.add_argument("--out", default=None, help="write the results JSON here")
    args = parser.parse_args(argv)
    import minidnn
    minidnn.configure_threads(args.threads) if hasattr(minidnn, "configure_threads") else None
    results = []
    for arch in (("lenet", "cifar10-quick") if args.arch == "both" else (args.arch,)):
        result = profile(arch, args.repeats, clock=args.clock)
        results.append(result)
        print(f"{arch}, batch {result['batch']}, {args.threads} thread(s): step "
              f"{result['step_ms']:.1f} ms (median of {args.repeats}, {args.clock} clock)")
        for row in result["layers"]:
            print(f"  {row['layer']:<45} fwd {row['forward_ms']:7.2f} ms  bwd "
                  f"{row['backward_ms']:7.2f} ms  {100 * row['share']:5.1f}%")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
