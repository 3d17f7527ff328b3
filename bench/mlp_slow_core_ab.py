"""The MLP's 2-thread epoch with the second core made slow on purpose (sitting 24, s24-mlp).

    python bench/mlp_slow_core_ab.py                       # ~6 min: 3 loads x 3 rounds
    python bench/mlp_slow_core_ab.py --rounds 1 --images 20000 --no-torch    # ~1 min

The machine's "slow modes" (another process wants a core for minutes) doubled the
784-500-10 ReLU epoch at two threads (0.55 -> 1.2 s) while a 1024³ GEMM lost only ~22 %.
This makes such a mode on demand: a load generator pinned to CPU ``--cpu`` (default 1)
spins ``duty · period`` ms and sleeps the rest of each ``--period-ms`` period, for each
duty of ``--duties`` (default 0, 0.3, 0.6: 0 %, 30 %, 60 % of that core). Under each load,
in one process per Numba threading layer (workqueue, omp; ``minidnn.configure_threads(2,
numba_layer=...)``), the arms below run one ``minidnn.fit`` epoch each in rotating order,
``--repeats`` times:

* ``openblas2``: Dense's training products on OpenBLAS's own two threads (the default);
* ``blas1``: BLAS on one thread (threadpoolctl), Numba at two;
* ``openblas2_numba1``: the default with Numba at one thread (whether any Numba region of
  the dense step matters);

(until the end of sitting 24 also ``shared`` and ``numba1``: Dense's large products as
column blocks claimed by the threads, one-thread BLAS each, ``Dense.SHARE_TRAINING_PRODUCTS``;
never catastrophic under load but 1.5x slower in the quiet fast mode, and no better than
``blas1`` under load, so the path was deleted; its figures are in
``results/mlp_slow_core_*_s24m.json``, measured at commit 7cb8e1d)

and a control in the same process: a 1024³ float32 GEMM at two and at one BLAS thread.
Then one epoch per arm of ``openblas2`` / ``blas1`` with wall-clock timers
around the step's parts (the fused first layer's forward and backward, the 500->10
layer, the loss, the optimizer, the gather; the rest is the fit loop), so that the
slow-down is placed. Then PyTorch's same epoch (``torch.set_num_threads(2)``, nn.Linear
784-500-10, SGD lr 0.1 momentum 0.9, batch 100) in its own process, in an environment
built clean (``_common.clean_env``), under the same load. Medians per load; results to
``results/mlp_slow_core_s24m.json``. Timings on this shared 2-core machine are guides:
read them against the control and against each other, never as README figures.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import RESULTS_DIR, clean_env, machine_info, rotated, write_json  # noqa: E402

ARCH = "mlp:784-500-10:relu"
LOAD_SOURCE = """
import os, sys, time
cpu, duty, period = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]) / 1e3
os.sched_setaffinity(0, {cpu})
spin, rest = duty * period, (1 - duty) * period
while True:
    t = time.perf_counter()
    while time.perf_counter() - t < spin:
        pass
    time.sleep(rest)
"""
ARMS = ("openblas2", "blas1", "openblas2_numba1")
PART_ARMS = ("openblas2", "blas1")


class Load:
    """The load generator as a context: a process pinned to ``cpu`` busy ``duty`` of each
    ``period_ms`` (nothing for duty 0)."""

    def __init__(self, cpu: int, duty: float, period_ms: float):
        self.args = [str(cpu), str(duty), str(period_ms)]
        self.duty, self.proc = duty, None

    def __enter__(self):
        if self.duty > 0:
            self.proc = subprocess.Popen([sys.executable, "-c", LOAD_SOURCE, *self.args])
            time.sleep(0.3)
        return self

    def __exit__(self, *exc):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
        return False


# -- the minidnn worker ------------------------------------------------------------------------

def _arm_settings(arm):
    """(BLAS threads, Numba threads) of an arm."""
    return {"openblas2": (2, 2), "blas1": (1, 2), "openblas2_numba1": (2, 1)}[arm]


def _timed_parts(md, model, opt, spent):
    """Wall-clock wrappers around the step's parts; returns a function that removes them."""
    import minidnn.training as training
    undo = []

    def wrap(obj, name, label):
        inner = obj.__dict__.get(name)
        bound = getattr(obj, name)

        def timed(*args, **kwargs):
            t0 = time.perf_counter_ns()
            try:
                return bound(*args, **kwargs)
            finally:
                spent[label] = spent.get(label, 0) + time.perf_counter_ns() - t0
        setattr(obj, name, timed)
        undo.append((obj, name, inner))

    first, last = [step for _, step in model.plan() if hasattr(step, "forward")][1:3]
    wrap(first, "forward", "first layer + relu forward")
    wrap(first, "backward_params", "first layer + relu backward")
    wrap(last, "forward", "dense 500->10 forward")
    wrap(last, "backward", "dense 500->10 backward")
    wrap(opt, "step", "optimizer")
    wrap(training, "_gather_batch", "gather")

    def remove():
        for obj, name, inner in undo:
            if inner is None:
                delattr(obj, name)
            else:
                setattr(obj, name, inner)
    return remove


