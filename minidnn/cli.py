"""The ``minidnn`` command: train, eval, info, data fetch, pretrain."""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from .table import format_table

DATASETS = ("embedded", "mnist", "fashion-mnist", "cifar10", "cifar100", "cifar100-coarse")


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1, with a message that says so."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _add_data_args(p):
    p.add_argument("--dataset", default="embedded", choices=DATASETS,
                   help="data set: 'embedded' is the small MNIST subset shipped in data/ "
                        "(no download); mnist and fashion-mnist are the full sets "
                        "(50k train / 10k validation / 10k test); cifar10, cifar100 (fine labels) "
                        "and cifar100-coarse are 45k / 5k / 10k. Default: %(default)s")
    p.add_argument("--data-dir", default=None,
                   help="directory holding the data set's standard files (IDX .gz, CIFAR .tar.gz); "
                        "default: $MINIDNN_DATA, then the cache, then a download")


def _load_data(args, log=None):
    from . import data
    return data.load(args.dataset, data_dir=args.data_dir, progress=not args.quiet, log=log)


def cmd_train(args) -> int:
    from . import architectures, data, io, semisync, sparse
    from .optimizers import SGD, StepLR
    from .training import TrainingDiverged, evaluate, fit, resolve_drop_last
    from .quantization import discrete

    say = (lambda line: None) if args.quiet else print
    data_source = []

    def say_source(line):        # shown, and kept in the model file's training info
        data_source.append(line)
        say(line)
    from .data.transforms import configure_inputs
    splits, transform, input_info = configure_inputs(args, _load_data(args, log=say_source))
    input_shape = splits.train.x.shape[1:]
    n_classes = data.class_count(args.dataset, splits)   # not the largest label seen
    if args.init_from:
        from .pretraining import mlp_from_pretrained
        model = mlp_from_pretrained(args.init_from, n_classes)
        model.cast(np.float64 if args.dtype == "float64" else np.float32)
    else:
        model = architectures.build(args.arch, n_classes=n_classes, input_shape=input_shape,
                                    seed=args.seed, dtype=args.dtype)
        model = sparse.configure_from_args(args, model)   # --density (technique 3)
    model = discrete.model_from_args(args, model, log=(lambda line: None) if args.quiet else print)
    schedule = StepLR(args.lr_step, args.lr_gamma) if args.lr_step else None
    optimizer = SGD(args.lr, args.momentum, args.weight_decay, schedule=schedule,
                    momentum_form=args.momentum_form)
    optimizer = semisync.optimizer_from_args(args, optimizer)  # --semi-sync (technique 4)
    out = args.out
    checkpoint = args.checkpoint or (os.path.splitext(out)[0] + ".ckpt.h5")
    say(f"training {args.arch if not args.init_from else args.init_from} on {args.dataset}: "
        f"{len(splits.train)} train / {len(splits.val)} validation / {len(splits.test)} test, "
        f"{model.n_params:,} parameters, {args.epochs} epochs, batch {args.batch_size}")
    t0 = time.perf_counter()
    try:
        history = fit(model, splits.train, splits.val, epochs=args.epochs,
                      batch_size=args.batch_size, optimizer=optimizer, seed=args.seed,
                      checkpoint=checkpoint, resume=args.resume, progress=not args.quiet,
                      log=say, transform=transform, drop_last=args.drop_last, keep_best=args.keep_best,
                      divergence_factor=args.divergence_factor or None,
                      resume_with_changes=args.resume_with_changes,
                      info={"dataset": args.dataset, "architecture": args.arch,
                            "init_from": args.init_from, **input_info})
    except TrainingDiverged as err:
        untouched = (f"the existing --out {out} was not replaced" if os.path.exists(out)
                     else f"--out {out} was not written")
        raise TrainingDiverged(f"{err} And {untouched}.", err.epoch,
                               err.batch, err.reason, f"{err.kept}; {untouched}") from None
    seconds = time.perf_counter() - t0
    model = discrete.model_to_save(args, model)
    test = evaluate(model, splits.test)
    # with --init-from the layers come from the file, not from --arch (whose default
    # would otherwise be recorded as if it had been trained)
    io.save(model, out, training={"dataset": args.dataset,
                                  "architecture": None if args.init_from else args.arch,
                                  "init_from": args.init_from, **discrete.training_info(args),
                                  "epochs": args.epochs, "batch_size": args.batch_size,
                                  "seed": args.seed, "optimizer": optimizer.get_config(),
                                  "drop_last": resolve_drop_last(model, args.drop_last),
                                  "best_epoch": history.best_epoch,
                                  "data_source": data_source[0] if data_source else None,
                                  "history": history.epochs, "test": test, **input_info})
    if args.quiet:
        print(result_table(history, test, seconds, out))
    else:  # the epochs were printed as they ran: only the outcome is new
        print(result_footer(history, test, seconds, out))
    return 0


def result_footer(history, test: dict, seconds: float, out: str) -> str:
    kept = (f"   weights of epoch {history.best_epoch} (best val acc)"
            if history.best_epoch is not None else "")
    return (f"test loss {test['loss']:.4f}   test accuracy {100 * test['accuracy']:.2f}%   "
            f"training time {seconds:.1f}s   model saved to {out}{kept}")


def result_table(history, test: dict, seconds: float, out: str) -> str:
    rows = [("epoch", "train loss", "train acc", "val loss", "val acc", "seconds")]
    for r in history.epochs:
        rows.append((str(r["epoch"]), f"{r['train_loss']:.4f}", f"{100 * r.get('train_acc', 0):.2f}%",
                     f"{r.get('val_loss', float('nan')):.4f}", f"{100 * r.get('val_acc', 0):.2f}%",
                     f"{r['seconds']:.1f}"))
    return format_table(rows, result_footer(history, test, seconds, out), right_align=True)


