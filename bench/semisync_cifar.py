"""Technique 4 study: the two tables of Hori, Sekiya & Takenaka on a CPU-sized VGG.

Table 1 (one seed): sync, semi-sync, dropout, BN on FC, BN on conv, BN on both.
Table 2 (several seeds, on the BN-on-conv model): sync / sync+dropout /
semi-sync / semi-sync+dropout, mean ± sample std.

Protocol (paper: VGG-16 at 224×224, 50 epochs; here scaled, see --help):
lr 0.001, momentum 0.9, batch 32, no weight decay, inputs standardised per
channel with the training subset's mean and std; a validation split cut from
the CIFAR-10 training set chooses the epoch (the best validation accuracy);
test accuracy is reported at that epoch and at the last one.

Resumable run by run: each finished run writes ``RESULTS/<run>.json`` and is
never recomputed; an interrupted run resumes from its per-epoch checkpoint
(``*.ckpt.h5``, git-ignored). ``--report`` prints the tables and draws the
accuracy-vs-epoch PNG from the JSON files.

    python bench/semisync_cifar.py                  # protocol p2: run what is missing, in order
    python bench/semisync_cifar.py --report         # tables + PNG (+ _report.txt)
    python bench/semisync_cifar.py --protocol p1 --report   # last sitting's smaller study

Protocols (each has its own results folder, so finished runs of one are
never mixed with another's):

* ``p1`` (sitting 14): ``vgg-cifar:width=4,fc=256`` (fc6/fc7 in 16 groups),
  5,000 train / 2,000 val, 8 epochs, seeds 0-4, table 1 first.
  Results in ``results/semisync_cifar/``.
* ``p2`` (sitting 15, the default): ``vgg-cifar:width=8,fc=1024`` (one
  eighth of VGG-16's conv widths, fc6 64→1024 and fc7 1024→1024 in 32
  groups each, as the issue suggests), 16,000 train / 5,000 val, 8 epochs;
  table 2 (BN on conv) over seeds 0, 1, 2 first (sync and semi-sync
  without dropout for every seed, then the two with dropout), then table
  1's other configs at seed 0. Results in ``results/semisync_cifar_p2/``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tarfile
import time
from pathlib import Path

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))

from minidnn import architectures, io, training  # noqa: E402
from minidnn.optimizers import SGD  # noqa: E402
from minidnn.semisync import SemiSyncSGD  # noqa: E402
from minidnn.training import evaluate, fit  # noqa: E402

RESULTS = BENCH_DIR / "results" / "semisync_cifar"

#: protocol tag -> settings (results folder, net, data, epochs, seeds, run order)
PROTOCOLS = {
    "p1": {"results": "semisync_cifar", "width": 4, "fc": 256, "n_train": 5000, "n_val": 2000,
           "epochs": 8, "seeds": [0, 1, 2, 3, 4], "order": "table1_first"},
    "p2": {"results": "semisync_cifar_p2", "width": 8, "fc": 1024, "n_train": 16000,
           "n_val": 5000, "epochs": 8, "seeds": [0, 1, 2], "order": "table2_first"},
}
ARCHIVES = (Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar-10-binary.tar.xz",
            Path("/work/shared/data/cifar-10-binary.tar.xz"))
ARCHIVE = next((a for a in ARCHIVES if a.exists()), ARCHIVES[-1])
CACHE = Path("/work/artifacts/issue12_cifar10_uint8.npz")

#: name -> (architecture options, semi-sync?)
CONFIGS = {
    "sync":              ("", False),
    "semi":              ("", True),
    "dropout":           ("dropout=0.5", False),
    "bn_fc":             ("bn=fc", False),
    "bn_conv":           ("bn=conv", False),
    "bn_both":           ("bn=both", False),
    "bn_conv+dropout":       ("bn=conv,dropout=0.5", False),
    "bn_conv+semi":          ("bn=conv", True),
    "bn_conv+semi+dropout":  ("bn=conv,dropout=0.5", True),
}
TABLE1 = ["sync", "semi", "dropout", "bn_fc", "bn_conv", "bn_both"]
TABLE2 = {("sync", "no dropout"): "bn_conv", ("sync", "dropout"): "bn_conv+dropout",
          ("semi-sync", "no dropout"): "bn_conv+semi", ("semi-sync", "dropout"): "bn_conv+semi+dropout"}


def run_order(seeds: list[int], order: str = "table1_first") -> list[tuple[str, int]]:
    """``table1_first``: table 1 and table 2 with the first seed, then table 2's
    seeds one by one. ``table2_first``: table 2 first (its sync /
    semi-sync pair without dropout over every seed, then the pair with
    dropout), then table 1's other configs with the first seed."""
    if order == "table2_first":
        # the no-dropout pair (the paper's main comparison) over all seeds, then
        # the dropout pair, so a cut-short study still has sync vs semi paired
        runs = [(c, s) for pair in (("bn_conv", "bn_conv+semi"),
                                    ("bn_conv+dropout", "bn_conv+semi+dropout"))
                for s in seeds for c in pair]
        return runs + [(c, seeds[0]) for c in TABLE1 if (c, seeds[0]) not in runs]
    runs = [(c, seeds[0]) for c in TABLE1 + ["bn_conv+dropout", "bn_conv+semi", "bn_conv+semi+dropout"]]
    for s in seeds[1:]:
        runs += [(c, s) for c in TABLE2.values()]
    return runs


