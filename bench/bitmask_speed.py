"""Inference speed and weight bytes: integer-path bit-mask LeNet vs float32 (issue #10).

    python bench/bitmask_speed.py [--model /work/artifacts/lenet_caffe.h5]
        [--patterns conv1=6_2_0_1_0,conv2=7_3_0_1_2_0,ip1=8_4_0_1_2_3_0,ip2=7_3_0_1_2_0]
        [--threads 1] [--repeats 5] [--batches 1 100] [--tiny]

Peers, each timed in its own clean subprocess with the same thread caps:

* ``float32``: the trained model as it is (BLAS GEMMs);
* ``weight_only``: the quantized model, dequantized weights, float GEMMs;
* ``integer``: the quantized model on its integer path (int8 codes × int16
  activation codes, int32 sums in the Numba kernel, one scale per channel).

Rounds are interleaved (peer A, B, C, A, B, C, …) and medians reported, in
ms per batch and images/s; a float32 GEMM's GFLOP/s is measured in each
subprocess so a loaded machine shows itself. Results:
bench/results/bitmask_speed.json. ``--tiny`` is a seconds-long smoke run.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np

from _common import BENCH_DIR, RESULTS_DIR, machine_info, thread_env, write_json

CHILD = r"""
import json, sys, time
import numpy as np
import minidnn as md
from minidnn.quantization import calibrate, quantize_model, set_integer, weight_bytes
cfg = json.loads(sys.argv[1])
model = md.load(cfg["model"])
x_cal = np.random.default_rng(0).random((200,) + tuple(model.input_shape or (1, 28, 28))).astype(np.float32)
if cfg["peer"] != "float32":
    model = quantize_model(model, cfg["patterns"])
    calibrate(model, x_cal)
    set_integer(model, cfg["peer"] == "integer")
x = np.random.default_rng(1).random((cfg["batch"],) + x_cal.shape[1:]).astype(np.float32)
model.forward(x)                                      # compile / warm up
t = time.perf_counter(); model.forward(x); once = time.perf_counter() - t
reps = max(1, int(cfg["min_seconds"] / max(once, 1e-5)))
t0 = time.perf_counter()
for _ in range(reps):
    model.forward(x)
ms = (time.perf_counter() - t0) / reps * 1e3
a = np.random.default_rng(2).random((512, 512)).astype(np.float32)
t1 = time.perf_counter(); n = 0
while time.perf_counter() - t1 < 0.2:
    a @ a; n += 1
gflops = 2 * 512 ** 3 * n / (time.perf_counter() - t1) / 1e9
print(json.dumps({"ms_per_batch": ms, "reps": reps, "gemm_gflops": gflops,
                  "weight_bytes": sum(weight_bytes(model).values())}))
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="/work/artifacts/lenet_caffe.h5")
    ap.add_argument("--patterns", default="conv1=6_2_0_1_0,conv2=7_3_0_1_2_0,"
                                          "ip1=8_4_0_1_2_3_0,ip2=7_3_0_1_2_0")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 100])
    ap.add_argument("--min-seconds", type=float, default=1.0, help="timed seconds per round")
    ap.add_argument("--tiny", action="store_true", help="smoke run: 1 repeat, 0.05 s rounds")
    ap.add_argument("--out", default=str(RESULTS_DIR / "bitmask_speed.json"))
    args = ap.parse_args(argv)
    if args.tiny:
        args.repeats, args.min_seconds = 1, 0.05
    patterns = dict(item.split("=", 1) for item in args.patterns.split(","))
    env = thread_env(args.threads)
    peers = ("float32", "weight_only", "integer")
    raw = {f"{p}@{b}": [] for p in peers for b in args.batches}
    for r in range(args.repeats):
        for batch in args.batches:
            for peer in peers:
                cfg = {"model": args.model, "peer": peer, "batch": batch, "patterns": patterns,
                       "min_seconds": args.min_seconds}
                done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cfg)], env=env,
                                      cwd=BENCH_DIR.parent, capture_output=True, text=True)
                if done.returncode != 0:
                    raise RuntimeError(f"{peer} batch {batch} failed:\n{done.stderr}")
                raw[f"{peer}@{batch}"].append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(f"round {r + 1} {peer:>11} batch {batch:>4}: "
                      f"{raw[f'{peer}@{batch}'][-1]['ms_per_batch']:.3f} ms", flush=True)
    summary = {}
    for key, runs in raw.items():
        ms = float(np.median([x["ms_per_batch"] for x in runs]))
        batch = int(key.split("@")[1])
        summary[key] = {"median_ms_per_batch": ms, "images_per_s": batch / ms * 1e3,
                        "median_gemm_gflops": float(np.median([x["gemm_gflops"] for x in runs])),
                        "weight_bytes": runs[0]["weight_bytes"]}
    write_json(__import__("pathlib").Path(args.out),
               {"model": args.model, "patterns": patterns, "threads": args.threads,
                "repeats": args.repeats, "summary": summary, "raw": raw,
                "machine": machine_info(), "tiny": args.tiny})
    for key, s in summary.items():
        print(f"{key:>16}: {s['median_ms_per_batch']:8.3f} ms/batch  {s['images_per_s']:9.0f} img/s  "
              f"weights {s['weight_bytes']:,} B  (GEMM {s['median_gemm_gflops']:.1f} GFLOP/s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
