"""SPEC technique 3's table on full MNIST: fixed random sparse W, autoencoder pretraining,
784-500-10 fine-tuning, against a no-pretraining control, at every density γ.

    python bench/sparse_mnist_table.py                      # the whole protocol, resumable
    python bench/sparse_mnist_table.py --densities 0.04     # one column
    python bench/sparse_mnist_table.py --report             # print the table from the JSONs

Protocol (Matsumoto 2017 / SPEC "Technique 3", scaled to a shared 2-core CPU):

* data: MNIST 50,000 train / 10,000 validation / 10,000 test, pixels in [0, 1];
* pretraining: one tied autoencoder 784-500, y = σ(Wx + b), x' = σ(Wᵀy + c),
  MSE, W with density γ (``Autoencoder(density=γ)``: SparseDense, CSR kernels;
  at γ = 1 a Dense W, the same matrix, because BLAS is faster there), values
  N(0, 1/(γ·784)) (``init="fan_in"``); SGD, batch 100, weight decay 0.002,
  momentum 0.5 then 0.9 from epoch 3, ``--ae-epochs`` epochs (paper: 10,000);
* fine-tuning: the encoder (same CSR pattern, it never changes) + sigmoid +
  Dense(500, 10), softmax cross-entropy, SGD momentum 0.9, batch 100,
  ``--ft-epochs`` epochs (paper: 10,000);
* control: the same net from random init (SparseDense(784, 500, γ), same init),
  same fine-tuning;
* choices on the validation set only: the autoencoder's learning rate (by
  validation reconstruction MSE) and the fine-tuning learning rate (by best
  validation accuracy), both at γ = 0.04 and then used at every γ; for each
  run, the reported test accuracy is the one at the epoch of best validation
  accuracy (the last epoch's is recorded too).
* pretraining MSE is mean((x' − x)²) over the 10,000 test images and 784 pixels.

Every finished run writes one JSON file to bench/results/sparse_table/ and is
never recomputed; the pretrained autoencoders go to --artifacts. Kill it and
start it again with the same arguments to continue.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import RESULTS_DIR  # noqa: E402

PAPER = {1.0: (5.29e-4, 98.38), 0.33: (5.12e-4, 98.34), 0.16: (4.95e-4, 98.13),
         0.08: (5.19e-4, 98.17), 0.04: (5.88e-4, 97.90)}
DENSITIES = (0.04, 0.01, 0.02, 0.08, 0.16, 0.33, 1.0)
OUT_DIR = RESULTS_DIR / "sparse_table"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--densities", default=",".join(map(str, DENSITIES)))
    p.add_argument("--ae-epochs", type=int, default=10)
    p.add_argument("--ft-epochs", type=int, default=15)
    p.add_argument("--ae-lrs", default="0.1,0.3", help="autoencoder lrs tried at γ=0.04")
    p.add_argument("--ft-lrs", default="0.05,0.1,0.2", help="fine-tuning lrs tried at γ=0.04")
    p.add_argument("--ae-weight-decay", type=float, default=0.002)
    p.add_argument("--ae-lr-drop", type=int, default=0,
                   help="autoencoder lr × 0.1 after this many epochs (0: constant lr)")
    p.add_argument("--ft-batch-size", type=int, default=100,
                   help="fine-tuning minibatch size (use another --out-dir for each)")
    p.add_argument("--ft-weight-decay", type=float, default=0.0,
                   help="L2 decay on the weights (the nonzeros) while fine-tuning")
    p.add_argument("--ft-lr-step", type=int, default=0,
                   help="fine-tuning lr × 0.1 from this epoch on (0: constant lr)")
    p.add_argument("--ft-schedule", default="step", choices=("step", "cosine"),
                   help="step: --ft-lr-step; cosine: lr·(1 + cos(π·e/E))/2 at epoch e of E")
    p.add_argument("--ft-dropout", type=float, default=0.0,
                   help="dropout rate on the hidden units while fine-tuning (0: none)")
    p.add_argument("--ft-input-dropout", type=float, default=0.0,
                   help="dropout rate on the 784 input pixels while fine-tuning (0: none)")
    p.add_argument("--ft-label-smoothing", type=float, default=0.0,
                   help="fine-tuning targets (1 − ε)·onehot + ε/10 (0: plain cross-entropy)")
    p.add_argument("--ft-center", action="store_true",
                   help="fine-tune on pixels minus the training-set mean pixel, the first "
                        "layer's bias moved by μW so the net computes the same function at "
                        "the start (pretraining stays on [0, 1] pixels)")
    p.add_argument("--ae-corruption", type=float, default=0.0,
                   help="denoising autoencoder: masking-noise rate on the input in "
                        "pretraining (PretrainConfig.corruption; 0: plain autoencoder)")
    p.add_argument("--init", default="fan_in", choices=("fan_in", "paper"))
    p.add_argument("--pattern", default="bernoulli", choices=("bernoulli", "per_unit"),
                   help="SparseDense pattern (use another --out-dir for per_unit)")
    p.add_argument("--init-compare", action="store_true",
                   help="also run init='paper' at γ=0.04 (pretrained and control)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--artifacts", default="/work/artifacts/issue-11")
    p.add_argument("--out-dir", default=str(OUT_DIR))
    p.add_argument("--ae-dir", default=None,
                   help="where the autoencoder JSONs live (default: --out-dir); give several "
                        "fine-tuning configurations one --ae-dir to share one pretrained net")
    p.add_argument("--ae-stats", nargs="+", metavar="H5",
                   help="print weight scale and hidden saturation of these pretrained "
                        "autoencoder files on the validation images, then exit")
    p.add_argument("--compare", nargs="+", metavar="DIR",
                   help="print every γ=0.04 fine-tuning run in these --out-dirs (one row per "
                        "run, its autoencoder beside it) and the one chosen on validation, "
                        "then exit")
    p.add_argument("--report", action="store_true", help="print the table and exit")
    p.add_argument("--markdown", action="store_true", help="with --report: a Markdown table")
    p.add_argument("--no-control", action="store_true", help="skip the no-pretraining runs")
    p.add_argument("--prune-compare", action="store_true",
                   help="only: train the dense control, prune it to each --densities γ by "
                        "magnitude (prune_to_density), fine-tune on that fixed pattern")
    args = p.parse_args(argv)
    if args.ae_lr_drop and not 0 < args.ae_lr_drop < args.ae_epochs:
        p.error(f"--ae-lr-drop must be between 1 and --ae-epochs − 1 ({args.ae_epochs - 1}), "
                f"got {args.ae_lr_drop}")
    return args


def log(line):
    print(time.strftime("%H:%M:%S"), line, flush=True)


class LabelSmoothedCrossEntropy:
    """Softmax cross-entropy against (1 − ε)·onehot(y) + ε/K (Szegedy et al., 2016)."""

    name = "label_smoothed_cross_entropy"

    def __init__(self, epsilon):
        from minidnn.losses import SoftmaxCrossEntropy
        self.epsilon, self.plain = float(epsilon), SoftmaxCrossEntropy()

    def __call__(self, logits, target):
        k = logits.shape[1]
        soft = np.full(logits.shape, self.epsilon / k, dtype=logits.dtype)
        soft[np.arange(len(target)), target] += 1.0 - self.epsilon
        return self.plain(logits, soft)


class Study:
    def __init__(self, args):
        import minidnn.data
        self.args = args
        self.out = Path(args.out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.ae_out = Path(args.ae_dir) if args.ae_dir else self.out
        self.ae_out.mkdir(parents=True, exist_ok=True)
        self.artifacts = Path(args.artifacts)
        self.artifacts.mkdir(parents=True, exist_ok=True)
        splits = minidnn.data.load("mnist")
        self.train = (splits.train.flatten(), splits.train.y)
        self.val = (splits.val.flatten(), splits.val.y)
        self.test = (splits.test.flatten(), splits.test.y)

    # -- bookkeeping ---------------------------------------------------------------------
    def path(self, run_id, base=None):
        return (base or self.out) / f"{run_id}.json"

    def done(self, run_id, base=None):
        p = self.path(run_id, base)
        return json.loads(p.read_text()) if p.exists() else None

    def write(self, run_id, result, base=None):
        tmp = self.path(run_id, base).with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=1))
        os.replace(tmp, self.path(run_id, base))
        log(f"wrote {self.path(run_id, base)}")

    # -- the pieces ------------------------------------------------------------------------
    def autoencoder(self, density, lr, init):
        from minidnn.pretraining import StackedAutoencoder, load_pretrained, PretrainConfig
        run_id = f"ae_g{density:g}_lr{lr:g}_{init}" + (
            "" if self.args.ae_epochs == 10 else f"_e{self.args.ae_epochs}") + (
            "" if self.args.ae_weight_decay == 0.002 else f"_wd{self.args.ae_weight_decay:g}") + (
            f"_drop{self.args.ae_lr_drop}" if self.args.ae_lr_drop else "") + (
            f"_c{self.args.ae_corruption:g}" if self.args.ae_corruption else "") + (
            # a shared --ae-dir holds per_unit runs without a pattern tag (sitting 16)
            "_bern" if self.args.pattern == "bernoulli" and self.args.ae_dir else "") + (
            f"_s{self.args.seed}" if self.args.seed else "")   # the seed draws the pattern too
        h5 = self.artifacts / f"{run_id}.h5"
        result = self.done(run_id, self.ae_out)
        if result is not None and h5.exists():
            return result, load_pretrained(h5)
        stack = StackedAutoencoder([784, 500], rng=self.args.seed,
                                   density=None if density == 1.0 else density, init=init,
                                   pattern=self.args.pattern)
        unit = stack.units[0]
        if density == 1.0:   # the same matrix SparseDense(density=1) would draw, held dense
            rng = np.random.default_rng(self.args.seed)
            var = 1.0 / 784 if init == "fan_in" else 1.0
            unit.params["W"][...] = rng.normal(0, np.sqrt(var), unit.params["W"].shape)
        # phases of (epochs, lr, first momentum): one, or two with --ae-lr-drop E (lr × 0.1
        # after epoch E, a fresh SGD at momentum 0.9 and a fresh shuffling seed)
        drop = self.args.ae_lr_drop
        phases = [(self.args.ae_epochs, lr, 0.5)] if not drop else \
            [(drop, lr, 0.5), (self.args.ae_epochs - drop, 0.1 * lr, 0.9)]
        checkpoints = []
        t0 = time.perf_counter()
        for k, (epochs, phase_lr, momentum) in enumerate(phases):
            config = PretrainConfig(epochs=epochs, lr=phase_lr,
                                    weight_decay=self.args.ae_weight_decay,
                                    momentum=momentum, final_momentum=0.9,
                                    momentum_switch_epoch=3, batch_size=100,
                                    corruption=self.args.ae_corruption)
            # a checkpoint every epoch: a killed long pretraining resumes where it stopped
            # (the seconds then count only the resumed part); a finished phase is read back
            checkpoints.append(self.artifacts / f"{run_id}.ckpt{'' if not k else k}.h5")
            history = stack.pretrain(self.train[0], config, seed=self.args.seed + k, log=log,
                                     checkpoint=checkpoints[-1], resume=True)
        seconds = time.perf_counter() - t0
        stack.save(h5)
        result = {"run": run_id, "density": density, "lr": lr, "init": init,
                  "weight_decay": self.args.ae_weight_decay,
                  "epochs": self.args.ae_epochs, "seconds": seconds,
                  "seconds_per_epoch": seconds / self.args.ae_epochs,
                  "val_mse": unit.reconstruction_error(self.val[0]),
                  "test_mse": unit.reconstruction_error(self.test[0]),
                  "pattern": self.args.pattern,
                  "train_history": history[0], "nnz": self._nnz(unit), "file": str(h5)}
        if drop:
            result["lr_drop_epoch"] = drop
        if self.args.ae_corruption:
            result["corruption"] = self.args.ae_corruption
        self.write(run_id, result, self.ae_out)
        for checkpoint in checkpoints:
            checkpoint.unlink(missing_ok=True)
        return result, stack

    def _ae_extra(self, ae):
        """What a fine-tuning JSON records of the autoencoder it started from."""
        return {"ae_run": ae["run"], "ae_epochs": ae["epochs"],
                "ae_weight_decay": ae["weight_decay"], "ae_test_mse": ae["test_mse"],
                "ae_val_mse": ae["val_mse"], "pattern": self.args.pattern,
                "ae_corruption": ae.get("corruption", 0.0)}

    @staticmethod
    def _nnz(unit):
        return int(unit.params["data"].size) if "data" in unit.params else 784 * 500

    def control_model(self, density, init):
        import minidnn as md
        rng = np.random.default_rng(self.args.seed)
        if density == 1.0:
            first = md.Dense(784, 500, init="zeros")
            var = 1.0 / 784 if init == "fan_in" else 1.0
            first.params["W"] = rng.normal(0, np.sqrt(var), (784, 500)).astype(np.float32)
        else:
            first = md.SparseDense(784, 500, density=density, init=init, rng=rng,
                                   pattern=self.args.pattern)
        last = md.Dense(500, 10, rng=np.random.default_rng(self.args.seed))
        return md.Sequential([md.Flatten(), first, md.Sigmoid(), last], seed=None,
                             input_shape=(784,))

    def finetune(self, run_id, make_model, lr, extra, save=False):
        import minidnn as md
        result = self.done(run_id)
        if result is not None:
            return result
        model = self._with_dropout(make_model())
        train, val_set, test_set = self._finetune_data(model)
        loss = LabelSmoothedCrossEntropy(self.args.ft_label_smoothing) \
            if self.args.ft_label_smoothing else None
        epochs = []
        t_train = 0.0
        pattern_before = self._pattern(model)
        for e in range(self.args.ft_epochs):
            t0 = time.perf_counter()
            opt = self._optimizer(model, lr)
            opt.lr = lr * self._lr_factor(e)
            # divergence_factor=None: fit compares one epoch's mean loss with the lowest single
            # minibatch loss, so a net near zero training loss (the no-pretraining control at
            # epoch 70) is falsely stopped; the NaN/Inf checks stay on
            fitted = md.fit(model, train, epochs=1, batch_size=self.args.ft_batch_size,
                            optimizer=opt, seed=self.args.seed * 1000 + e, progress=False, log=None,
                            divergence_factor=None, loss=loss)
            t_train += time.perf_counter() - t0
            val = md.evaluate(model, val_set)
            test = md.evaluate(model, test_set)
            epochs.append({"epoch": e + 1, "train_acc": fitted.last().get("train_acc"),
                           "train_loss": fitted.last().get("train_loss"),
                           "val_acc": val["accuracy"], "val_loss": val["loss"],
                           "test_acc": test["accuracy"], "test_loss": test["loss"],
                           "seconds": time.perf_counter() - t0})
            log(f"{run_id} epoch {e + 1}: val {100 * val['accuracy']:.2f}% "
                f"test {100 * test['accuracy']:.2f}% ({epochs[-1]['seconds']:.1f}s)")
        best = max(epochs, key=lambda r: (r["val_acc"], -r["epoch"]))
        result = {"run": run_id, "lr": lr, "lr_step": self.args.ft_lr_step,
                  "lr_schedule": self.args.ft_schedule, "dropout": self.args.ft_dropout,
                  "input_dropout": self.args.ft_input_dropout,
                  "label_smoothing": self.args.ft_label_smoothing, "center": self.args.ft_center,
                  "weight_decay": self.args.ft_weight_decay,
                  "momentum": 0.9, "batch_size": self.args.ft_batch_size,
                  "seed": self.args.seed,
                  "epochs": self.args.ft_epochs, **extra,
                  "best_val_epoch": best["epoch"], "best_val_acc": best["val_acc"],
                  "test_acc_at_best_val": best["test_acc"], "final_test_acc": epochs[-1]["test_acc"],
                  "train_seconds": t_train, "train_seconds_per_epoch": t_train / len(epochs),
                  "pattern_unchanged": pattern_before == self._pattern(model),
                  "history": epochs}
        if save:
            result["file"] = str(self.artifacts / f"{run_id}.h5")
            md.save(model, result["file"])
        self.write(run_id, result)
        return result

    def prune_compare(self, densities, lr):
        """Magnitude pruning of a trained dense net (random patterns' comparison)."""
        import minidnn as md
        from minidnn.sparse import prune_to_density
        a = self.args
        dense_run = self.finetune(f"control_g1_lr{lr:g}_{a.init}",
                                  lambda: self.control_model(1.0, a.init), lr,
                                  {"density": 1.0, "init": a.init, "pretrained": False},
                                  save=True)

        def pruned(density):
            model = md.load(dense_run["file"])
            model.layers[1] = prune_to_density(model.layers[1], density)
            return model
        for density in densities:
            if density < 1.0:
                self.finetune(f"pruned_g{density:g}_lr{lr:g}", lambda d=density: pruned(d), lr,
                              {"density": density, "pattern": "magnitude-pruned dense",
                               "from": dense_run["run"]})

    def _finetune_data(self, model):
        """The (train, val, test) fine-tuning sees: as loaded, or ``--ft-center``: minus the
        training mean pixel μ, with the first weight layer's bias b ← b + μW, so that
        σ((x − μ)W + b + μW) = σ(xW + b) and only SGD's conditioning changes."""
        if not self.args.ft_center:
            return self.train, self.val, self.test
        mu = self.train[0].mean(axis=0, keepdims=True, dtype=np.float64).astype(self.train[0].dtype)
        first = next(l for l in model.layers if "b" in l.params)
        first.params["b"] += first._forward_product(mu)[0].astype(first.params["b"].dtype)
        return tuple((x - mu, y) for x, y in (self.train, self.val, self.test))

    def _lr_factor(self, e):
        """The fine-tuning lr multiplier at epoch e (0-based)."""
        a = self.args
        if a.ft_schedule == "cosine":
            return 0.5 * (1.0 + np.cos(np.pi * e / a.ft_epochs))
        return 0.1 if a.ft_lr_step and e + 1 >= a.ft_lr_step else 1.0

    def _with_dropout(self, model):
        """``--ft-dropout p``: a Dropout(p) after each hidden activation; ``--ft-input-dropout
        q``: a Dropout(q) on the pixels, before the first weight layer (fine-tuning only)."""
        import minidnn as md
        if not self.args.ft_dropout and not self.args.ft_input_dropout:
            return model
        layers = []
        for i, layer in enumerate(model.layers):
            if self.args.ft_input_dropout and i == 1:   # after Flatten, before the sparse W
                layers.append(md.Dropout(self.args.ft_input_dropout,
                                         rng=np.random.default_rng([self.args.seed, 1000])))
            layers.append(layer)
            if self.args.ft_dropout and isinstance(layer, md.Sigmoid):
                layers.append(md.Dropout(self.args.ft_dropout,
                                         rng=np.random.default_rng([self.args.seed, i])))
        return md.Sequential(layers, seed=None, input_shape=(784,))

    def _optimizer(self, model, lr):
        # one SGD across the epochs: fit is called once per epoch, so keep the velocity
        import minidnn as md
        if getattr(self, "_opt_model", None) is not model:
            self._opt_model, self._opt = model, md.SGD(
                lr, momentum=0.9, weight_decay=self.args.ft_weight_decay)
        return self._opt

    @staticmethod
    def _pattern(model):
        return [(l.name, l.buffers["indptr"].tobytes(), l.buffers["indices"].tobytes())
                for l in model.layers if "indices" in l.buffers]

    # -- the protocol ------------------------------------------------------------------------
    def run(self):
        a = self.args
        densities = [float(d) for d in a.densities.split(",")]
        ae_lrs = [float(v) for v in a.ae_lrs.split(",")]
        ft_lrs = [float(v) for v in a.ft_lrs.split(",")]
        if a.prune_compare:
            self.prune_compare(densities, ft_lrs[0])
            log("prune comparison complete")
            return
        # 1. choose the autoencoder lr at γ = 0.04 on validation MSE
        ae_runs = [self.autoencoder(0.04, lr, a.init)[0] for lr in ae_lrs]
        ae_lr = min(ae_runs, key=lambda r: r["val_mse"])["lr"]
        log(f"autoencoder lr chosen on validation MSE: {ae_lr}")
        # 2. choose the fine-tuning lr at γ = 0.04 on validation accuracy
        ft_runs = []
        for lr in ft_lrs:
            ae, stack = self.autoencoder(0.04, ae_lr, a.init)
            ft_runs.append(self.finetune(f"ft_g0.04_lr{lr:g}_{a.init}",
                                         lambda stack=stack: stack.to_mlp(10, seed=a.seed),
                                         lr, {"density": 0.04, "init": a.init,
                                              "pretrained": True, "ae_lr": ae_lr,
                                              **self._ae_extra(ae)}))
        ft_lr = max(ft_runs, key=lambda r: r["best_val_acc"])["lr"]
        log(f"fine-tuning lr chosen on validation accuracy: {ft_lr}")
        self.write("choices", {"ae_lr": ae_lr, "ft_lr": ft_lr, "init": a.init,
                               "ae_weight_decay": a.ae_weight_decay,
                               "ae_lr_drop": a.ae_lr_drop, "seed": a.seed,
                               "ft_batch_size": a.ft_batch_size, "pattern": a.pattern,
                               "ft_lr_step": a.ft_lr_step,
                               "ft_schedule": a.ft_schedule, "ft_dropout": a.ft_dropout,
                               "ft_input_dropout": a.ft_input_dropout,
                               "ft_label_smoothing": a.ft_label_smoothing,
                               "ft_center": a.ft_center,
                               "ae_corruption": a.ae_corruption,
                               "ft_weight_decay": a.ft_weight_decay,
                               "ae_epochs": a.ae_epochs, "ft_epochs": a.ft_epochs,
                               "ae_candidates": {r["lr"]: r["val_mse"] for r in ae_runs},
                               "ft_candidates": {r["lr"]: r["best_val_acc"] for r in ft_runs}})
        # 3. every density: pretrained and control
        for density in densities:
            ae, stack = self.autoencoder(density, ae_lr, a.init)
            self.finetune(f"ft_g{density:g}_lr{ft_lr:g}_{a.init}",
                          lambda stack=stack: stack.to_mlp(10, seed=a.seed), ft_lr,
                          {"density": density, "init": a.init, "pretrained": True,
                           "ae_lr": ae_lr, **self._ae_extra(ae)})
            if not a.no_control:
                # the dense control is kept: --prune-compare prunes it
                self.finetune(f"control_g{density:g}_lr{ft_lr:g}_{a.init}",
                              lambda d=density: self.control_model(d, a.init), ft_lr,
                              {"density": density, "init": a.init, "pretrained": False},
                              save=density == 1.0)
        if a.init_compare:
            other = "paper" if a.init == "fan_in" else "fan_in"
            _, stack = self.autoencoder(0.04, ae_lr, other)
            self.finetune(f"ft_g0.04_lr{ft_lr:g}_{other}",
                          lambda stack=stack: stack.to_mlp(10, seed=a.seed), ft_lr,
                          {"density": 0.04, "init": other, "pretrained": True, "ae_lr": ae_lr})
            self.finetune(f"control_g0.04_lr{ft_lr:g}_{other}",
                          lambda: self.control_model(0.04, other), ft_lr,
                          {"density": 0.04, "init": other, "pretrained": False})
        log("study complete")


def report(out_dir=OUT_DIR, markdown=False, ae_dir=None):
    out_dir = Path(out_dir)
    ae_dir = Path(ae_dir) if ae_dir else out_dir
    choices_path = out_dir / "choices.json"
    if not choices_path.exists():
        print("no choices.json yet: the learning-rate selection has not finished")
        return
    choices = json.loads(choices_path.read_text())
    init, ae_lr, ft_lr = choices["init"], choices["ae_lr"], choices["ft_lr"]
    ae_suffix = ("" if choices["ae_epochs"] == 10 else f"_e{choices['ae_epochs']}") + (
        "" if choices.get("ae_weight_decay", 0.002) == 0.002 else
        f"_wd{choices['ae_weight_decay']:g}") + (
        f"_drop{choices['ae_lr_drop']}" if choices.get("ae_lr_drop") else "") + (
        f"_s{choices['seed']}" if choices.get("seed") else "")
    print(f"autoencoder {choices['ae_epochs']} epochs lr {ae_lr}; fine-tuning "
          f"{choices['ft_epochs']} epochs lr {ft_lr}; init {init}")
    if markdown:
        print("| γ | pretraining MSE (ours) | paper | test % pretrained (ours) | paper | "
              "test % no pretraining (ours) | best-val epoch (pre / none) |")
        print("|---|---|---|---|---|---|---|")
    else:
        print(f"{'γ':>5} | {'MSE (ours)':>10} {'MSE paper':>9} | {'pretrained %':>12} "
              f"{'paper %':>7} | {'control %':>9} | {'AE s/ep':>7} {'FT s/ep':>7}")
    for density in sorted(DENSITIES, reverse=True):
        ae = ae_dir / f"ae_g{density:g}_lr{ae_lr:g}_{init}{ae_suffix}.json"
        ft = out_dir / f"ft_g{density:g}_lr{ft_lr:g}_{init}.json"
        ctl = out_dir / f"control_g{density:g}_lr{ft_lr:g}_{init}.json"
        ae, ft, ctl = (json.loads(p.read_text()) if p.exists() else None for p in (ae, ft, ctl))
        paper_mse, paper_acc = PAPER.get(density, (None, None))
        cell = lambda r, k, f: (f % (100 * r[k]) if r else "-")   # noqa: E731
        if markdown:
            mse = f"{ae['test_mse']:.2e}" if ae else "-"
            pmse = f"{paper_mse:.2e}" if paper_mse else "-"
            print(f"| {density:g} | {mse} | {pmse} | "
                  f"{cell(ft, 'test_acc_at_best_val', '%.2f')} | {paper_acc or '-'} | "
                  f"{cell(ctl, 'test_acc_at_best_val', '%.2f')} | "
                  f"{ft['best_val_epoch'] if ft else '-'} / {ctl['best_val_epoch'] if ctl else '-'} |")
            continue
        print(f"{density:>5g} | {ae['test_mse'] if ae else float('nan'):>10.3e} "
              f"{paper_mse if paper_mse else float('nan'):>9.2e} | "
              f"{cell(ft, 'test_acc_at_best_val', '%.2f'):>12} "
              f"{paper_acc if paper_acc else '-':>7} | "
              f"{cell(ctl, 'test_acc_at_best_val', '%.2f'):>9} | "
              f"{ae['seconds_per_epoch'] if ae else float('nan'):>7.1f} "
              f"{ft['train_seconds_per_epoch'] if ft else float('nan'):>7.1f}")


def compare(dirs):
    """Every γ = 0.04 pretrained fine-tuning run in ``dirs``, and the validation choice.

    The choice across configurations is the run with the highest best-epoch validation
    accuracy (ties: the earlier directory); its test accuracy is the figure to report."""
    rows = []
    for d in map(Path, dirs):
        choices = json.loads((d / "choices.json").read_text()) if (d / "choices.json").exists() \
            else {}
        for f in sorted(d.glob("ft_g0.04_*.json")):
            r = json.loads(f.read_text())
            ae_mse = r.get("ae_test_mse")
            if ae_mse is None:   # runs of earlier sittings: the autoencoder JSON beside them
                suffix = ("" if choices.get("ae_epochs", 10) == 10 else
                          f"_e{choices['ae_epochs']}") + (
                    "" if choices.get("ae_weight_decay", 0.002) == 0.002 else
                    f"_wd{choices['ae_weight_decay']:g}")
                ae_path = d / f"ae_g0.04_lr{r.get('ae_lr', 0.3):g}_{r['init']}{suffix}.json"
                ae_mse = json.loads(ae_path.read_text())["test_mse"] if ae_path.exists() else None
            schedule = r.get("lr_schedule", "step")
            if schedule == "step":
                schedule = f"step@{r['lr_step']}" if r.get("lr_step") else "constant"
            rows.append({"dir": d.name, "run": r["run"], "ae_epochs": r.get(
                "ae_epochs", choices.get("ae_epochs")), "ae_wd": r.get(
                "ae_weight_decay", choices.get("ae_weight_decay")), "ae_test_mse": ae_mse,
                "ft": f"{r['epochs']} ep lr {r['lr']:g} {schedule}"
                      + (f" wd {r['weight_decay']:g}" if r.get("weight_decay") else "")
                      + (f" drop {r['dropout']:g}" if r.get("dropout") else "")
                      + (f" in-drop {r['input_dropout']:g}" if r.get("input_dropout") else "")
                      + (f" smooth {r['label_smoothing']:g}" if r.get("label_smoothing") else "")
                      + (" centered" if r.get("center") else "")
                      + (f" AE-noise {r['ae_corruption']:g}" if r.get("ae_corruption") else "")
                      + (f" {r['pattern']}" if r.get("pattern", "per_unit") != "per_unit" else "")
                      + (f" batch {r['batch_size']}" if r.get("batch_size", 100) != 100 else "")
                      + (f" seed {r['seed']}" if r.get("seed") else ""),
                "val": r["best_val_acc"], "epoch": r["best_val_epoch"],
                "test": r["test_acc_at_best_val"], "final_test": r["final_test_acc"]})
    if not rows:
        print("no γ = 0.04 fine-tuning runs in", " ".join(map(str, dirs)))
        return None
    chosen = max(rows, key=lambda r: r["val"])
    print("| dir | run | AE epochs | AE wd | AE test MSE | fine-tuning | best val % (epoch) "
          "| test % at best val | final test % |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        mark = " **(chosen)**" if r is chosen else ""
        mse = f"{r['ae_test_mse']:.2e}" if r["ae_test_mse"] is not None else "-"
        print(f"| {r['dir']} | {r['run']}{mark} | {r['ae_epochs']} | {r['ae_wd']:g} | {mse} | "
              f"{r['ft']} | {100 * r['val']:.2f} ({r['epoch']}) | {100 * r['test']:.2f} | "
              f"{100 * r['final_test']:.2f} |")
    print(f"validation choice: {chosen['dir']}/{chosen['run']} — val {100 * chosen['val']:.2f} %, "
          f"test {100 * chosen['test']:.2f} % (best test of all runs: "
          f"{100 * max(r['test'] for r in rows):.2f} %)")
    return chosen


def ae_stats(paths):
    """Weight scale and hidden saturation of pretrained autoencoders (.h5), on validation."""
    import minidnn.data
    from minidnn.pretraining import load_pretrained
    x = minidnn.data.load("mnist").val.flatten()
    print("| autoencoder | weight rms | max abs weight | mean hidden | saturated (< 0.02 or > 0.98) "
          "| validation MSE |")
    print("|---|---|---|---|---|---|")
    for path in paths:
        unit = load_pretrained(path).units[0]
        w = unit.params["data"] if "data" in unit.params else unit.params["W"]
        y = unit.encode(x)
        print(f"| {Path(path).stem} | {np.sqrt(np.mean(w.astype(np.float64) ** 2)):.3f} | "
              f"{np.abs(w).max():.2f} | {y.mean():.3f} | {100 * np.mean((y < 0.02) | (y > 0.98)):.1f} % "
              f"| {unit.reconstruction_error(x):.2e} |")


def main(argv=None):
    args = parse_args(argv)
    if args.ae_stats:
        ae_stats(args.ae_stats)
        return 0
    if args.compare:
        compare(args.compare)
        return 0
    if args.report:
        report(args.out_dir, args.markdown, args.ae_dir)
        return 0
    Study(args).run()
    report(args.out_dir, ae_dir=args.ae_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