# -- data ------------------------------------------------------------------------------

def _read_archive(path: Path):
    """The official binary layout: records of 1 label byte + 3072 pixel bytes."""
    xs, ys = {"train": [], "test": []}, {"train": [], "test": []}
    with tarfile.open(path) as tar:
        for member in sorted(tar.getmembers(), key=lambda m: m.name):
            base = os.path.basename(member.name)
            if not base.endswith(".bin"):
                continue
            raw = np.frombuffer(tar.extractfile(member).read(), np.uint8).reshape(-1, 3073)
            split = "test" if base.startswith("test") else "train"
            ys[split].append(raw[:, 0].astype(np.int64))
            xs[split].append(raw[:, 1:].reshape(-1, 3, 32, 32))
    return (np.concatenate(xs["train"]), np.concatenate(ys["train"]),
            np.concatenate(xs["test"]), np.concatenate(ys["test"]))


def load_cifar10():
    """(x_train, y_train, x_test, y_test) as uint8 NCHW / int64.

    Uses ``minidnn.data.load("cifar10")`` when the package has it (issue 8),
    else reads ../shared/data/cifar-10-binary.tar.xz itself (cached as .npz)."""
    try:
        from minidnn import data
        splits = data.load("cifar10", progress=False)
        x_tr = np.concatenate([splits.train.x, splits.val.x]) if len(splits.val) else splits.train.x
        y_tr = np.concatenate([splits.train.y, splits.val.y]) if len(splits.val) else splits.train.y
        x_tr, x_te = np.asarray(x_tr), np.asarray(splits.test.x)
        if x_tr.dtype != np.uint8:  # the loader scales; bring it back to 0..255 codes
            x_tr = np.rint(x_tr * 255 if x_tr.max() <= 1.0 else x_tr).astype(np.uint8)
            x_te = np.rint(x_te * 255 if x_te.max() <= 1.0 else x_te).astype(np.uint8)
        return x_tr, np.asarray(y_tr), x_te, np.asarray(splits.test.y), "minidnn.data.load('cifar10')"
    except Exception:
        pass
    if CACHE.exists():
        z = np.load(CACHE)
        return z["x_train"], z["y_train"], z["x_test"], z["y_test"], f"{CACHE} (from {ARCHIVE.name})"
    arrays = _read_archive(ARCHIVE.resolve())
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    np.savez(CACHE, x_train=arrays[0], y_train=arrays[1], x_test=arrays[2], y_test=arrays[3])
    return (*arrays, str(ARCHIVE.name))


def make_splits(n_train: int, n_val: int, n_test: int, data_seed: int = 12):
    """A fixed training subset and validation split cut from CIFAR-10's training set
    (same for every run), standardised with the subset's per-channel mean/std."""
    x_tr, y_tr, x_te, y_te, source = load_cifar10()
    order = np.random.default_rng(data_seed).permutation(len(x_tr))
    val_idx, train_idx = order[:n_val], order[n_val:n_val + n_train]
    xt = x_tr[train_idx].astype(np.float32)
    mean = xt.mean(axis=(0, 2, 3), keepdims=True)
    std = xt.std(axis=(0, 2, 3), keepdims=True)

    def prep(x):
        return ((x.astype(np.float32) - mean) / std).astype(np.float32)
    test = (prep(x_te[:n_test]), y_te[:n_test])
    return (prep(x_tr[train_idx]), y_tr[train_idx]), (prep(x_tr[val_idx]), y_tr[val_idx]), test, source


