"""Speed and memory of fixed sparse layers (SPEC technique 3): minidnn CSR against dense
BLAS, SciPy CSR and PyTorch sparse CSR, plus a training epoch, peak memory and file bytes.

    python bench/sparse_speed.py                       # the full run (~5 min on a quiet 2-core machine)
    python bench/sparse_speed.py --tiny                # a check that every part runs (~1 min)

What is timed, for each γ in {1, 0.33, 0.16, 0.08, 0.04, 0.02, 0.01}: one training step
of a 784→500 layer at batch 100, float32, the three products of backprop

    forward  y = x W + b          (batch, 500)
    input    dx = dy Wᵀ           (batch, 784)
    weight   ∂L/∂W at the stored entries only (all of W for dense BLAS)

from x (100, 784) and dy (100, 500), both C-ordered, to y, dx and the gradient; any
transposes a peer needs are inside its time. The peers:

* ``minidnn`` (the headline): ``SparseDense.forward`` + ``backward`` (Numba CSR kernels,
  the training path: one forward call with the transpose of x inside, one fused backward
  call with the transpose of dy inside), with the thread set-up a user of the command
  gets: the worker calls ``configure_threads(n, **cli_thread_options(args))`` with the
  arguments of ``minidnn train --threads n --density γ`` (since sitting 21: Numba's omp
  layer, libgomp's default wait policy, BLAS capped at n; ``minidnn.threads``), as the
  ``minidnn`` command does before it builds the model. For comparison:
  ``minidnn_active``: ``configure_threads(n, numba_layer="omp", wait_policy="active")``
  (the documented call; libgomp's threads spin between kernels instead of sleeping);
  ``minidnn_bare``: no ``configure_threads`` call at all (Numba's default omp layer, caps
  from the environment only: sitting 20's headline peer); ``minidnn_workqueue``
  (not in the default ``--peers``): ``configure_threads(n)``, the workqueue layer the
  command used for every net until sitting 21 (there the sparse kernels' parallel
  threshold is 10× higher, so at γ = 0.04 they run serial); ``minidnn_spin3k`` (not in the
  default ``--peers``): ``configure_threads(n, numba_layer="omp", spin_count=3000)``, the
  candidate for one set-up for every net (bench/region_wakeup.py); ``minidnn_serial`` and
  ``minidnn_products`` (not in the default ``--peers``; sitting 19's switches, for the
  quiet A/B, on the user's set-up): the same with
  ``TrainingKernels.THREADS = 1`` (every kernel serial) or ``BACKWARD_SPLIT = "products"``
  (the 2-thread backward split by product instead of by samples); ``minidnn_rowcol``:
  ``FORWARD_SPLIT = "rows"``, ``BACKWARD_SPLIT = "columns"`` (the default since sitting
  19's quiet run); ``minidnn_samples``: both "samples" (sitting 18's split). (Sitting
  21's ``minidnn_private*`` and ``minidnn_aligned`` peers went with their switches in
  sitting 22: a tie or a loss on the quiet machine.)
* ``dense``: ``Dense.forward`` + ``backward`` (NumPy → OpenBLAS sgemm), the same at every γ,
  with the set-up ``minidnn train --threads n`` (no ``--density``) gets (workqueue layer,
  BLAS capped at n);
* ``scipy``: ``scipy.sparse`` CSR products, gradient gathered at the pattern
  (``einsum`` over ``dyᵀ[rows] * xᵀ[cols]``);
* ``torch``: PyTorch sparse CSR (``A @ xᵀ``, a CSR of Aᵀ built once for dx,
  ``torch.sparse.sampled_addmm`` for the gradient).

Protocol: every peer runs in its own fresh subprocess with the same thread count
(``--threads``, default 2: OMP/OpenBLAS/MKL/Numba/torch all capped); the peers'
subprocesses are interleaved over ``--repeats`` rounds in rotating order; inside a
subprocess each γ is warmed up, then timed over ``--iters`` steps and the median is
kept; the figure is the median over rounds. A GEMM peak (float32 1024³ and the
784×500×100 shapes) is measured in the same run. Then:

* a training epoch on full MNIST (50,000 images, 784-500-10 sigmoid, SGD momentum 0.9,
  batch 100) at γ = 0.04 (first layer SparseDense) against dense, each in its own
  subprocess, interleaved, each with the thread set-up the ``minidnn train`` command
  gives it (sparse: omp layer; dense: workqueue); ``--epoch-bare``: the two again with
  no ``configure_threads`` call (sitting 20's protocol), for comparison;
  ``--epoch-workqueue``: the sparse epoch on ``configure_threads(n)`` (workqueue, what the
  command gave it until sitting 21); peak resident memory of each (VmHWM, reset after the data is
  loaded so it measures training, and the whole process's too);
* HDF5 bytes of the first layer's weights (sparse: data + indices + indptr) against
  dense W, and the file sizes.

The JSON goes to bench/results/sparse_speed.json (``--out``).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import RESULTS_DIR, thread_env  # noqa: E402

DENSITIES = (1.0, 0.33, 0.16, 0.08, 0.04, 0.02, 0.01)
PEERS = ("minidnn", "minidnn_active", "minidnn_bare", "dense", "scipy", "torch")
#: every peer a run may name (the default ones and those for the quiet A/Bs); another
#: name is refused (an unknown minidnn_* name would run the default set-up unnoticed, as
#: sitting 21's deleted minidnn_private* / minidnn_aligned peers would)
KNOWN_PEERS = PEERS + ("minidnn_workqueue", "minidnn_spin3k", "minidnn_serial",
                       "minidnn_products", "minidnn_rowcol", "minidnn_samples")
N_IN, N_OUT, BATCH = 784, 500, 100


# -- inside a worker subprocess -----------------------------------------------------------

def _threads() -> int:
    return int(os.environ.get("OMP_NUM_THREADS", "1"))


def cli_thread_setup(density: float | None, threads: int) -> dict:
    """``configure_threads`` exactly as ``minidnn train --threads N [--density γ]`` calls
    it (``minidnn.cli.main`` → ``threads.cli_thread_options``): before any layer is built."""
    import minidnn
    from minidnn.cli import build_parser
    from minidnn.threads import cli_thread_options
    argv = ["train", "--threads", str(threads)]
    if density is not None and density < 1.0:
        argv += ["--density", str(density)]
    args = build_parser().parse_args(argv)
    return minidnn.configure_threads(args.threads, **cli_thread_options(args))


def thread_setup(peer: str, threads: int):
    """The thread set-up of a peer (module docstring); None: no call."""
    import minidnn
    if peer == "minidnn_bare":
        return None
    if peer == "minidnn_active":
        return minidnn.configure_threads(threads, numba_layer="omp", wait_policy="active")
    if peer == "minidnn_workqueue":
        return minidnn.configure_threads(threads)
    if peer == "minidnn_spin3k":
        return minidnn.configure_threads(threads, numba_layer="omp", spin_count=3000)
    if peer.startswith("minidnn"):
        return cli_thread_setup(0.04, threads)
    if peer == "dense":
        return cli_thread_setup(None, threads)
    return None


def _pattern(density, seed=0):
    """One CSR pattern + values per γ, shared by every peer (the minidnn layer's)."""
    from minidnn.sparse import SparseDense
    layer = SparseDense(N_IN, N_OUT, density=density, rng=seed)
    return layer


def _median_step(step, iters, min_seconds):
    for _ in range(3):
        step()
    times = []
    t_end = time.perf_counter() + min_seconds
    while len(times) < iters or time.perf_counter() < t_end:
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
        if len(times) > 20 * iters:
            break
    return float(np.median(times)), len(times)


def _steps(peer, density, x, g):
    """A function doing forward + input gradient + weight gradient for ``peer``."""
    import minidnn as md
    layer = _pattern(density)
    if peer.startswith("minidnn"):
        def step():
            layer.forward(x, training=True)
            layer.backward(g)
        return step
    if peer == "dense":
        dense = md.Dense(N_IN, N_OUT, rng=0)

        def step():
            dense.forward(x, training=True)
            dense.backward(g)
        return step
    if peer == "scipy":
        import scipy.sparse as sp
        a = layer.to_scipy()                     # (out, in) CSR of Wᵀ
        at = a.T.tocsr()
        b = layer.params["b"]
        rows = np.repeat(np.arange(N_OUT), np.diff(a.indptr))
        cols = a.indices

        def step():
            y = (a @ x.T).T + b
            dx = (at @ g.T).T
            gt, xt = g.T, x.T
            dw = np.einsum("ij,ij->i", gt[rows], xt[cols])
            db = g.sum(axis=0)
            return y, dx, dw, db
        del sp
        return step
    if peer == "torch":
        import torch
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        a = layer.to_scipy()
        at = a.T.tocsr()

        def to_torch(m, shape):
            return torch.sparse_csr_tensor(torch.from_numpy(m.indptr.astype(np.int64)),
                                           torch.from_numpy(m.indices.astype(np.int64)),
                                           torch.from_numpy(m.data.astype(np.float32)), shape)
        A, AT = to_torch(a, (N_OUT, N_IN)), to_torch(at, (N_IN, N_OUT))
        b = torch.from_numpy(layer.params["b"])
        xt_, gt_ = torch.from_numpy(x), torch.from_numpy(g)

        def step():
            with torch.no_grad():
                y = (A @ xt_.T).T + b
                dx = (AT @ gt_.T).T
                dw = torch.sparse.sampled_addmm(A, gt_.T.contiguous(), xt_, beta=0.0, alpha=1.0)
                db = gt_.sum(0)
            return y, dx, dw, db
        return step
    raise ValueError(peer)


def _difference(outputs, density, x, g):
    """Largest |difference| of (y, dx, ∂W at the pattern, ∂b) from minidnn's SparseDense."""
    layer = _pattern(density)
    y = layer.forward(x, training=True)
    dx = layer.backward(g)
    ours = (y, dx, layer.grads["data"], layer.grads["b"])
    theirs = [np.asarray(o.values() if getattr(o, "layout", None) is not None and
                         "sparse" in str(o.layout) else o) for o in outputs]
    return float(max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max()
                     for a, b in zip(ours, theirs)))


