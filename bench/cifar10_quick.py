"""Cifar10_quick with Caffe's recipe, in minidnn and in PyTorch, side by side.

    python bench/cifar10_quick.py --framework minidnn|torch|both [--threads 1]
        [--epochs-high 9 --epochs-low 2] [--train-limit N] [--tag NAME] [--caffe-bias]
        [--caffe-split] [--mean channel|image] [--order shuffle|file] [--seed S]
        [--augment]

Recipe (Caffe's examples/cifar10/cifar10_quick_solver*.prototxt): SGD lr 0.001,
momentum 0.9, weight decay 0.004, batch 100, 4,000 iterations, then 1,000 at
lr 0.0001. Our training set is the 45,000 images left after the 5,000-image
validation split, i.e. 450 iterations an epoch, so the schedule is run as
9 epochs at 0.001 (4,050 iterations) then 2 at 0.0001 (900), 4,950 in all.
Inputs as Caffe's: pixel minus the per-channel training mean, in pixel units
(Caffe subtracts a mean image; the per-channel mean is what we keep).
Initialisation as Caffe's prototxt (Gaussian std 1e-4 for conv1, 0.01 for
conv2 and conv3, 0.1 for ip1 and ip2; biases 0), drawn once by minidnn and
copied into the PyTorch model, so both start from the same weights and see
the same minibatches (the same seeded permutation per epoch). Differences
left: Caffe's bias lr multiplier 2 and bias decay are used (by both
frameworks) only with --caffe-bias. PyTorch's momentum form (v = μv + g;
w -= η·v) equals Caffe's (V = μV + η·g; w -= V, V = η·v) while η is constant;
at the learning-rate drop the PyTorch twin multiplies its momentum buffers by
η_old/η_new, so that it carries Caffe's V across the drop (as Caffe's
snapshot/resume does) instead of shrinking it tenfold at once (sitting 18; the
sitting-16 PyTorch result cifar10_quick_torch_caffe50k.json predates this and
has no "momentum_form" entry).

--caffe-split follows Caffe's data split exactly: train on all 50,000
training images (train + our validation split; 500 iterations an epoch), so
4,000 iterations at lr 0.001 are 8 epochs and the 1,000 at 0.0001 are 2
(defaults 8 and 2 in this mode); no validation set, no choice of any kind, and
the 10,000 test images are used once, at the end (Caffe's test_interval only
prints). --mean image subtracts the training set's mean image (Caffe's
mean.binaryproto from compute_image_mean) instead of the per-channel mean.
--order file reads the training images in file order every epoch
(data_batch_1 ... data_batch_5, minibatch b = images 100b ... 100b+99), as
Caffe's Data layer reads the LMDB that convert_cifar_data writes in that order
(no shuffling anywhere in Caffe's example); the default, --order shuffle,
draws a seeded permutation each epoch instead. With --order file the seed
sets only the initial weights.

Checked against Caffe's examples/cifar10/cifar10_quick_train_test.prototxt and
its two solvers (sitting 18): inputs pixel - mean image, no scale (--mean image);
fillers Gaussian std 1e-4 (conv1), 0.01 (conv2, conv3), 0.1 (ip1, ip2),
biases constant 0; bias lr_mult 2, decay_mult 1 (--caffe-bias); pool1 MAX,
pool2/pool3 AVE, all 3x3 stride 2, ceil-rounded sizes 32 -> 16 -> 8 -> 4, an
AVE window over the far edge averaged over its part inside the input (Caffe's
pool_size with pad 0); pool1 -> relu1, relu2 -> pool2, relu3 -> pool3; no
nonlinearity between ip1 and ip2; SoftmaxWithLoss averaged over the batch;
Caffe's momentum form (SGD momentum_form "caffe", the history carried across
the lr drop as Caffe's snapshot/resume does); test on the 10,000 test images.

--augment (beyond Caffe's recipe, reported apart from it): each training
minibatch gets the standard CIFAR augmentation, a random 32x32 crop after
4-pixel zero padding and a left-right flip with probability 1/2
(``minidnn.data.transforms.RandomCropFlip``), applied to the pixel/255 images
before the mean is subtracted (so the padding is black, as in torchvision's
RandomCrop before Normalize). minidnn draws the crops in ``fit(transform=)``
from its shuffling Generator, right after each epoch's permutation; the
PyTorch twin replays that Generator and calls the same NumPy transform, so both
frameworks see the same augmented batches, value for value.

Each framework runs in its own process (torch is never imported beside
minidnn); results: bench/results/cifar10_quick_<framework><tag>.json.
Resumable: minidnn checkpoints every epoch, PyTorch too; a finished run is
not recomputed. The minidnn model is saved to /work/artifacts/cifar10_quick.h5
(or --model-out) with the input normalisation in its training info.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
CAFFE_INIT_STD = {"conv1": 1e-4, "conv2": 1e-2, "conv3": 1e-2, "ip1": 0.1, "ip2": 0.1}
LR, MOMENTUM, WEIGHT_DECAY, BATCH = 0.001, 0.9, 0.004, 100
# --caffe-bias: the prototxt's bias "lr_mult: 2", decayed like the weights (decay_mult 1)
CAFFE_BIAS_MULT = {"b": {"lr": 2.0, "weight_decay": 1.0}}


def _thread_env(threads: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR",
                                                          "MINIDNN_CACHE", "MINIDNN_DATA")}
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                "NUMBA_NUM_THREADS"):
        env[var] = str(threads)
    env["PYTHONPATH"] = str(ROOT)
    return env


def prepared_data(train_limit: int | None, caffe_split: bool = False, mean: str = "channel",
                  raw_train: bool = False):
    """(x_train, y_train, x_val, y_val, x_test, y_test, normalizer) as float32.

    caffe_split: train on all 50,000 training images; x_val, y_val are None.
    mean: "channel" (per-channel mean) or "image" (Caffe's mean image), both
    subtracted in pixel units, over the images trained on.
    raw_train: x_train stays pixel/255 (``--augment`` normalises each augmented
    minibatch instead); the statistics are the same."""
    import numpy as np

    from minidnn.data import load
    from minidnn.data.transforms import ChannelNormalize, MeanImage
    train, val, test = load("cifar10", progress=False)
    if caffe_split:
        x_train, y_train = np.concatenate([train.x, val.x]), np.concatenate([train.y, val.y])
    else:
        x_train, y_train = train.x, train.y
    if train_limit:
        x_train, y_train = x_train[:train_limit], y_train[:train_limit]
    normalize = (MeanImage.fit(x_train, scale=255.0) if mean == "image"
                 else ChannelNormalize.fit(x_train, scale_only=1 / 255))
    x_train = (np.ascontiguousarray(x_train, dtype=np.float32) if raw_train
               else normalize(x_train).astype(np.float32))
    x_test = normalize(test.x).astype(np.float32)
    if caffe_split:
        return x_train, y_train, None, None, x_test, test.y, normalize
    x_val = normalize(val.x).astype(np.float32)
    return x_train, y_train, x_val, val.y, x_test, test.y, normalize


def caffe_initialised_model(seed: int = 0):
    import numpy as np

    from minidnn import architectures
    from minidnn.layers import Conv2D, Dense
    model = architectures.build("cifar10-quick", input_shape=(3, 32, 32), seed=seed)
    rng = np.random.default_rng(seed)
    names = iter(CAFFE_INIT_STD)
    for layer in model.layers:
        if isinstance(layer, (Conv2D, Dense)):
            std = CAFFE_INIT_STD[next(names)]
            layer.params["W"][...] = rng.normal(0.0, std, layer.params["W"].shape)
            layer.params["b"][...] = 0
    return model


def train_transform(args, normalize):
    """fit's per-minibatch transform for --augment (crop + flip, then the mean), else None."""
    if not args.augment:
        return None
    from minidnn.data.transforms import RandomCropFlip, TrainTransform
    return TrainTransform(RandomCropFlip(4), normalize)


def run_minidnn(args) -> dict:
    import numpy as np

    import minidnn
    from minidnn import io
    from minidnn.optimizers import SGD, StepLR
    from minidnn.training import evaluate, fit
    minidnn.configure_threads(args.threads)
    x, y, xv, yv, xt, yt, normalize = prepared_data(args.train_limit, args.caffe_split, args.mean,
                                                    raw_train=args.augment)
    transform = train_transform(args, normalize)
    model = caffe_initialised_model(args.seed)
    optimizer = SGD(LR, MOMENTUM, WEIGHT_DECAY, schedule=StepLR(args.epochs_high, 0.1),
                    param_mult=CAFFE_BIAS_MULT if args.caffe_bias else None,
                    momentum_form="caffe")
    epochs = args.epochs_high + args.epochs_low
    checkpoint = Path(args.checkpoint_dir) / f"cifar10_quick{args.tag}.ckpt.h5"
    t0 = time.perf_counter()
    history = fit(model, (x, y), None if xv is None else (xv, yv), epochs=epochs, batch_size=BATCH,
                  optimizer=optimizer, seed=args.seed, checkpoint=str(checkpoint),
                  resume=True, progress=False, log=lambda line: print(line, flush=True),
                  shuffle=args.order == "shuffle", transform=transform)
    seconds = time.perf_counter() - t0
    test = evaluate(model, (xt, yt))
    training = {"dataset": "cifar10 (JPEG-derived copy)", "architecture": "cifar10-quick",
                "recipe": "caffe cifar10_quick", "epochs": epochs, "batch_size": BATCH,
                "seed": args.seed, "optimizer": optimizer.get_config(),
                "input_transform": normalize.get_config(),
                "input_note": _input_note(args.mean),
                "augment": transform.augment.get_config() if transform else None,
                "train_images": len(x), "history": history.epochs, "test": test}
    io.save(model, args.model_out, training=training)
    return {"framework": "minidnn", "test_accuracy": test["accuracy"], "test_loss": test["loss"],
            "train_seconds_this_process": seconds,
            "train_seconds_total": sum(r["seconds"] for r in history.epochs),
            "history": history.epochs, "model_file": args.model_out}


def run_torch(args) -> dict:
    import numpy as np
    import torch
    torch.set_num_threads(args.threads)
    x, y, xv, yv, xt, yt, normalize = prepared_data(args.train_limit, args.caffe_split, args.mean,
                                                    raw_train=args.augment)
    transform = train_transform(args, normalize)        # minidnn's NumPy transform itself
    model = caffe_initialised_model(args.seed)          # the same initial weights
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 32, 5, padding=2), torch.nn.MaxPool2d(3, 2, ceil_mode=True),
        torch.nn.ReLU(), torch.nn.Conv2d(32, 32, 5, padding=2), torch.nn.ReLU(),
        torch.nn.AvgPool2d(3, 2, ceil_mode=True), torch.nn.Conv2d(32, 64, 5, padding=2),
        torch.nn.ReLU(), torch.nn.AvgPool2d(3, 2, ceil_mode=True), torch.nn.Flatten(),
        torch.nn.Linear(1024, 64), torch.nn.Linear(64, 10))
    ours = [l for l in model.layers if "W" in l.params]
    theirs = [m for m in net if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad():
        for a, b in zip(ours, theirs):
            W = a.params["W"] if a.params["W"].ndim == 4 else a.params["W"].T
            b.weight.copy_(torch.from_numpy(np.ascontiguousarray(W)))
            b.bias.copy_(torch.from_numpy(a.params["b"]))
    decay = [m.weight for m in theirs]
    no_decay = [m.bias for m in theirs]
    bias = CAFFE_BIAS_MULT["b"] if args.caffe_bias else {"lr": 1.0, "weight_decay": 0.0}
    opt = torch.optim.SGD([{"params": decay, "weight_decay": WEIGHT_DECAY, "lr_mult": 1.0},
                           {"params": no_decay, "weight_decay": WEIGHT_DECAY * bias["weight_decay"],
                            "lr_mult": bias["lr"]}], lr=LR, momentum=MOMENTUM)
    epochs = args.epochs_high + args.epochs_low
    checkpoint = Path(args.checkpoint_dir) / f"cifar10_quick_torch{args.tag}.ckpt.pt"
    rng = np.random.default_rng(args.seed)              # fit's shuffling (and crops), replayed
    history, start = [], 0
    if checkpoint.exists():
        state = torch.load(checkpoint, weights_only=False)
        net.load_state_dict(state["net"]), opt.load_state_dict(state["opt"])
        rng.bit_generator.state, history, start = state["rng"], state["history"], state["epoch"]
        print(f"resumed from {checkpoint} after epoch {start}", flush=True)
    xt_t, yt_t = torch.from_numpy(xt), torch.from_numpy(yt)
    loss_fn = torch.nn.CrossEntropyLoss()

    def evaluate(xe, ye):
        net.eval()
        with torch.no_grad():
            correct, total = 0, 0.0
            for i in range(0, len(xe), 1000):
                out = net(torch.from_numpy(xe[i:i + 1000]))
                total += float(loss_fn(out, torch.from_numpy(ye[i:i + 1000]))) * len(out)
                correct += int((out.argmax(1).numpy() == ye[i:i + 1000]).sum())
        net.train()
        return total / len(xe), correct / len(xe)

    for epoch in range(start, epochs):
        for group in opt.param_groups:
            lr = LR * group["lr_mult"] * (0.1 if epoch >= args.epochs_high else 1.0)
            if lr != group["lr"]:
                # Caffe's momentum form: its history V = lr_old * v goes on unchanged
                for p in group["params"]:
                    buffer = opt.state.get(p, {}).get("momentum_buffer")
                    if buffer is not None:
                        buffer.mul_(group["lr"] / lr)
            group["lr"] = lr
        t0 = time.perf_counter()
        order = rng.permutation(len(x)) if args.order == "shuffle" else np.arange(len(x))
        total, correct = 0.0, 0
        for b in range(0, len(x), BATCH):
            idx = order[b:b + BATCH]
            xb = x[idx] if transform is None else transform(x[idx], rng)   # as fit draws them
            xb, yb = torch.from_numpy(np.ascontiguousarray(xb)), torch.from_numpy(y[idx])
            opt.zero_grad(set_to_none=True)
            out = net(xb)
            loss = loss_fn(out, yb)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            correct += int((out.argmax(1) == yb).sum())
        record = {"epoch": epoch + 1, "lr": opt.param_groups[0]["lr"],
                  "train_loss": total / len(x), "train_acc": correct / len(x)}
        if xv is not None:
            record["val_loss"], record["val_acc"] = evaluate(xv, yv)
        record["seconds"] = time.perf_counter() - t0
        history.append(record)
        print(json.dumps(record), flush=True)
        torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "epoch": epoch + 1,
                    "rng": rng.bit_generator.state, "history": history}, checkpoint)
    test_loss, test_acc = evaluate(xt, yt)
    return {"framework": "torch", "torch_version": torch.__version__,
            "momentum_form": "caffe (buffers rescaled by lr_old/lr_new at the drop)",
            "test_accuracy": test_acc,
            "test_loss": test_loss, "train_seconds_total": sum(r["seconds"] for r in history),
            "history": history}