def worker(layer: str, images: int, repeats: int) -> dict:
    import numba
    from threadpoolctl import threadpool_limits

    import minidnn as md
    from minidnn import architectures
    md.configure_threads(2, numba_layer=layer)
    from minidnn import data
    splits = data.load("mnist", progress=False)
    x, y = splits.train.x[:images], splits.train.y[:images]
    square = np.random.default_rng(1).random((1024, 1024), dtype=np.float32)

    def gemm(threads):
        with threadpool_limits(threads):
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                square @ square
                times.append(time.perf_counter() - t0)
        return 2 * 1024 ** 3 / float(np.median(times)) / 1e9

    def epoch(arm, parts=None):
        blas, nb = _arm_settings(arm)
        numba.set_num_threads(nb)
        model = architectures.build(ARCH, input_shape=x.shape[1:], seed=0)
        opt = md.SGD(lr=0.1, momentum=0.9)
        remove = _timed_parts(md, model, opt, parts) if parts is not None else None
        try:
            with threadpool_limits(blas):
                t0 = time.perf_counter()
                history = md.fit(model, (x, y), epochs=1, batch_size=100, optimizer=opt, seed=0,
                                 progress=False, log=None)
                if parts is not None:       # the parts include fit's evaluation passes
                    return time.perf_counter() - t0
        finally:
            if remove:
                remove()
            numba.set_num_threads(2)
        return history["seconds"][0]

    for arm in ARMS:                     # compile, load, start the pools
        blas, nb = _arm_settings(arm)
        with threadpool_limits(blas):
            m = architectures.build(ARCH, input_shape=x.shape[1:], seed=0)
            md.fit(m, (x[:2000], y[:2000]), epochs=1, batch_size=100,
                   optimizer=md.SGD(lr=0.1, momentum=0.9), seed=0, progress=False, log=None)
    out = {"layer": numba.threading_layer(), "epochs": {a: [] for a in ARMS},
           "gemm_gflops": {"2": [], "1": []}, "parts_us_per_step": {}}
    for r in range(repeats):
        out["gemm_gflops"]["2"].append(gemm(2))
        out["gemm_gflops"]["1"].append(gemm(1))
        for arm in rotated(ARMS, r):
            out["epochs"][arm].append(epoch(arm))
    steps = -(-len(x) // 100)
    for arm in PART_ARMS:
        spent = {}
        total = epoch(arm, spent)
        parts = {k: v / 1e3 / steps for k, v in spent.items()}
        parts["fit loop, rest"] = total * 1e6 / steps - sum(parts.values())
        out["parts_us_per_step"][arm] = parts
    out["scale_to_50k"] = 50000 / len(x)
    return out


# -- the torch worker --------------------------------------------------------------------------

def torch_worker(images: int, repeats: int) -> dict:
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(2)
    from minidnn import data
    splits = data.load("mnist", progress=False)
    x = torch.from_numpy(np.ascontiguousarray(splits.train.x[:images].reshape(images, -1),
                                              dtype=np.float32))
    y = torch.from_numpy(splits.train.y[:images].astype(np.int64))

    def epoch(n):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(784, 500), torch.nn.ReLU(),
                                  torch.nn.Linear(500, 10))
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        order = torch.from_numpy(np.random.default_rng(0).permutation(n))
        t0 = time.perf_counter()
        for start in range(0, n, 100):
            idx = order[start:start + 100]
            loss = F.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return time.perf_counter() - t0

    epoch(2000)
    return {"epochs": [epoch(images) for _ in range(repeats)], "scale_to_50k": 50000 / images,
            "torch": torch.__version__, "threads": torch.get_num_threads()}


# -- the driver --------------------------------------------------------------------------------

