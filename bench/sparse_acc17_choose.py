"""Print the γ = 0.04 fine-tuning configuration of highest best-epoch validation accuracy among
the given --out-dirs (seed-0 runs of ``sparse_mnist_table.py``), as ``DIR OPTION…``: the
directory and the options that reproduce it (for ``bench/sparse_acc17.sh full``'s seeds 1, 2).
Only validation accuracy enters the choice; ties go to the earlier directory.

    python bench/sparse_acc17_choose.py --spread DIR DIR_s1 DIR_s2   # mean ± sd over seeds"""
import json
import sys
from pathlib import Path


def options(run):
    """The sparse_mnist_table.py options that set this run's knobs (defaults left out)."""
    out = []
    if run.get("ae_epochs", 10) != 10:   # the stages' autoencoder: 10 epochs, weight decay 0.01
        out += ["--ae-epochs", str(run["ae_epochs"])]
    if run.get("epochs", 100) != 100:   # the stages' fine-tuning length is 100 epochs
        out += ["--ft-epochs", str(run["epochs"])]
    if run.get("center"):
        out.append("--ft-center")
    if run.get("ae_corruption"):
        out += ["--ae-corruption", f"{run['ae_corruption']:g}"]
    if run.get("dropout"):
        out += ["--ft-dropout", f"{run['dropout']:g}"]
    if run.get("input_dropout"):
        out += ["--ft-input-dropout", f"{run['input_dropout']:g}"]
    if run.get("label_smoothing"):
        out += ["--ft-label-smoothing", f"{run['label_smoothing']:g}"]
    return out


def main(dirs):
    best = None
    for d in dirs:
        path = Path(d) / "ft_g0.04_lr0.2_fan_in.json"
        if not path.exists():
            print(f"{path}: missing", file=sys.stderr)
            continue
        run = json.loads(path.read_text())
        print(f"{d}: best val {100 * run['best_val_acc']:.2f} % (epoch {run['best_val_epoch']})",
              file=sys.stderr)
        if best is None or run["best_val_acc"] > best[1]["best_val_acc"]:
            best = (d, run)
    if best is None:
        sys.exit("no runs to choose from")
    print(" ".join([best[0].rstrip("/"), *options(best[1])]))


def spread(dirs):
    """Mean ± sample sd of best-epoch validation and test-at-best-validation over the runs."""
    runs = [json.loads((Path(d) / "ft_g0.04_lr0.2_fan_in.json").read_text()) for d in dirs]
    for d, r in zip(dirs, runs):
        print(f"{d}: seed {r['seed']}, val {100 * r['best_val_acc']:.2f} % (epoch "
              f"{r['best_val_epoch']}), test {100 * r['test_acc_at_best_val']:.2f} %")
    for key, label in (("best_val_acc", "validation"), ("test_acc_at_best_val", "test")):
        v = [100 * r[key] for r in runs]
        sd = (sum((x - sum(v) / len(v)) ** 2 for x in v) / (len(v) - 1)) ** 0.5 if len(v) > 1 else 0
        print(f"{label}: {sum(v) / len(v):.2f} ± {sd:.2f} % over {len(v)} seeds")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--spread"]:
        spread(sys.argv[2:])
    else:
        main(sys.argv[1:])
