"""Seconds per training epoch and peak memory: minidnn against PyTorch (CPU), side by side.

Both frameworks train the same architecture from the same initial weights on
the same data, in the same minibatch order, with the same SGD hyperparameters
and the same thread budget. Each training run is its own subprocess, so
torch's import never shows in minidnn's memory figure and vice versa.

    python bench/speed_vs_torch.py                       # MLP and LeNet, full MNIST
    python bench/speed_vs_torch.py --model mlp --epochs 3 --repeats 3
    python bench/speed_vs_torch.py --embedded            # the small MNIST subset in the repo
    python bench/speed_vs_torch.py --model lenet --layer-times   # where minidnn's time goes

What is timed: the training loop only (shuffle, gather minibatch, forward,
loss, backward, SGD step, running loss and accuracy), i.e. minidnn's
``fit(..., val=None)`` per-epoch ``seconds`` and the equivalent hand-written
PyTorch loop. No validation pass. Before the timed epochs each worker runs 20
throw-away minibatches on a copy of the model (Numba compilation or cache
load, BLAS and torch warm-up). Reported: the median (and min) over all timed
epochs of all repeats, and ratio = minidnn median / torch median.

Peak memory: the worker's own peak resident set size (/proc/self/status
VmHWM, read at the end of its run). ``os.wait4``'s ``ru_maxrss`` is kept in
the JSON too, but it is not used: it also counts the forked child before
``exec``, i.e. this parent's pages (~376 MiB here), and so overstates a
worker that stays below that. Both sides hold the same float32 training set
(50,000 × 784 × 4 B = 157 MB).

Thread budget: the environment of each worker caps OpenMP/OpenBLAS/MKL/Numba
(``NUMBA_NUM_THREADS``) at --threads; minidnn's worker also enters
``threadpoolctl.threadpool_limits(threads)``, torch's calls
``torch.set_num_threads(threads)``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

#: model name -> (minidnn architecture, batch size, SGD hyperparameters)
MODELS = {
    "mlp": {"arch": "mlp:784-500-10:relu", "batch_size": 100,
            "sgd": {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.0}, "target": 1.2},
    "lenet": {"arch": "lenet", "batch_size": 64,
              "sgd": {"lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4}, "target": 2.0},
}
WARMUP_BATCHES = 20
SEED = 0


# =====================================================================================
# workers: each runs in its own process and writes one JSON file
# =====================================================================================

def _worker_minidnn(args) -> dict:
    from threadpoolctl import threadpool_limits
    with threadpool_limits(limits=args.threads):
        import numba
        import minidnn
        from minidnn.architectures import build
        spec = MODELS[args.model]
        x = np.load(os.path.join(args.workdir, "x.npy"))
        y = np.load(os.path.join(args.workdir, "y.npy"))
        bs = spec["batch_size"]

        warm = build(spec["arch"], seed=SEED)
        minidnn.fit(warm, (x[:WARMUP_BATCHES * bs], y[:WARMUP_BATCHES * bs]), epochs=1,
                    batch_size=bs, optimizer=minidnn.SGD(**spec["sgd"]), seed=SEED,
                    progress=False, log=None)
        del warm

        model = build(spec["arch"], seed=SEED)
        timers = _install_layer_timers(model) if args.layer_times else None
        setup_mem = _common.memory_status()
        history = minidnn.fit(model, (x, y), epochs=args.epochs, batch_size=bs,
                              optimizer=minidnn.SGD(**spec["sgd"]), seed=SEED,
                              progress=False, log=None)
        result = {"framework": "minidnn", "version": minidnn.__version__,
                  "numba_threads": numba.config.NUMBA_NUM_THREADS,
                  "epoch_seconds": history["seconds"], "train_loss": history["train_loss"],
                  "train_acc": history["train_acc"], "rss_after_setup_mib": setup_mem.get("VmRSS")}
        if timers is not None:
            result["layer_seconds"] = {k: v for k, v in timers.items()}
    result.update({"peak_rss_mib_self": _common.memory_status().get("VmHWM")})
    return result


def _install_layer_timers(model) -> dict:
    """Wrap every layer's forward/backward with a perf_counter accumulator (seconds)."""
    totals: dict[str, float] = {}

    def wrap(layer, method):
        inner = getattr(layer, method)
        key = f"{layer.name} {type(layer).__name__} {method}"
        totals[key] = 0.0

        def timed(*a, **k):
            t0 = time.perf_counter()
            out = inner(*a, **k)
            totals[key] += time.perf_counter() - t0
            return out
        setattr(layer, method, timed)

    for layer in model.layers:
        wrap(layer, "forward")
        wrap(layer, "backward")
    # fit calls only backward_params (no input gradient) on the first trainable layer
    first = next((l for l in model.layers if l.params), None)
    if first is not None and hasattr(first, "backward_params"):
        wrap(first, "backward_params")
    return totals