def worker_layer(peer, densities, iters, min_seconds):
    import warnings
    warnings.filterwarnings("ignore")
    if peer == "torch":
        # before minidnn is imported, so that nothing minidnn loads (libgomp through
        # Numba's omp layer, OpenBLAS) is set up before torch's own OpenMP runtime
        import torch  # noqa: F401
    setup = thread_setup(peer, _threads())      # before any kernel runs: it picks the layer
    if peer in ("minidnn_serial", "minidnn_products", "minidnn_rowcol", "minidnn_samples"):
        from minidnn.kernels.csr import TrainingKernels       # sitting 19's work-split switches
        if peer == "minidnn_serial":
            TrainingKernels.THREADS = 1
        elif peer == "minidnn_products":
            TrainingKernels.FORWARD_SPLIT, TrainingKernels.BACKWARD_SPLIT = "samples", "products"
        elif peer == "minidnn_samples":     # sitting 18's split (the default until sitting 19)
            TrainingKernels.FORWARD_SPLIT, TrainingKernels.BACKWARD_SPLIT = "samples", "samples"
        else:                               # the default since sitting 19
            TrainingKernels.FORWARD_SPLIT, TrainingKernels.BACKWARD_SPLIT = "rows", "columns"
    rng = np.random.default_rng(1)
    x = rng.random((BATCH, N_IN), dtype=np.float32)
    g = rng.standard_normal((BATCH, N_OUT)).astype(np.float32)
    out = {}
    for density in densities:
        step = _steps(peer, density, x, g)
        seconds, n = _median_step(step, iters, min_seconds)
        out[str(density)] = {"seconds": seconds, "steps_timed": n}
        if peer in ("scipy", "torch"):   # same numbers as minidnn's layer, or the time is moot
            out[str(density)]["max_abs_diff_vs_minidnn"] = _difference(step(), density, x, g)
    if peer.startswith("minidnn"):       # where the time goes, per product (diagnosis only)
        for density in densities:
            layer = _pattern(density)
            layer.forward(x, True)
            # forward and backward: the training path (transposes of the C-ordered x
            # and g inside); input_grad, weight_grad: the three-product seam
            parts = {"forward": lambda: layer.forward(x, True),
                     "backward": lambda: layer.backward(g),
                     "input_grad": lambda: layer._input_grad(g),
                     "weight_grad": lambda: layer._weight_grad(x, g)}
            layer.forward(x, True)
            out[str(density)]["parts"] = {k: _median_step(f, iters, min_seconds / 4)[0]
                                          for k, f in parts.items()}
    if setup is not None:
        import numba
        out["_thread_setup"] = {k: str(v) for k, v in setup.items()}
        out["_thread_setup"]["layer_in_use"] = numba.threading_layer()
        out["_thread_setup"]["OMP_WAIT_POLICY"] = os.environ.get("OMP_WAIT_POLICY")
    return out


