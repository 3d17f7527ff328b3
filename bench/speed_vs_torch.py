"""minidnn against PyTorch (CPU) and scikit-learn, each in its own clean process.

    python bench/speed_vs_torch.py                     # everything, ~8-10 min on 2 quiet cores
    python bench/speed_vs_torch.py --only mlp lenet --repeats 5
    python bench/speed_vs_torch.py --tiny              # smoke test: small data, minutes
    python bench/speed_vs_torch.py --tiny --repeats 1 --exact-repeats   # quicker smoke test

Fairness, in the order the issue asks for it:

* Every measurement runs in a fresh subprocess whose environment is built
  from scratch (not copied from this process): PATH, HOME, LANG, PYTHONPATH
  and the thread caps OMP/OPENBLAS/MKL/NUMBA_NUM_THREADS = --threads, plus
  MINIDNN_CACHE / MINIDNN_DATA when set. It is printed at the start and
  stored in the JSON. This parent imports neither minidnn nor torch nor NumPy.
* minidnn's workers call ``minidnn.configure_threads(threads)`` (what the CLI
  does); torch's call ``torch.set_num_threads(threads)``; scikit-learn's run
  under ``threadpoolctl.threadpool_limits(threads)``.
* The machine's GEMM peak is measured in the same run (float32 NumPy/OpenBLAS
  and torch matmul of 2048x2048, best of 5), and each workload's GFLOP/s is
  printed beside its time, with the fraction of that peak.
* Repeats are interleaved pairs (minidnn, torch, torch, minidnn, ...); each
  worker first runs 20 throw-away minibatches (JIT, caches).
* The machine's speed swings: minutes-long slow modes in which a 2-thread GEMM
  drops ~22 % and minidnn's MLP epoch doubles, so that a 2-pair run can catch
  one side in one. So every timed worker also measures the machine's state: a
  control GEMM (float32 1024^3, NumPy/OpenBLAS for every worker, torch's and
  sklearn's too: one instrument for both sides; best of 3; in a child process the
  worker waits for, which leaves the worker's memory and threads untouched) before
  its warm-up (``control_gflops``) and after its timed work
  (``control_after_gflops``); the lower of the two is the worker's control. A pair is in a slow mode when either
  worker's control is more than 15 % (SLOW_MODE_TOLERANCE) below the run's best
  control reading (over every workload, so that a workload run wholly in a slow
  mode is flagged too); the others are steady. The log has a per-repeat table
  (each pair on one line, both sides' figures and controls, slow ones marked)
  and, per workload, the ratio of the medians beside the median of the per-pair
  ratios (a pair's two workers run seconds apart, so a mode that covers both
  cancels), over all pairs and over the steady ones, with each side's min-max.
  The summary ``ratio`` column (JSON ``ratio_summary``) is the steady pairs'
  median per-pair ratio, all pairs' where none is steady; the JSON ``ratio``
  (and ``ratio_batch1_median`` ...) stays the ratio of the medians of all runs,
  as before. Nothing is dropped: slow pairs stay in the all-pairs figures.
* Repeats: --repeats pairs (default 3), raised for the short workloads to
  MIN_REPEATS: mlp 8 (an epoch is ~0.6 s), rbm 4 (~2 s), each inference net 8
  (a worker ~1 s); lenet gets --repeats, cifar10_quick min(--repeats, 2) (~70 s
  an epoch). ``--exact-repeats`` runs --repeats everywhere (a harness check).
* Peak memory: each worker's own peak RSS (/proc/self/status VmHWM), and,
  for the training workloads, what training adds above imports + data: VmHWM
  reset once the data is loaded (/proc/self/clear_refs), read after the
  timed epoch, minus VmRSS at the reset (model, warm-up, activations,
  gradients, buffers; ``_TrainingMemory``).

Workloads (one timed epoch each, same data, initial weights, minibatch order
and SGD settings on both sides):

* ``mlp``: 784-500-10 ReLU on MNIST (50,000), batch 100, lr 0.1, momentum 0.9.
* ``lenet``: Caffe LeNet on MNIST, batch 64, lr 0.01, momentum 0.9, wd 5e-4.
* ``cifar10_quick``: Caffe Cifar10_quick on CIFAR-10 (45,000), batch 100,
  lr 0.001, momentum 0.9, wd 0.004.
* ``rbm``: a 784x500 Bernoulli RBM, one epoch of PCD-1 at batch 100, lr 0.1,
  no momentum or decay (what sklearn's BernoulliRBM does) against
  ``sklearn.neural_network.BernoulliRBM``; minidnn's per-epoch monitors are off
  (``monitor_size=0``), as sklearn's pseudo-likelihood is when not verbose.
* ``inference``: MLP and LeNet forward passes in evaluation mode (minidnn's
  ``Sequential.infer``, torch eager under ``no_grad``): batch 1 latency (median
  and p99 of 2,000 calls) and batch 100 throughput over the 10,000 test images,
  the median of 5 timed passes per worker (``--inference-passes``), at least 8
  workers per side (MIN_REPEATS; sitting 24 replaced ``--inference-repeats``, 4).

FLOP counts are nominal: 2 per multiply-add of the conv/dense products;
training = forward + weight gradient + input gradient (not for the first
layer, whose input gradient neither framework computes); the RBM epoch = 5
GEMMs of 784x500 per example (v->h, h->v, v->h, and the two statistics).

Results: bench/results/speed_vs_torch.json (``--out``) and a table.
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

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WARMUP_BATCHES = 20
SEED = 0
#: the control GEMM measured for every timed worker (``_control_gflops``)
CONTROL_N, CONTROL_REPEATS = 1024, 3
#: a worker is in a "slow mode" when its lower control rate is more than this fraction
#: below the run's best control reading
SLOW_MODE_TOLERANCE = 0.15
#: the fewest interleaved pairs a workload gets, whatever --repeats says (--exact-repeats:
#: none): these workers are short (an MLP epoch ~0.6 s, an inference worker ~1 s, an RBM
#: epoch ~2 s), and 2 pairs of them can catch one side in one of the machine's
#: minutes-long slow modes
MIN_REPEATS = {"mlp": 8, "rbm": 4, "infer_mlp": 8, "infer_lenet": 8}

TRAIN = {
    "mlp": {"arch": "mlp:784-500-10:relu", "dataset": "mnist", "batch": 100,
            "sgd": {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.0}, "target": 0.9},
    "lenet": {"arch": "lenet", "dataset": "mnist", "batch": 64,
              "sgd": {"lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4}, "target": 1.0},
    "cifar10_quick": {"arch": "cifar10-quick", "dataset": "cifar10", "batch": 100,
                      "sgd": {"lr": 0.001, "momentum": 0.9, "weight_decay": 0.004},
                      "target": 1.0},
}


# =====================================================================================
# the clean environment
# =====================================================================================

def clean_env(threads: int) -> dict:
    """An environment built from nothing but what a worker needs: ``_common.clean_env``
    (the benchmarks' one copy), imported here only when called, so that a worker
    process imports nothing more than before."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    from _common import clean_env as _clean_env
    return _clean_env(threads)


# =====================================================================================
# workers (each in its own process)
# =====================================================================================

def _peak_rss_mib() -> float | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def _rss_mib(field: str) -> float | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


class _TrainingMemory:
    """The memory training takes, apart from imports and data: entered once the
    data is loaded, before the model is built and the warm-up runs, it resets
    the peak RSS (VmHWM; Linux: "5" written to /proc/self/clear_refs) and reads
    VmRSS; on exit it reads VmHWM again. ``training_rss_growth_mib`` = that
    peak - VmRSS at entry: model, warm-up (JIT), the timed epoch's activations,
    gradients and buffers. Measured from before the warm-up, not from the timed
    epoch alone, so that memory a framework's allocator keeps after the warm-up
    (glibc's heap for torch, where NumPy's large arrays go back to the system)
    counts the same on both sides. The process's peak before the reset is kept
    (``peak_rss_before_training_mib``), so ``peak_rss_mib`` stays the whole
    process's peak."""

    def __enter__(self):
        self.peak_before = _rss_mib("VmHWM")
        self.rss_before = _rss_mib("VmRSS")
        try:
            with open("/proc/self/clear_refs", "w") as refs:
                refs.write("5")
            self.reset = True
        except OSError:
            self.reset = False
        return self

    def __exit__(self, *exc):
        self.peak_after = _rss_mib("VmHWM")
        return False

    def record(self) -> dict:
        if not self.reset or self.peak_after is None or self.rss_before is None:
            return {}
        return {"rss_before_training_mib": self.rss_before,
                "training_peak_rss_mib": self.peak_after,
                "training_rss_growth_mib": self.peak_after - self.rss_before,
                "peak_rss_before_training_mib": self.peak_before}


def _flops_per_example(model, train: bool) -> float:
    """2 × multiply-adds of every Conv2D/Dense per example (see the module docstring)."""
    from minidnn.layers import Conv2D, Dense
    shape, total, first = tuple(model.input_shape), 0.0, True
    for layer in model.layers:
        out = layer.output_shape(shape)
        if isinstance(layer, (Conv2D, Dense)):
            size = 1
            for d in out:
                size *= d
            macs = size * layer.params["W"].size / layer.params["W"].shape[
                0 if isinstance(layer, Conv2D) else 1]
            total += 2 * macs * ((2 if first else 3) if train else 1)
            first = False
        shape = out
    return total


def _prepare(args) -> dict:
    """Data as .npy and initial weights in torch's layout, written by a clean worker."""
    import numpy as np

    from minidnn import architectures, data
    from minidnn.layers import Dense
    info = {}
    for dataset in sorted({TRAIN[m]["dataset"] for m in args.models if m in TRAIN}
                          | ({"mnist"} if {"rbm", "inference"} & set(args.models) else set())):
        splits = data.load(dataset, progress=False)
        x, y = splits.train.x, splits.train.y
        xt, yt = splits.test.x, splits.test.y
        if args.tiny:
            x, y, xt, yt = x[:1000], y[:1000], xt[:500], yt[:500]
        np.save(f"{args.workdir}/{dataset}_x.npy", np.ascontiguousarray(x))
        np.save(f"{args.workdir}/{dataset}_y.npy", y)
        np.save(f"{args.workdir}/{dataset}_xt.npy", np.ascontiguousarray(xt))
        np.save(f"{args.workdir}/{dataset}_yt.npy", yt)
        info[dataset] = {"train": list(x.shape), "test": list(xt.shape)}
    for name, spec in TRAIN.items():
        shape = (3, 32, 32) if spec["dataset"] == "cifar10" else (1, 28, 28)
        model = architectures.build(spec["arch"], input_shape=shape, seed=SEED)
        arrays = []
        for layer in model.layers:
            for pname in ("W", "b"):
                if pname in layer.params:
                    value = layer.params[pname]
                    arrays.append(value.T if isinstance(layer, Dense) and pname == "W" else value)
        np.savez(f"{args.workdir}/init_{name}.npz",
                 **{f"p{i}": np.ascontiguousarray(a, dtype=np.float32) for i, a in enumerate(arrays)})
        info[f"{name}_flops_train_per_example"] = _flops_per_example(model, True)
        info[f"{name}_flops_infer_per_example"] = _flops_per_example(model, False)
    info["rbm_flops_per_example"] = 5 * 2 * 784 * 500
    return info


def _gemm(framework: str, threads: int) -> dict:
    n, best = 2048, float("inf")
    if framework == "numpy":
        import numpy as np
        a = np.random.default_rng(0).random((n, n), dtype=np.float32)
        b = np.random.default_rng(1).random((n, n), dtype=np.float32)
        mm = lambda: a @ b                                          # noqa: E731
    else:
        import torch
        torch.set_num_threads(threads)
        a, b = torch.rand(n, n), torch.rand(n, n)
        mm = lambda: a @ b                                          # noqa: E731
    mm()
    for _ in range(5):
        t0 = time.perf_counter()
        mm()
        best = min(best, time.perf_counter() - t0)
    return {"n": n, "seconds": best, "gflops": 2 * n ** 3 / best / 1e9}


def _control_gemm() -> float:
    """GFLOP/s of a float32 CONTROL_N^3 NumPy/OpenBLAS GEMM, best of CONTROL_REPEATS after
    one untimed call (~60 ms): the control, run by ``--control`` (see _control_gflops)."""
    import numpy as np
    n = CONTROL_N
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    b = np.random.default_rng(1).random((n, n), dtype=np.float32)
    a @ b
    best = float("inf")
    for _ in range(CONTROL_REPEATS):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def _control_gflops() -> float:
    """The machine's state, measured for every timed worker (``control_gflops`` before its
    warm-up, ``control_after_gflops`` after its timed work): _control_gemm, in a child
    process the worker starts and waits for (~0.3 s quiet, at the worker's thread caps).

    NumPy for every worker, torch's and sklearn's too, so that both sides are read with
    one instrument: a rate below the run's best means the machine, not the instrument,
    was slower. (torch's own matmul is another instrument: sitting 24's quiet run read
    2048^3 at 172.9 GFLOP/s in torch, 210.6 in NumPy; on one scale every torch worker
    would be flagged.) A child, not the worker itself: a GEMM in the worker leaves
    OpenBLAS's buffers resident (measured: 5-7 MiB moved from "training adds" to the
    RSS before training, in both frameworks), an idle OpenBLAS thread spinning ~0.1 s
    (0.10 s of CPU in a 0.5 s sleep after a GEMM; in a torch worker, a core taken from
    the warm-up or the first minibatches), and glibc's mmap threshold raised by the
    freed 4 MiB arrays (which moves later allocations from mmap to the heap)."""
    done = subprocess.run([sys.executable, os.path.abspath(__file__), "--control"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the control GEMM failed (exit {done.returncode}):\n"
                           f"{done.stderr[-2000:]}")
    return float(done.stdout.split()[-1])


def _load(args, dataset):
    import numpy as np
    return tuple(np.load(f"{args.workdir}/{dataset}_{part}.npy") for part in ("x", "y", "xt", "yt"))


def _minidnn_train(args, name) -> dict:
    import minidnn
    from minidnn import architectures
    spec = TRAIN[name]
    x, y, _, _ = _load(args, spec["dataset"])
    bs = spec["batch"]

    def build():
        # seed 0: the very weights _prepare exported for torch
        return architectures.build(spec["arch"], input_shape=x.shape[1:], seed=SEED)

    with _TrainingMemory() as memory:
        warm = build()
        minidnn.fit(warm, (x[:WARMUP_BATCHES * bs], y[:WARMUP_BATCHES * bs]), epochs=1,
                    batch_size=bs, optimizer=minidnn.SGD(**spec["sgd"]), seed=SEED,
                    progress=False, log=None)
        del warm
        model = build()
        history = minidnn.fit(model, (x, y), epochs=1, batch_size=bs,
                              optimizer=minidnn.SGD(**spec["sgd"]), seed=SEED, progress=False,
                              log=None)
    return {"seconds": history["seconds"][0], "train_loss": history["train_loss"][0],
            "n_examples": len(x), **memory.record()}


def _torch_net(name, torch):
    nn = torch.nn
    if name == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 500), nn.ReLU(), nn.Linear(500, 10))
    if name == "lenet":
        return nn.Sequential(nn.Conv2d(1, 20, 5), nn.MaxPool2d(2), nn.Conv2d(20, 50, 5),
                             nn.MaxPool2d(2), nn.Flatten(), nn.Linear(800, 500), nn.ReLU(),
                             nn.Linear(500, 10))
    return nn.Sequential(
        nn.Conv2d(3, 32, 5, padding=2), nn.MaxPool2d(3, 2, ceil_mode=True), nn.ReLU(),
        nn.Conv2d(32, 32, 5, padding=2), nn.ReLU(), nn.AvgPool2d(3, 2, ceil_mode=True),
        nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.AvgPool2d(3, 2, ceil_mode=True),
        nn.Flatten(), nn.Linear(1024, 64), nn.Linear(64, 10))


