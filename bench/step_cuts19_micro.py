"""Micro A/Bs of sitting 19's cuts to the 784-500-10 training step, each in one process,
interleaved, medians (issue #11). A guide for single-thread work, not a speed figure.

    python bench/step_cuts19_micro.py                # 1 thread, thread clock, ~1 min

* SGD's step of the sparse (γ = 0.04) and of the dense net's four parameters: one
  ``sgd_update_many`` call through the plan (``SGD.FUSED_PLAN``) / one call each
* the minibatch gather of 100 MNIST rows into the sparse layer's padded buffer: the
  register-tile kernel (``gather.TILES``) / the scalar one, from memory (rows not seen
  before) and from cache (the same rows again)
* the sparse forward from that buffer (nothing filled: ``Layer.input_buffer``) / from a
  new feature-major array (copied into the buffer inside the call)
* the float32 loss on (100, 10): the pass along the batch / along each row
* Dense's bias gradient on (100, 10): ``column_sums`` / ``grad.sum(axis=0)``
* Numba's thread count: ``threads.numba_thread_count`` / ``numba.get_num_threads``

Results: ``bench/results/step_cuts19_micro.json``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import RESULTS_DIR, save_result  # noqa: E402
from bench._common import paired_medians as paired  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=2000)
    p.add_argument("--out", default=str(RESULTS_DIR / "step_cuts19_micro.json"))
    args = p.parse_args(argv)
    import numba
    from threadpoolctl import threadpool_limits
    import minidnn as md
    import minidnn.data
    from minidnn.kernels import column_sums, gather, softmax_xent
    from minidnn.losses import SoftmaxCrossEntropy
    from minidnn.threads import numba_thread_count
    numba.set_num_threads(1)
    now = time.thread_time_ns
    rows = {}
    with threadpool_limits(1):
        splits = minidnn.data.load("mnist")
        x = splits.train.flatten()
        order = np.random.default_rng(1).permutation(len(x))
        rng = np.random.default_rng(0)
        labels = rng.integers(0, 10, 100)
        for density in (0.04, 1.0):
            first = (md.SparseDense(784, 500, density=density, pattern="per_unit", rng=rng)
                     if density < 1 else md.Dense(784, 500, rng=rng))
            model = md.Sequential([md.Flatten(), first, md.Sigmoid(), md.Dense(500, 10, rng=rng)],
                                  seed=None, input_shape=(784,))
            out = model.forward(x[:100], training=True)
            _, g = SoftmaxCrossEntropy()(out, labels)
            model.backward(g, input_grad=False)
            opt = md.SGD(1e-6, momentum=0.9)
            opt.step(model)

            def step(flag, opt=opt, model=model):
                md.SGD.FUSED_PLAN = flag
                opt.step(model)
            rows[f"SGD step, {'sparse' if density < 1 else 'dense'} net"] = paired(
                lambda: step(True), lambda: step(False), args.calls, now)
            md.SGD.FUSED_PLAN = True
        layer = md.SparseDense(784, 500, density=0.04, pattern="per_unit", rng=rng)
        buffer = layer.input_buffer(100)
        if buffer is not None:
            batches = iter(range(0, len(x) - 100, 100))

            def gather_with(tiles, again=False):
                gather.TILES = tiles
                b = next(batches) if not again else 0
                gather.gather_feature_major(x, order[b:b + 100], check=False, out=buffer)
            calls = min(args.calls, len(x) // 200 - 1)
            rows["gather into the buffer, from memory"] = paired(
                lambda: gather_with(True), lambda: gather_with(False), calls, now)
            rows["gather into the buffer, from cache"] = paired(
                lambda: gather_with(True, True), lambda: gather_with(False, True), args.calls,
                now)
            gather.TILES = gather.SIMD_AVAILABLE
            plain = gather.gather_feature_major(x, order[:100], check=False)

            def from_buffer():
                gather.gather_feature_major(x, order[:100], check=False,
                                            out=layer.input_buffer(100))
                layer.forward(layer.input_buffer(100), training=True)

            def from_copy():
                gather.gather_feature_major(x, order[:100], check=False,
                                            out=layer.input_buffer(100))
                layer.forward(plain, training=True)
            rows["gather + sparse forward, from the buffer / from a copy"] = paired(
                from_buffer, from_copy, args.calls, now)
        logits = rng.standard_normal((100, 10)).astype(np.float32)

        def loss(columns):
            softmax_xent.COLUMNS_PASS = columns
            softmax_xent.softmax_cross_entropy(logits, labels)
        rows["float32 loss (100, 10)"] = paired(lambda: loss(True), lambda: loss(False),
                                                args.calls, now)
        softmax_xent.COLUMNS_PASS = True
        rows["bias gradient (100, 10)"] = paired(lambda: column_sums.column_sums(logits),
                                                 lambda: logits.sum(axis=0), args.calls, now)
        rows["Numba thread count"] = paired(numba_thread_count, numba.get_num_threads,
                                            args.calls, now)
    print("µs, median of interleaved calls (1 thread, thread clock): new / replaced")
    for name, (new, old) in rows.items():
        print(f"    {name:58s} {new:8.1f} / {old:8.1f}")
    result = {"calls": args.calls, "load_average": os.getloadavg(),
              "us_new_and_replaced": rows}
    save_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
