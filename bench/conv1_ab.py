"""The first convolution alone (Cifar10_quick's and LeNet's conv1): the register-tiled
direct kernels against the plane-by-plane ones, interleaved in ONE process, and
PyTorch's same layer in its own clean subprocess (same threads).

    python bench/conv1_ab.py [--threads 1] [--repeats 30] [--clock auto|cpu|wall]
                             [--geometry cifar10-quick lenet] [--no-torch]
                             [--out bench/results/conv1_ab_1t.json]

For each geometry (Cifar10_quick: Conv2D(3, 32, 5, padding=2) on 3×32×32, batch 100;
LeNet: Conv2D(1, 20, 5) on 1×28×28, batch 64; float32) and each repeat, both
variants run in turn (order alternating):

* ``tiled`` (what ``Conv2D._direct_tiled_applies`` runs): ``direct_conv.window_rows`` (the input
  transform alone: NCHW -> zero-padded rows (N, Hp, C, Wp)), ``direct_conv_tiled``
  (the forward, bias included, which writes the rows itself sample by sample:
  its time includes the transform, as the layer runs it) and
  ``direct_conv_weight_grad_tiled`` (dW and db);
* ``plane``: the zero-padded NCHW copy (``x_pad[:, :, ph:, pw:] = x``), the
  plane-by-plane ``direct_conv`` and ``direct_conv_weight_grad`` + NumPy's
  ``grad.sum(axis=(0, 2, 3))`` for db (sitting 18's path; the layer's fallback since).

No input gradient is computed: conv1 is the first layer (``backward_params``).
PyTorch: ``nn.Conv2d`` forward, then ``backward`` with the input not requiring a
gradient (dW and db only), in a process whose environment is built from scratch
(``speed_vs_torch.clean_env``), after warm-up, medians of the same repeats. The
clock is CPU time at one thread (``time.process_time``) and wall time at more
(``--clock``). The run also times a 1024³ float32 GEMM (the machine's peak at
these threads) and reports every pass's GFLOP/s (2 · N·O·OH·OW·C·kh·kw).
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

#: name -> (batch, in channels, image size, out channels, kernel, padding)
GEOMETRIES = {"cifar10-quick": (100, 3, 32, 32, 5, 2), "lenet": (64, 1, 28, 20, 5, 0)}

TORCH_WORKER = r"""
import json, sys, time
import torch
threads, repeats, clock_name = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
geometries = json.loads(sys.argv[4])
torch.set_num_threads(threads)
clock = time.process_time if clock_name == "cpu" else time.perf_counter
out = {"torch": torch.__version__, "threads": torch.get_num_threads()}
for name, (N, C, H, O, k, p) in geometries.items():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(C, O, k, padding=p)
    x = torch.rand(N, C, H, H)
    g = torch.randn(conv(x).shape)
    for _ in range(5):
        conv.zero_grad(set_to_none=True)
        conv(x).backward(g)
    fwd, bwd = [], []
    for _ in range(repeats):
        conv.zero_grad(set_to_none=True)
        t0 = clock(); y = conv(x); t1 = clock(); y.backward(g); t2 = clock()
        fwd.append(t1 - t0); bwd.append(t2 - t1)
    fwd.sort(); bwd.sort()
    out[name] = {"forward_ms": 1e3 * fwd[len(fwd) // 2], "backward_ms": 1e3 * bwd[len(bwd) // 2]}
print(json.dumps(out))
"""


def run_torch(threads, repeats, clock_name, geometries) -> dict:
    from bench._common import clean_env
    env = clean_env(threads)
    print("torch worker environment:", " ".join(f"{k}={v}" for k, v in sorted(env.items())))
    done = subprocess.run([sys.executable, "-c", TORCH_WORKER, str(threads), str(repeats),
                           clock_name, json.dumps(geometries)], env=env, capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        print("torch worker failed:", done.stderr.strip().splitlines()[-1:])
        return {}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--clock", choices=("auto", "cpu", "wall"), default="auto")
    parser.add_argument("--geometry", nargs="+", default=list(GEOMETRIES), choices=list(GEOMETRIES))
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    import numpy as np

    import minidnn
    from bench._common import gemm_peak_gflops, rotated, save_result
    from minidnn.kernels import direct_conv as dc
    minidnn.configure_threads(args.threads)
    use_cpu = args.clock == "cpu" or (args.clock == "auto" and args.threads == 1)
    clock = time.process_time if use_cpu else time.perf_counter
    clock_name = "cpu" if use_cpu else "wall"
    rng = np.random.default_rng(0)
    result = {"threads": args.threads, "repeats": args.repeats,
              "clock": ("process_time" if use_cpu else "perf_counter") + ", one process, interleaved",
              "geometries": {}}
    for name in args.geometry:
        N, C, H, O, k, p = GEOMETRIES[name]
        x = rng.random((N, C, H, H), dtype=np.float32)
        W = (rng.standard_normal((O, C, k, k)) * 0.1).astype(np.float32)
        b = rng.standard_normal(O).astype(np.float32)
        OH = H + 2 * p - k + 1
        g = rng.standard_normal((N, O, OH, OH)).astype(np.float32)
        x_pad = np.zeros((N, C, H + 2 * p, H + 2 * p), np.float32)
        xr = np.empty((N, H + 2 * p, C, H + 2 * p), np.float32)
        y = np.empty((N, O, OH, OH), np.float32)
        flops = 2.0 * N * O * OH * OH * C * k * k

        def plane():
            t0 = clock()
            x_pad[:, :, p:p + H, p:p + H] = x
            t1 = clock()
            dc.direct_conv(x, W, b, 1, p, x_pad_buffer=x_pad if p else None, out=y)
            t2 = clock()
            dW = dc.direct_conv_weight_grad(x_pad if p else x, g, (k, k))
            db = g.sum(axis=(0, 2, 3))
            t3 = clock()
            return (t1 - t0, t2 - t1, t3 - t2), (y.copy(), dW, db)

        def tiled():
            t0 = clock()
            dc.window_rows(x, p, out=xr)
            t1 = clock()
            # the layer's call: the transform again, inside (it is what the layer runs)
            dc.direct_conv_tiled(x, W, b, p, rows_buffer=xr, out=y)
            t2 = clock()
            dW, db = dc.direct_conv_weight_grad_tiled(xr, g, (k, k))
            t3 = clock()
            return (t1 - t0, t2 - t1, t3 - t2), (y.copy(), dW, db)

        variants = {"plane": plane, "tiled": tiled}
        for fn in variants.values():
            for _ in range(3):
                fn()
        (_, ref), (_, new) = plane(), tiled()
        diffs = [float(np.max(np.abs(a - c)) / max(float(np.max(np.abs(c))), 1e-30))
                 for a, c in zip(new, ref)]
        times = {v: [] for v in variants}
        for r in range(args.repeats):
            for v in rotated(("plane", "tiled"), r):
                times[v].append(variants[v]()[0])
        row = {"shape": {"batch": N, "in": C, "size": H, "out": O, "kernel": k, "padding": p},
               "max_rel_diff_y_dW_db": diffs}
        print(f"{name}: batch {N}, {C}->{O} {k}x{k} pad {p} on {H}x{H}, {args.threads} thread(s), "
              f"{clock_name} clock; tiled vs plane relative differences y/dW/db "
              + " ".join(f"{d:.1e}" for d in diffs))
        for v in variants:
            med = 1e3 * np.median(np.array(times[v]), axis=0)
            row[v] = {"transform_ms": med[0], "forward_ms": med[1], "weight_grad_ms": med[2],
                      "forward_gflops": flops / med[1] / 1e6,
                      "weight_grad_gflops": flops / med[2] / 1e6}
            print(f"  {v:<6} transform {med[0]:6.3f}  forward {med[1]:6.2f} "
                  f"({flops / med[1] / 1e6:5.1f} GFLOP/s)  dW+db {med[2]:6.2f} "
                  f"({flops / med[2] / 1e6:5.1f} GFLOP/s) ms")
        result["geometries"][name] = row
    result["gemm_peak_gflops"] = gemm_peak_gflops(clock)
    print(f"GEMM 1024^3: {result['gemm_peak_gflops']:.1f} GFLOP/s")
    if not args.no_torch:
        torch_res = run_torch(args.threads, args.repeats, clock_name,
                              {n: GEOMETRIES[n] for n in args.geometry})
        result["torch"] = torch_res
        for name in args.geometry:
            if name in torch_res:
                t = torch_res[name]
                print(f"  torch {torch_res.get('torch')} {name}: forward {t['forward_ms']:.2f}  "
                      f"dW+db {t['backward_ms']:.2f} ms")
    if args.out:
        save_result(args.out, result, announce=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