def _input_note(mean: str) -> str:
    if mean == "image":
        return ("x = pixel/255 from minidnn.data.load('cifar10'), then (x - mean[c,h,w]) * 255 "
                "with the stored mean image (Caffe's mean_file)")
    return ("x = pixel/255 from minidnn.data.load('cifar10'), then "
            "(x - mean[c]) / std[c] with the stored mean and std")


def export_partial(args) -> None:
    """Write the latest minidnn checkpoint as a model file (with its input
    normalisation) to <model-out stem>_partial.h5, while the run goes on."""
    import json

    from minidnn import io
    from minidnn.training import evaluate
    checkpoint = Path(args.checkpoint_dir) / f"cifar10_quick{args.tag}.ckpt.h5"
    model = io.load(str(checkpoint))
    with io.open_h5(str(checkpoint)) as h5:
        epoch = int(h5["checkpoint"].attrs["epoch"])
        history = json.loads(h5["checkpoint"].attrs["history"])
    _, _, xv, yv, _, _, normalize = prepared_data(None, args.caffe_split, args.mean)
    # with --caffe-split there is no validation set, and the test set is not looked at
    val = None if xv is None else evaluate(model, (xv, yv))
    out = str(Path(args.model_out).with_name(Path(args.model_out).stem + "_partial.h5"))
    io.save(model, out, training={
        "dataset": "cifar10 (JPEG-derived copy)", "architecture": "cifar10-quick",
        "recipe": "caffe cifar10_quick, PARTIAL", "partial_after_epoch": epoch,
        "of_epochs": args.epochs_high + args.epochs_low,
        "input_transform": normalize.get_config(),
        "input_note": _input_note(args.mean),
        "history": history, "val": val})
    print(f"{out}: after epoch {epoch}" + ("" if val is None else
                                           f", validation accuracy {100 * val['accuracy']:.2f}%"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--framework", choices=("minidnn", "torch", "both"), default="both")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--epochs-high", type=int, default=None,
                        help="epochs at lr 0.001 (default 9; 8 with --caffe-split)")
    parser.add_argument("--epochs-low", type=int, default=None,
                        help="epochs at lr 0.0001 (default 2)")
    parser.add_argument("--caffe-split", action="store_true",
                        help="Caffe's split: train on all 50,000 training images (no "
                             "validation set, fixed schedule), test once on the 10,000")
    parser.add_argument("--mean", choices=("channel", "image"), default="channel",
                        help="subtract the per-channel mean (default) or Caffe's mean image")
    parser.add_argument("--order", choices=("shuffle", "file"), default="shuffle",
                        help="minibatch order: a seeded permutation each epoch (default), or "
                             "file order every epoch as Caffe's LMDB is read")
    parser.add_argument("--augment", action="store_true",
                        help="random crop after 4-pixel zero padding + horizontal flip of each "
                             "training image (beyond Caffe's recipe; the same crops on both sides)")
    parser.add_argument("--train-limit", type=int, default=None,
                        help="use only the first N training images (smoke tests)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tag", default="", help="suffix of result and checkpoint names")
    parser.add_argument("--caffe-bias", action="store_true",
                        help="Caffe's bias settings: twice the learning rate, weight decay "
                             "as the weights (both frameworks)")
    parser.add_argument("--model-out", default=None,
                        help="minidnn model file (default /work/artifacts/cifar10_quick<tag>.h5)")
    parser.add_argument("--checkpoint-dir", default="/work/artifacts")
    parser.add_argument("--export-partial", action="store_true",
                        help="save the latest minidnn checkpoint as <model-out>_partial.h5 "
                             "(with its input normalisation) and exit")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.epochs_high is None:
        args.epochs_high = 8 if args.caffe_split else 9
    if args.epochs_low is None:
        args.epochs_low = 2
    if args.model_out is None:
        args.model_out = f"/work/artifacts/cifar10_quick{args.tag}.h5"
    if args.export_partial:
        sys.path.insert(0, str(ROOT))
        export_partial(args)
        return 0
    RESULTS.mkdir(exist_ok=True)
    Path(args.checkpoint_dir).mkdir(parents=True, exist_ok=True)
    if args.worker:
        sys.path.insert(0, str(ROOT))
        result = run_minidnn(args) if args.framework == "minidnn" else run_torch(args)
        n_train = 50000 if args.caffe_split else 45000
        if args.train_limit:
            n_train = min(n_train, args.train_limit)
        per_epoch = -(-n_train // BATCH)
        result.update(threads=args.threads, epochs_high=args.epochs_high,
                      epochs_low=args.epochs_low, train_limit=args.train_limit,
                      caffe_split=args.caffe_split, mean=args.mean, order=args.order,
                      seed=args.seed,
                      augment=("random crop (4-pixel zero padding) + horizontal flip"
                               if args.augment else None),
                      recipe=f"lr 0.001 momentum 0.9 wd 0.004 batch 100; {args.epochs_high} "
                             f"epochs ({args.epochs_high * per_epoch:,} it) then "
                             f"{args.epochs_low} at lr 0.0001 ({args.epochs_low * per_epoch:,} "
                             f"it) on {n_train:,} images",
                      data=("CIFAR-10 (JPEG-derived copy), 50k train (Caffe's split) / 10k test"
                            if args.caffe_split else
                            "CIFAR-10 (JPEG-derived copy), 45k train / 5k val / 10k test"),
                      input_mean=("mean image" if args.mean == "image" else "per-channel mean"),
                      bias=("Caffe's: lr x2, decayed" if args.caffe_bias
                            else "lr x1, not decayed"))
        out = RESULTS / f"cifar10_quick_{args.framework}{args.tag}.json"
        out.write_text(json.dumps(result, indent=1))
        print(f"{args.framework}: test accuracy {100 * result['test_accuracy']:.2f}%, "
              f"training {result['train_seconds_total']:.0f} s -> {out}", flush=True)
        return 0
    frameworks = ("minidnn", "torch") if args.framework == "both" else (args.framework,)
    for framework in frameworks:
        out = RESULTS / f"cifar10_quick_{framework}{args.tag}.json"
        if out.exists():
            print(f"{framework}: done already ({out}); delete it to rerun")
            continue
        command = [sys.executable, __file__, "--worker", "--framework", framework] + [
            a for a in (argv if argv is not None else sys.argv[1:])
            if a not in ("--framework", "minidnn", "torch", "both")]
        env = _thread_env(args.threads)
        print(f"running {framework} in a clean process: {' '.join(command)}", flush=True)
        subprocess.run(command, env=env, check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
