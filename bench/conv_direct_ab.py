"""A/B inside ONE process: training steps (or evaluation forwards) with a
convolution fast path of sitting 16 on and off, interleaved.

    python bench/conv_direct_ab.py [--arch lenet|cifar10-quick] [--repeats 40] [--eval]
                                   [--toggle direct|layout] [--threads 1]
                                   [--out bench/results/conv_direct_ab_ARCH.json]

``--toggle direct``: the direct first-layer convolution
(``Conv2D._direct_train_applies``, or ``_direct_eval_applies`` with --eval);
``--toggle layout``: the parallel layout kernels of ``minidnn.kernels.layout``
against their NumPy twins (at every size, ignoring PARALLEL_MIN).
Each repeat runs one whole minibatch step (forward with training=True, loss,
backward as ``fit`` does, no update) with the path on, then one with it
off (order alternating), on random data of the real shape; the clock is the
process's CPU time at one thread (``time.process_time``: a process waiting
for a core accrues none) and wall time at more, and the medians are reported. Both sides share
the process, its allocator and its load, so the ratio is a fair guide on a
loaded machine; absolute times are not.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SETUPS = {"lenet": ((1, 28, 28), 64), "cifar10-quick": ((3, 32, 32), 100)}


def _without_threshold(layout, function):
    """``function`` with layout.PARALLEL_MIN at 0 while it runs (always the kernel)."""
    def forced(*args, **kwargs):
        saved, layout.PARALLEL_MIN = layout.PARALLEL_MIN, 0
        try:
            return function(*args, **kwargs)
        finally:
            layout.PARALLEL_MIN = saved
    return forced


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="lenet", choices=sorted(SETUPS))
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--eval", action="store_true",
                        help="time evaluation forwards at batch 100 (direct eval path on/off)")
    parser.add_argument("--toggle", default="direct", choices=("direct", "layout"))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    import numpy as np

    import minidnn
    from minidnn import architectures
    from minidnn.layers import Conv2D
    from minidnn.losses import SoftmaxCrossEntropy
    minidnn.configure_threads(args.threads)
    shape, batch = SETUPS[args.arch]
    if args.eval:
        batch = 100
    model = architectures.build(args.arch, input_shape=shape, seed=0)
    rng = np.random.default_rng(0)
    x = rng.random((batch,) + shape, dtype=np.float32)
    y = rng.integers(0, 10, batch)
    loss = SoftmaxCrossEntropy()
    which = "_direct_eval_applies" if args.eval else "_direct_train_applies"
    direct_rule = getattr(Conv2D, which)
    import minidnn.kernels.layout as layout
    import minidnn.layers.conv as conv
    kernels = (layout.rows_to_nchw, layout.nchw_to_rows, layout.pad_channels_last)
    twins = (layout.rows_to_nchw_numpy, layout.nchw_to_rows_numpy,
             layout.pad_channels_last_numpy)
    forced = tuple(_without_threshold(layout, f) for f in kernels)

    def switch(on: bool):
        if args.toggle == "direct":
            setattr(Conv2D, which, direct_rule if on else (lambda self: False))
        else:
            conv.rows_to_nchw, conv.nchw_to_rows, layout.pad_channels_last = \
                forced if on else twins

    def step():
        if args.eval:
            model.forward(x, training=False)
            return
        out = model.forward(x, training=True)
        _, grad = loss(out, y)
        for i in range(len(model.layers) - 1, -1, -1):
            if i == 0:
                model.layers[0].backward_params(grad)
            else:
                grad = model.layers[i].backward(grad)

    clock = time.process_time if args.threads == 1 else time.perf_counter

    def timed(on: bool) -> float:
        switch(on)
        t0 = clock()
        step()
        return clock() - t0

    for on in (True, False, True, False):          # warm-up: JIT, buffers
        timed(on)
    times = {True: [], False: []}
    for r in range(args.repeats):
        for on in ((True, False) if r % 2 == 0 else (False, True)):
            times[on].append(timed(on))
    setattr(Conv2D, which, direct_rule)
    conv.rows_to_nchw, conv.nchw_to_rows, layout.pad_channels_last = kernels
    on_ms, off_ms = (1e3 * float(np.median(times[k])) for k in (True, False))
    result = {"arch": args.arch, "batch": batch, "threads": args.threads, "mode":
              "eval" if args.eval else "train", "toggle": args.toggle, "repeats": args.repeats,
              "on_is": args.toggle, "clock": ("process_time" if args.threads == 1 else "perf_counter")
              + ", one process, interleaved", "on_ms": on_ms,
              "off_ms": off_ms, "ratio": on_ms / off_ms}
    print(f"{args.arch} {result['mode']} batch {batch}, {args.threads} thread(s), "
          f"{args.toggle}: on "
          f"{on_ms:.2f} ms, off {off_ms:.2f} ms, ratio {on_ms / off_ms:.3f} (medians of "
          f"{args.repeats})")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
