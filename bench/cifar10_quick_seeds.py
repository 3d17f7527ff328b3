"""Cifar10_quick on Caffe's recipe over several seeds: runs, then mean ± sd.

    python bench/cifar10_quick_seeds.py [--seeds 0 1 2] [--frameworks minidnn torch]
        [--threads 1] [--order shuffle|file] [--augment] [--summary-only]

Each (framework, seed) is one run of ``bench/cifar10_quick.py --caffe-split
--mean image --caffe-bias --seed S --tag _caffe50k[_file]_sS`` (minidnn's
seed 0 keeps sitting 16's tag ``_caffe50k``; PyTorch's tags carry ``_cf``, its
twin in Caffe's momentum form across the lr drop since sitting 18, so
sitting 16's ``cifar10_quick_torch_caffe50k.json`` in PyTorch's form is not
counted), in its own clean process, one after the other (never two at once). Runs are resumable: a finished run's result JSON
(``bench/results/cifar10_quick_<framework><tag>.json``) is read back, never
recomputed, and an interrupted one continues from its per-epoch checkpoint in
/work/artifacts. The seed sets the initial weights (Caffe's Gaussian fillers,
drawn once and copied into the PyTorch twin) and, with ``--order shuffle``,
the per-epoch permutation; with ``--order file`` every epoch reads the 50,000
images in file order as Caffe's LMDB does, so the seed is the initial weights
only. After the runs (or with ``--summary-only``) the table of every run
and the mean ± sample standard deviation of the test accuracy and of the
training time per framework are printed and written to
``bench/results/cifar10_quick_seeds<order suffix><_aug>.json``.

``--augment`` (sitting 20) adds the standard CIFAR augmentation (random crop
after 4-pixel zero padding, horizontal flip; ``bench/cifar10_quick.py
--augment``) to the same recipe, both frameworks drawing the same crops and
flips from the same seeded Generator; tags gain ``_aug`` and the summary goes
to ``cifar10_quick_seeds_aug.json``. It is beyond Caffe's recipe: report it as
"recipe + augmentation", never as the recipe's figure.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"


def run_tag(framework: str, seed: int, order: str, augment: bool = False) -> str:
    base = "_caffe50k" + ("_cf" if framework == "torch" else "") + (
        "_file" if order == "file" else "") + ("_aug" if augment else "")
    if framework == "minidnn" and seed == 0 and order == "shuffle" and not augment:
        return base                     # sitting 16's run
    return f"{base}_s{seed}"


def result_path(framework: str, seed: int, order: str, augment: bool = False) -> Path:
    return RESULTS / f"cifar10_quick_{framework}{run_tag(framework, seed, order, augment)}.json"


def command(framework: str, seed: int, order: str, threads: int,
            augment: bool = False) -> list[str]:
    cmd = [sys.executable, str(BENCH / "cifar10_quick.py"), "--framework", framework,
           "--caffe-split", "--mean", "image", "--caffe-bias", "--seed", str(seed),
           "--threads", str(threads), "--tag", run_tag(framework, seed, order, augment)]
    return cmd + (["--order", "file"] if order == "file" else []) + (
        ["--augment"] if augment else [])


def summary_path(order: str, augment: bool = False) -> Path:
    return RESULTS / (f"cifar10_quick_seeds{'_file' if order == 'file' else ''}"
                      f"{'_aug' if augment else ''}.json")


def summary(frameworks, seeds, order: str, augment: bool = False) -> dict:
    table = {}
    for framework in frameworks:
        runs = []
        for seed in seeds:
            path = result_path(framework, seed, order, augment)
            if not path.exists():
                continue
            r = json.loads(path.read_text())
            runs.append({"seed": seed, "test_accuracy": r["test_accuracy"],
                         "test_loss": r["test_loss"],
                         "train_seconds_total": r["train_seconds_total"],
                         "threads": r.get("threads"), "order": r.get("order", "shuffle"),
                         "augment": r.get("augment"),
                         "momentum_form": r.get("momentum_form", "caffe" if framework == "minidnn"
                                                else "pytorch"),
                         "file": str(path.relative_to(BENCH.parent))})
        acc = [100 * r["test_accuracy"] for r in runs]
        sec = [r["train_seconds_total"] for r in runs]
        table[framework] = {
            "runs": runs, "n": len(runs),
            "test_accuracy_mean_pct": statistics.mean(acc) if acc else None,
            "test_accuracy_sd_pct": statistics.stdev(acc) if len(acc) > 1 else None,
            "train_seconds_mean": statistics.mean(sec) if sec else None,
            "missing_seeds": [s for s in seeds if s not in [r["seed"] for r in runs]]}
    return {"recipe": "Caffe cifar10_quick: lr 0.001 momentum 0.9 wd 0.004 batch 100, 4,000 it "
                      "then 1,000 at lr 0.0001; 50k train (Caffe's split), mean image, bias lr x2 "
                      "decayed; Caffe fillers" + (
                          " + AUGMENTATION (random crop, 4-pixel zero padding, horizontal flip; "
                          "beyond Caffe's recipe)" if augment else ""), "order": order,
            "augment": bool(augment),
            "data": "CIFAR-10 (JPEG-derived copy), 10k test",
            "timing_note": "training seconds at the given threads on a loaded 2-core machine "
                           "(other engineers' jobs; nice 19): not a speed comparison",
            "frameworks": table}


def print_summary(s: dict) -> None:
    print(f"Cifar10_quick, Caffe's recipe{' + augmentation' if s.get('augment') else ''}, "
          f"order {s['order']} ({s['data']})")
    for framework, t in s["frameworks"].items():
        for r in t["runs"]:
            print(f"  {framework:8s} seed {r['seed']}: {100 * r['test_accuracy']:.2f}% test, "
                  f"{r['train_seconds_total']:.0f} s training ({r['file']})")
        if t["n"]:
            sd = t["test_accuracy_sd_pct"]
            print(f"  {framework:8s} mean over {t['n']} seed(s): {t['test_accuracy_mean_pct']:.2f}"
                  + (f" ± {sd:.2f}" if sd is not None else "") + " % (sample sd)"
                  + (f"; missing seeds {t['missing_seeds']}" if t["missing_seeds"] else ""))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--frameworks", nargs="+", choices=("minidnn", "torch"),
                        default=["minidnn", "torch"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--order", choices=("shuffle", "file"), default="shuffle")
    parser.add_argument("--augment", action="store_true",
                        help="recipe + random crop/flip augmentation (a separate table)")
    parser.add_argument("--summary-only", action="store_true")
    args = parser.parse_args(argv)
    if not args.summary_only:
        # minidnn's seeds first (the figure), then the PyTorch twin's
        for framework in args.frameworks:
            for seed in args.seeds:
                done = result_path(framework, seed, args.order, args.augment)
                if done.exists():
                    print(f"{framework} seed {seed}: done ({done})", flush=True)
                    continue
                cmd = command(framework, seed, args.order, args.threads, args.augment)
                print("running " + " ".join(cmd), flush=True)
                subprocess.run(cmd, check=True)
    s = summary(args.frameworks, args.seeds, args.order, args.augment)
    print_summary(s)
    out = summary_path(args.order, args.augment)
    out.write_text(json.dumps(s, indent=1))
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
