"""Do two trees train bit-identical RBMs? Five seeded fits, parameters hashed.

    python bench/rbm_same_bits.py --against 2bad77b [--threads 1]

Each tree runs in its own clean process (``git archive`` of the commit for
``--against``): 784x500 and 784x123 RBMs on 3,000 MNIST images, 2 epochs each,
PCD-1 without and with momentum and weight decay, CD-1, CD-2 with sampled
reconstructions, PCD-1 at batch 37. Printed: each fit's sha256 of W, visible and
hidden biases (first 16 hex digits) and its per-epoch history, then SAME or
DIFFERENT per fit.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

WORKER = r"""
import hashlib, json, sys, numpy as np
import minidnn
minidnn.configure_threads(int(sys.argv[1]))
from minidnn import data
from minidnn.pretraining import BernoulliRBM, PretrainConfig
x = np.ascontiguousarray(data.load("mnist", progress=False).train.x.reshape(-1, 784))[:3000]
fits = {"pcd": dict(persistent=True, momentum=0.0, final_momentum=0.0, weight_decay=0.0),
        "pcd_momentum_decay": dict(persistent=True, momentum=0.5, final_momentum=0.9,
                                   weight_decay=2e-4),
        "cd1": dict(persistent=False), "cd2_sampled": dict(persistent=False, k=2,
                                                           sample_reconstruction=True),
        "pcd_batch37_784x123": dict(persistent=True, batch_size=37)}
out = {}
for name, kw in fits.items():
    base = dict(epochs=2, lr=0.1, batch_size=100, k=1, monitor_size=0)
    base.update(kw)
    rbm = BernoulliRBM(784, 123 if "123" in name else 500, rng=0)
    history = rbm.fit(x, PretrainConfig(**base), seed=3)
    digest = hashlib.sha256()
    for key in sorted(rbm.params):
        digest.update(rbm.params[key].tobytes())
    out[name] = {"sha256": digest.hexdigest()[:16],
                 "history": [{k: v for k, v in r.items() if k != "seconds"} for r in history]}
print(json.dumps(out))
"""


def clean_env(threads: int, tree: Path) -> dict:
    env = {"PATH": os.pathsep.join([os.path.dirname(sys.executable), "/usr/bin", "/bin"]),
           "HOME": os.environ.get("HOME", "/tmp"), "LANG": "C.UTF-8", "PYTHONPATH": str(tree)}
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[var] = str(threads)
    for var in ("MINIDNN_CACHE", "MINIDNN_DATA"):
        if os.environ.get(var):
            env[var] = os.environ[var]
    return env


def run(tree: Path, threads: int) -> dict:
    done = subprocess.run([sys.executable, "-c", WORKER, str(threads)],
                          cwd=tree,
                          env=clean_env(threads, tree), capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"worker in {tree} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", required=True, help="commit to compare with")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="rbm-bits-") as tmp:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.against],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        ours, theirs = run(ROOT, args.threads), run(Path(tmp), args.threads)
    same = True
    for name in ours:
        equal = ours[name] == theirs[name]
        same &= equal
        print(f"{name:<22} this tree {ours[name]['sha256']}  {args.against} "
              f"{theirs[name]['sha256']}  {'SAME' if equal else 'DIFFERENT'}")
    print("all fits bit-identical" if same else "some fits differ")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
