"""A/B of the sparse layer's training step and epoch: this tree against a git revision,
interleaved in ONE process (issue #11 work guide, not a speed figure).

    python bench/sparse_step_ab.py --base f853567          # ~2 min
    python bench/sparse_step_ab.py --base f853567 --threads 2 --clock wall
    python bench/sparse_step_ab.py --base HEAD --switch BACKWARD_SPLIT=products --threads 2 --clock wall

``--switch NAME=VALUE`` sets a class-level switch of this tree's ``TrainingKernels`` only,
so with ``--base HEAD`` the A/B is the switch against the default in one process (the
numbers are checked equal first, as always), the epoch part included.

The revision's ``minidnn`` package is unpacked (``git archive``) into a temporary folder
as ``minidnn_base`` and imported beside this tree's ``minidnn``; both build the same
layer (same seed, so the same pattern and values) and their outputs are checked equal
before anything is timed. Then, in rotating order over ``--rounds`` rounds, each
candidate is timed over ``--iters`` calls:

* ``step``: ``forward(x) + backward(g)`` of a 784→500 SparseDense at batch 100 from
  C-ordered float32 x and g (what bench/sparse_speed.py times), at each γ;
* ``fwd``, ``fwd+bwd_params``: the forward alone, and with the weight + bias gradient from a
  Fortran-ordered g (a first layer inside a net: no dx, g from a Sigmoid);
* ``epoch``: ``fit`` for one epoch on ``--epoch-images`` MNIST images (784-500-10 sigmoid,
  SGD momentum 0.9, batch 100) at γ = 0.04, and the dense net for reference.

``--clock thread`` (default) reads this thread's CPU time, which leaves out the time the
process waits for a core on a loaded machine: right for one thread, useless for two
(``--clock wall`` then). The figure per candidate is the median over rounds of the
per-round 10th percentile (robust to other processes' bursts). Results are printed and
written as JSON (``--out``, default bench/results/sparse_step_ab.json).

Threads: only ``numba.set_num_threads(--threads)``, NOT ``minidnn.configure_threads``:
Numba keeps its default threading layer (OpenMP, i.e. libgomp, whose idle threads spin,
where Numba has it; the CLI picks ``workqueue``) and BLAS keeps what the environment
gives it (OPENBLAS_NUM_THREADS, else every core), so its 2-thread figures are that
set-up's, not the CLI's.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import REPO_ROOT, RESULTS_DIR  # noqa: E402


def unpack_base(rev: str, folder: str) -> str:
    """``git archive rev minidnn`` into folder/minidnn_base; returns the full hash."""
    full = subprocess.run(["git", "rev-parse", rev], cwd=REPO_ROOT, check=True,
                          capture_output=True, text=True).stdout.strip()
    archive = subprocess.run(["git", "archive", full, "minidnn"], cwd=REPO_ROOT, check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", folder], input=archive, check=True)
    os.rename(os.path.join(folder, "minidnn"), os.path.join(folder, "minidnn_base"))
    return full


def apply_switches(pairs) -> dict:
    """Set NAME=VALUE class attributes of this tree's ``kernels.csr.TrainingKernels``
    (bool for bool switches: 1/0/true/false; int or None for THREADS; str otherwise)."""
    from minidnn.kernels.csr import TrainingKernels
    done = {}
    for pair in pairs:
        name, _, text = pair.partition("=")
        if not hasattr(TrainingKernels, name):
            raise SystemExit(f"--switch: TrainingKernels has no switch {name!r}")
        old = getattr(TrainingKernels, name)
        if isinstance(old, bool):
            value = text.lower() in ("1", "true", "yes", "on")
        elif name == "THREADS":
            value = None if text.lower() == "none" else int(text)
        else:
            value = text
        setattr(TrainingKernels, name, value)
        done[name] = value
    return done


def timer(clock: str):
    return time.thread_time_ns if clock == "thread" else time.perf_counter_ns


def p10_median(fns: dict, rounds: int, iters: int, clock: str) -> dict:
    now = timer(clock)
    for f in fns.values():            # warm up for 0.3 s each: the first candidate timed in
        t_end = time.perf_counter() + 0.3        # a fresh process read up to 20 % slow
        while time.perf_counter() < t_end:
            f()
    per = {name: [] for name in fns}
    names = list(fns)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            f, ts = fns[name], []
            for _ in range(iters):
                t0 = now()
                f()
                ts.append(now() - t0)
            per[name].append(float(np.percentile(ts, 10)) / 1e3)
    return {name: float(np.median(v)) for name, v in per.items()}


def layer_candidates(packages: dict, density: float):
    rng = np.random.default_rng(1)
    x = rng.random((100, 784), dtype=np.float32)
    g = rng.standard_normal((100, 500)).astype(np.float32)
    g_f = np.asfortranarray(g)
    layers = {label: pkg.sparse.SparseDense(784, 500, density=density, rng=0)
              for label, pkg in packages.items()}
    ref = None
    for label, layer in layers.items():        # same numbers, or the times are moot
        outs = (layer.forward(x, True), layer.backward(g), layer.grads["data"])
        if ref is None:
            ref = outs
        for a, b in zip(outs, ref):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4, err_msg=label)
    step = {f"{label}": (lambda l=l: (l.forward(x, True), l.backward(g)))
            for label, l in layers.items()}
    parts = {}
    for label, l in layers.items():
        parts[f"{label} fwd"] = lambda l=l: l.forward(x, True)
        parts[f"{label} fwd+bwd_params"] = lambda l=l: (l.forward(x, True), l.backward_params(g_f))
    return step, parts


def epoch_candidates(packages: dict, images: int):
    import minidnn.data
    splits = minidnn.data.load("mnist")
    x, y = splits.train.flatten()[:images], splits.train.y[:images]
    out = {}
    for label, md in list(packages.items()) + [("dense", packages["this tree"])]:
        rng = np.random.default_rng(0)
        first = (md.Dense(784, 500, rng=rng) if label == "dense"
                 else md.SparseDense(784, 500, density=0.04, rng=rng))
        model = md.Sequential([md.Flatten(), first, md.Sigmoid(), md.Dense(500, 10, rng=rng)],
                              seed=None, input_shape=(784,))
        opt = md.SGD(0.1, momentum=0.9)
        md.fit(model, (x[:500], y[:500]), epochs=1, batch_size=100, optimizer=opt,
               progress=False, log=None)
        out[f"{label} epoch"] = (lambda md=md, model=model, opt=opt: md.fit(
            model, (x, y), epochs=1, batch_size=100, optimizer=opt, progress=False, log=None))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True, help="git revision to compare against")
    p.add_argument("--densities", default="0.04,0.01,0.16")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--iters", type=int, default=60)
    p.add_argument("--epoch-images", type=int, default=10000, help="0: no epoch part")
    p.add_argument("--threads", type=int, default=1, help="numba threads (BLAS: as set outside)")
    p.add_argument("--clock", choices=("thread", "wall"), default="thread")
    p.add_argument("--switch", action="append", default=[], metavar="NAME=VALUE",
                   help="set a class-level switch of this tree's TrainingKernels only (e.g. "
                        "BACKWARD_SPLIT=products; repeatable): an A/B of the switch against the "
                        "base's default")
    p.add_argument("--out", default=str(RESULTS_DIR / "sparse_step_ab.json"))
    args = p.parse_args(argv)
    import numba
    numba.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        full = unpack_base(args.base, tmp)
        sys.path.insert(0, tmp)
        base = importlib.import_module("minidnn_base")
        importlib.import_module("minidnn_base.sparse")
        import minidnn
        import minidnn.sparse  # noqa: F401
        switches = apply_switches(args.switch)
        packages = {"base": base, "this tree": minidnn}
        result = {"base": full, "switches": switches, "threads": args.threads,
                  "clock": args.clock,
                  "rounds": args.rounds, "iters": args.iters,
                  "load_average": os.getloadavg(), "us_p10_median": {}}
        for density in map(float, args.densities.split(",")):
            step, parts = layer_candidates(packages, density)
            times = p10_median(step, args.rounds, args.iters, args.clock)
            if density == 0.04:
                times.update(p10_median(parts, args.rounds, args.iters, args.clock))
            result["us_p10_median"][f"gamma={density}"] = times
            print(f"γ={density}: " + "  ".join(f"{k} {v:.0f} µs" for k, v in times.items()),
                  flush=True)
        if args.epoch_images:
            times = p10_median(epoch_candidates(packages, args.epoch_images),
                               max(3, args.rounds // 2), 1, args.clock)
            result["epoch_seconds"] = {k: v / 1e6 for k, v in times.items()}
            print(f"epoch ({args.epoch_images} images): " +
                  "  ".join(f"{k} {v / 1e6:.3f} s" for k, v in times.items()), flush=True)
    result["load_average_after"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out} (load average {result['load_average']} → "
          f"{result['load_average_after']}; {args.clock} clock)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