def _torch_model(args, name, torch):
    import numpy as np
    net = _torch_net(name, torch)
    init = np.load(f"{args.workdir}/init_{name}.npz")
    with torch.no_grad():
        for i, p in enumerate(net.parameters()):
            p.copy_(torch.from_numpy(init[f"p{i}"]))
    return net


def _torch_train(args, name) -> dict:
    import copy

    import numpy as np
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(args.threads)
    spec = TRAIN[name]
    x, y, _, _ = _load(args, spec["dataset"])
    x_t, y_t = torch.from_numpy(x), torch.from_numpy(y)
    bs = spec["batch"]
    memory = _TrainingMemory().__enter__()      # closed after the timed epoch, as minidnn's
    net = _torch_model(args, name, torch)

    def epoch(net, x_t, y_t):
        opt = torch.optim.SGD(net.parameters(), **spec["sgd"])
        order = torch.from_numpy(np.random.default_rng(SEED).permutation(len(x_t)))
        total = 0.0
        t0 = time.perf_counter()
        for start in range(0, len(x_t), bs):
            idx = order[start:start + bs]
            xb, yb = x_t[idx], y_t[idx]
            out = net(xb)
            loss = F.cross_entropy(out, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        return time.perf_counter() - t0, total / len(x_t)

    epoch(copy.deepcopy(net), x_t[:WARMUP_BATCHES * bs], y_t[:WARMUP_BATCHES * bs])
    seconds, loss = epoch(net, x_t, y_t)
    memory.__exit__(None, None, None)
    return {"seconds": seconds, "train_loss": loss, "n_examples": len(x), **memory.record()}


def _minidnn_rbm(args) -> dict:
    from minidnn.pretraining import BernoulliRBM, PretrainConfig
    x = _load(args, "mnist")[0].reshape(-1, 784)
    # monitor_size=0: no per-epoch likelihood monitor, which sklearn computes only when verbose
    config = PretrainConfig(epochs=1, lr=0.1, weight_decay=0.0, momentum=0.0,
                            final_momentum=0.0, batch_size=100, k=1, persistent=True,
                            monitor_size=0)
    BernoulliRBM(784, 16, rng=0).fit(x[:200], config, seed=SEED)             # JIT warm-up
    rbm = BernoulliRBM(784, 500, rng=0)
    t0 = time.perf_counter()
    rbm.fit(x, config, seed=SEED)
    return {"seconds": time.perf_counter() - t0, "n_examples": len(x)}


def _sklearn_rbm(args) -> dict:
    from sklearn.neural_network import BernoulliRBM
    from threadpoolctl import threadpool_limits
    x = _load(args, "mnist")[0].reshape(-1, 784)
    with threadpool_limits(limits=args.threads):
        BernoulliRBM(n_components=16, batch_size=100, n_iter=1, random_state=0).fit(x[:200])
        model = BernoulliRBM(n_components=500, learning_rate=0.1, batch_size=100, n_iter=1,
                             random_state=SEED)
        t0 = time.perf_counter()
        model.fit(x)
        return {"seconds": time.perf_counter() - t0, "n_examples": len(x)}


def _latency(forward, x1, xt, batch=100, calls=2000, passes=5) -> dict:
    """Batch 1: median and p99 of ``calls`` timed calls. Batch 100: ``passes`` timed
    passes over all of xt after 10 warm-up batches; the throughput is that of the
    median pass, and every batch call is timed too (median and p99). One pass of
    100 calls (what sitting 17 timed) lasts only ~0.1 s for the MLP, so one wake-up
    of a sleeping BLAS thread or one burst of load moved it by 20 %."""
    import numpy as np
    for _ in range(50):
        forward(x1)
    times = []
    for i in range(calls):
        t0 = time.perf_counter()
        forward(x1)
        times.append(time.perf_counter() - t0)
    starts = range(0, len(xt), batch)
    for start in list(starts)[:10]:
        forward(xt[start:start + batch])
    pass_seconds, call_seconds = [], []
    for _ in range(passes):
        t_pass = time.perf_counter()
        for start in starts:
            t0 = time.perf_counter()
            forward(xt[start:start + batch])
            call_seconds.append(time.perf_counter() - t0)
        pass_seconds.append(time.perf_counter() - t_pass)
    seconds = float(np.median(pass_seconds))
    return {"batch1_median_ms": 1e3 * float(np.median(times)),
            "batch1_p99_ms": 1e3 * float(np.percentile(times, 99)),
            "batch100_images_per_s": len(xt) / seconds, "batch100_seconds": seconds,
            "batch100_pass_images_per_s": [len(xt) / s for s in pass_seconds],
            "batch100_call_median_ms": 1e3 * float(np.median(call_seconds)),
            "batch100_call_p99_ms": 1e3 * float(np.percentile(call_seconds, 99))}


def _minidnn_inference(args, name) -> dict:
    from minidnn import architectures
    _, _, xt, _ = _load(args, "mnist")
    model = architectures.build(TRAIN[name]["arch"], input_shape=(1, 28, 28), seed=SEED)
    # infer: the inference path (fused, nothing kept for backward), as torch's eval +
    # no_grad; --minidnn-forward times the training code's forward(training=False)
    forward = ((lambda xb: model.forward(xb, training=False)) if args.minidnn_forward
               else model.infer)
    return _latency(forward, xt[:1], xt, calls=args.latency_calls,
                    passes=args.inference_passes)


def _torch_inference(args, name) -> dict:
    import torch
    torch.set_num_threads(args.threads)
    _, _, xt, _ = _load(args, "mnist")
    net = _torch_model(args, name, torch).eval()
    xt_t = torch.from_numpy(xt)

    def forward(xb):
        with torch.no_grad():
            return net(xb)
    return _latency(forward, xt_t[:1], xt_t, calls=args.latency_calls,
                    passes=args.inference_passes)


def run_worker(args) -> dict:
    task, framework = args.task, args.worker
    if framework == "minidnn":
        import minidnn
        minidnn.configure_threads(args.threads)
    timed = task not in ("prepare", "gemm")
    if timed:
        control = _control_gflops()
    if task == "prepare":
        result = _prepare(args)
    elif task == "gemm":
        result = _gemm(framework, args.threads)
    elif task in TRAIN:
        result = (_minidnn_train if framework == "minidnn" else _torch_train)(args, task)
    elif task == "rbm":
        result = (_minidnn_rbm if framework == "minidnn" else _sklearn_rbm)(args)
    elif task.startswith("infer_"):
        name = task[len("infer_"):]
        result = (_minidnn_inference if framework == "minidnn" else _torch_inference)(args, name)
    else:
        raise ValueError(task)
    # the whole process's peak, also where _TrainingMemory reset VmHWM
    peaks = [p for p in (_peak_rss_mib(), result.get("peak_rss_before_training_mib"))
             if p is not None]
    result["peak_rss_mib"] = max(peaks) if peaks else None
    if timed:
        result["control_gflops"] = control
        result["control_after_gflops"] = _control_gflops()
    if framework == "minidnn":
        import numba
        result["numba_layer"] = numba.threading_layer() if task != "prepare" else None
    return result


# =====================================================================================
# parent: the pairs' summary (pure functions of the workers' numbers; tested with
# synthetic ones in tests/test_speed_vs_torch_summary.py)
# =====================================================================================

def repeats_for(task: str, repeats: int, exact: bool = False) -> int:
    """Interleaved pairs for ``task``: --repeats, raised to MIN_REPEATS for the short
    workloads unless ``exact``; cifar10_quick (~70 s an epoch) at most 2."""
    if task == "cifar10_quick":
        return min(repeats, 2)
    return repeats if exact else max(repeats, MIN_REPEATS.get(task, 0))


def worker_control(run: dict) -> float | None:
    """A worker's machine state: the lower of its two control rates, so that a slow
    mode which began during the timed work shows too (None for a worker without one)."""
    values = [run[key] for key in ("control_gflops", "control_after_gflops")
              if run.get(key) is not None]
    return min(values) if values else None


def best_control(runs: dict) -> float | None:
    """The run's best control reading: the highest of every worker's before and after
    rates, over every workload (task -> framework -> [worker results])."""
    values = [run[key] for by_framework in runs.values() for results in by_framework.values()
              for run in results for key in ("control_gflops", "control_after_gflops")
              if run.get(key) is not None]
    return max(values) if values else None


def is_slow(control: float | None, best: float | None,
            tolerance: float = SLOW_MODE_TOLERANCE) -> bool:
    """A slow mode: the control more than ``tolerance`` below the run's best."""
    return control is not None and best is not None and control < (1.0 - tolerance) * best


def summarise_pairs(ours: list, peer: list, ours_control: list, peer_control: list,
                    best: float | None, tolerance: float = SLOW_MODE_TOLERANCE) -> dict:
    """Pair i = (ours[i], peer[i]): the two sides' times (lower is faster) of repeat i,
    run one after the other, with each worker's control. A pair is slow when either
    control is more than ``tolerance`` below ``best``; steady otherwise.

    Both the ratio of the medians (ours median / peer median: each side's median may
    come from a different state of the machine) and the median of the per-pair ratios
    (each pair's two workers ran seconds apart, so a slow mode that covers both cancels),
    over all pairs and over the steady ones. ``ratio_summary`` is the steady pairs'
    median pair ratio; all pairs' where no pair is steady (``ratio_summary_basis``)."""
    if not ours or len(ours) != len(peer) or len(ours) != len(ours_control) \
            or len(ours) != len(peer_control):
        raise ValueError(f"summarise_pairs: one value and one control per side and pair, "
                         f"got {len(ours)}/{len(peer)} values and {len(ours_control)}/"
                         f"{len(peer_control)} controls")
    median = statistics.median
    ratios = [o / p for o, p in zip(ours, peer)]
    slow = [is_slow(oc, best, tolerance) or is_slow(pc, best, tolerance)
            for oc, pc in zip(ours_control, peer_control)]
    steady = [i for i, s in enumerate(slow) if not s]
    out = {"n_pairs": len(ours), "n_steady_pairs": len(steady),
           "slow_pairs": [i + 1 for i, s in enumerate(slow) if s], "pair_ratios": ratios,
           "pair_slow": slow,
           "ratio_of_medians": median(ours) / median(peer), "ratio_pairs_median": median(ratios),
           "ours_min": min(ours), "ours_max": max(ours),
           "peer_min": min(peer), "peer_max": max(peer)}
    if steady:
        ours_steady, peer_steady = [ours[i] for i in steady], [peer[i] for i in steady]
        out.update({"ours_steady_median": median(ours_steady),
                    "peer_steady_median": median(peer_steady),
                    "steady_ratio_of_medians": median(ours_steady) / median(peer_steady),
                    "steady_ratio_pairs_median": median(ratios[i] for i in steady),
                    "ratio_summary_basis": "steady pairs: median of the per-pair ratios"})
        out["ratio_summary"] = out["steady_ratio_pairs_median"]
    else:
        out.update({"ratio_summary": out["ratio_pairs_median"],
                    "ratio_summary_basis": "all pairs (none steady): median of the "
                                           "per-pair ratios"})
    return out


#: inference: the three timed figures, each summarised over the pairs:
#: (ratio name in the rows, the worker's field, lower is faster)
INFERENCE_METRICS = (("ratio_batch1_median", "batch1_median_ms"),
                     ("ratio_batch1_p99", "batch1_p99_ms"),
                     ("ratio_batch100_time", "batch100_seconds"))


def pair_fields(prefix: str, summary: dict) -> dict:
    """The row's fields for one summarised ratio (``prefix`` = the row's existing
    ratio-of-medians field, kept as it was)."""
    fields = {f"{prefix}_pairs_median": summary["ratio_pairs_median"],
              f"{prefix}_summary": summary["ratio_summary"],
              f"{prefix}_summary_basis": summary["ratio_summary_basis"]}
    if "steady_ratio_pairs_median" in summary:
        fields[f"{prefix}_steady_pairs_median"] = summary["steady_ratio_pairs_median"]
        fields[f"{prefix}_steady_of_medians"] = summary["steady_ratio_of_medians"]
    return fields


def pairs_of(runs: dict, peer: str, kind: str, best: float | None,
             tolerance: float = SLOW_MODE_TOLERANCE) -> tuple[dict, list]:
    """A workload's summaries (ratio name -> summarise_pairs) and its per-repeat table
    (one dict per interleaved pair) from its workers' results."""
    ours_runs, peer_runs = runs["minidnn"], runs[peer]
    ours_control = [worker_control(r) for r in ours_runs]
    peer_control = [worker_control(r) for r in peer_runs]
    metrics = (("ratio", "seconds"),) if kind == "train" else INFERENCE_METRICS
    summaries = {name: summarise_pairs([r[key] for r in ours_runs], [r[key] for r in peer_runs],
                                       ours_control, peer_control, best, tolerance)
                 for name, key in metrics}
    first = next(iter(summaries.values()))
    table = []
    for i, (ours, theirs) in enumerate(zip(ours_runs, peer_runs)):
        pair = {"repeat": i + 1, "first": "minidnn" if i % 2 == 0 else peer,
                "ours_control_gflops": ours_control[i], "peer_control_gflops": peer_control[i],
                "slow_mode": first["pair_slow"][i]}
        for name, key in metrics:
            pair[f"ours_{key}"], pair[f"peer_{key}"] = ours[key], theirs[key]
            pair[name] = summaries[name]["pair_ratios"][i]
        if kind != "train":
            pair["ours_batch100_images_per_s"] = ours["batch100_images_per_s"]
            pair["peer_batch100_images_per_s"] = theirs["batch100_images_per_s"]
        table.append(pair)
    return summaries, table


def _format_control(control: float | None, best: float | None) -> str:
    if control is None:
        return "   -  "
    return f"{control:5.0f}{'*' if is_slow(control, best) else ' '}"


def _pair_figures(pair: dict, side: str, kind: str) -> str:
    if kind == "train":
        return f"{pair[f'{side}_seconds']:8.2f} s"
    return (f"{pair[f'{side}_batch1_median_ms']:7.3f} ms "
            f"{pair[f'{side}_batch100_images_per_s']:8.0f}/s")


def format_pair_header(peer: str, kind: str) -> str:
    """The per-repeat table's column names for one workload (train: seconds; inference:
    batch-1 median ms, batch-100 img/s, and the batch-1 and batch-100 time ratios)."""
    width = 10 if kind == "train" else 21
    ratio = "  ratio" if kind == "train" else "  ratio b1 b100"
    return (f"  {'workload':<14}{'pair':>4}  {'first':<9}{'minidnn':<{width + 1}}{'ctl':>6}  "
            f"{peer:<{width + 1}}{'ctl':>6}{ratio}")


def format_pair_line(task: str, peer: str, kind: str, pair: dict, best: float | None) -> str:
    """One interleaved pair of the per-repeat table: both sides' figures and controls,
    a slow-mode control starred and the pair marked."""
    ratio = (f"{pair['ratio']:7.2f}" if kind == "train" else
             f"{pair['ratio_batch1_median']:7.2f} {pair['ratio_batch100_time']:5.2f}")
    return (f"  {task:<14}{pair['repeat']:>4}  {pair['first']:<9}"
            f"{_pair_figures(pair, 'ours', kind)} "
            f"{_format_control(pair['ours_control_gflops'], best)}  "
            f"{_pair_figures(pair, 'peer', kind)} "
            f"{_format_control(pair['peer_control_gflops'], best)}"
            f"{ratio}{'  slow mode' if pair['slow_mode'] else ''}")


# =====================================================================================
# parent: launches clean workers, interleaves, summarises (stdlib only)
# =====================================================================================

def launch(framework, task, args, workdir, env) -> dict:
    out = Path(workdir) / f"{framework}_{task}_{time.monotonic_ns()}.json"
    command = [sys.executable, os.path.abspath(__file__), "--worker", framework, "--task", task,
               "--threads", str(args.threads), "--workdir", workdir, "--result", str(out),
               "--latency-calls", str(args.latency_calls),
               "--inference-passes", str(args.inference_passes)] \
        + (["--minidnn-forward"] if args.minidnn_forward else []) \
        + (["--tiny"] if args.tiny else []) \
        + ["--only"] + args.only
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{framework} {task} failed (exit {done.returncode}):\n"
                           f"{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return json.loads(out.read_text())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", default=["mlp", "lenet", "cifar10_quick", "rbm",
                                                       "inference"],
                        choices=["mlp", "lenet", "cifar10_quick", "rbm", "inference"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3,
                        help="interleaved pairs of timed runs per workload (default 3); the "
                             "short workloads get at least MIN_REPEATS (mlp 8, rbm 4, "
                             "inference 8 per net), cifar10_quick at most 2")
    parser.add_argument("--exact-repeats", action="store_true",
                        help="--repeats pairs for every workload (no MIN_REPEATS; "
                             "cifar10_quick still at most 2)")
    parser.add_argument("--latency-calls", type=int, default=2000)
    parser.add_argument("--inference-passes", type=int, default=5,
                        help="timed passes over the test images at batch 100 per worker "
                             "(the median pass is reported; default 5)")
    parser.add_argument("--minidnn-forward", action="store_true",
                        help="inference: time minidnn's forward(training=False) instead of "
                             "Sequential.infer")
    parser.add_argument("--tiny", action="store_true",
                        help="1,000 training / 500 test images: checks the harness, not speed")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--worker", choices=("minidnn", "torch", "sklearn", "numpy"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--task", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--control", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.models = args.only
    if args.control:
        print(f"{_control_gemm():.3f}")
        return 0
    if args.worker:
        sys.path.insert(0, str(ROOT))
        result = run_worker(args)
        Path(args.result).write_text(json.dumps(result, default=float))
        return 0

    env = clean_env(args.threads)
    print("worker environment (built from scratch):")
    for key, value in env.items():
        print(f"  {key}={value}")
    started = time.time()
    raw = {}
    with tempfile.TemporaryDirectory(prefix="minidnn-speed-") as workdir:
        info = launch("minidnn", "prepare", args, workdir, env)
        peaks = {fw: launch(fw, "gemm", args, workdir, env) for fw in ("numpy", "torch")}
        peak = max(p["gflops"] for p in peaks.values())
        print(f"GEMM peak ({args.threads} threads, float32 2048^3, best of 5): NumPy/OpenBLAS "
              f"{peaks['numpy']['gflops']:.1f} GFLOP/s, torch {peaks['torch']['gflops']:.1f} "
              f"GFLOP/s", flush=True)
        tasks = []
        for name in ("mlp", "lenet", "cifar10_quick"):
            if name in args.only:
                tasks.append((name, "torch", info[f"{name}_flops_train_per_example"], "train"))
        if "rbm" in args.only:
            tasks.append(("rbm", "sklearn", info["rbm_flops_per_example"], "train"))
        if "inference" in args.only:
            for name in ("mlp", "lenet"):
                tasks.append((f"infer_{name}", "torch", info[f"{name}_flops_infer_per_example"],
                              "infer"))
        repeats_used = {}
        for task, peer, flops, kind in tasks:
            repeats = repeats_used[task] = repeats_for(task, args.repeats, args.exact_repeats)
            runs = {"minidnn": [], peer: []}
            for r in range(repeats):
                for framework in (("minidnn", peer) if r % 2 == 0 else (peer, "minidnn")):
                    result = launch(framework, task, args, workdir, env)
                    runs[framework].append(result)
                    shown = (f"{result['seconds']:.2f} s" if kind == "train" else
                             f"batch-1 {result['batch1_median_ms']:.3f} ms, batch-100 "
                             f"{result['batch100_images_per_s']:.0f} img/s (passes "
                             f"{min(result['batch100_pass_images_per_s']):.0f}-"
                             f"{max(result['batch100_pass_images_per_s']):.0f})")
                    grown = ("" if "training_rss_growth_mib" not in result else
                             f" (training adds {result['training_rss_growth_mib']:.0f} MiB)")
                    print(f"  {task:<14} {framework:<8} repeat {r + 1}: {shown}, peak RSS "
                          f"{result['peak_rss_mib']:.0f} MiB{grown}, control "
                          f"{result['control_gflops']:.0f}/{result['control_after_gflops']:.0f}"
                          f" GFLOP/s", flush=True)
            raw[task] = runs

    # the slow-mode reference is the whole run's best control: a workload that ran
    # entirely in a slow mode is flagged, not measured against itself
    best = best_control(raw)
    rows, tables = [], {}
    for task, peer, flops, kind in tasks:
        runs = raw[task]
        row = {"task": task, "peer": peer, "kind": kind}
        for framework, results in runs.items():
            side = "ours" if framework == "minidnn" else "peer"
            row[f"{side}_peak_rss_mib"] = statistics.median(r["peak_rss_mib"] for r in results)
            growth = [r["training_rss_growth_mib"] for r in results
                      if "training_rss_growth_mib" in r]
            if growth:   # what training adds above imports + data (_TrainingMemory)
                row[f"{side}_training_rss_growth_mib"] = statistics.median(growth)
            row[f"{side}_control_gflops"] = statistics.median(
                worker_control(r) for r in results)
            if kind == "train":
                seconds = statistics.median(r["seconds"] for r in results)
                gflops = flops * results[0]["n_examples"] / seconds / 1e9
                row.update({f"{side}_seconds": seconds, f"{side}_gflops": gflops,
                            f"{side}_fraction_of_peak": gflops / peak})
            else:
                for key in ("batch1_median_ms", "batch1_p99_ms", "batch100_images_per_s",
                            "batch100_call_median_ms"):
                    row[f"{side}_{key}"] = statistics.median(r[key] for r in results)
                row[f"{side}_batch100_gflops"] = (
                    flops * row[f"{side}_batch100_images_per_s"] / 1e9)
                for key in ("batch1_median_ms", "batch100_images_per_s"):
                    row[f"{side}_{key}_min"] = min(r[key] for r in results)
                    row[f"{side}_{key}_max"] = max(r[key] for r in results)
        if kind == "train":
            row["ratio"] = row["ours_seconds"] / row["peer_seconds"]
            row["target"] = TRAIN[task]["target"] if task in TRAIN else 0.6
        else:
            row["ratio_batch1_median"] = (row["ours_batch1_median_ms"]
                                          / row["peer_batch1_median_ms"])
            row["ratio_batch1_p99"] = row["ours_batch1_p99_ms"] / row["peer_batch1_p99_ms"]
            row["ratio_batch100_time"] = (row["peer_batch100_images_per_s"]
                                          / row["ours_batch100_images_per_s"])
        summaries, table = pairs_of(runs, peer, kind, best)
        for name, summary in summaries.items():
            row.update(pair_fields(name, summary))
        first = next(iter(summaries.values()))
        if kind == "train":
            for side in ("ours", "peer"):
                row[f"{side}_seconds_min"] = first[f"{side}_min"]
                row[f"{side}_seconds_max"] = first[f"{side}_max"]
                if f"{side}_steady_median" in first:
                    row[f"{side}_seconds_steady"] = first[f"{side}_steady_median"]
        row.update({"n_pairs": first["n_pairs"], "n_steady_pairs": first["n_steady_pairs"],
                    "slow_pairs": first["slow_pairs"], "pairs": table})
        rows.append(row)
        tables[task] = table

    print(f"\nper-repeat pairs (interleaved; 'first' ran first). ctl = the worker's control, "
          f"GFLOP/s of a NumPy float32 {CONTROL_N}^3 GEMM, the lower of before/after its "
          f"work; * = slow mode, > {100 * SLOW_MODE_TOLERANCE:.0f} % below the run's best "
          f"control ({best:.1f} GFLOP/s). inference: batch-1 median ms, batch-100 img/s; "
          f"ratios batch-1 median, batch-100 time")
    for task, peer, flops, kind in tasks:
        print(format_pair_header(peer, kind))
        for pair in tables[task]:
            print(format_pair_line(task, peer, kind, pair, best))

    print(f"\nGEMM peak {peak:.1f} GFLOP/s ({args.threads} threads). ratio = minidnn / peer "
          f"(time): the median of the per-pair ratios over the steady pairs (both controls "
          f"within {100 * SLOW_MODE_TOLERANCE:.0f} % of the run's best), over all pairs where "
          f"none is steady (JSON ratio_summary); the ratio of the medians (JSON ratio) is in "
          f"the pairs table below\n")
    header = (f"{'workload':<15}{'minidnn':>22}{'peer':>30}{'ratio':>8}{'target':>8}"
              f"{'peak RSS m/p':>16}{'steady':>12}")
    print(header)
    print("-" * len(header))
    for row in rows:
        # the steady pairs the ratio comes from; "all" where none is steady
        steady = (f"{row['n_steady_pairs']}/{row['n_pairs']}"
                  + ("" if row["n_steady_pairs"] else " all"))
        rss = f"{row['ours_peak_rss_mib']:.0f}/{row['peer_peak_rss_mib']:.0f} MiB"
        rss = f"{rss:>16}{steady:>12}"
        if row["kind"] == "train":
            ours = f"{row['ours_seconds']:.2f} s {row['ours_gflops']:.1f} GF/s"
            peer = f"{row['peer']} {row['peer_seconds']:.2f} s {row['peer_gflops']:.1f} GF/s"
            print(f"{row['task']:<15}{ours:>22}{peer:>30}{row['ratio_summary']:>8.2f}"
                  f"{'<= ' + str(row['target']):>8}{rss}")
        else:
            ours = (f"{row['ours_batch1_median_ms']:.3f}/{row['ours_batch1_p99_ms']:.3f} ms "
                    f"{row['ours_batch100_images_per_s']:.0f}/s")
            peer = (f"{row['peer_batch1_median_ms']:.3f}/{row['peer_batch1_p99_ms']:.3f} ms "
                    f"{row['peer_batch100_images_per_s']:.0f}/s")
            print(f"{row['task']:<15}{ours:>22}{peer:>30}"
                  f"{row['ratio_batch1_median_summary']:>8.2f}{'<= 1.0':>8}{rss}")
            print(f"{'':<15}{'p99 ratio':>22}{row['ratio_batch1_p99_summary']:>38.2f}"
                  f"{'<= 1.0':>8}\n"
                  f"{'':<15}{'batch-100 time ratio':>22}"
                  f"{row['ratio_batch100_time_summary']:>38.2f}{'<= 1.0':>8}")
    print("(inference: batch-1 median/p99 latency and batch-100 images/s; ratio = median "
          "latency; minidnn/peer columns: medians of all runs)")

    print(f"\npairs: ratios of the medians and medians of the per-pair ratios, all pairs and "
          f"steady pairs; each side's min-max over all runs")
    header = (f"{'workload':<15}{'ratio':<14}{'med/med':>8}{'pairs':>7}{'steady':>8}"
              f"{'steady n':>10}  {'minidnn min-max':<22}{'peer min-max'}")
    print(header)
    print("-" * len(header))
    for row in rows:
        names = ["ratio"] if row["kind"] == "train" else [n for n, _ in INFERENCE_METRICS]
        for name in names:
            steady = row.get(f"{name}_steady_pairs_median")
            label = "time" if name == "ratio" else name[len("ratio_"):]
            if row["kind"] == "train":
                spread = [f"{row[f'{s}_seconds_min']:.2f}-{row[f'{s}_seconds_max']:.2f} s"
                          for s in ("ours", "peer")]
            elif name == "ratio_batch1_median":
                spread = [f"{row[f'{s}_batch1_median_ms_min']:.3f}-"
                          f"{row[f'{s}_batch1_median_ms_max']:.3f} ms" for s in ("ours", "peer")]
            elif name == "ratio_batch100_time":
                spread = [f"{row[f'{s}_batch100_images_per_s_min']:.0f}-"
                          f"{row[f'{s}_batch100_images_per_s_max']:.0f}/s"
                          for s in ("ours", "peer")]
            else:
                spread = ["", ""]
            print(f"{row['task']:<15}{label:<14}{row[name]:>8.2f}"
                  f"{row[f'{name}_pairs_median']:>7.2f}"
                  f"{'-' if steady is None else f'{steady:.2f}':>8}"
                  f"{str(row['n_steady_pairs']) + '/' + str(row['n_pairs']):>10}  "
                  f"{spread[0]:<22}{spread[1]}".rstrip())
    slow = [f"{row['task']} {row['slow_pairs']}" for row in rows if row["slow_pairs"]]
    print("slow-mode pairs (kept in the all-pairs figures): "
          + ("; ".join(slow) if slow else "none"))
    grown = [r for r in rows
             if "ours_training_rss_growth_mib" in r and "peer_training_rss_growth_mib" in r]
    if grown:
        print("peak RSS = the worker process's peak (imports, data, model, training); what "
              "training adds above imports + data (model, warm-up, epoch), minidnn / peer: "
              + ", ".join(f"{r['task']} {r['ours_training_rss_growth_mib']:.0f}/"
                          f"{r['peer_training_rss_growth_mib']:.0f} MiB" for r in grown))
    payload = {"benchmark": "speed_vs_torch", "command": "python bench/speed_vs_torch.py "
               + " ".join(argv if argv is not None else sys.argv[1:]),
               "environment": env, "threads": args.threads, "repeats": args.repeats,
               "repeats_per_workload": repeats_used, "exact_repeats": args.exact_repeats,
               "tiny": args.tiny, "gemm_peak": peaks, "gemm_peak_gflops": peak,
               "control": {"framework": "numpy", "n": CONTROL_N, "best_of": CONTROL_REPEATS,
                           "best_gflops": best, "slow_mode_tolerance": SLOW_MODE_TOLERANCE,
                           "worker_control": "min(control_gflops, control_after_gflops)",
                           "ratio_summary": "median of the per-pair ratios over the steady "
                                            "pairs; over all pairs where none is steady"},
               "data": {k: v for k, v in info.items() if not k.endswith("per_example")},
               "flops_per_example": {k: v for k, v in info.items() if k.endswith("per_example")},
               "wall_seconds": time.time() - started, "results": rows, "runs": raw,
               "machine": _machine()}
    out = args.out or BENCH / "results" / f"speed_vs_torch{'_tiny' if args.tiny else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=1, default=float) + "\n")
    print(f"\nwritten {out} ({time.time() - started:.0f} s)")
    return 0


def _machine() -> dict:
    import platform
    cpu = ""
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info
                        if line.startswith("model name")), "")
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "load_average": load}


if __name__ == "__main__":
    sys.exit(main())
