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
    args = p.parse_args(argv)
    import minidnn
    import minidnn.data
    splits = minidnn.data.load("mnist")
    x, y = splits.train.flatten()[:args.images], splits.train.y[:args.images]
    val = (splits.val.flatten()[:1000], splits.val.y[:1000])
    differ = []
    with tempfile.TemporaryDirectory() as folder:
        full = unpack_base(args.base, folder)
        sys.path.insert(0, folder)
        base = importlib.import_module("minidnn_base")
        for density in (0.04, 1.0):
            ours, theirs = (train(md, density, x, y, val, args.epochs) for md in (minidnn, base))
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
