"""The Python glue of one RBM PCD-1 step (``train_rows`` + ``SGD.step``): the general
path (``BernoulliRBM.LEAN_STEP = False``, sitting 19's) against the lean path, in one
process, interleaved rounds, median CPU µs per step.

    python bench/rbm_step_glue_ab.py [--rounds 21]

Two sizes: an 8×8 RBM at batch 4, whose step is nearly all glue (dispatches, checks,
key draws, the optimizer's bookkeeping), and the 784×500 RBM at batch 100 of the
benchmark. One thread (CPU time: a guide under load). Results:
bench/results/rbm_step_glue_ab.json (or --out).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "rbm_step_glue_ab.json")
    args = parser.parse_args(argv)
    import minidnn
    minidnn.configure_threads(1)
    from minidnn.optimizers import SGD
    from minidnn.pretraining import BernoulliRBM, PretrainConfig

    rng = np.random.default_rng(0)
    out = {}
    for nv, nh, bs, steps in [(8, 8, 4, 400), (784, 500, 100, 40)]:
        x = (rng.random((1000, nv)) < 0.3).astype(np.float32)
        config = PretrainConfig(epochs=1, lr=0.1, momentum=0.0, final_momentum=0.0,
                                weight_decay=0.0, batch_size=bs, k=1, persistent=True,
                                monitor_size=0)
        rbm = BernoulliRBM(nv, nh, rng=0)
        opt = SGD(0.01)
        holder = SimpleNamespace(layers=[rbm])
        state = rbm.new_train_state(x, config, rng)
        idx = np.sort(rng.permutation(1000)[:bs])

        def steps_of(lean):
            BernoulliRBM.LEAN_STEP = lean
            for _ in range(steps):
                rbm.train_rows(x, idx, rng, config, state)
                opt.step(holder)

        default = BernoulliRBM.LEAN_STEP
        try:
            for lean in (False, True, False, True):      # JIT, buffers
                steps_of(lean)
            res = {False: [], True: []}
            for r in range(args.rounds):
                for lean in ((False, True) if r % 2 else (True, False)):
                    c0 = time.process_time()
                    steps_of(lean)
                    res[lean].append((time.process_time() - c0) / steps)
        finally:
            BernoulliRBM.LEAN_STEP = default
        general, lean = (1e6 * statistics.median(res[k]) for k in (False, True))
        name = f"{nv}x{nh} batch {bs}"
        out[name] = {"general_us": general, "lean_us": lean}
        print(f"{name:<20} general {general:8.1f} µs  lean {lean:8.1f} µs CPU per step "
              f"(medians of {args.rounds} interleaved rounds)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                    "note": "1 thread, CPU time, one process; under load unless stated",
                                    "rounds": args.rounds, "results": out}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