# -- one run ---------------------------------------------------------------------------

def run_one(config: str, seed: int, args, splits, source: str) -> dict:
    arch_opts, semi = CONFIGS[config]
    spec = f"vgg-cifar:width={args.width},fc={args.fc}" + (f",{arch_opts}" if arch_opts else "")
    model = architectures.build(spec, n_classes=10, input_shape=(3, 32, 32), seed=seed)
    if semi:
        optimizer = SemiSyncSGD(args.lr, args.momentum, layers=["fc6", "fc7"], seed=seed)
    else:
        optimizer = SGD(args.lr, args.momentum)
    train, val, test = splits
    stem = RESULTS / f"{config}_s{seed}"
    ckpt, best_file = Path(f"{stem}.ckpt.h5"), Path(f"{stem}.best.h5")
    best = json.loads(Path(f"{stem}.best.json").read_text()) if Path(f"{stem}.best.json").exists() \
        else {"epoch": 0, "val_acc": -1.0}
    t0 = time.perf_counter()
    history = None
    # an interrupted run continues from its checkpoint's epoch (fit refuses to
    # be asked for fewer epochs than a checkpoint already holds)
    done = training._checkpoint_epoch(ckpt) if ckpt.exists() else None
    for epoch in range(max(1, done or 1), args.epochs + 1):
        # one epoch per call: fit resumes from the checkpoint, so the weights of the
        # best validation epoch can be kept between epochs
        history = fit(model, train, val, epochs=epoch, batch_size=args.batch_size,
                      optimizer=optimizer, seed=seed, checkpoint=str(ckpt), resume=True,
                      progress=False, log=None)
        last = history.last()
        if last["epoch"] == epoch and last["val_acc"] > best["val_acc"]:
            best = {"epoch": epoch, "val_acc": last["val_acc"]}
            io.save(model, str(best_file))
            Path(f"{stem}.best.json").write_text(json.dumps(best))
        print(f"  {config} seed {seed} epoch {last['epoch']}: train_acc {last['train_acc']:.4f} "
              f"val_acc {last['val_acc']:.4f} ({last['seconds']:.0f}s)", flush=True)
    final_test = evaluate(model, test)["accuracy"]
    best_test = evaluate(io.load(str(best_file)), test)["accuracy"]
    result = {
        "config": config, "seed": seed, "architecture": spec, "semi_sync": semi,
        "semi_sync_groups": ({name: len(g) for name, g in optimizer.neuron_groups.items()}
                             if semi else None),
        "lr": args.lr, "momentum": args.momentum, "batch_size": args.batch_size,
        "epochs": args.epochs, "n_train": len(train[0]), "n_val": len(val[0]),
        "n_test": len(test[0]), "data": f"CIFAR-10 (JPEG-derived copy) via {source}",
        "history": history.epochs, "best_epoch": best["epoch"], "best_val_acc": best["val_acc"],
        "test_acc_at_best_val": best_test, "test_acc_final": final_test,
        "seconds_this_session": time.perf_counter() - t0,
        "protocol": args.protocol,
    }
    out = RESULTS / f"{config}_s{seed}.json"
    out.write_text(json.dumps(result, indent=1))
    for path in (ckpt, best_file, Path(f"{stem}.best.json")):
        path.unlink(missing_ok=True)
    return result


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return pid != os.getpid()
    except (OSError, ValueError):
        return False


# -- report ------------------------------------------------------------------------------

def load_results() -> dict:
    results = {}
    for path in sorted(RESULTS.glob("*_s*.json")):
        if path.name.endswith(".best.json"):
            continue
        r = json.loads(path.read_text())
        results[(r["config"], r["seed"])] = r
    return results