def worker_gemm(iters, min_seconds):
    rng = np.random.default_rng(0)
    big = rng.random((1024, 1024), dtype=np.float32)
    seconds, _ = _median_step(lambda: big @ big, max(5, iters // 10), min_seconds)
    x = rng.random((BATCH, N_IN), dtype=np.float32)
    W = rng.random((N_IN, N_OUT), dtype=np.float32)
    g = rng.random((BATCH, N_OUT), dtype=np.float32)
    layer_seconds, _ = _median_step(lambda: (x @ W, g @ W.T, x.T @ g), iters, min_seconds)
    return {"gemm_1024_gflops": 2 * 1024 ** 3 / seconds / 1e9,
            "three_layer_gemms_seconds": layer_seconds,
            "three_layer_gemms_gflops": 3 * 2 * BATCH * N_IN * N_OUT / layer_seconds / 1e9}


def _vm(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    return None


def worker_epoch(density, limit, bare=False, workqueue=False, spin3k=False):
    import minidnn as md
    if spin3k:          # sitting 21's candidate for one set-up for every net
        md.configure_threads(_threads(), numba_layer="omp", spin_count=3000)
    elif workqueue:       # the command's set-up for every net until sitting 21
        md.configure_threads(_threads())
    elif not bare:      # as `minidnn train --threads N [--density γ]` sets threads up
        cli_thread_setup(density, _threads())
    import minidnn.data
    splits = minidnn.data.load("mnist")
    x, y = splits.train.flatten(), splits.train.y
    if limit:
        x, y = x[:limit], y[:limit]
    rss_data = _vm("VmRSS")
    rng = np.random.default_rng(0)
    first = (md.Dense(N_IN, N_OUT, rng=rng) if density >= 1.0
             else md.SparseDense(N_IN, N_OUT, density=density, rng=rng))
    model = md.Sequential([md.Flatten(), first, md.Sigmoid(), md.Dense(N_OUT, 10, rng=rng)],
                          seed=None, input_shape=(N_IN,))
    opt = md.SGD(0.1, momentum=0.9)
    md.fit(model, (x[:500], y[:500]), epochs=1, batch_size=BATCH, optimizer=opt,
           progress=False, log=None)     # load/compile the kernels outside the measured epoch
    whole_peak_before = _vm("VmHWM")
    try:                                   # reset the high-water mark: measure the epoch only
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    rss_before = _vm("VmRSS")
    t0 = time.perf_counter()
    md.fit(model, (x, y), epochs=1, batch_size=BATCH, optimizer=opt, progress=False, log=None)
    seconds = time.perf_counter() - t0
    peak = _vm("VmHWM")
    return {"seconds": seconds, "images": len(x), "rss_after_data": rss_data,
            "rss_before_epoch": rss_before, "peak_rss_training": peak,
            "peak_rss_training_increase": peak - rss_before,
            "peak_rss_before_epoch": whole_peak_before,
            "model_state_bytes": int(sum(l.storage_bytes() for l in model.layers)),
            "optimizer_state_bytes": int(sum(v.nbytes for v in opt.velocity.values()))}


def worker_main(args):
    densities = [float(d) for d in args.densities.split(",")]
    if args.worker == "gemm":
        result = worker_gemm(args.iters, args.min_seconds)
    elif args.worker == "epoch":
        result = worker_epoch(float(args.density), args.limit, bare=args.bare,
                              workqueue=args.workqueue, spin3k=args.spin3k)
    else:
        result = worker_layer(args.worker, densities, args.iters, args.min_seconds)
    print("RESULT " + json.dumps(result), flush=True)
    return 0


# -- the driver -------------------------------------------------------------------------------

def run_worker(argv, threads):
    cmd = [sys.executable, str(Path(__file__).resolve())] + argv
    env = thread_env(threads)
    # every libgomp wait setting comes from the peer's own configure_threads call
    env.pop("OMP_WAIT_POLICY", None)
    env.pop("GOMP_SPINCOUNT", None)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {argv} failed:\n{proc.stderr[-3000:]}")
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def file_bytes(density):
    import h5py

    import minidnn as md
    sparse = md.Sequential([md.Flatten(), md.SparseDense(N_IN, N_OUT, density=density, rng=0),
                            md.Sigmoid(), md.Dense(N_OUT, 10)], seed=None, input_shape=(N_IN,))
    dense = md.Sequential([md.Flatten(), md.Dense(N_IN, N_OUT), md.Sigmoid(),
                           md.Dense(N_OUT, 10)], seed=0, input_shape=(N_IN,))
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, model in (("sparse", sparse), ("dense", dense)):
            path = os.path.join(tmp, f"{label}.h5")
            md.save(model, path)
            with h5py.File(path) as h5:
                group = h5[f"layers/{model.layers[1].name}"]
                stored = {}
                group.visititems(lambda name, obj: stored.__setitem__(name, obj.nbytes)
                                 if isinstance(obj, h5py.Dataset) else None)
            out[label] = {"first_layer_dataset_bytes": stored,
                          "first_layer_bytes": int(sum(stored.values())),
                          "file_bytes": os.path.getsize(path)}
    out["weight_bytes_ratio_dense_over_sparse"] = (out["dense"]["first_layer_bytes"] /
                                                   out["sparse"]["first_layer_bytes"])
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5, help="interleaved rounds of subprocesses")
    p.add_argument("--iters", type=int, default=50, help="timed steps per γ per subprocess")
    p.add_argument("--min-seconds", type=float, default=0.3, help="at least this long per γ")
    p.add_argument("--densities", default=",".join(map(str, DENSITIES)))
    p.add_argument("--peers", default=",".join(PEERS))
    p.add_argument("--epoch-repeats", type=int, default=2)
    p.add_argument("--epoch-density", type=float, default=0.04)
    p.add_argument("--limit", type=int, default=0, help="training images in the epoch (0: all)")
    p.add_argument("--tiny", action="store_true", help="a quick check that everything runs")
    p.add_argument("--no-epoch", action="store_true",
                   help="the layer steps only (no training epoch, no file bytes)")
    p.add_argument("--out", default=str(RESULTS_DIR / "sparse_speed.json"))
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--epoch-bare", action="store_true",
                   help="also the two epochs with no configure_threads call (sitting 20's)")
    p.add_argument("--density", default=None, help=argparse.SUPPRESS)
    p.add_argument("--epoch-workqueue", action="store_true",
                   help="also the sparse epoch on configure_threads(n) (workqueue: the "
                        "command's set-up until sitting 21)")
    p.add_argument("--epoch-spin3k", action="store_true",
                   help="also the sparse and dense epochs on configure_threads(n, "
                        "numba_layer='omp', spin_count=3000)")
    p.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--spin3k", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--workqueue", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker_main(args)
    if args.tiny:
        args.repeats, args.iters, args.min_seconds = 1, 5, 0.0
        args.densities, args.epoch_repeats, args.limit = "1.0,0.04", 1, 2000
        if args.out == str(RESULTS_DIR / "sparse_speed.json"):
            args.out = str(RESULTS_DIR / "sparse_speed_tiny.json")
    peers = args.peers.split(",")
    unknown = [peer for peer in peers if peer not in KNOWN_PEERS]
    if unknown:
        raise SystemExit(f"unknown peers {unknown}; known: {', '.join(KNOWN_PEERS)}")
    common = ["--densities", args.densities, "--iters", str(args.iters),
              "--min-seconds", str(args.min_seconds)]
    rounds = {peer: [] for peer in peers}
    gemm = []
    for r in range(args.repeats):
        order = peers[r % len(peers):] + peers[:r % len(peers)]
        gemm.append(run_worker(["--worker", "gemm"] + common, args.threads))
        for peer in order:
            rounds[peer].append(run_worker(["--worker", peer] + common, args.threads))
            print(f"round {r + 1}/{args.repeats} {peer}: " + "  ".join(
                f"γ={d} {1e6 * v['seconds']:.0f}µs" for d, v in rounds[peer][-1].items()
                if not d.startswith("_")),
                flush=True)
    layer = {}
    others = [p for p in peers if not p.startswith("minidnn")]
    for density in args.densities.split(","):
        density = str(float(density))
        row = {peer: float(np.median([rd[density]["seconds"] for rd in rounds[peer]]))
               for peer in peers}
        for mine in (p for p in peers if p.startswith("minidnn")):
            if "parts" in rounds[mine][0][density]:
                row[f"{mine}_parts"] = {k: float(np.median([rd[density]["parts"][k]
                                                            for rd in rounds[mine]]))
                                        for k in rounds[mine][0][density]["parts"]}
            for peer in others:
                prefix = "" if mine == "minidnn" else f"{mine}_"
                row[f"{prefix}speedup_vs_{peer}"] = row[peer] / row[mine]
        layer[density] = row
    arms = [("sparse", args.epoch_density, []), ("dense", 1.0, [])]
    if args.epoch_bare:
        arms += [("sparse_bare", args.epoch_density, ["--bare"]), ("dense_bare", 1.0, ["--bare"])]
    if args.epoch_workqueue:
        arms += [("sparse_workqueue", args.epoch_density, ["--workqueue"])]
    if args.epoch_spin3k:
        arms += [("sparse_spin3k", args.epoch_density, ["--spin3k"]),
                 ("dense_spin3k", 1.0, ["--spin3k"])]
    epochs = {label: [] for label, _, _ in arms}
    for r in range(0 if args.no_epoch else args.epoch_repeats):
        for label, density, extra in (arms if r % 2 == 0 else arms[::-1]):
            epochs[label].append(run_worker(["--worker", "epoch", "--density", str(density),
                                             "--limit", str(args.limit)] + extra, args.threads))
            print(f"epoch {label}: {epochs[label][-1]['seconds']:.2f}s", flush=True)
    epoch = None if args.no_epoch else {label: {"seconds": float(np.median([e["seconds"] for e in runs])),
                     "peak_rss_training": int(max(e["peak_rss_training"] for e in runs)),
                     "peak_rss_training_increase": int(max(e["peak_rss_training_increase"]
                                                           for e in runs)),
                     "runs": runs} for label, runs in epochs.items()}
    if epoch is not None:
        epoch["density"] = args.epoch_density
        epoch["speedup"] = epoch["dense"]["seconds"] / epoch["sparse"]["seconds"]
        epoch["thread_setup"] = "as `minidnn train --threads N [--density γ]` (cli_thread_setup)"
        if args.epoch_bare:
            epoch["speedup_bare"] = (epoch["dense_bare"]["seconds"] /
                                     epoch["sparse_bare"]["seconds"])
        if args.epoch_workqueue:
            epoch["speedup_sparse_workqueue"] = (epoch["dense"]["seconds"] /
                                                 epoch["sparse_workqueue"]["seconds"])
        if args.epoch_spin3k:
            epoch["speedup_spin3k"] = (epoch["dense_spin3k"]["seconds"] /
                                       epoch["sparse_spin3k"]["seconds"])
    result = {"threads": args.threads, "repeats": args.repeats, "iters": args.iters,
              "shape": [N_IN, N_OUT, BATCH], "gemm_peak": gemm,
              "layer_step_seconds": layer, "raw_rounds": rounds, "epoch": epoch,
              "file_bytes": None if args.no_epoch else file_bytes(args.epoch_density),
              "host": os.uname().nodename, "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"\nGEMM peak {np.median([g['gemm_1024_gflops'] for g in gemm]):.1f} GFLOP/s "
          f"(1024³ sgemm, {args.threads} threads); dense layer step "
          f"{np.median([g['three_layer_gemms_gflops'] for g in gemm]):.1f} GFLOP/s")
    mine = [p for p in peers if p.startswith("minidnn")]
    print("µs per fwd + bwd + weight-gradient step; then the speed-up over "
          + ", ".join(others) + " of " + " | ".join(mine))
    print(f"{'γ':>5} " + " ".join(f"{p:>14}" for p in peers))
    for density, row in layer.items():
        print(f"{float(density):>5g} " + " ".join(f"{1e6 * row[p]:>14.0f}" for p in peers) + "   " +
              "  ".join(f"{p} " + "|".join(
                  f"{row.get(('' if m == 'minidnn' else m + '_') + f'speedup_vs_{p}', float('nan')):.2f}×"
                  for m in mine) for p in others))
    if epoch is None:
        print(f"wrote {args.out}")
        return 0
    print(f"training epoch at γ={args.epoch_density}: {epoch['sparse']['seconds']:.2f}s, dense "
          f"{epoch['dense']['seconds']:.2f}s ({epoch['speedup']:.2f}× faster); peak RSS during "
          f"training +{epoch['sparse']['peak_rss_training_increase'] / 2**20:.1f} MiB vs "
          f"+{epoch['dense']['peak_rss_training_increase'] / 2**20:.1f} MiB (whole process "
          f"{epoch['sparse']['peak_rss_training'] / 2**20:.0f} vs "
          f"{epoch['dense']['peak_rss_training'] / 2**20:.0f} MiB); weights + momentum "
          f"{sum(epoch['sparse']['runs'][0][k] for k in ('model_state_bytes', 'optimizer_state_bytes')):,} "
          f"vs {sum(epoch['dense']['runs'][0][k] for k in ('model_state_bytes', 'optimizer_state_bytes')):,} bytes")
    if args.epoch_bare:
        print(f"  with no configure_threads call (sitting 20's protocol): sparse "
              f"{epoch['sparse_bare']['seconds']:.2f}s, dense {epoch['dense_bare']['seconds']:.2f}s "
              f"({epoch['speedup_bare']:.2f}×)")
    if args.epoch_workqueue:
        print(f"  sparse epoch on configure_threads(n) (workqueue, the command until sitting 21): "
              f"{epoch['sparse_workqueue']['seconds']:.2f}s ({epoch['speedup_sparse_workqueue']:.2f}× "
              f"the dense epoch)")
    if args.epoch_spin3k:
        print(f"  on configure_threads(n, numba_layer='omp', spin_count=3000): sparse "
              f"{epoch['sparse_spin3k']['seconds']:.2f}s, dense {epoch['dense_spin3k']['seconds']:.2f}s "
              f"({epoch['speedup_spin3k']:.2f}×)")
    fb = result["file_bytes"]
    print(f"HDF5 first-layer weights: {fb['sparse']['first_layer_bytes']:,} bytes sparse vs "
          f"{fb['dense']['first_layer_bytes']:,} dense "
          f"({fb['weight_bytes_ratio_dense_over_sparse']:.1f}× smaller); files "
          f"{fb['sparse']['file_bytes']:,} vs {fb['dense']['file_bytes']:,} bytes")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