def _torch_model(name: str, torch):
    nn = torch.nn
    if name == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 500), nn.ReLU(), nn.Linear(500, 10))
    return nn.Sequential(nn.Conv2d(1, 20, 5), nn.MaxPool2d(2), nn.Conv2d(20, 50, 5),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(800, 500), nn.ReLU(),
                         nn.Linear(500, 10))


def _worker_torch(args) -> dict:
    import copy

    import torch
    import torch.nn.functional as F
    torch.set_num_threads(args.threads)
    spec = MODELS[args.model]
    x = np.load(os.path.join(args.workdir, "x.npy"))
    y = np.load(os.path.join(args.workdir, "y.npy"))
    bs = spec["batch_size"]
    x_t, y_t = torch.from_numpy(x), torch.from_numpy(y)

    model = _torch_model(args.model, torch)
    init = np.load(os.path.join(args.workdir, f"init_{args.model}.npz"))
    with torch.no_grad():
        for i, p in enumerate(model.parameters()):
            p.copy_(torch.from_numpy(init[f"p{i}"]))

    def train_epochs(net, x_t, y_t, epochs):
        opt = torch.optim.SGD(net.parameters(), **spec["sgd"])
        shuffle_rng = np.random.default_rng(SEED)   # the same order as minidnn.fit
        n = len(x_t)
        records = []
        for _ in range(epochs):
            t0 = time.perf_counter()
            order = torch.from_numpy(shuffle_rng.permutation(n))
            total_loss, correct = 0.0, 0
            for start in range(0, n, bs):
                idx = order[start:start + bs]
                xb, yb = x_t[idx], y_t[idx]
                out = net(xb)
                loss = F.cross_entropy(out, yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total_loss += loss.item() * len(idx)
                correct += int((out.argmax(dim=1) == yb).sum())
            records.append((time.perf_counter() - t0, total_loss / n, correct / n))
        return records

    train_epochs(copy.deepcopy(model), x_t[:WARMUP_BATCHES * bs], y_t[:WARMUP_BATCHES * bs], 1)
    setup_mem = _common.memory_status()
    if args.layer_times:
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            train_epochs(copy.deepcopy(model), x_t[:50 * bs], y_t[:50 * bs], 1)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
    records = train_epochs(model, x_t, y_t, args.epochs)
    return {"framework": "torch", "version": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "epoch_seconds": [r[0] for r in records], "train_loss": [r[1] for r in records],
            "train_acc": [r[2] for r in records], "rss_after_setup_mib": setup_mem.get("VmRSS"),
            "peak_rss_mib_self": _common.memory_status().get("VmHWM")}


def run_worker(args) -> None:
    result = (_worker_minidnn if args.worker == "minidnn" else _worker_torch)(args)
    _common.write_json(Path(args.result), result)


# =====================================================================================
# parent: prepares data and initial weights, launches workers, summarises
# =====================================================================================

def _prepare(workdir: str, dataset: str, models: list[str]) -> dict:
    """Training set as .npy (shared by both workers) and each model's initial weights
    in torch's parameter order and layout, so both sides start from the same point."""
    from minidnn.architectures import build
    from minidnn.layers import Dense
    splits = _common.load_splits(dataset)
    x, y = np.ascontiguousarray(splits.train.x), splits.train.y
    np.save(os.path.join(workdir, "x.npy"), x)
    np.save(os.path.join(workdir, "y.npy"), y)
    for name in models:
        model = build(MODELS[name]["arch"], seed=SEED)
        arrays, i = {}, 0
        for layer in model.layers:
            for pname in ("W", "b"):
                if pname in layer.params:
                    value = layer.params[pname]
                    if isinstance(layer, Dense) and pname == "W":
                        value = value.T      # minidnn (in, out) -> torch (out, in)
                    arrays[f"p{i}"] = np.ascontiguousarray(value, dtype=np.float32)
                    i += 1
        np.savez(os.path.join(workdir, f"init_{name}.npz"), **arrays)
    os.sync()   # flush the 157 MB just written now, not during the first timed worker
    return {"dataset": dataset, "n_train": int(len(x)), "x_shape": list(x.shape)}


def _launch(framework: str, model: str, args, workdir: str, index: int) -> dict:
    result_path = os.path.join(workdir, f"result_{framework}_{model}_{index}.json")
    log_path = os.path.join(workdir, f"log_{framework}_{model}_{index}.txt")
    command = [sys.executable, os.path.abspath(__file__), "--worker", framework,
               "--model", model, "--epochs", str(args.epochs), "--threads", str(args.threads),
               "--workdir", workdir, "--result", result_path]
    if args.layer_times:
        command.append("--layer-times")
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                   env=_common.thread_env(args.threads))
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    output = Path(log_path).read_text()
    if process.returncode != 0:
        raise RuntimeError(f"{framework} worker for {model} failed "
                           f"(exit {process.returncode}):\n{output[-4000:]}")
    result = json.loads(Path(result_path).read_text())
    # ru_maxrss (KiB on Linux) also counts the forked child before exec, i.e. this parent's
    # pages; the worker's own /proc VmHWM is its true peak, used when available
    result["peak_rss_mib_wait4"] = usage.ru_maxrss / 1024.0
    result["peak_rss_mib"] = result.get("peak_rss_mib_self") or result["peak_rss_mib_wait4"]
    result["process_wall_seconds"] = wall
    if output.strip():
        result["worker_output"] = output[-6000:]
    return result


