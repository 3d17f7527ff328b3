"""``minidnn pretrain rbm|autoencoder ...``: greedy layer-wise pretraining from the shell.

    minidnn pretrain rbm --layers 784-300-300-300 --dataset mnist --epochs 50 \\
        --lr 0.1 --weight-decay 0.002 --momentum 0.5 --final-momentum 0.9 \\
        --momentum-switch-epoch 21 --batch-size 100 --k 1 --seed 0 -o dbn.h5
    minidnn pretrain rbm ... -o dbn.h5 --resume        # continue an interrupted run
    minidnn train --init-from dbn.h5 ...               # calls mlp_from_pretrained

The output file is rewritten atomically after every epoch (a checkpoint
until the last layer finishes), so ``--resume`` continues from the last
completed epoch with the same result as an uninterrupted run.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from .autoencoder import StackedAutoencoder
from ..sparse import add_pretrain_options, autoencoder_options
from .dbn import DBN, PretrainConfig, mlp_from_pretrained, parse_layer_sizes

__all__ = ["add_pretrain_parser", "mlp_from_pretrained", "load_training_images"]


def load_training_images(dataset: str, data_dir=None, limit: int | None = None) -> np.ndarray:
    """The training split of ``dataset`` as float32 (N, 784) in [0, 1] (no labels needed)."""
    from ..data import load
    train = load(dataset, data_dir=data_dir).train
    x = train.flatten()
    return x[:limit] if limit else x


def _config_from_args(args) -> PretrainConfig:
    return PretrainConfig(epochs=args.epochs, lr=args.lr, weight_decay=args.weight_decay,
                          momentum=args.momentum, final_momentum=args.final_momentum,
                          momentum_switch_epoch=args.momentum_switch_epoch,
                          batch_size=args.batch_size, k=getattr(args, "k", 1),
                          persistent=getattr(args, "persistent", False),
                          sample_reconstruction=getattr(args, "sample_reconstruction", False),
                          monitor_size=args.monitor_size,
                          corruption=getattr(args, "corruption", 0.0))


def _run(args, stack) -> int:
    config = _config_from_args(args)
    x = load_training_images(args.dataset, args.data_dir, args.limit)
    print(f"pretraining {stack!r} on {args.dataset} ({len(x)} images), {config}")
    t0 = time.perf_counter()
    history = stack.pretrain(x, config, seed=args.seed, checkpoint=args.output,
                             resume=args.resume, progress=not args.no_progress, log=print)
    for i, records in enumerate(history):
        if records:
            last = records[-1]
            print(f"layer {i} ({stack.units[i]!r}): reconstruction error "
                  f"{last.get('reconstruction_error', float('nan')):.5g} after epoch {last['epoch']}")
    print(f"wrote {args.output} in {time.perf_counter() - t0:.1f}s")
    return 0


def run_rbm(args) -> int:
    """``pretrain rbm``: a DBN of CD-k (or PCD) RBMs."""
    stack = DBN(parse_layer_sizes(args.layers), visible=args.visible, rng=args.seed)
    return _run(args, stack)


def run_autoencoder(args) -> int:
    """``pretrain autoencoder``: stacked autoencoders, tied unless --untied."""
    sizes = parse_layer_sizes(args.layers)
    stack = StackedAutoencoder(sizes, encoder=args.encoder, decoder=args.decoder,
                               tied=not args.untied, rng=args.seed,
                               **autoencoder_options(args, len(sizes) - 1))
    return _run(args, stack)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def _nonnegative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return value


def _common_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = PretrainConfig()
    parser.add_argument("--layers", default="784-300-300-300",
                        help="layer sizes, input first (default: %(default)s)")
    parser.add_argument("--dataset", default="embedded",
                        help="embedded | mnist | fashion-mnist (default: %(default)s)")
    parser.add_argument("--data-dir", default=None, help="directory holding the dataset files")
    parser.add_argument("--limit", type=_positive_int, default=None,
                        help="use only the first N training images (quick runs)")
    parser.add_argument("--epochs", type=_positive_int, default=defaults.epochs,
                        help="epochs per layer (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=defaults.lr, help="learning rate (%(default)s)")
    parser.add_argument("--weight-decay", type=float, default=defaults.weight_decay,
                        help="L2 weight decay on W (default: %(default)s)")
    parser.add_argument("--momentum", type=float, default=defaults.momentum,
                        help="momentum of the first epochs (default: %(default)s)")
    parser.add_argument("--final-momentum", type=float, default=defaults.final_momentum,
                        help="momentum from --momentum-switch-epoch on (default: %(default)s)")
    parser.add_argument("--momentum-switch-epoch", type=_positive_int,
                        default=defaults.momentum_switch_epoch,
                        help="first epoch (from 1) with the final momentum (default: %(default)s)")
    parser.add_argument("--batch-size", type=_positive_int, default=defaults.batch_size,
                        help="minibatch size (default: %(default)s)")
    parser.add_argument("--monitor-size", type=_nonnegative_int, default=defaults.monitor_size,
                        help="training rows used for per-epoch monitors; 0 turns them off "
                             "(default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of all randomness (%(default)s)")
    parser.add_argument("-o", "--output", required=True,
                        help="HDF5 file written every epoch (checkpoint, then the result)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from --output if it holds an unfinished run")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_pretrain_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``pretrain rbm`` and ``pretrain autoencoder`` to an argparse subparsers object.

    Each leaf parser has ``func(args)`` as its default; the main CLI calls
    ``args.func(args)``."""
    pretrain = subparsers.add_parser(
        "pretrain", help="greedy layer-wise pretraining (RBM / DBN or stacked autoencoders)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    kinds = pretrain.add_subparsers(dest="pretrain_kind", metavar="{rbm,autoencoder}")
    kinds.required = True

    rbm = kinds.add_parser("rbm", help="stack of RBMs trained with CD-k or PCD (a DBN)")
    _common_arguments(rbm)
    rbm.add_argument("--k", type=_positive_int, default=1, help="Gibbs steps of CD-k (%(default)s)")
    rbm.add_argument("--persistent", action="store_true", help="persistent CD (Tieleman, 2008)")
    rbm.add_argument("--visible", choices=("bernoulli", "gaussian"), default="bernoulli",
                     help="visible units of the bottom RBM (default: %(default)s)")
    rbm.add_argument("--sample-reconstruction", action="store_true",
                     help="sample the last visible step instead of using its mean")
    rbm.set_defaults(func=run_rbm)

    autoencoder = kinds.add_parser("autoencoder", help="stacked autoencoders, MSE loss")
    _common_arguments(autoencoder)
    autoencoder.add_argument("--encoder", choices=("sigmoid", "identity"), default="sigmoid",
                             help="encoder nonlinearity f in y = f(Wx + b) (default %(default)s)")
    autoencoder.add_argument("--decoder", choices=("sigmoid", "identity"), default="sigmoid",
                             help="decoder nonlinearity g in x' = g(Wᵀy + c) (default %(default)s)")
    autoencoder.add_argument("--untied", action="store_true", help="separate decoder weights")
    autoencoder.add_argument("--corruption", type=float, default=0.0,
                             help="denoising autoencoder: each input set to 0 with this "
                                  "probability in training, the target the clean x "
                                  "(default %(default)s: a plain autoencoder)")
    add_pretrain_options(autoencoder)       # --density (technique 3)
    autoencoder.set_defaults(func=run_autoencoder)
    return pretrain
