"""Do two trees give the same bits for whole conv nets? Hashes compared, per model.

    python bench/conv_models_same_bits.py --against 5c0a50c [--threads 1 2]   # ~2 min

Sitting 22 (s22-clean) deleted the losing or superseded branches of the conv, pooling
and inference switches on the promise that the default paths keep every bit. This
checks that promise on whole models: LeNet (1×28×28), Cifar10_quick (3×32×32), a
narrow VGG-cifar (3×3 convs, BatchNorm) and a strided/padded conv net whose shapes take
the fallbacks (stride 2, a 1×1 conv, a 3×3 pool of stride 3). For each model, in a clean
process per tree and thread count: ``forward(training=False)`` and ``infer`` on batches
of 3 and 300 (so ``Conv2D.EVAL_CHUNK`` splits), the training forward's logits, then two
SGD steps of ``fit`` (momentum, weight decay), every parameter and velocity after them,
and the logits after training. Printed: SAME or DIFFERENT per array, then the verdict;
exit status 1 if anything differs.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import same_bits_against  # noqa: E402

WORKER = r"""
import hashlib, json, sys
import numpy as np
import minidnn
minidnn.configure_threads(int(sys.argv[1]))
from minidnn import architectures
from minidnn.layers import AvgPool2D, Conv2D, Dense, Flatten, MaxPool2D, ReLU


def odd_net():
    return minidnn.Sequential([
        Conv2D(3, 12, 3, stride=2, padding=1), ReLU(), Conv2D(12, 24, 1),
        MaxPool2D(3, 3), Conv2D(24, 8, 3, padding=1), AvgPool2D(2), ReLU(),
        Flatten(), Dense(8, 10)], seed=0, input_shape=(3, 19, 19))


models = {"lenet": lambda: architectures.lenet(seed=0),
          "cifar10_quick": lambda: architectures.cifar10_quick(seed=0),
          "vgg_cifar_w4_bn": lambda: architectures.vgg_cifar(width=4, fc=32, bn_conv=True,
                                                              seed=0),
          "odd": odd_net}
out = {}
for name, make in models.items():
    model = make()
    rng = np.random.default_rng(5)
    shape = model.input_shape
    x = rng.standard_normal((300,) + tuple(shape)).astype(np.float32)
    y = rng.integers(0, 10, 300)
    h = lambda a: hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]
    out[f"{name} forward N3"] = h(model.forward(x[:3]))
    out[f"{name} forward N300"] = h(model.forward(x))
    out[f"{name} infer N3"] = h(model.infer(x[:3]))
    out[f"{name} infer N300"] = h(model.infer(x))
    out[f"{name} training forward N50"] = h(model.forward(x[:50], training=True))
    opt = minidnn.SGD(0.01, momentum=0.9, weight_decay=1e-4)
    minidnn.fit(model, (x[:100], y[:100]), epochs=1, batch_size=50, optimizer=opt, seed=3,
                progress=False, log=None)
    for key, value in model.named_params():
        out[f"{name} param {key}"] = h(value)
    for key in sorted(opt.velocity, key=str):
        out[f"{name} velocity {key}"] = h(opt.velocity[key])
    out[f"{name} infer after N300"] = h(model.infer(x))
print(json.dumps(out))
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", required=True, help="the commit to compare with")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)
    differ = same_bits_against(WORKER, args.against, args.threads, key_width=48)
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