def report(png: Path) -> str:
    results = load_results()
    if not results:
        return "no finished runs yet"
    any_r = next(iter(results.values()))
    lines = [f"setup: {any_r['architecture'].split(',bn')[0].split(',dropout')[0]}, "
             f"lr {any_r['lr']}, momentum {any_r['momentum']}, batch {any_r['batch_size']}, "
             f"{any_r['epochs']} epochs, {any_r['n_train']} train / {any_r['n_val']} val / "
             f"{any_r['n_test']} test, {any_r['data']}", "",
             "Table 1 (seed %s): test accuracy at the best-validation epoch (last epoch)" % min(s for _, s in results)]
    seed0 = min(s for _, s in results)
    for c in TABLE1:
        r = results.get((c, seed0))
        lines.append(f"  {c:<10} " + (f"{r['test_acc_at_best_val']:.4f} (ep {r['best_epoch']})  "
                                      f"last {r['test_acc_final']:.4f}" if r else "not run yet"))
    lines += ["", "Table 2 (BN on conv): test accuracy at the best-validation epoch, mean ± sample std (n)"]
    for (rule, drop), c in TABLE2.items():
        accs = [r["test_acc_at_best_val"] for (cc, _), r in results.items() if cc == c]
        lasts = [r["test_acc_final"] for (cc, _), r in results.items() if cc == c]
        if accs:
            std = np.std(accs, ddof=1) if len(accs) > 1 else float("nan")
            lstd = np.std(lasts, ddof=1) if len(lasts) > 1 else float("nan")
            lines.append(f"  {rule:<9} {drop:<10} {np.mean(accs):.4f} ± {std:.4f} (n={len(accs)})"
                         f"   last epoch {np.mean(lasts):.4f} ± {lstd:.4f}")
        else:
            lines.append(f"  {rule:<9} {drop:<10} not run yet")
    lines += ["", "Semi-sync minus sync on the same seed (BN on conv), test accuracy at the "
                  "best-validation epoch, percentage points"]
    for drop, (c_sync, c_semi) in (("no dropout", ("bn_conv", "bn_conv+semi")),
                                   ("dropout", ("bn_conv+dropout", "bn_conv+semi+dropout"))):
        seeds = sorted(s for (c, s) in results if c == c_sync and (c_semi, s) in results)
        if not seeds:
            lines.append(f"  {drop:<10} no seed with both runs yet")
            continue
        d = np.array([100 * (results[(c_semi, s)]["test_acc_at_best_val"]
                             - results[(c_sync, s)]["test_acc_at_best_val"]) for s in seeds])
        std = f"{np.std(d, ddof=1):.2f}" if len(d) > 1 else "nan"
        lines.append(f"  {drop:<10} {d.mean():+.2f} ± {std} over seeds {seeds} "
                     f"(per seed: {', '.join(f'{x:+.2f}' for x in d)}; semi-sync ahead on "
                     f"{int((d > 0).sum())} of {len(d)})")
    lines += ["", "Last-epoch training accuracy (running mean over the epoch) / validation accuracy, per run"]
    for (c, s), r in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        last = r["history"][-1]
        lines.append(f"  {c:<22} seed {s}: train {last['train_acc']:.4f}  val {last['val_acc']:.4f}  "
                     f"best val {r['best_val_acc']:.4f} at epoch {r['best_epoch']}")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, axes = plt.subplots(1, 3, figsize=(17, 4.8))
        for c in TABLE1:
            r = results.get((c, seed0))
            if r:
                axes[0].plot([e["epoch"] for e in r["history"]], [e["val_acc"] for e in r["history"]],
                             marker="o", ms=3, label=c)
        axes[0].set_title(f"Table 1 runs (seed {seed0})")
        for (rule, drop), c in TABLE2.items():
            runs = [r for (cc, _), r in results.items() if cc == c]
            if runs:
                n = min(len(r["history"]) for r in runs)
                acc = np.array([[e["val_acc"] for e in r["history"][:n]] for r in runs])
                ep = np.arange(1, n + 1)
                axes[1].plot(ep, acc.mean(0), marker="o", ms=3, label=f"{rule}, {drop} (n={len(runs)})")
                if len(runs) > 1:
                    axes[1].fill_between(ep, acc.mean(0) - acc.std(0, ddof=1),
                                         acc.mean(0) + acc.std(0, ddof=1), alpha=0.2)
        axes[1].set_title("Table 2 runs: BN on conv (mean ± std over seeds)")
        for (rule, drop), c in TABLE2.items():
            runs = [r for (cc, _), r in results.items() if cc == c]
            if runs:
                n = min(len(r["history"]) for r in runs)
                for key, style in (("train_acc", "--"), ("val_acc", "-")):
                    acc = np.array([[e[key] for e in r["history"][:n]] for r in runs]).mean(0)
                    line, = axes[2].plot(np.arange(1, n + 1), acc, style, marker="o", ms=3,
                                         label=f"{rule}, {drop} ({key.split('_')[0]})",
                                         color=axes[1].lines[list(TABLE2.values()).index(c)].get_color()
                                         if len(axes[1].lines) == len(TABLE2) else None)
        axes[2].set_title("Table 2: training (dashed) vs validation (solid), seed mean")
        for ax in axes:
            ax.set_xlabel("epoch")
            ax.set_ylabel("accuracy" if ax is axes[2] else "validation accuracy")
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
        fig.suptitle("Semi-synchronous FC updates, VGG-style net on CIFAR-10 (" +
                     any_r["architecture"].split(",bn")[0].split(",dropout")[0] + ")", fontsize=10)
        fig.tight_layout()
        fig.savefig(png, dpi=110)
        lines.append(f"\ncurves: {png}")
    except ImportError:
        lines.append("\n(matplotlib missing: no PNG)")
    return "\n".join(lines)


