"""A/B of two source trees, layer by layer: ``bench/profile_layers.py`` run
alternately on each, in fresh processes, and the medians over the rounds.

    python bench/profile_ab.py --base /tmp/base_tree [--arch lenet] [--rounds 5]
                               [--repeats 10] [--out bench/results/profile_ab.json]

``--base`` is a checkout of the earlier commit (e.g. ``git archive COMMIT | tar
-x -C /tmp/base_tree``); the other side is this tree. Both sides run
single-threaded under the same load, interleaved (base, this, base, this,
...), with CPU time as the clock (see profile_layers.py), so the ratio is a
fair guide on a loaded machine; absolute times are not.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from _common import interleaved_ab  # noqa: E402


def run_once(tree: Path, arch: str, repeats: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS="1",
               OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "p.json"
        # each tree's own script: it puts its own tree first on sys.path
        subprocess.run([sys.executable, str(tree / "bench" / "profile_layers.py"), "--arch",
                        arch, "--repeats", str(repeats), "--out", str(out)],
                       env=env, check=True, cwd=tree, stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())[0]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True, help="the earlier source tree")
    parser.add_argument("--arch", default="lenet", choices=("lenet", "cifar10-quick"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    sides, runs = interleaved_ab(
        parser, args.base, args.rounds, lambda tree: run_once(tree, args.arch, args.repeats),
        lambda runs: f"base {runs['base'][-1]['step_ms']:.1f} ms, this {runs['this'][-1]['step_ms']:.1f} ms")
    layers = [row["layer"] for row in runs["this"][0]["layers"]]
    summary = {"arch": args.arch, "rounds": args.rounds, "repeats": args.repeats,
               "clock": "process_time, 1 thread, interleaved fresh processes",
               "base": str(sides["base"]), "step_ms": {}, "layers": []}
    for name in sides:
        summary["step_ms"][name] = float(np.median([run["step_ms"] for run in runs[name]]))
    for i, layer in enumerate(layers):
        row = {"layer": layer}
        for name in sides:
            row[name + "_ms"] = float(np.median(
                [run["layers"][i]["forward_ms"] + run["layers"][i]["backward_ms"]
                 for run in runs[name]]))
        summary["layers"].append(row)
    print(f"{args.arch}: step base {summary['step_ms']['base']:.1f} ms, this "
          f"{summary['step_ms']['this']:.1f} ms, ratio "
          f"{summary['step_ms']['this'] / summary['step_ms']['base']:.2f} (medians of "
          f"{args.rounds} interleaved rounds)")
    for row in summary["layers"]:
        print(f"  {row['layer']:<52} base {row['base_ms']:7.2f}  this {row['this_ms']:7.2f} ms")
    if args.out:
        args.out.write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
