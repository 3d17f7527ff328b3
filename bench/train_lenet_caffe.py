"""Train the float LeNet with Caffe's MNIST recipe (issue #10, the model technique 2 quantizes).

Caffe's examples/mnist/lenet_solver.prototxt: base_lr 0.01, momentum 0.9,
weight_decay 5e-4, lr_policy "inv" (gamma 1e-4, power 0.75, per iteration),
batch 64, max_iter 10,000. Caffe's "xavier" filler (its default FAN_IN
variant: U(-sqrt(3/fan_in), +sqrt(3/fan_in))) for every weight, zero biases.

Differences from Caffe, kept on purpose: inputs are pixels/255 (Caffe scales
by 1/256); biases get lr_mult 1 (Caffe's LeNet uses 2 for biases); training
set is our 50,000 (10,000 held out for validation; Caffe trains on all 60,000).
Minibatches: a seeded permutation per pass over the 50,000, iterations run
across pass boundaries like Caffe's data layer.

    python bench/train_lenet_caffe.py [--iterations 10000] [--out /work/artifacts/lenet_caffe.h5]

Resumable: a checkpoint every --checkpoint-every iterations (bench/results/checkpoints/).
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from _common import RESULTS_DIR, load_splits, write_json  # noqa: F401  (sys.path set there)

from minidnn import io
from minidnn.architectures import lenet
from minidnn.losses import SoftmaxCrossEntropy
from minidnn.optimizers import SGD, InvLR
from minidnn.training import History, evaluate, read_checkpoint, write_checkpoint


def caffe_xavier(model, rng: np.random.Generator) -> None:
    """Caffe's xavier filler (FAN_IN): W ~ U(-a, a), a = sqrt(3 / fan_in)."""
    for layer in model.layers:
        if "W" not in layer.params:
            continue
        W = layer.params["W"]
        fan_in = W.size // W.shape[0] if W.ndim == 4 else W.shape[0]
        a = np.sqrt(3.0 / fan_in)
        layer.params["W"] = rng.uniform(-a, a, size=W.shape).astype(W.dtype)
        layer.params["b"][:] = 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=10_000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="/work/artifacts/lenet_caffe.h5")
    ap.add_argument("--result", default=str(RESULTS_DIR / "lenet_caffe_float.json"))
    ap.add_argument("--checkpoint-every", type=int, default=1000)
    args = ap.parse_args(argv)

    splits = load_splits("mnist")
    x, y = splits.train.x, splits.train.y
    model = lenet(seed=args.seed)
    caffe_xavier(model, np.random.default_rng(args.seed))
    optimizer = SGD(0.01, momentum=0.9, weight_decay=5e-4, schedule=InvLR(1e-4, 0.75))
    loss = SoftmaxCrossEntropy()
    shuffle_rng = np.random.default_rng(args.seed)
    ckpt = RESULTS_DIR / "checkpoints" / f"lenet_caffe_seed{args.seed}.ckpt.h5"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    start, history = 0, History()
    # the data order is a function of the iteration (pass p uses permutation p), so resuming
    # only needs the iteration count: replay the permutations drawn before it
    if ckpt.exists():
        start, history = read_checkpoint(ckpt, model, optimizer, shuffle_rng)
        print(f"resumed at iteration {start}")
    n, bs = len(x), args.batch_size
    order_rng = np.random.default_rng(args.seed + 1)
    orders, t0, running = [], time.perf_counter(), 0.0
    for it in range(start, args.iterations):
        first = it * bs
        while len(orders) * n < first + bs:
            orders.append(order_rng.permutation(n))
        idx = np.concatenate(orders)[first:first + bs] if first // n != (first + bs - 1) // n \
            else orders[first // n][first % n:first % n + bs]
        optimizer.begin_step(model)
        out = model.forward(x[idx], training=True)
        batch_loss, grad = loss(out, y[idx])
        model.backward(grad, input_grad=False)
        optimizer.step(model)
        running += batch_loss
        if (it + 1) % 100 == 0:
            print(f"iter {it + 1}: loss {running / 100:.4f}  lr {optimizer.hyper(model.layers[0])['lr']:.5f}"
                  f"  {time.perf_counter() - t0:.0f}s", flush=True)
            running = 0.0
        if (it + 1) % args.checkpoint_every == 0 and it + 1 < args.iterations:
            write_checkpoint(ckpt, model, optimizer, shuffle_rng, it + 1, history, {})
    seconds = time.perf_counter() - t0
    val = evaluate(model, (splits.val.x, splits.val.y))
    test = evaluate(model, (splits.test.x, splits.test.y))
    info = {"recipe": "caffe lenet_solver: lr 0.01, momentum 0.9, wd 5e-4, inv(1e-4, 0.75), "
                      "batch 64, xavier(fan_in) init", "iterations": args.iterations,
            "batch_size": bs, "seed": args.seed, "optimizer": optimizer.get_config(),
            "val_accuracy": val["accuracy"], "test_accuracy": test["accuracy"],
            "seconds_this_session": seconds}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    io.save(model, args.out, training=info)
    write_json(Path(args.result), {**info, "model_file": args.out})
    print(f"val {val['accuracy']:.4f}  test {test['accuracy']:.4f}  -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