def main(argv=None) -> int:
    global RESULTS
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--protocol", choices=sorted(PROTOCOLS), default="p2",
                   help="study settings and results folder (see above); default %(default)s")
    p.add_argument("--width", type=int, default=None, help="first-stage channels (VGG-16: 64); default: the protocol's")
    p.add_argument("--fc", type=int, default=None, help="units of fc6 and fc7 (VGG-16: 4096); default: the protocol's")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--n-train", type=int, default=None, help="training subset (of 50,000 less the validation cut)")
    p.add_argument("--n-val", type=int, default=None)
    p.add_argument("--n-test", type=int, default=10000)
    p.add_argument("--seeds", type=int, nargs="+", default=None)
    p.add_argument("--lr", type=float, default=0.001)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--only", nargs="*", default=None, help="run only these configs")
    p.add_argument("--report", action="store_true", help="print the tables and write the PNG")
    p.add_argument("--results-dir", default=None,
                   help="default bench/results/<the protocol's folder>; needed when a setting "
                        "is changed from the protocol's, so runs of different settings never mix")
    args = p.parse_args(argv)
    proto = PROTOCOLS[args.protocol]
    changed = [k for k in ("width", "fc", "epochs", "n_train", "n_val", "seeds")
               if getattr(args, k) is not None and getattr(args, k) != proto[k]]
    for key in ("width", "fc", "epochs", "n_train", "n_val", "seeds"):
        if getattr(args, key) is None:
            setattr(args, key, proto[key])
    if changed and not args.results_dir and not args.report:
        p.error(f"--{changed[0].replace('_', '-')} differs from protocol {args.protocol}; give "
                f"--results-dir too, so its runs do not mix with the protocol's")
    RESULTS = Path(args.results_dir) if args.results_dir else BENCH_DIR / "results" / proto["results"]
    RESULTS.mkdir(parents=True, exist_ok=True)
    png = RESULTS.parent / f"{RESULTS.name}_curves.png"
    txt = RESULTS.parent / f"{RESULTS.name}_report.txt"
    if args.report:
        text = report(png)
        txt.write_text(text + "\n")
        print(text)
        return 0
    splits = None
    for config, seed in run_order(args.seeds, proto["order"]):
        if args.only and config not in args.only:
            continue
        if (RESULTS / f"{config}_s{seed}.json").exists():
            continue
        lock = RESULTS / f"{config}_s{seed}.lock"
        if lock.exists() and _alive(int(lock.read_text() or 0)):
            continue  # another process of this study is on it
        lock.write_text(str(os.getpid()))
        if splits is None:
            *splits, source = make_splits(args.n_train, args.n_val, args.n_test)
            print(f"protocol {args.protocol} ({RESULTS}); data: {source}; train {splits[0][0].shape}, "
                  f"val {splits[1][0].shape}, test {splits[2][0].shape}", flush=True)
        print(f"run {config} seed {seed}", flush=True)
        r = run_one(config, seed, args, splits, source)
        lock.unlink(missing_ok=True)
        print(f"done {config} seed {seed}: best epoch {r['best_epoch']} val {r['best_val_acc']:.4f} "
              f"test {r['test_acc_at_best_val']:.4f} (last {r['test_acc_final']:.4f})", flush=True)
        txt.write_text(report(png) + "\n")
    print(report(png))
    return 0


if __name__ == "__main__":
    sys.exit(main())
