"""OpenBLAS's idle workers asleep ("passive") or spinning ("active") between calls, in one
process, rounds interleaved (sitting 24; ``minidnn.threads.set_blas_wait``).

    python bench/blas_wait_ab.py --threads 2 --rounds 9 --steps 100            # quiet
    python bench/blas_wait_ab.py --threads 2 --rounds 9 --only rbm

Arms, each from its own seeded state, the policy switched before every timed block
(``set_blas_wait`` restarts the pool; the switch itself is outside the timers):

* ``rbm``: the RBM 784x500 PCD-1 step of ``speed_vs_torch.py``'s recipe (``train_rows``
  then ``SGD.step``, batch 100, lr 0.1, persistent chains), ``--steps`` steps a block,
  on the first ``--images`` MNIST images; the two policies' RBMs end bit-identical
  (checked: the policy moves no bits);
* ``mlp``: one ``fit`` epoch of the 784-500-10 ReLU net (batch 100, SGD 0.1, momentum
  0.9) on the first ``--images`` images, both policies from the same seed (the same
  bits, checked);
* ``gemm``: one 2048^3 sgemm per round (the control: the machine's speed that round).

Reported per arm and policy: the median, and the median of the rounds' paired ratios
passive/active. Results: bench/results/blas_wait_ab.json (or --out).
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

POLICIES = ("passive", "active")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--only", nargs="+", default=["rbm", "mlp"], choices=["rbm", "mlp"])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "blas_wait_ab.json")
    args = parser.parse_args(argv)

    import minidnn
    from minidnn import architectures, data
    from minidnn.optimizers import SGD
    from minidnn.pretraining import BernoulliRBM, PretrainConfig
    from minidnn.threads import set_blas_wait
    threads = minidnn.configure_threads(args.threads)
    train = data.load("mnist", progress=False).train
    x = np.ascontiguousarray(train.x.reshape(-1, 784))[:args.images]
    x_img, y = train.x[:args.images], train.y[:args.images]
    n_batches = len(x) // 100
    config = PretrainConfig(epochs=1, lr=0.1, momentum=0.0, final_momentum=0.0, weight_decay=0.0,
                            batch_size=100, k=1, persistent=True, monitor_size=0)

    def make_rbm():
        rbm = BernoulliRBM(784, 500, rng=0)
        rbm.init_from_data(x)
        rng = np.random.default_rng(0)
        return SimpleNamespace(rbm=rbm, rng=rng, opt=SGD(config.lr),
                               holder=SimpleNamespace(layers=[rbm]),
                               state=rbm.new_train_state(x, config, rng),
                               order=rng.permutation(len(x)), cursor=0)

    def rbm_steps(s, steps):
        for _ in range(steps):
            b = s.cursor % n_batches
            s.cursor += 1
            idx = np.sort(s.order[b * 100:(b + 1) * 100])
            s.rbm.train_rows(x, idx, s.rng, config, s.state)
            s.opt.step(s.holder)

    def mlp_epoch():
        model = architectures.build("mlp:784-500-10:relu", input_shape=x_img.shape[1:], seed=0)
        t0 = time.perf_counter()
        minidnn.fit(model, (x_img, y), epochs=1, batch_size=100,
                    optimizer=minidnn.SGD(lr=0.1, momentum=0.9), seed=0, progress=False, log=None)
        return time.perf_counter() - t0, model

    rbms = {p: make_rbm() for p in POLICIES}
    for p in POLICIES:
        set_blas_wait(p)
        if "rbm" in args.only:
            rbm_steps(rbms[p], 20)                   # compile, warm up
        if "mlp" in args.only:
            mlp_epoch()
    A = np.random.default_rng(1).random((2048, 2048), dtype=np.float32)
    C = np.empty_like(A)
    times = {arm: {p: [] for p in POLICIES} for arm in args.only + ["gemm"]}
    last_mlp = {}
    for r in range(args.rounds):
        for p in (POLICIES if r % 2 == 0 else POLICIES[::-1]):
            set_blas_wait(p)
            if "rbm" in args.only:
                t0 = time.perf_counter()
                rbm_steps(rbms[p], args.steps)
                times["rbm"][p].append((time.perf_counter() - t0) / args.steps)
            if "mlp" in args.only:
                seconds, last_mlp[p] = mlp_epoch()
                times["mlp"][p].append(seconds)
            t0 = time.perf_counter()
            np.matmul(A, A, out=C)
            times["gemm"][p].append(2 * 2048 ** 3 / (time.perf_counter() - t0) / 1e9)
    set_blas_wait("passive")
    a, b = rbms.values()
    same = {}
    if "rbm" in args.only:
        same["rbm"] = all(np.array_equal(a.rbm.params[k], b.rbm.params[k]) for k in a.rbm.params) \
            and np.array_equal(a.state["chain"], b.state["chain"])
    if "mlp" in args.only:
        pa, pb = (last_mlp[p] for p in POLICIES)
        same["mlp"] = all(np.array_equal(u, v) for la, lb in zip(pa.layers, pb.layers)
                          for u, v in zip(la.params.values(), lb.params.values()))
    med = statistics.median
    print(f"threads {args.threads}, {args.rounds} rounds, {args.images} images; bits: "
          + ", ".join(f"{k} {'SAME' if v else 'DIFFER'}" for k, v in same.items()))
    summary = {}
    for arm, by in times.items():
        unit = "GFLOP/s" if arm == "gemm" else ("ms a step" if arm == "rbm" else "s an epoch")
        scale = 1 if arm == "gemm" else (1e3 if arm == "rbm" else 1)
        ratios = [q / s for q, s in zip(by["passive"], by["active"])]
        faster = sum((q > s) if arm == "gemm" else (q < s) for q, s in zip(by["passive"], by["active"]))
        summary[arm] = {"median": {p: med(v) for p, v in by.items()},
                        "median_paired_ratio_passive_over_active": med(ratios),
                        "passive_better_rounds": faster}
        print(f"  {arm:<5} passive {scale * med(by['passive']):8.3f}  active "
              f"{scale * med(by['active']):8.3f} {unit}; paired ratio passive/active "
              f"{med(ratios):.3f}, passive better in {faster} of {args.rounds}")
    if "rbm" in args.only:
        flops = 5 * 2 * 784 * 500 * 100
        for p in POLICIES:
            rate = flops / med(times["rbm"][p]) / 1e9
            print(f"  rbm {p}: {rate:.1f} GFLOP/s = {100 * rate / med(times['gemm'][p]):.0f} % of "
                  f"that policy's 2048^3 median")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "threads": threads, "rounds": args.rounds, "steps": args.steps, "images": args.images,
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "note": "one process, policies interleaved; taken under load unless stated",
        "same_bits": same, "summary": summary, "raw": times}, indent=1))
    return 0 if all(same.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
