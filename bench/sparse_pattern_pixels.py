"""Where a fixed random pattern's connections land on MNIST: how many of each hidden unit's
inputs are pixels that are almost never on (issue #11's explanation of the γ = 0.04 gap).

    python bench/sparse_pattern_pixels.py --density 0.04 --pattern per_unit --seed 0

The pattern is drawn exactly as ``SparseDense(784, 500, density, pattern, rng=seed)`` draws
it (the autoencoder and the control of ``sparse_mnist_table.py`` use the same call); the
pixel statistics are over the 50,000 training images. Nothing here chooses a pattern."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--density", type=float, default=0.04)
    p.add_argument("--pattern", default="per_unit", choices=("bernoulli", "per_unit"))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    import minidnn as md
    import minidnn.data
    x = minidnn.data.load("mnist").train.flatten()
    on = (x > 0).mean(axis=0)                      # fraction of images in which a pixel is > 0
    layer = md.SparseDense(784, 500, density=args.density, pattern=args.pattern,
                           rng=np.random.default_rng(args.seed))
    indptr, indices = layer.buffers["indptr"], layer.buffers["indices"]
    fan_in = np.diff(indptr)
    print(f"γ = {args.density:g}, pattern {args.pattern}, seed {args.seed}: {indices.size} "
          f"connections, fan-in {fan_in.mean():.1f} (min {fan_in.min()}, max {fan_in.max()})")
    print(f"pixels never on in training: {(on == 0).sum()}; on in < 1 % of images: "
          f"{(on < 0.01).sum()}; in < 5 %: {(on < 0.05).sum()} (of 784)")
    for limit in (0.0, 0.01, 0.05):
        share = (on[indices] <= limit).mean() if limit == 0 else (on[indices] < limit).mean()
        print(f"connections on pixels on in {'no image' if limit == 0 else f'< {limit:.0%} of images'}: "
              f"{100 * share:.1f} %")
    useful = np.add.reduceat((on[indices] >= 0.05).astype(int), indptr[:-1]) if indices.size else 0
    print(f"per hidden unit, inputs on pixels on in ≥ 5 % of images: mean {np.mean(useful):.1f}, "
          f"min {np.min(useful)}, max {np.max(useful)} (the dense layer's: "
          f"{(on >= 0.05).sum()})")


if __name__ == "__main__":
    main()
