"""PyTorch's per-layer forward and backward times for Cifar10_quick or LeNet, the peer of
``bench/profile_layers.py`` (bench only; torch 2.x CPU).

    python bench/profile_layers_torch.py [--arch cifar10-quick|lenet] [--threads 1]
                                         [--repeats 20] [--clock cpu|wall]
                                         [--out bench/results/profile_layers_torch.json]

Run it in its own process (it sets torch's thread count). Each layer runs on
a detached copy of its input, so its backward can be timed alone with
``torch.autograd.grad`` (the first layer: its parameters only, as a training
step does); random data of the real shape and batch (Cifar10_quick: 3×32×32, batch
100, Caffe's layer order and ceil-mode pools; LeNet: 1×28×28, batch 64, as
``bench/speed_vs_torch.py`` builds it).
The clock is the process's CPU time by default (fair on a loaded machine at
one thread; at more it also counts idle threads that spin).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=("cifar10-quick", "lenet"), default="cifar10-quick")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    import numpy as np
    import torch
    import torch.nn as nn
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.arch == "lenet":
        layers = [nn.Conv2d(1, 20, 5), nn.MaxPool2d(2), nn.Conv2d(20, 50, 5), nn.MaxPool2d(2),
                  nn.Flatten(), nn.Linear(800, 500), nn.ReLU(), nn.Linear(500, 10)]
        shape, batch = (1, 28, 28), 64
    else:
        shape, batch = (3, 32, 32), 100
        layers = [nn.Conv2d(3, 32, 5, padding=2), nn.MaxPool2d(3, 2, ceil_mode=True), nn.ReLU(),
                  nn.Conv2d(32, 32, 5, padding=2), nn.ReLU(),
                  nn.AvgPool2d(3, 2, ceil_mode=True),
                  nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(),
                  nn.AvgPool2d(3, 2, ceil_mode=True),
                  nn.Flatten(), nn.Linear(1024, 64), nn.Linear(64, 10)]
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    x = torch.rand(batch, *shape)
    fwd = [[] for _ in layers]
    bwd = [[] for _ in layers]
    for rep in range(args.repeats + 3):                 # 3 warm-up steps
        h, inputs, outputs = x, [], []
        for i, layer in enumerate(layers):
            inp = h.detach().requires_grad_(i > 0)
            t0 = clock()
            out = layer(inp)
            fwd[i].append(clock() - t0)
            inputs.append(inp)
            outputs.append(out)
            h = out
        grad = torch.randn_like(h)
        for i in range(len(layers) - 1, -1, -1):
            params = list(layers[i].parameters())
            t0 = clock()
            wrt = ([inputs[i]] if i > 0 else []) + params
            grads = torch.autograd.grad(outputs[i], wrt, grad)
            bwd[i].append(clock() - t0)
            if i > 0:
                grad = grads[0]
    rows = [{"layer": f"{i}:{layer}", "forward_ms": 1e3 * float(np.median(fwd[i][3:])),
             "backward_ms": 1e3 * float(np.median(bwd[i][3:]))} for i, layer in enumerate(layers)]
    total = sum(r["forward_ms"] + r["backward_ms"] for r in rows)
    result = {"framework": f"torch {torch.__version__}", "arch": args.arch, "batch": batch,
              "threads": args.threads, "clock": args.clock, "repeats": args.repeats,
              "step_ms": total, "layers": rows}
    print(f"torch {torch.__version__} {args.arch} batch {batch}, {args.threads} thread(s), "
          f"{args.clock} clock: step {total:.1f} ms (sum of per-layer medians)")
    for r in rows:
        print(f"  {r['layer'][:60]:<60} fwd {r['forward_ms']:7.2f} bwd {r['backward_ms']:7.2f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