def _launch(args_list, env=None):
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), *args_list],
                          capture_output=True, text=True, env=env, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {args_list} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _median(values):
    return float(np.median(values)) if values else float("nan")


def _summarise(args, duties, layers, runs, quiet=False) -> None:
    """Medians per load (printed unless ``quiet``) and the results file, rewritten after
    every load of every round so that a cut-short run keeps what it measured."""
    summary = {}
    for duty in duties:
        d = runs[str(duty)]
        if not d["minidnn"][layers[0]]:
            continue                    # not measured yet
        row = {"load_average": d["load_average"]}
        for layer in layers:
            got = d["minidnn"][layer]
            scale = got[0]["scale_to_50k"]
            for arm in ARMS:
                row[f"{layer}/{arm}"] = scale * _median(
                    [t for g in got for t in g["epochs"][arm]])
            row[f"{layer}/gemm2_gflops"] = _median([t for g in got for t in g["gemm_gflops"]["2"]])
            row[f"{layer}/gemm1_gflops"] = _median([t for g in got for t in g["gemm_gflops"]["1"]])
        if d["torch"]:
            row["torch"] = d["torch"][0]["scale_to_50k"] * _median(
                [t for g in d["torch"] for t in g["epochs"]])
        summary[str(duty)] = row
        if quiet:
            continue
        print(f"\nCPU {args.cpu} busy {duty:.0%}: epoch seconds (50,000 images, medians)")
        for k, v in row.items():
            print(f"    {k:34s} {v}" if k == "load_average" else f"    {k:34s} {v:8.3f}")
        for layer in layers[:1]:
            for arm in PART_ARMS:
                parts = {}
                for g in d["minidnn"][layer]:
                    for k, v in g["parts_us_per_step"][arm].items():
                        parts.setdefault(k, []).append(v)
                print(f"    {layer}/{arm} parts, µs a step (median over workers): " + ", ".join(
                    f"{k} {np.median(v):.0f}" for k, v in parts.items()))
    write_json(Path(args.out), {
        "machine": machine_info(), "load_generator": {
            "cpu": args.cpu, "period_ms": args.period_ms, "duties": duties,
            "what": "spin duty*period, sleep the rest, pinned with sched_setaffinity"},
        "rounds": args.rounds, "repeats": args.repeats, "images": args.images,
        "load_average_after": os.getloadavg(), "summary_epoch_s_50k": summary, "runs": runs})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duties", default="0,0.3,0.6")
    p.add_argument("--period-ms", type=float, default=10.0)
    p.add_argument("--cpu", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=2, help="epochs per arm per worker")
    p.add_argument("--images", type=int, default=50000)
    p.add_argument("--layers", default="workqueue,omp")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--out", default=str(RESULTS_DIR / "mlp_slow_core_s24m.json"))
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker == "torch":
        print(json.dumps(torch_worker(args.images, args.repeats)))
        return 0
    if args.worker:
        print(json.dumps(worker(args.worker, args.images, args.repeats)))
        return 0
    duties = [float(d) for d in args.duties.split(",")]
    layers = args.layers.split(",")
    print(f"load generator: a process pinned to CPU {args.cpu}, each {args.period_ms:g} ms "
          f"busy duty x period then asleep; duties {duties}; {args.rounds} rounds, "
          f"{args.repeats} epochs per arm per worker, {args.images} images; "
          f"load average before {os.getloadavg()}", flush=True)
    env = clean_env(2)
    runs = {str(d): {"minidnn": {layer: [] for layer in layers}, "torch": [],
                     "load_average": []} for d in duties}
    for r in range(args.rounds):
        for duty in rotated(duties, r):
            with Load(args.cpu, duty, args.period_ms):
                for layer in layers:
                    runs[str(duty)]["minidnn"][layer].append(
                        _launch(["--worker", layer, "--images", str(args.images),
                                 "--repeats", str(args.repeats)], env))
                if not args.no_torch:
                    runs[str(duty)]["torch"].append(
                        _launch(["--worker", "torch", "--images", str(args.images),
                                 "--repeats", str(args.repeats)], env))
            runs[str(duty)]["load_average"].append(os.getloadavg()[0])
            print(f"round {r + 1}/{args.rounds} duty {duty:g} done "
                  f"(load average {os.getloadavg()[0]:.2f})", flush=True)
            _summarise(args, duties, layers, runs, quiet=True)
    _summarise(args, duties, layers, runs)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
