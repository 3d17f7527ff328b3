"""Speed of semi-synchronous updates (technique 4): sync against semi-sync.

Two measurements, each variant in its own clean subprocess with the same
thread caps, repeats interleaved (A B C A B C ...), medians reported, and a
float32 GEMM peak measured in the same run for scale:

1. the FC weight gradient alone: ``Dense(F, F).backward_params`` on a batch,
   full (sync) against ``active_units`` = one of ⌈√F⌉ groups, contiguous
   (a slice) and random (an index array);
2. one training step (forward + backward + update) of the ``vgg-cifar``
   net, SGD against SemiSyncSGD on fc6/fc7, and the time per epoch it
   implies (50,000 images / batch);
3. the same step of the FC head alone (fc6, fc7, fc8 on the flattened
   conv features), sync / semi contiguous / semi random, where the saving
   would show if the convolutions were free;
4. a profile of the whole step: conv body (conv, BN, ReLU, pool) against
   FC head (forward + backward) against the optimizer update, which says
   where the step time goes.

    python bench/semisync_speed.py --threads 1          # full size, ~6 min
    python bench/semisync_speed.py --tiny                # a smoke run, seconds
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
#: wall clock (the default, for a quiet machine); ``--clock cpu`` uses the
#: process's CPU time, which a busy machine's time slicing does not inflate
CLOCK = time.perf_counter
sys.path.insert(0, str(BENCH_DIR.parent))


def worker(kind: str, args) -> dict:
    from minidnn import architectures
    from minidnn.layers import Dense
    from minidnn.losses import SoftmaxCrossEntropy
    from minidnn.optimizers import SGD
    from minidnn.semisync import NeuronGroups, SemiSyncSGD
    rng = np.random.default_rng(0)
    if kind == "gemm_peak":
        n = args.gemm
        a = rng.standard_normal((n, n)).astype(np.float32)
        b = rng.standard_normal((n, n)).astype(np.float32)
        a @ b
        ts = []
        for _ in range(args.inner):
            t = CLOCK()
            a @ b
            ts.append(CLOCK() - t)
        return {"gflops": 2 * n ** 3 / np.median(ts) / 1e9, "n": n}
    if kind.startswith("fc_grad"):
        F, B = args.fc, args.batch
        layer = Dense(F, F, rng=0)
        x = rng.standard_normal((B, F)).astype(np.float32)
        g = rng.standard_normal((B, F)).astype(np.float32)
        layer.forward(x, training=True)
        order = "random" if kind.endswith("random") else "contiguous"
        groups = NeuronGroups(F, order=order, seed=0)
        ts = []
        for i in range(args.inner + 3):
            layer.active_units = None if kind == "fc_grad_sync" else groups.active(i)
            t = CLOCK()
            layer.backward_params(g)
            ts.append(CLOCK() - t)
        return {"seconds": float(np.median(ts[3:])), "groups": len(groups),
                "flops_full": 2 * B * F * F}
    if kind in ("step_sync", "step_semi"):
        spec = f"vgg-cifar:width={args.width},fc={args.fc}" + (f",{args.options}" if args.options else "")
        model = architectures.build(spec, input_shape=(3, 32, 32), seed=0)
        opt = SGD(0.001, 0.9) if kind == "step_sync" else SemiSyncSGD(0.001, 0.9)
        loss = SoftmaxCrossEntropy()
        x = rng.standard_normal((args.batch, 3, 32, 32)).astype(np.float32)
        y = rng.integers(0, 10, args.batch)
        ts = []
        for _ in range(args.inner + 2):
            t = CLOCK()
            opt.begin_step(model)
            _, grad = loss(model.forward(x, training=True), y)
            model.backward(grad, input_grad=False)
            opt.step(model)
            ts.append(CLOCK() - t)
        sec = float(np.median(ts[2:]))
        return {"seconds": sec, "epoch_seconds_50k": sec * math.ceil(50000 / args.batch),
                "architecture": spec}
    if kind in ("head_sync", "head_semi", "head_semi_random"):
        # the net's FC head alone (fc6, fc7, fc8 on the flattened conv features):
        # where the saving would show if the convolutions cost nothing
        from minidnn import Sequential
        from minidnn.layers import ReLU
        n_in = 8 * args.width
        model = Sequential([Dense(n_in, args.fc, init="he", name="fc6"), ReLU(),
                            Dense(args.fc, args.fc, init="he", name="fc7"), ReLU(),
                            Dense(args.fc, 10, name="fc8")], seed=0, input_shape=(n_in,))
        opt = SGD(0.001, 0.9) if kind == "head_sync" else SemiSyncSGD(
            0.001, 0.9, order="random" if kind.endswith("random") else "contiguous")
        loss = SoftmaxCrossEntropy()
        x = rng.standard_normal((args.batch, n_in)).astype(np.float32)
        y = rng.integers(0, 10, args.batch)
        ts = []
        for _ in range(args.inner * 5 + 5):
            t = CLOCK()
            opt.begin_step(model)
            _, grad = loss(model.forward(x, training=True), y)
            model.backward(grad, input_grad=False)
            opt.step(model)
            ts.append(CLOCK() - t)
        return {"seconds": float(np.median(ts[5:]))}
    if kind in ("profile_sync", "profile_semi"):
        # one training step split by layer (forward + backward) and the update,
        # the layers summed into conv body (conv, BN, ReLU, pool) and FC head
        spec = f"vgg-cifar:width={args.width},fc={args.fc}" + (f",{args.options}" if args.options else "")
        model = architectures.build(spec, input_shape=(3, 32, 32), seed=0)
        opt = SGD(0.001, 0.9) if kind == "profile_sync" else SemiSyncSGD(0.001, 0.9)
        loss = SoftmaxCrossEntropy()
        x = rng.standard_normal((args.batch, 3, 32, 32)).astype(np.float32)
        y = rng.integers(0, 10, args.batch)
        names = [layer.name for layer in model.layers]
        per = {n: [] for n in names + ["update"]}
        for it in range(args.inner + 2):
            t_layer = dict.fromkeys(names, 0.0)
            opt.begin_step(model)
            h = x
            for layer in model.layers:
                t = CLOCK()
                h = layer.forward(h, True)
                t_layer[layer.name] += CLOCK() - t
            _, grad = loss(h, y)
            for i in range(len(model.layers) - 1, -1, -1):
                layer = model.layers[i]
                t = CLOCK()
                if i == 0:
                    layer.backward_params(grad)  # no gradient for the data, as in fit
                else:
                    grad = layer.backward(grad)
                t_layer[layer.name] += CLOCK() - t
            t = CLOCK()
            opt.step(model)
            t_update = CLOCK() - t
            if it >= 2:
                for n in names:
                    per[n].append(t_layer[n])
                per["update"].append(t_update)
        med = {n: float(np.median(v)) for n, v in per.items()}
        head = ("flatten", "fc6", "relu_fc6", "drop_fc6", "bn_fc6", "fc7", "relu_fc7",
                "drop_fc7", "bn_fc7", "fc8")
        fc_s = sum(v for n, v in med.items() if n.startswith(("fc", "relu_fc", "bn_fc", "drop_fc")))
        conv_s = sum(v for n, v in med.items() if n != "update" and n not in head)
        return {"layers": med, "conv_body_seconds": conv_s, "fc_head_seconds": fc_s,
                "update_seconds": med["update"], "architecture": spec}
    raise ValueError(kind)


KINDS = ("gemm_peak", "fc_grad_sync", "fc_grad_semi_contiguous", "fc_grad_semi_random",
         "step_sync", "step_semi", "head_sync", "head_semi", "head_semi_random",
         "profile_sync", "profile_semi")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--fc", type=int, default=1024, help="FC width F (default %(default)s → 32 groups)")
    p.add_argument("--width", type=int, default=8, help="vgg-cifar first-stage channels")
    p.add_argument("--options", default="bn=conv", help="vgg-cifar options (default %(default)s)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--gemm", type=int, default=1024)
    p.add_argument("--inner", type=int, default=20, help="timed calls per subprocess")
    p.add_argument("--repeats", type=int, default=5, help="interleaved subprocess rounds")
    p.add_argument("--tiny", action="store_true", help="smoke-test sizes")
    p.add_argument("--out", default=str(BENCH_DIR / "results" / "semisync_speed.json"))
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall (default; for the quiet machine) or cpu: process CPU time, for "
                        "indicative figures on a loaded machine")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.tiny:
        args.fc, args.width, args.gemm, args.inner, args.repeats = 64, 2, 128, 3, 2
    if args.worker:
        print(json.dumps(worker(args.worker, args)))
        return 0
    from _common import thread_env
    env = thread_env(args.threads)
    passthrough = ["--clock", args.clock, "--fc", str(args.fc), "--width", str(args.width), "--options", args.options,
                   "--batch", str(args.batch), "--gemm", str(args.gemm), "--inner", str(args.inner)]
    runs = {k: [] for k in KINDS}
    for r in range(args.repeats):
        for kind in KINDS:  # interleaved: a load spike hits every variant alike
            out = subprocess.run([sys.executable, __file__, "--worker", kind, *passthrough],
                                 env=env, capture_output=True, text=True, check=True)
            runs[kind].append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"round {r + 1}/{args.repeats} done", file=sys.stderr, flush=True)

    def med(kind, key="seconds"):
        return float(np.median([x[key] for x in runs[kind]]))
    peak = med("gemm_peak", "gflops")
    flops = runs["fc_grad_sync"][0]["flops_full"]
    G = runs["fc_grad_semi_contiguous"][0]["groups"]
    result = {
        "threads": args.threads, "clock": args.clock, "batch": args.batch, "fc": args.fc, "groups": G,
        "gemm_peak_gflops": peak,
        "fc_weight_grad_seconds": {k.replace("fc_grad_", ""): med(k) for k in KINDS if k.startswith("fc_grad")},
        "fc_weight_grad_sync_gflops": flops / med("fc_grad_sync") / 1e9,
        "step_seconds": {"sync": med("step_sync"), "semi": med("step_semi")},
        "epoch_seconds_50k": {"sync": med("step_sync", "epoch_seconds_50k"),
                              "semi": med("step_semi", "epoch_seconds_50k")},
        "fc_head_step_seconds": {"sync": med("head_sync"), "semi": med("head_semi"),
                                 "semi_random": med("head_semi_random")},
        "profile_seconds": {v: {part: float(np.median([r[part] for r in runs[f"profile_{v}"]]))
                                for part in ("conv_body_seconds", "fc_head_seconds", "update_seconds")}
                            for v in ("sync", "semi")},
        "architecture": runs["step_sync"][0]["architecture"], "repeats": args.repeats,
        "inner": args.inner, "raw": runs,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    fc = result["fc_weight_grad_seconds"]
    print(f"GEMM peak ({args.gemm}³ float32, {args.threads} thread(s)): {peak:.1f} GFLOP/s")
    print(f"FC weight gradient, Dense({args.fc},{args.fc}), batch {args.batch}, {G} groups:")
    print(f"  sync            {1e3 * fc['sync']:.3f} ms  ({result['fc_weight_grad_sync_gflops']:.1f} GFLOP/s)")
    for k in ("semi_contiguous", "semi_random"):
        print(f"  {k:<15} {1e3 * fc[k]:.3f} ms  (×{fc['sync'] / fc[k]:.1f} faster; ideal ×{G})")
    s = result["step_seconds"]
    print(f"training step {result['architecture']}, batch {args.batch}: sync {1e3 * s['sync']:.1f} ms, "
          f"semi {1e3 * s['semi']:.1f} ms; epoch of 50k: sync {result['epoch_seconds_50k']['sync']:.0f} s, "
          f"semi {result['epoch_seconds_50k']['semi']:.0f} s")
    h = result["fc_head_step_seconds"]
    print(f"FC head alone (fc6, fc7, fc8), training step: sync {1e3 * h['sync']:.2f} ms, "
          f"semi {1e3 * h['semi']:.2f} ms (×{h['sync'] / h['semi']:.2f}), "
          f"semi random {1e3 * h['semi_random']:.2f} ms")
    for v, prof in result["profile_seconds"].items():
        total = sum(prof.values())
        print(f"step profile ({v}): conv body (conv, BN, ReLU, pool) {1e3 * prof['conv_body_seconds']:.1f} ms "
              f"({100 * prof['conv_body_seconds'] / total:.0f} %), FC head {1e3 * prof['fc_head_seconds']:.2f} ms "
              f"({100 * prof['fc_head_seconds'] / total:.1f} %), update {1e3 * prof['update_seconds']:.2f} ms "
              f"({100 * prof['update_seconds'] / total:.1f} %)")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
