"""The ``minidnn`` command: train, eval, info, data fetch, pretrain."""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from .table import format_table

DATASETS = ("embedded", "mnist", "fashion-mnist", "cifar10", "cifar100", "cifar100-coarse")


def _add_data_args(p):
    p.add_argument("--dataset", default="embedded", choices=DATASETS,
                   help="data set: 'embedded' is the small MNIST subset shipped in data/ "
                        "(no download); mnist and fashion-mnist are the full sets "
                        "(50k train / 10k validation / 10k test); cifar10, cifar100 (fine labels) "
                        "and cifar100-coarse are 45k / 5k / 10k. Default: %(default)s")
    p.add_argument("--data-dir", default=None,
                   help="directory holding the data set's standard files (IDX .gz, CIFAR .tar.gz); "
                        "default: $MINIDNN_DATA, then the cache, then a download")


def _load_data(args):
    from . import data
    return data.load(args.dataset, data_dir=args.data_dir, progress=not args.quiet)


def cmd_train(args) -> int:
    from . import architectures, io, semisync
    from .optimizers import SGD, StepLR
    from .training import evaluate, fit

    splits = _load_data(args)
    input_shape = splits.train.x.shape[1:]
    n_classes = int(splits.train.y.max()) + 1
    if args.init_from:
        from .pretraining import mlp_from_pretrained
        model = mlp_from_pretrained(args.init_from, n_classes)
        model.cast(np.float64 if args.dtype == "float64" else np.float32)
    else:
        model = architectures.build(args.arch, n_classes=n_classes, input_shape=input_shape,
                                    seed=args.seed, dtype=args.dtype)
    schedule = StepLR(args.lr_step, args.lr_gamma) if args.lr_step else None
    optimizer = SGD(args.lr, args.momentum, args.weight_decay, schedule=schedule)
    optimizer = semisync.optimizer_from_args(args, optimizer)  # --semi-sync (technique 4)
    out = args.out
    checkpoint = args.checkpoint or (os.path.splitext(out)[0] + ".ckpt.h5")
    say = (lambda line: None) if args.quiet else print
    say(f"training {args.arch if not args.init_from else args.init_from} on {args.dataset}: "
        f"{len(splits.train)} train / {len(splits.val)} validation / {len(splits.test)} test, "
        f"{model.n_params:,} parameters, {args.epochs} epochs, batch {args.batch_size}")
    t0 = time.perf_counter()
    history = fit(model, splits.train, splits.val, epochs=args.epochs, batch_size=args.batch_size,
                  optimizer=optimizer, seed=args.seed, checkpoint=checkpoint, resume=args.resume,
                  progress=not args.quiet, log=say,
                  info={"dataset": args.dataset, "architecture": args.arch,
                        "init_from": args.init_from})
    seconds = time.perf_counter() - t0
    test = evaluate(model, splits.test)
    io.save(model, out, training={"dataset": args.dataset, "architecture": args.arch,
                                  "epochs": args.epochs, "batch_size": args.batch_size,
                                  "seed": args.seed, "optimizer": optimizer.get_config(),
                                  "history": history.epochs, "test": test})
    print(result_table(history, test, seconds, out))
    return 0


def result_table(history, test: dict, seconds: float, out: str) -> str:
    rows = [("epoch", "train loss", "train acc", "val loss", "val acc", "seconds")]
    for r in history.epochs:
        rows.append((str(r["epoch"]), f"{r['train_loss']:.4f}", f"{100 * r.get('train_acc', 0):.2f}%",
                     f"{r.get('val_loss', float('nan')):.4f}", f"{100 * r.get('val_acc', 0):.2f}%",
                     f"{r['seconds']:.1f}"))
    return format_table(rows, f"test loss {test['loss']:.4f}   test accuracy "
                              f"{100 * test['accuracy']:.2f}%   training time {seconds:.1f}s   "
                              f"model saved to {out}", right_align=True)


def cmd_eval(args) -> int:
    from . import io
    from .training import evaluate
    model = io.load(args.model)
    splits = _load_data(args)
    data = getattr(splits, args.split)
    result = evaluate(model, data, batch_size=args.batch_size)
    print(f"{args.model} on {args.dataset}/{args.split} ({len(data)} samples): "
          f"loss {result['loss']:.4f}  accuracy {100 * result['accuracy']:.2f}%")
    return 0


