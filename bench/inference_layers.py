"""Per-layer inference times of LeNet (or the MLP) at one batch size: minidnn's
layer-by-layer ``forward(training=False)``, its inference plan (``Sequential.infer``,
stage by stage) and PyTorch eager (``no_grad``), each in its own clean process.

    python bench/inference_layers.py [--arch lenet|mlp] [--batch 100] [--threads 1]
                                     [--rounds 3] [--repeats 200] [--clock cpu|wall]
                                     [--out bench/results/inference_layers.json]

Each round starts one fresh process per side (minidnn first in odd rounds,
torch first in even ones); inside a process the layers are timed alternately
(forward path, then plan, call by call) on the same random input, and every
figure is the median over repeats, then over rounds. The clock is the process's
CPU time by default (fairer on a loaded machine at one thread; at more threads
it also counts threads that spin, so use ``--clock wall`` on a quiet machine).
The plan's time per stage is measured with the stage's own scratch, as ``infer``
runs it, at one part (no batch split); ``infer_total_ms`` is the whole call
(with the split at more threads). Environment built from scratch per process
(``speed_vs_torch.clean_env``); the GEMM peak of the same threads is measured
once per round in the minidnn process.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from speed_vs_torch import clean_env  # noqa: E402

ARCH = {"lenet": ("lenet", (1, 28, 28)), "mlp": ("mlp:784-500-10:relu", (784,))}


def _clock(name):
    return time.process_time if name == "cpu" else time.perf_counter


def _minidnn_worker(args) -> dict:
    import numpy as np

    import minidnn
    from minidnn import architectures
    minidnn.configure_threads(args.threads)
    clock = _clock(args.clock)
    spec, shape = ARCH[args.arch]
    model = architectures.build(spec, input_shape=(1, 28, 28), seed=0)
    x = np.random.default_rng(0).random((args.batch,) + shape, dtype=np.float32)
    model.infer(x)
    plan = model._inference_plan
    scratch = plan._scratch_for(0)
    fwd = [[] for _ in model.layers]
    stage = [[] for _ in plan.stages]
    fwd_total, infer_total = [], []
    for rep in range(args.repeats + 10):
        h = x
        t_all = clock()
        for i, layer in enumerate(model.layers):
            t0 = clock()
            h = layer.forward(h, False)
            fwd[i].append(clock() - t0)
        fwd_total.append(clock() - t_all)
        h = x
        for k, s in enumerate(plan.stages):
            t0 = clock()
            h = s.run(h, scratch, k, plan._targets[k])
            stage[k].append(clock() - t0)
        t0 = clock()
        model.infer(x)
        infer_total.append(clock() - t0)

    def med(ts):
        return 1e3 * float(np.median(ts[10:]))
    a = np.random.default_rng(1).random((2048, 2048), dtype=np.float32)
    best = min(_timed(lambda: a @ a, time.perf_counter) for _ in range(5))
    return {"forward_layers": [{"layer": repr(l), "ms": med(t)} for l, t in zip(model.layers, fwd)],
            "plan_stages": [{"stage": type(s).__name__,
                             "layers": " + ".join(repr(l) for l in s.layers), "ms": med(t)}
                            for s, t in zip(plan.stages, stage)],
            "forward_total_ms": med(fwd_total), "infer_total_ms": med(infer_total),
            "gemm_peak_gflops": 2 * 2048 ** 3 / best / 1e9}


def _timed(f, clock):
    t0 = clock()
    f()
    return clock() - t0


def _torch_worker(args) -> dict:
    import numpy as np
    import torch
    import torch.nn as nn
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    clock = _clock(args.clock)
    if args.arch == "lenet":
        layers = [nn.Conv2d(1, 20, 5), nn.MaxPool2d(2), nn.Conv2d(20, 50, 5), nn.MaxPool2d(2),
                  nn.Flatten(), nn.Linear(800, 500), nn.ReLU(), nn.Linear(500, 10)]
        shape = (1, 28, 28)
    else:
        layers = [nn.Flatten(), nn.Linear(784, 500), nn.ReLU(), nn.Linear(500, 10)]
        shape = (784,)
    net = nn.Sequential(*layers).eval()
    x = torch.rand((args.batch,) + shape)
    times = [[] for _ in layers]
    total = []
    with torch.no_grad():
        for rep in range(args.repeats + 10):
            h = x
            for i, layer in enumerate(layers):
                t0 = clock()
                h = layer(h)
                times[i].append(clock() - t0)
            t0 = clock()
            net(x)
            total.append(clock() - t0)
    return {"framework": f"torch {torch.__version__}",
            "layers": [{"layer": str(l), "ms": 1e3 * float(np.median(t[10:]))}
                       for l, t in zip(layers, times)],
            "total_ms": 1e3 * float(np.median(total[10:]))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=sorted(ARCH), default="lenet")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--worker", choices=("minidnn", "torch"), help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        sys.path.insert(0, str(BENCH.parent))
        result = (_minidnn_worker if args.worker == "minidnn" else _torch_worker)(args)
        Path(args.result).write_text(json.dumps(result))
        return 0
    env = clean_env(args.threads)
    runs = {"minidnn": [], "torch": []}
    with tempfile.TemporaryDirectory(prefix="minidnn-layers-") as workdir:
        for r in range(args.rounds):
            for side in (("minidnn", "torch") if r % 2 == 0 else ("torch", "minidnn")):
                out = Path(workdir) / f"{side}_{r}.json"
                command = [sys.executable, str(Path(__file__).resolve()), "--worker", side,
                           "--result", str(out), "--arch", args.arch, "--batch", str(args.batch),
                           "--threads", str(args.threads), "--repeats", str(args.repeats),
                           "--clock", args.clock]
                subprocess.run(command, env=env, check=True)
                runs[side].append(json.loads(out.read_text()))
            print(f"round {r + 1}/{args.rounds}: minidnn forward "
                  f"{runs['minidnn'][-1]['forward_total_ms']:.3f} ms, infer "
                  f"{runs['minidnn'][-1]['infer_total_ms']:.3f} ms, torch "
                  f"{runs['torch'][-1]['total_ms']:.3f} ms", flush=True)

    def median_of(side, key, i=None, field="ms"):
        vals = [run[key][i][field] if i is not None else run[key] for run in runs[side]]
        return statistics.median(vals)
    md0 = runs["minidnn"][0]
    summary = {
        "benchmark": "inference_layers", "arch": args.arch, "batch": args.batch,
        "threads": args.threads, "rounds": args.rounds, "repeats": args.repeats,
        "clock": args.clock, "environment": env,
        "command": "python bench/inference_layers.py " + " ".join(
            argv if argv is not None else sys.argv[1:]),
        "gemm_peak_gflops": statistics.median(r["gemm_peak_gflops"] for r in runs["minidnn"]),
        "forward_layers": [{"layer": l["layer"], "ms": median_of("minidnn", "forward_layers", i)}
                           for i, l in enumerate(md0["forward_layers"])],
        "plan_stages": [{"stage": s["stage"], "layers": s["layers"],
                         "ms": median_of("minidnn", "plan_stages", i)}
                        for i, s in enumerate(md0["plan_stages"])],
        "torch_layers": [{"layer": l["layer"], "ms": median_of("torch", "layers", i)}
                         for i, l in enumerate(runs["torch"][0]["layers"])],
        "forward_total_ms": median_of("minidnn", "forward_total_ms"),
        "infer_total_ms": median_of("minidnn", "infer_total_ms"),
        "torch_total_ms": median_of("torch", "total_ms"), "runs": runs}
    print(f"\n{args.arch} batch {args.batch}, {args.threads} thread(s), {args.clock} clock, "
          f"medians of {args.rounds} rounds x {args.repeats} repeats; GEMM peak "
          f"{summary['gemm_peak_gflops']:.1f} GFLOP/s")
    print("minidnn forward(training=False), layer by layer:")
    for row in summary["forward_layers"]:
        print(f"  {row['layer'][:46]:<46} {row['ms']:8.3f} ms")
    print("minidnn infer, stage by stage:")
    for row in summary["plan_stages"]:
        print(f"  {row['layers'][:46]:<46} {row['ms']:8.3f} ms")
    print(f"torch ({runs['torch'][0]['framework']}), layer by layer:")
    for row in summary["torch_layers"]:
        print(f"  {row['layer'][:46]:<46} {row['ms']:8.3f} ms")
    print(f"whole call: forward {summary['forward_total_ms']:.3f} ms, infer "
          f"{summary['infer_total_ms']:.3f} ms, torch {summary['torch_total_ms']:.3f} ms")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=1) + "\n")
        print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