def cmd_eval(args) -> int:
    from . import io
    from .training import evaluate
    from .data.transforms import transform_from_config
    model = io.load(args.model)
    splits = _load_data(args)
    data = getattr(splits, args.split)
    normalize = transform_from_config((io.read_training_info(args.model) or {}).get("input_transform"))
    if normalize is not None:      # the model was trained on normalised inputs
        data = type(data)(normalize(data.x), data.y)
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
    from .checks import describe_nonfinite, nonfinite_arrays
    model = io.load(args.model)
    print(f"{args.model}  ({os.path.getsize(args.model):,} bytes on disk)")
    print(model.summary())
    from .quantization import discrete
    for line in discrete.info_lines(model):   # technique 1: packed weight bytes
        print(line)
    bad = nonfinite_arrays(model)
    if bad:
        print(f"WARNING: non-finite weights: {describe_nonfinite(bad, limit=len(bad))}; "
              f"this model's outputs are NaN or Inf")
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
    common.add_argument("--threads", type=int, default=None,
                        help="threads for BLAS and the Numba kernels (default: the cores this "
                             "process may use); see minidnn.configure_threads")
    from .threads import add_thread_options
    add_thread_options(common)                 # --numba-layer, --omp-wait-policy (#11)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("train", parents=[common], help="train a network and save it as HDF5",
                       description="Train a network with minibatch SGD; prints one line per "
                                   "epoch and a result table; writes a checkpoint every epoch.")
    p.add_argument("--arch", default="mlp:784-500-10:relu",
                   help="architecture: lenet, cifar10-quick, vgg-cifar[:OPTIONS] "
                        "(e.g. vgg-cifar:width=8,fc=512,bn=conv) or mlp:SIZES[:ACTIVATION] "
                        "(e.g. mlp:784-500-10:sigmoid). Default: %(default)s")
    _add_data_args(p)
    p.add_argument("--epochs", type=_positive_int, default=5, help="passes over the training set (default %(default)s)")
    p.add_argument("--batch-size", type=_positive_int, default=100, help="minibatch size (default %(default)s)")
    p.add_argument("--drop-last", action=argparse.BooleanOptionalAction, default=None,
                   help="skip each epoch's short last batch (default: on when the model has "
                        "batch norm, whose statistics a tiny batch ruins; off otherwise)")
    p.add_argument("--lr", type=float, default=0.1, help="learning rate η (default %(default)s)")
    p.add_argument("--momentum", type=float, default=0.9,
                   help="momentum α (default %(default)s), in Caffe's form by default: "
                        "ΔW ← αΔW − η(g + λW), W ← W + ΔW (see --momentum-form)")
    p.add_argument("--momentum-form", choices=("caffe", "pytorch"), default="caffe",
                   help="caffe (default, the papers' form) or pytorch (v ← αv + g + λW, "
                        "W ← W − ηv, torch.optim.SGD); they differ only after the learning "
                        "rate changes (--lr-step)")
    p.add_argument("--weight-decay", type=float, default=0.0, help="L2 weight decay λ on weights (default %(default)s)")
    p.add_argument("--lr-step", type=int, default=0, help="multiply lr by --lr-gamma every this many epochs (0: constant lr)")
    p.add_argument("--lr-gamma", type=float, default=0.1, help="step schedule factor (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed for initialisation, shuffling and dropout (default %(default)s)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="floating-point type (default %(default)s)")
    p.add_argument("--out", default="model.h5", help="output model file (default %(default)s)")
    p.add_argument("--checkpoint", default=None, help="checkpoint file written every epoch (default: OUT with .ckpt.h5)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the checkpoint if it exists (refused when --lr, "
                        "--batch-size, --seed or another optimizer setting differs from it)")
    p.add_argument("--resume-with-changes", action="store_true",
                   help="with --resume: accept settings that differ from the checkpoint's, "
                        "and record the change in the history")
    p.add_argument("--keep-best", action="store_true",
                   help="save the weights of the epoch with the best validation accuracy "
                        "(not those of the last epoch) to --out")
    p.add_argument("--divergence-factor", type=float, default=10.0,
                   help="stop (TrainingDiverged) when an epoch's training loss exceeds this "
                        "multiple of the lowest so far; NaN/Inf losses or weights always stop "
                        "it; 0 turns the multiple off (default %(default)s)")
    from .data.transforms import add_input_options
    add_input_options(p)
    p.add_argument("--init-from", default=None, metavar="FILE.h5",
                   help="start from pretrained weights (an RBM/DBN/autoencoder file from `minidnn pretrain`)")
    from .quantization.discrete import add_train_options as add_discrete_weight_options
    add_discrete_weight_options(p)
    from .sparse import add_train_options as add_sparse_options
    add_sparse_options(p)                                   # --density (technique 3)
    from .semisync import add_train_options as add_semi_sync_options
    add_semi_sync_options(p)                                # --semi-sync (technique 4)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", parents=[common], help="evaluate a saved model", description="Loss and accuracy of a saved model on a data split.")
    p.add_argument("model", help="model file (.h5) written by `minidnn train` or save()")
    _add_data_args(p)
    p.add_argument("--split", choices=("train", "val", "test"), default="test", help="which split (default %(default)s)")
    p.add_argument("--batch-size", type=_positive_int, default=1000, help="evaluation batch size (default %(default)s)")
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
    from .quantization.cli import add_quantize_parser
    add_quantize_parser(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        from .threads import cli_thread_options, configure_threads
        configure_threads(getattr(args, "threads", None), **cli_thread_options(args))
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
