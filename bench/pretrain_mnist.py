"""DBN pretraining on MNIST, then backprop fine-tuning vs the same net from random init.

    # the seed-000 recipe (50 epochs per RBM, lr 0.1, weight decay 0.002,
    # momentum 0.5 -> 0.9 at epoch 21, batch 100), 784-300-300-300-10:
    python bench/pretrain_mnist.py --pretrain-epochs 50 --finetune-epochs 100
    # a short run that fits a 2-core machine:
    python bench/pretrain_mnist.py --pretrain-epochs 5 --finetune-epochs 10
    # Hinton, Osindero & Teh (2006)'s 784-500-500-2000-10 DBN (their test error 1.25%):
    python bench/pretrain_mnist.py --hinton2006 --pretrain-epochs 50 --finetune-epochs 100

Data: MNIST 50,000 train / 10,000 validation / 10,000 test (minidnn.data).
Fine-tuning for both nets: softmax cross-entropy, SGD lr 0.1 (SPEC technique
1: backprop, lr 0.1, minibatch 100), no momentum, same epochs, same
shuffling seed; the random-init net is Dense (Glorot) + Sigmoid of the same
sizes. Reports the reconstruction error of each RBM per epoch, then
validation and test accuracy of both nets and the wall time of each phase;
a JSON summary goes to --out. The pretraining checkpoint is written every
epoch, so an interrupted run continues with --resume.

Note: Hinton et al. (2006) fine-tuned their DBN with the up-down algorithm
(a generative fine-tuning), not backprop; 1.25% is their number for that.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", default="784-300-300-300", help="DBN sizes (%(default)s)")
    parser.add_argument("--hinton2006", action="store_true", help="use 784-500-500-2000")
    parser.add_argument("--pretrain-epochs", type=int, default=50)
    parser.add_argument("--finetune-epochs", type=int, default=100)
    parser.add_argument("--lr", type=float, default=0.1, help="RBM learning rate")
    parser.add_argument("--weight-decay", type=float, default=0.002)
    parser.add_argument("--finetune-lr", type=float, default=0.1)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--limit", type=int, default=None, help="first N training images only")
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="BLAS threads (default: all)")
    parser.add_argument("--skip-random", action="store_true", help="no random-init baseline")
    parser.add_argument("--out", default="runs/pretrain_mnist")
    parser.add_argument("--resume", action="store_true")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    if args.threads:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(args.threads)
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    import numpy as np

    from minidnn import SGD, Dense, Sequential, Sigmoid, evaluate, fit
    from minidnn.data import load
    from minidnn.pretraining import DBN, PretrainConfig, parse_layer_sizes

    sizes = [784, 500, 500, 2000] if args.hinton2006 else parse_layer_sizes(args.layers)
    name = "-".join(map(str, sizes))
    os.makedirs(args.out, exist_ok=True)
    splits = load(args.dataset)
    x_train, y_train = splits.train.flatten(), splits.train.y
    if args.limit:
        x_train, y_train = x_train[:args.limit], y_train[:args.limit]
    val = (splits.val.flatten(), splits.val.y)
    test = (splits.test.flatten(), splits.test.y)
    print(f"MNIST train {x_train.shape}, val {val[0].shape}, test {test[0].shape}; DBN {name}")

    config = PretrainConfig(epochs=args.pretrain_epochs, lr=args.lr,
                            weight_decay=args.weight_decay, momentum=0.5, final_momentum=0.9,
                            momentum_switch_epoch=21, batch_size=args.batch_size, k=1)
    print(f"pretraining: {config}")
    dbn = DBN(sizes, rng=args.seed)
    t0 = time.perf_counter()
    dbn.pretrain(x_train, config, seed=args.seed, resume=args.resume,
                 checkpoint=os.path.join(args.out, f"dbn_{name}.h5"), progress=False, log=print)
    pretrain_seconds = time.perf_counter() - t0
    recon = [[round(r["reconstruction_error"], 6) for r in h] for h in dbn.history]
    for i, errors in enumerate(recon):
        print(f"RBM {i} ({sizes[i]}x{sizes[i + 1]}) reconstruction error per epoch: {errors}")
    print(f"pretraining took {pretrain_seconds:.1f}s")

    def finetune(model, label):
        t = time.perf_counter()
        fit(model, (x_train, y_train), val, epochs=args.finetune_epochs,
            batch_size=args.batch_size, optimizer=SGD(args.finetune_lr), seed=args.seed,
            progress=False, log=lambda line: print(f"[{label}] {line}"))
        seconds = time.perf_counter() - t
        result = {"val_accuracy": evaluate(model, val)["accuracy"],
                  "test_accuracy": evaluate(model, test)["accuracy"], "seconds": seconds}
        print(f"[{label}] test accuracy {100 * result['test_accuracy']:.2f}% "
              f"(error {100 * (1 - result['test_accuracy']):.2f}%), fine-tuning {seconds:.1f}s")
        return result

    results = {"layers": sizes + [10], "pretrain_config": config.to_dict(),
               "finetune_epochs": args.finetune_epochs, "finetune_lr": args.finetune_lr,
               "train_images": len(x_train), "pretrain_seconds": pretrain_seconds,
               "reconstruction_error": recon}
    results["pretrained"] = finetune(dbn.to_mlp(10, seed=args.seed), "pretrained")
    if not args.skip_random:
        layers = []
        for n_in, n_out in zip(sizes, sizes[1:]):
            layers += [Dense(n_in, n_out), Sigmoid()]
        results["random_init"] = finetune(Sequential(layers + [Dense(sizes[-1], 10)],
                                                     seed=args.seed), "random init")
    print("\nsummary (test accuracy):")
    for key in ("pretrained", "random_init"):
        if key in results:
            print(f"  {key:12s} {100 * results[key]['test_accuracy']:.2f}%")
    path = os.path.join(args.out, f"results_{name}_p{args.pretrain_epochs}_f{args.finetune_epochs}.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=1, default=lambda v: v.item() if isinstance(v, np.generic) else str(v))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
