"""Where a training step's time goes in the 784-500-10 MNIST epoch, sparse (γ) against dense.

    python bench/sparse_epoch_parts.py                  # 1 thread, 10,000 images, ~1 min
    python bench/sparse_epoch_parts.py --density 0.04 --images 50000 --threads 2 --clock wall

Each layer's forward / backward / backward_params, the optimizer's step, the loss and
(since sitting 19) the minibatch gather (``training._gather_batch``) are wrapped with a
timer; whatever is left of the epoch is the fit loop itself (the data check, the
accuracy count, the divergence checks, Python). Since sitting 22 a net whose first layer
takes the feature-major gather (the sparse one) has its inputs checked for NaN / Inf by
that gather in fit's first epoch, so the check is inside "minibatch gather" there (~4 µs
a batch) and no longer a pass over the data set in "fit loop, rest"; since sitting 23
the dense net's too (``kernels.gather.gather_rows_checked``, the row gather that
replaced its ``x[idx]``). The rest also holds the divergence rule's starting loss (ten
evaluation batches before the first step, ~4 ms under load: 21 µs a step at 20,000
images, 9 at 50,000). ``--clock thread`` (default) reads this thread's CPU
time, which leaves out the waits for a core on a loaded machine (right at one thread;
a Numba or BLAS worker thread's time is not counted, so use ``--clock wall`` at two).
Since sitting 17, ``fit`` gathers the minibatches of a net whose first layer is a
SparseDense straight into that layer's feature-major layout (``kernels.gather``), so the
transpose of x that "first layer.forward" used to do is now inside the fit loop's part.
Best of ``--repeats`` epochs. A diagnosis for issue #11's epoch target, not a speed figure:
the sparse/dense ratio of the epoch is bounded by what both nets spend outside the
first layer.

The parts add up to the timed epoch by construction ("fit loop, rest" is what is left),
but that epoch is not the plain one: every wrapped call adds two clock reads and a
Python frame, and sitting 20's quiet run read 920 µs a sparse step here against ~680 µs
from ``sparse_speed.py``'s epoch. So after each timed epoch the same epoch runs with the
timers taken off; ``us_per_step_untimed`` (best of ``--repeats``) and
``timing_overhead_us_per_step`` (timed − untimed) say how much of the parts is the
timing itself. Read the parts' shares, and the untimed figure for the step.

Threads: ``numba.set_num_threads(--threads)`` and threadpoolctl's BLAS limit, but NOT
``minidnn.configure_threads``: Numba keeps its default threading layer (OpenMP, i.e.
libgomp with spinning idle threads, where Numba has it; the CLI and ``sparse_speed.py``'s
workers use ``workqueue``), which is recorded as ``numba_threading_layer``. That is one
more reason its 2-thread step is not ``sparse_speed.py``'s.
"""
from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import RESULTS_DIR, save_result  # noqa: E402