def _summary(runs: list[dict]) -> dict:
    epochs = [s for run in runs for s in run["epoch_seconds"]]
    return {"median_epoch_s": statistics.median(epochs), "min_epoch_s": min(epochs),
            "max_epoch_s": max(epochs), "n_epochs_timed": len(epochs),
            "peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in runs),
            "rss_after_setup_mib": statistics.median(r["rss_after_setup_mib"] for r in runs),
            "final_train_loss": runs[-1]["train_loss"][-1],
            "first_epoch_train_loss": runs[-1]["train_loss"][0],
            "version": runs[-1]["version"]}


def _table(rows: list[dict]) -> str:
    header = ("model", "batch", "minidnn s/epoch", "torch s/epoch", "ratio", "target",
              "minidnn peak RSS", "torch peak RSS", "epoch-1 loss m/t")
    lines = [header]
    for r in rows:
        m, t = r["minidnn"], r["torch"]
        lines.append((r["model"], str(r["batch_size"]),
                      f"{m['median_epoch_s']:.2f} (min {m['min_epoch_s']:.2f})",
                      f"{t['median_epoch_s']:.2f} (min {t['min_epoch_s']:.2f})",
                      f"{r['ratio_median']:.2f}", f"<= {r['target']}",
                      f"{m['peak_rss_mib']:.0f} MiB", f"{t['peak_rss_mib']:.0f} MiB",
                      f"{m['first_epoch_train_loss']:.4f}/{t['first_epoch_train_loss']:.4f}"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(c.ljust(w) for c, w in zip(line, widths)) for line in lines]
    text.insert(1, "-" * len(text[0]))
    return "\n".join(text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("mlp", "lenet", "both"), default="both")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs per framework, interleaved minidnn/torch")
    parser.add_argument("--embedded", action="store_true",
                        help="use the small MNIST subset kept in the repository")
    parser.add_argument("--layer-times", action="store_true",
                        help="also time each minidnn layer's forward/backward and print "
                             "torch's profiler table (adds overhead: not for the ratio)")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON output (default bench/results/speed_vs_torch_<model>.json)")
    # internal: one training run in this process
    parser.add_argument("--worker", choices=("minidnn", "torch"), help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.repeats < 1 or args.threads < 1:
        parser.error("--epochs, --repeats and --threads must be >= 1")
    if args.worker:
        run_worker(args)
        return 0

    models = ["mlp", "lenet"] if args.model == "both" else [args.model]
    dataset = "embedded" if args.embedded else "mnist"
    rows = []
    with tempfile.TemporaryDirectory(prefix="minidnn-bench-") as workdir:
        data_info = _prepare(workdir, dataset, models)
        print(f"data: {dataset} train {data_info['x_shape']}; threads {args.threads}; "
              f"{args.epochs} timed epoch(s) x {args.repeats} repeat(s) per framework", flush=True)
        for name in models:
            spec = MODELS[name]
            runs = {"minidnn": [], "torch": []}
            for r in range(args.repeats):
                order = ("minidnn", "torch") if r % 2 == 0 else ("torch", "minidnn")
                for framework in order:
                    result = _launch(framework, name, args, workdir, r)
                    runs[framework].append(result)
                    print(f"  {name} {framework:<7} repeat {r + 1}: epochs "
                          + ", ".join(f"{s:.2f}s" for s in result["epoch_seconds"])
                          + f"; peak RSS {result['peak_rss_mib']:.0f} MiB", flush=True)
                    if args.layer_times and "worker_output" in result:
                        print(result["worker_output"])
                    if args.layer_times and "layer_seconds" in result:
                        total = sum(result["epoch_seconds"])
                        for key, sec in sorted(result["layer_seconds"].items(),
                                               key=lambda kv: -kv[1]):
                            print(f"    {key:<32} {sec:7.2f}s  {100 * sec / total:5.1f}%")
            m, t = _summary(runs["minidnn"]), _summary(runs["torch"])
            rows.append({"model": name, "architecture": spec["arch"],
                         "batch_size": spec["batch_size"], "sgd": spec["sgd"],
                         "target": spec["target"], "minidnn": m, "torch": t,
                         "ratio_median": m["median_epoch_s"] / t["median_epoch_s"],
                         "ratio_min": m["min_epoch_s"] / t["min_epoch_s"],
                         "meets_target": m["median_epoch_s"] / t["median_epoch_s"] <= spec["target"],
                         "runs": runs})
    print()
    print(_table(rows))
    payload = {"benchmark": "speed_vs_torch", "machine": _common.machine_info(),
               "command": "python " + " ".join([os.path.relpath(__file__, _common.REPO_ROOT)]
                                               + (argv if argv is not None else sys.argv[1:])),
               "data": data_info, "threads": args.threads, "epochs": args.epochs,
               "repeats": args.repeats, "warmup_batches": WARMUP_BATCHES,
               "layer_times": args.layer_times, "results": rows}
    out = args.out or (_common.RESULTS_DIR / f"speed_vs_torch_{args.model}"
                       f"{'_embedded' if args.embedded else ''}"
                       f"{'_layertimes' if args.layer_times else ''}.json")
    _common.write_json(out, payload)
    print(f"\nwritten {os.path.relpath(out, _common.REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