def cmd_info(args) -> int:
    import json

    from . import io
    with io.open_h5(args.model) as h5:
        pretrained = h5.attrs.get("format") == "minidnn-pretrained"
    if pretrained:
        return _info_pretrained(args.model)
    model = io.load(args.model)
    print(f"{args.model}  ({os.path.getsize(args.model):,} bytes on disk)")
    print(model.summary())
    training = io.read_training_info(args.model)
    if training:
        shown = {k: v for k, v in training.items() if k != "history"}
        print("training: " + json.dumps(shown, sort_keys=True))
        if training.get("history"):
            last = training["history"][-1]
            print("last epoch: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                             for k, v in last.items()))
    return 0


def _info_pretrained(path) -> int:
    """Summary of a `minidnn pretrain` file: its stack, state and the MLP it gives."""
    from .pretraining.dbn import read_pretrained
    stack, meta = read_pretrained(path)
    print(f"{path}  ({os.path.getsize(path):,} bytes on disk)")
    state = "complete" if meta["complete"] else f"unfinished checkpoint (at {meta['progress']})"
    print(f"pretrained {stack!r}: {state}")
    print("as an MLP for `minidnn train --init-from` (output layer not included):")
    print(stack.to_mlp(None).summary())
    return 0


def cmd_data_fetch(args) -> int:
    from . import data
    print(data.fetch(args.name, data_dir=args.data_dir, progress=not args.quiet))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="minidnn",
        description="minidnn: train, compress and run neural networks on CPUs "
                    "(NumPy + Numba, no deep-learning framework).")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("train", parents=[common], help="train a network and save it as HDF5",
                       description="Train a network with minibatch SGD; prints one line per "
                                   "epoch and a result table; writes a checkpoint every epoch.")
    p.add_argument("--arch", default="mlp:784-500-10:relu",
                   help="architecture: lenet, cifar10-quick, or mlp:SIZES[:ACTIVATION] "
                        "(e.g. mlp:784-500-10:sigmoid). Default: %(default)s")
    _add_data_args(p)
    p.add_argument("--epochs", type=int, default=5, help="passes over the training set (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=100, help="minibatch size (default %(default)s)")
    p.add_argument("--lr", type=float, default=0.1, help="learning rate η (default %(default)s)")
    p.add_argument("--momentum", type=float, default=0.9, help="momentum α (default %(default)s)")
    p.add_argument("--weight-decay", type=float, default=0.0, help="L2 weight decay λ on weights (default %(default)s)")
    p.add_argument("--lr-step", type=int, default=0, help="multiply lr by --lr-gamma every this many epochs (0: constant lr)")
    p.add_argument("--lr-gamma", type=float, default=0.1, help="step schedule factor (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed for initialisation, shuffling and dropout (default %(default)s)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="floating-point type (default %(default)s)")
    p.add_argument("--out", default="model.h5", help="output model file (default %(default)s)")
    p.add_argument("--checkpoint", default=None, help="checkpoint file written every epoch (default: OUT with .ckpt.h5)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint if it exists")
    p.add_argument("--init-from", default=None, metavar="FILE.h5",
                   help="start from pretrained weights (an RBM/DBN/autoencoder file from `minidnn pretrain`)")
    __import__("minidnn.semisync").semisync.add_train_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", parents=[common], help="evaluate a saved model", description="Loss and accuracy of a saved model on a data split.")
    p.add_argument("model", help="model file (.h5) written by `minidnn train` or save()")
    _add_data_args(p)
    p.add_argument("--split", choices=("train", "val", "test"), default="test", help="which split (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=1000, help="evaluation batch size (default %(default)s)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("info", parents=[common], help="summarise a model file", description="Layers, output shapes, parameter counts, bytes and training info of a model file.")
    p.add_argument("model", help="model file (.h5)")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("data", parents=[common], help="data set utilities", description="Data set utilities.")
    data_sub = p.add_subparsers(dest="data_command", metavar="ACTION")
    f = data_sub.add_parser("fetch", parents=[common], help="download/convert a data set into the cache, verifying checksums",
                            description="Make a data set available in the local cache, verifying checksums.")
    f.add_argument("name", choices=DATASETS[1:], help="data set to fetch")
    f.add_argument("--data-dir", default=None, help="read the standard files from this directory instead of downloading")
    f.set_defaults(func=cmd_data_fetch)

    try:
        from .pretraining.cli import add_pretrain_parser
    except ImportError:  # pretraining not available in this build
        add_pretrain_parser = None
    if add_pretrain_parser is not None:
        add_pretrain_parser(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("\ninterrupted; rerun with --resume to continue from the last checkpoint",
              file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, OSError, RuntimeError) as err:
        print(f"minidnn: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
