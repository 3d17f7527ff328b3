"""Interleaved A/B of Conv2D's two row orders on the conv layers of LeNet and Cifar10_quick.

    python bench/conv_row_order_ab.py [--repeats 12]

For each layer shape, one training step (forward with training=True, then
backward, or backward_params for a first layer) of the same Conv2D built with
``row_order`` forced to "channels_last" (im2row, runs of kw·C) and to
"channels_first" (im2col, runs of OW), alternating, timed with the process CPU
clock on one thread (comparable on a loaded machine), median of the repeats.
This is the measurement behind ``Conv2D.CHANNELS_LAST_MIN = 16``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LAYERS = [("lenet conv1", (64, 1, 28, 28), (1, 20, 5, 0), True),
          ("lenet conv2", (64, 20, 12, 12), (20, 50, 5, 0), False),
          ("cifar10_quick conv1", (100, 3, 32, 32), (3, 32, 5, 2), True),
          ("cifar10_quick conv2", (100, 32, 16, 16), (32, 32, 5, 2), False),
          ("cifar10_quick conv3", (100, 32, 8, 8), (32, 64, 5, 2), False)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=12)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    import numpy as np

    import minidnn
    from minidnn.layers import Conv2D
    minidnn.configure_threads(1)
    rng = np.random.default_rng(0)
    rows = []
    for name, shape, (c, o, k, p), first in LAYERS:
        x = rng.random(shape, dtype=np.float32)
        layers = {}
        for order, threshold in (("channels_last", 0), ("channels_first", 10 ** 9)):
            layers[order] = Conv2D(c, o, k, padding=p, rng=0)
            layers[order].CHANNELS_LAST_MIN = threshold
        grad = rng.random((shape[0],) + layers["channels_last"].output_shape(shape[1:]),
                          dtype=np.float32)
        times = {order: [] for order in layers}
        for _ in range(args.repeats + 2):
            for order, layer in layers.items():
                t0 = time.process_time()
                layer.forward(x, training=True)
                layer.backward_params(grad) if first else layer.backward(grad)
                times[order].append(time.process_time() - t0)
        row = {"layer": name, "default": Conv2D(c, o, k, padding=p).row_order,
               **{f"{order}_ms": 1e3 * float(np.median(t[2:])) for order, t in times.items()}}
        rows.append(row)
        print(f"{name:<22} channels_last {row['channels_last_ms']:7.1f} ms   channels_first "
              f"{row['channels_first_ms']:7.1f} ms   (default: {row['default']})", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
