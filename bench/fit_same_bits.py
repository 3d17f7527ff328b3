"""Check that this tree trains the same bits as a git revision (issue #11, sitting 17).

    python bench/fit_same_bits.py --base 656f509              # ~1 min

Sitting 17 cut the per-step cost of ``fit`` (the loss, the accuracy count, the gather,
SGD's checks, Sigmoid's backward) on the promise that every result stays bit for bit
the same. This trains the 784-500-10 sigmoid net on ``--images`` MNIST images for
``--epochs`` epochs (batch 100, SGD momentum 0.9, weight decay 1e-4, a validation set)
with this tree's ``minidnn`` and with the revision's (unpacked as ``minidnn_base``, as
bench/sparse_step_ab.py does), sparse (γ = 0.04, per_unit, as the accuracy study) and
dense, and compares every weight, every velocity and the history (losses, accuracies).
Exit status 0 and "same bits" when all are equal; 1 otherwise, naming what differs.

Sitting 18 changed the last bits of float32 training on purpose (the one-pass float32
loss, Dense's input gradient in its input's order, the sigmoid's multiply-adds; see
bench/fit_overhead_ab.py). ``--without-bit-changes`` switches those three back in this
tree's run, so that against a revision of sitting 17 the check shows that nothing else
changed a bit:

    python bench/fit_same_bits.py --base fffa29e --without-bit-changes   # same bits
    python bench/fit_same_bits.py --base fffa29e                         # differs (last bits)

``--blas-threads OURS,BASE`` caps BLAS (threadpoolctl) for each tree's run (sitting 24).
OpenBLAS splits a product's k differently at one and two threads (392 + 392 against
400 + 384 for the MLP's 784-wide products), so 2-thread and 1-thread training differ in
the last bits; hold trees at the same count:

    python bench/fit_same_bits.py --base 9164eca --blas-threads 2,2     # same bits
    python bench/fit_same_bits.py --base 9164eca --blas-threads 1,1     # same bits
"""
from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.sparse_step_ab import unpack_base  # noqa: E402


def train(md, density, x, y, val, epochs):
    rng = np.random.default_rng(0)
    first = (md.Dense(784, 500, rng=rng) if density >= 1 else
             md.SparseDense(784, 500, density=density, pattern="per_unit", rng=rng))
    model = md.Sequential([md.Flatten(), first, md.Sigmoid(), md.Dense(500, 10, rng=rng)],
                          seed=None, input_shape=(784,))
    opt = md.SGD(0.2, momentum=0.9, weight_decay=1e-4)
    history = md.fit(model, (x, y), val, epochs=epochs, batch_size=100, optimizer=opt, seed=3,
                     progress=False, log=None)
    params = {f"{l.name}/{k}": v for l in model.layers for k, v in l.params.items()}
    return params, opt.velocity, [{k: v for k, v in r.items() if k != "seconds"}
                                  for r in history.epochs]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True, help="git revision to compare against")
    p.add_argument("--images", type=int, default=5000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--blas-threads", default=None, metavar="OURS,BASE",
                   help="BLAS thread caps for this tree's and the revision's runs")
    p.add_argument("--without-bit-changes", action="store_true",
                   help="switch sitting 18's bit-changing cuts back in this tree's run")
    args = p.parse_args(argv)
    import contextlib
    from bench.fit_overhead_ab import reverted
    ours_context = ((lambda: reverted(("loss32", "dx_order", "sigmoid_fma")))
                    if args.without_bit_changes else contextlib.nullcontext)
    import minidnn
    import minidnn.data
    splits = minidnn.data.load("mnist")
    x, y = splits.train.flatten()[:args.images], splits.train.y[:args.images]
    val = (splits.val.flatten()[:1000], splits.val.y[:1000])
    differ = []
    caps = ([int(n) for n in args.blas_threads.split(",")] if args.blas_threads
            else [None, None])

    def capped(n):
        if n is None:
            return contextlib.nullcontext()
        from threadpoolctl import threadpool_limits
        return threadpool_limits(n)
    with tempfile.TemporaryDirectory() as folder:
        full = unpack_base(args.base, folder)
        sys.path.insert(0, folder)
        base = importlib.import_module("minidnn_base")
        for density in (0.04, 1.0):
            with ours_context(), capped(caps[0]):
                ours = train(minidnn, density, x, y, val, args.epochs)
            with capped(caps[1]):
                theirs = train(base, density, x, y, val, args.epochs)
            label = f"γ={density:g}" if density < 1 else "dense"
            for what, a, b in (("weights", ours[0], theirs[0]), ("velocity", ours[1], theirs[1])):
                for key in sorted(set(a) | set(b)):
                    if key not in a or key not in b or not np.array_equal(a[key], b[key]):
                        differ.append(f"{label} {what} {key}")
            if ours[2] != theirs[2]:
                differ.append(f"{label} history: {ours[2]} != {theirs[2]}")
            print(f"{label}: {args.epochs} epochs on {len(x)} images, final val_acc "
                  f"{ours[2][-1]['val_acc']:.4f} (this tree) / {theirs[2][-1]['val_acc']:.4f} "
                  f"({full[:7]})")
    if differ:
        print("DIFFERENT: " + "; ".join(differ))
        return 1
    print(f"same bits: every weight, velocity and history entry equals {full[:7]}'s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
