"""Cifar10_quick's conv2 and conv3 layer by layer, at a given thread count: the
implicit-GEMM path with its kernels split over Numba's threads and PyTorch's same
layer, each side in its own clean subprocess, rounds interleaved.

    python bench/implicit_conv_threads.py [--threads 2] [--repeats 15] [--rounds 3]
                                          [--clock auto|cpu|wall] [--no-torch]
                                          [--out bench/results/implicit_conv_threads.json]

Layers: conv2 = Conv2D(32, 32, 5, padding=2) on 16×16, conv3 = Conv2D(32, 64, 5,
padding=2) on 8×8, batch 100, float32, random data. Per variant, per repeat (the
variants interleaved, their order alternating):

* ``forward``: ``layer.forward(x, training=True)`` (PyTorch: ``conv(x)`` with
  autograd on);
* ``dW``: ``layer.backward_params(dY)``, the weight and bias gradients (PyTorch:
  ``autograd.grad(y, [W, b], dY)``);
* ``backward``: ``layer.backward(dY)``, dx, dW and db (PyTorch: ``autograd.grad(y,
  [x, W, b], dY)``); ``dx`` is reported as backward − dW.

Sitting 22 deleted the other variants with their switches: ``implicit-1t``
(``Conv2D.IMPLICIT_PARALLEL`` = False, the kernels on the calling thread: conv2
forward 18.2 against 13.9 ms, quiet) and ``im2row`` (``Conv2D.IMPLICIT`` = False:
28.7 ms; ``results/implicit_conv_threads_2t_quiet.json``). The same worker also
reports each thread's CPU time per pass (``conv_nchw``, ``backward_nchw``; until
sitting 22 the separate kernels ``conv_rows`` / ``weight_grad_rows``;
``/proc/self/task/*/schedstat``; a fair measure of how the work is split even on a
loaded machine), and the GEMM rate of a 1024³ float32 product.

Each worker is a fresh process with an environment built from scratch (thread
variables = ``--threads``), and the rounds alternate which framework goes first;
medians over all repeats of all rounds are reported. The clock is wall time
(``perf_counter``) at more than one thread and the process's CPU time at one
(``--clock`` overrides). On a loaded machine two-thread wall times are not fair;
the per-thread CPU split is.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LAYERS = {"conv2": (32, 32, 16), "conv3": (32, 64, 8)}     # C in, O out, H = W
BATCH, KERNEL, PAD = 100, 5, 2
VARIANTS = ("implicit",)


def worker_minidnn(threads: int, repeats: int, use_cpu: bool) -> dict:
    import numpy as np

    import minidnn
    from minidnn.kernels import implicit_conv as ic
    from bench._common import conv_pass_times, thread_cpu_split_ms
    from minidnn.layers.conv import Conv2D
    minidnn.configure_threads(threads)
    clock = time.process_time if use_cpu else time.perf_counter
    rng = np.random.default_rng(0)
    result = {"layers": {}, "thread_split_ms": {}}
    for name, (C, O, H) in LAYERS.items():
        x = rng.standard_normal((BATCH, C, H, H)).astype(np.float32)
        g = rng.standard_normal((BATCH, O, H, H)).astype(np.float32)
        layers = {}
        for variant in VARIANTS:
            layer = Conv2D(C, O, KERNEL, padding=PAD, rng=0)
            layers[variant] = layer
        assert layers["implicit"]._implicit_applies(x.shape), "no AVX2 + FMA here?"

        def run(variant):
            return conv_pass_times(layers[variant], x, g, clock)[0]

        for _ in range(3):                                  # JIT, buffers
            for variant in VARIANTS:
                run(variant)
        times = {v: [] for v in VARIANTS}
        for r in range(repeats):
            order = VARIANTS if r % 2 == 0 else VARIANTS[::-1]
            for variant in order:
                times[variant].append(run(variant))
        rows = {}
        for variant, values in times.items():
            fwd, dW, bwd = (1e3 * float(np.median([v[i] for v in values])) for i in range(3))
            rows[variant] = {"forward_ms": fwd, "dW_ms": dW, "backward_ms": bwd,
                             "dx_ms": bwd - dW}
        result["layers"][name] = rows
        # how one call's CPU time is spread over the threads (implicit, parallel)
        layer = layers["implicit"]
        layer.forward(x, training=True)
        layer.backward(g)
        x_pad = layer._implicit_x_pad
        g_pad = layer._scratch._arrays["implicit_g_pad"]
        W, b = layer.params["W"], layer.params["b"]
        # the layer's whole passes (one parallel region each, sitting 20)
        calls = {"forward pass": lambda: ic.conv_nchw(x, W, b, (PAD, PAD), x_pad),
                 "backward pass": lambda: ic.backward_nchw(g, x_pad, W, (PAD, PAD), g_pad),
                 "dW pass": lambda: ic.backward_nchw(g, x_pad, W, (PAD, PAD), g_pad,
                                                     input_grad=False)}
        split = {}
        for call, fn in calls.items():
            fn()
            # (the pause: past OpenBLAS's spin time-out after im2row's products)
            split[call] = thread_cpu_split_ms(fn, max(5, repeats // 2), pause_s=0.15)
        result["thread_split_ms"][name] = split
        # the same forward kernel right after a BLAS product at the thread count: the
        # process's CPU time grows by what OpenBLAS's spinning threads burn meanwhile
        # (the im2row side of an A/B leaves them spinning into the implicit side)
        gemm_a = rng.random((400, 400), dtype=np.float32)
        forward = calls["forward pass"]
        alone, after = [], []
        for _ in range(max(5, repeats // 2)):
            time.sleep(0.25)                    # past OpenBLAS's spin time-out (~0.1 s)
            t0 = time.process_time()
            forward()
            alone.append(time.process_time() - t0)
            gemm_a @ gemm_a
            t0 = time.process_time()
            forward()
            after.append(time.process_time() - t0)
        result.setdefault("forward_cpu_ms_alone_vs_after_blas", {})[name] = [
            1e3 * float(np.median(alone)), 1e3 * float(np.median(after))]
    from bench._common import gemm_peak_gflops
    result["gemm_peak_gflops"] = gemm_peak_gflops(clock)
    return result


def worker_torch(threads: int, repeats: int, use_cpu: bool) -> dict:
    import numpy as np
    import torch
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    clock = time.process_time if use_cpu else time.perf_counter
    result = {"layers": {}, "torch": torch.__version__}
    for name, (C, O, H) in LAYERS.items():
        conv = torch.nn.Conv2d(C, O, KERNEL, padding=PAD)
        x = torch.randn(BATCH, C, H, H, requires_grad=True)
        g = torch.randn(BATCH, O, H, H)
        params = list(conv.parameters())

        def run():
            t0 = clock()
            y = conv(x)
            t1 = clock()
            torch.autograd.grad(y, params, g)
            t2 = clock()
            y = conv(x)
            t3 = clock()
            torch.autograd.grad(y, [x] + params, g)
            t4 = clock()
            return (t1 - t0 + t3 - t2) / 2, t2 - t1, t4 - t3

        for _ in range(3):
            run()
        values = [run() for _ in range(repeats)]
        fwd, dW, bwd = (1e3 * float(np.median([v[i] for v in values])) for i in range(3))
        result["layers"][name] = {"torch": {"forward_ms": fwd, "dW_ms": dW,
                                            "backward_ms": bwd, "dx_ms": bwd - dW}}
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clock", choices=("auto", "cpu", "wall"), default="auto")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--worker", choices=("minidnn", "torch"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    use_cpu = args.clock == "cpu" or (args.clock == "auto" and args.threads == 1)
    if args.worker:
        fn = worker_minidnn if args.worker == "minidnn" else worker_torch
        print(json.dumps(fn(args.threads, args.repeats, use_cpu)))
        return 0
    import numpy as np

    from bench._common import clean_env, rotated
    env = clean_env(args.threads)
    print("worker environment (built from scratch):", env)
    sides = ["minidnn"] + ([] if args.no_torch else ["torch"])
    runs = {side: [] for side in sides}
    for r in range(args.rounds):
        for side in rotated(sides, r):
            cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", side,
                   "--threads", str(args.threads), "--repeats", str(args.repeats),
                   "--clock", "cpu" if use_cpu else "wall"]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False,
                                 cwd=str(ROOT))
            if out.returncode != 0:
                print(out.stderr, file=sys.stderr)
                if side == "torch":
                    print("torch worker failed: continuing without it", file=sys.stderr)
                    continue
                return 1
            runs[side].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"round {r + 1}: {side} done", flush=True)

    def median_of(side, layer, variant, key):
        return float(np.median([run["layers"][layer][variant][key] for run in runs[side]]))

    table = {}
    for layer in LAYERS:
        table[layer] = {}
        for side, variants in (("minidnn", VARIANTS), ("torch", ("torch",))):
            if not runs.get(side):
                continue
            for variant in variants:
                table[layer][variant] = {key: median_of(side, layer, variant, key)
                                         for key in ("forward_ms", "dx_ms", "dW_ms",
                                                     "backward_ms")}
    clock = "process_time" if use_cpu else "perf_counter"
    peak = float(np.median([run["gemm_peak_gflops"] for run in runs["minidnn"]]))
    print(f"\n{args.threads} thread(s), batch {BATCH}, clock {clock}, {args.rounds} rounds × "
          f"{args.repeats} repeats (medians of per-round medians); GEMM 1024^3 {peak:.1f} GFLOP/s")
    print(f"  {'layer':<6} {'variant':<12} {'fwd':>7} {'dx':>7} {'dW':>7} {'fwd+bwd':>8}   ms")
    for layer, rows in table.items():
        for variant, row in rows.items():
            total = row["forward_ms"] + row["backward_ms"]
            ratio = ""
            if "torch" in rows and variant != "torch":
                ratio = (f"  {total / (rows['torch']['forward_ms'] + rows['torch']['backward_ms']):.2f}"
                         f"× torch")
            print(f"  {layer:<6} {variant:<12} {row['forward_ms']:7.2f} {row['dx_ms']:7.2f} "
                  f"{row['dW_ms']:7.2f} {total:8.2f}{ratio}")
    print("  per-thread CPU ms of one implicit pass (calling thread | workers), "
          "last round:")
    for layer, split in runs["minidnn"][-1]["thread_split_ms"].items():
        print(f"    {layer}: " + "; ".join(
            f"{call} {s['calling_thread_ms']:.2f} | "
            + " + ".join(f"{w:.2f}" for w in s["worker_threads_ms"])
            for call, s in split.items()))
    print("  implicit forward pass, process CPU ms alone vs right after a BLAS product "
          "(last round): " + ", ".join(
              f"{layer} {a:.2f} vs {b:.2f}" for layer, (a, b) in
              runs["minidnn"][-1]["forward_cpu_ms_alone_vs_after_blas"].items()))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"threads": args.threads, "repeats": args.repeats,
                                        "rounds": args.rounds, "clock": clock,
                                        "environment": env, "gemm_peak_gflops": peak,
                                        "table_ms": table, "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