def measure(density, x, y, repeats, clock):
    import minidnn as md
    now = time.thread_time_ns if clock == "thread" else time.perf_counter_ns
    spent = collections.defaultdict(int)
    wrapped = []        # (object, name, its own callable, the timed one)

    def wrap(obj, name, label):
        inner = getattr(obj, name)

        def timed(*args, **kwargs):
            t0 = now()
            try:
                return inner(*args, **kwargs)
            finally:
                spent[label] += now() - t0
        setattr(obj, name, timed)
        wrapped.append((obj, name, inner, timed))

    def timers(on):
        for obj, name, inner, timed in wrapped:
            setattr(obj, name, timed if on else inner)

    rng = np.random.default_rng(0)
    first = (md.Dense(784, 500, rng=rng) if density >= 1.0
             else md.SparseDense(784, 500, density=density, rng=rng))
    sigmoid, last = md.Sigmoid(), md.Dense(500, 10, rng=rng)
    model = md.Sequential([md.Flatten(), first, sigmoid, last], seed=None, input_shape=(784,))
    opt = md.SGD(0.1, momentum=0.9)
    md.fit(model, (x[:500], y[:500]), epochs=1, batch_size=100, optimizer=opt, progress=False,
           log=None)      # compile / load the kernels outside the measured epochs
    # Sequential.backward calls backward_params on the first layer (no dx) and backward
    # on the others (Dense's backward calls its backward_params: timed once, inside)
    # since sitting 20 the first layer and its sigmoid run as one fused step
    # (layers.fusion.FUSE_DENSE_ACTIVATION): then that step's calls are one part (its
    # layers' own methods, which it may call, are not timed apart: no double count)
    pairs = [step for _, step in model.plan() if hasattr(step, "forward")
             and (hasattr(step, "sigmoid") or hasattr(step, "activation"))]
    for step in pairs:
        wrap(step, "forward", "first layer + sigmoid (fused).forward")
        wrap(step, "backward_params", "first layer + sigmoid (fused).backward_params")
    for layer, label, methods in ((first, "first layer", ("forward", "backward_params")),
                                  (sigmoid, "sigmoid", ("forward", "backward")),
                                  (last, "dense 500→10", ("forward", "backward"))):
        if pairs and layer is not last:
            continue
        for method in methods:
            wrap(layer, method, f"{label}.{method}")
    wrap(opt, "step", "optimizer.step")
    # since sitting 19 the minibatch gather and the loss are parts of their own
    import minidnn.training as training
    from minidnn.losses import SoftmaxCrossEntropy
    loss = SoftmaxCrossEntropy()
    wrap(loss, "__call__", "loss")
    wrapped_loss = lambda out, target: loss.__call__(out, target)   # noqa: E731
    real_gather = training._gather_batch
    wrap(training, "_gather_batch", "minibatch gather")
    best = None
    plain = []
    steps = int(np.ceil(len(x) / 100))
    try:
        for _ in range(repeats):
            before = dict(spent)
            t0 = now()
            md.fit(model, (x, y), epochs=1, batch_size=100, optimizer=opt, progress=False,
                   log=None, loss=wrapped_loss)
            total = now() - t0
            parts = {k: (spent[k] - before.get(k, 0)) / 1e3 / steps for k in spent}
            if best is None or total < best[0]:
                best = (total, parts)
            # the same epoch with the timers taken off, right after: what the step costs
            # without the ~16 clock reads and wrapper calls a step the parts add
            timers(False)
            t0 = now()
            md.fit(model, (x, y), epochs=1, batch_size=100, optimizer=opt, progress=False,
                   log=None, loss=wrapped_loss)
            plain.append(now() - t0)
            timers(True)
    finally:
        timers(False)
        training._gather_batch = real_gather
    total, parts = best
    own = dict(parts)
    own["fit loop, rest"] = total / 1e3 / steps - sum(own.values())
    untimed = min(plain) / 1e3 / steps
    return {"us_per_step_total": total / 1e3 / steps, "us_per_step": own,
            "us_per_step_untimed": untimed,
            "timing_overhead_us_per_step": total / 1e3 / steps - untimed}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--density", type=float, default=0.04)
    p.add_argument("--images", type=int, default=10000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--clock", choices=("thread", "wall"), default="thread")
    p.add_argument("--out", default=str(RESULTS_DIR / "sparse_epoch_parts.json"))
    args = p.parse_args(argv)
    import os
    import numba
    from threadpoolctl import threadpool_limits
    import minidnn.data
    numba.set_num_threads(args.threads)
    splits = minidnn.data.load("mnist")
    x, y = splits.train.flatten()[:args.images], splits.train.y[:args.images]
    result = {"threads": args.threads, "clock": args.clock, "images": len(x),
              "load_average": os.getloadavg()}
    with threadpool_limits(args.threads):
        for density in (args.density, 1.0):
            r = measure(density, x, y, args.repeats, args.clock)
            result["numba_threading_layer"] = numba.threading_layer()
            result["sparse" if density < 1 else "dense"] = r
            print(f"{'sparse γ=%g' % density if density < 1 else 'dense'}: "
                  f"{r['us_per_step_total']:.0f} µs per step ({args.clock} clock, "
                  f"{args.threads} thread(s), best of {args.repeats}); the same epochs "
                  f"without the timers {r['us_per_step_untimed']:.0f} µs, so the parts "
                  f"below include {r['timing_overhead_us_per_step']:.0f} µs of timing")
            for k, v in sorted(r["us_per_step"].items(), key=lambda kv: -kv[1]):
                print(f"    {k:28s} {v:8.1f} µs")
    s, d = result["sparse"], result["dense"]
    outside = s["us_per_step_total"] - sum(v for k, v in s["us_per_step"].items()
                                           if k.startswith("first layer"))
    # (with the fused pair, "first layer" includes the sigmoid)
    result["ratio"] = d["us_per_step_total"] / s["us_per_step_total"]
    result["ratio_if_first_layer_were_free"] = d["us_per_step_total"] / outside
    result["ratio_untimed"] = d["us_per_step_untimed"] / s["us_per_step_untimed"]
    print(f"dense/sparse step ratio {result['ratio']:.2f}; with a free sparse layer it would be "
          f"{result['ratio_if_first_layer_were_free']:.2f}; untimed epochs "
          f"{result['ratio_untimed']:.2f}")
    result["load_average_after"] = os.getloadavg()
    save_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
