"""In-process A/B: the RBM 784x500 PCD-1 step with its gradient GEMM writing the SGD step
directly (``beta``/``c`` of one sgemm) against the step of this tree (gradient into
``grads["W"]``, then the optimizer's fused pass), and each GEMM of the step timed alone.

    python bench/rbm_fused_update_ab.py --threads 2 --rounds 9 --steps 100    # ~1 min
    python bench/rbm_fused_update_ab.py --threads 1 --clock cpu               # under load

The step of this tree (``lean``): h·Wᵀ, σ+Bernoulli, [v0; vk]·W, the hidden pass, then
G = [v0; vk]ᵀ[−p0/n; pk/m] into ``grads["W"]`` and ``SGD.step`` (its one-call plan:
v ← μv − η(G + λW); W ← W + v, or W ← W − η(G + λW) at μ = 0).

``fused``: the same forward calls, then one ``scipy.linalg.blas.sgemm`` with K = 2·batch
that writes the step itself: at μ = 0, W ← (1 − ηλ)·W − η·G (``beta = 1 − ηλ``, ``c = W``,
no temporary, no update pass); at μ > 0, v ← μ·v − η·G (``beta = μ``, ``c = velocity``),
then one pass v ← v − ηλW; W ← W + v. The biases take the optimizer's kernel as before.
SciPy's sgemm runs on SciPy's own OpenBLAS (NumPy's matmul on NumPy's), so the arm also
shows what a second BLAS pool costs between NumPy's GEMMs at 2 threads; ``fused_all``
runs every GEMM of the step through SciPy's BLAS (one pool).

Rounds rotate the arms; each arm trains its own RBM from the same start, and the script
checks that the arms' parameters after the rounds agree to float32 rounding (not bit
for bit: another summation order). Printed per arm: median ms a step, GFLOP/s, % of
the 2048^3 rate of the same rounds; then each GEMM at the step's shapes alone. Every
figure on the one clock (``--clock cpu``: process CPU time, for 1 thread under load).
Results: bench/results/rbm_fused_update_ab.json (or --out).
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

STEP_FLOPS = 5 * 2 * 784 * 500 * 100     # the speed_vs_torch accounting, a 100-row step


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--momentum", type=float, default=0.0)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--arms", nargs="+", default=["lean", "fused", "fused_all"])
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    parser.add_argument("--out", type=Path,
                        default=ROOT / "bench" / "results" / "rbm_fused_update_ab.json")
    args = parser.parse_args(argv)

    import minidnn
    threads = minidnn.configure_threads(args.threads)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    from scipy.linalg.blas import sgemm
    from minidnn import data
    from minidnn.kernels.rbm_kernels import (_hidden_pass_kernel, _sigmoid_bernoulli_kernel,
                                             draw_keys)
    from minidnn.kernels.sgd_update import sgd_update
    from minidnn.optimizers import SGD
    from minidnn.pretraining import BernoulliRBM, PretrainConfig

    x = np.ascontiguousarray(data.load("mnist", progress=False).train.x.reshape(-1, 784))[:args.images]
    config = PretrainConfig(epochs=1, lr=0.1, momentum=args.momentum,
                            final_momentum=args.momentum, weight_decay=args.weight_decay,
                            batch_size=100, k=1, persistent=True, monitor_size=0)
    n_batches = len(x) // 100

    def make():
        rbm = BernoulliRBM(784, 500, rng=0)
        rbm.init_from_data(x)
        rng = np.random.default_rng(0)
        opt = SGD(config.lr, args.momentum, args.weight_decay)
        s = SimpleNamespace(rbm=rbm, rng=rng, opt=opt, holder=SimpleNamespace(layers=[rbm]),
                            state=rbm.new_train_state(x, config, rng),
                            order=rng.permutation(len(x)), cursor=0,
                            velocity=np.zeros_like(rbm.params["W"]),
                            hyper=(np.float32(config.lr), np.float32(args.momentum),
                                   np.float32(args.weight_decay)))
        return s

    def lean(s):
        b = s.cursor % n_batches
        s.cursor += 1
        idx = np.sort(s.order[b * 100:(b + 1) * 100])
        s.rbm.train_rows(x, idx, s.rng, config, s.state)
        s.opt.step(s.holder)

    def fused_step(s, all_scipy):
        rbm = s.rbm
        lr, mu, wd = s.hyper
        b = s.cursor % n_batches
        s.cursor += 1
        idx = np.sort(s.order[b * 100:(b + 1) * 100])
        W, bv, c = rbm.params["W"], rbm.params["visible_bias"], rbm.params["hidden_bias"]
        buf = rbm._lean_buffers(100, 100)
        lean_ = buf.lean
        h = s.state["chain"]
        np.take(x, idx, axis=0, out=buf.v[:100])
        keys = draw_keys(s.rng, 2)
        if all_scipy:   # C-order arrays as their Fortran transposes: no copies
            sgemm(1.0, W.T, h.T, beta=0.0, c=buf.pre_v.T, overwrite_c=True, trans_a=True)
        else:
            np.matmul(h, W.T, out=buf.pre_v)
        _sigmoid_bernoulli_kernel(buf.pre_v, bv, keys[0], buf.v[100:], 0, lean_.one)
        if all_scipy:
            sgemm(1.0, W.T, buf.v.T, beta=0.0, c=buf.p.T, overwrite_c=True)
        else:
            np.matmul(buf.v, W, out=buf.p)
        _hidden_pass_kernel(buf.p, c, 100, keys[1], h, lean_.pos, lean_.neg, 0, 100, 0, 100)
        # Wᵀ (Fortran view of C-order W) = Pᵀ·V: a = buf.p.T (500x200), b = buf.v.T (784x200)ᵀ
        if mu == 0:
            sgemm(-lr, buf.p.T, buf.v.T, beta=np.float32(1) - lr * wd, c=W.T,
                  overwrite_c=True, trans_b=True)
        else:
            sgemm(-lr, buf.p.T, buf.v.T, beta=mu, c=s.velocity.T, overwrite_c=True,
                  trans_b=True)
            if wd:
                s.velocity -= (lr * wd) * W
            W += s.velocity
        rbm.grads["visible_bias"] = np.matmul(lean_.weights, buf.v, out=lean_.grad_b)
        rbm.grads["hidden_bias"] = np.matmul(buf.ones, buf.p, out=lean_.grad_c)
        for name in ("visible_bias", "hidden_bias"):
            v = s.opt.velocity.setdefault(f"rbm/{name}", np.zeros_like(rbm.params[name]))
            sgd_update(rbm.params[name], rbm.grads[name], v if mu else None, lr, mu, 0.0)

    def one_step_check(momentum, weight_decay, steps=3):
        """From one state, ``steps`` lean steps and ``steps`` fused steps (NumPy forward: the
        same samples bit for bit while W agrees): the largest difference of the W steps
        against the largest W step, and against a float64 NumPy twin of the update rule."""
        import dataclasses
        nonlocal config
        saved = config
        config = dataclasses.replace(config, momentum=momentum, final_momentum=momentum,
                                     weight_decay=weight_decay)
        a, b = make(), make()
        for t in (a, b):
            t.opt = SGD(config.lr, momentum, weight_decay)
            t.hyper = (np.float32(config.lr), np.float32(momentum), np.float32(weight_decay))
        W0 = a.rbm.params["W"].astype(np.float64)
        vel64 = np.zeros_like(W0)
        w64 = W0.copy()
        for _ in range(steps):
            lean(a)
            # the twin: v ← μv − η(G + λW); W ← W + v in float64, G from the lean step's buffers
            buf = a.rbm._lean_buffers(100, 100)
            G = buf.v.astype(np.float64).T @ buf.p.astype(np.float64)
            vel64 = momentum * vel64 - config.lr * (G + weight_decay * w64)
            w64 = w64 + vel64
            fused_step(b, False)
        config = saved
        step = np.abs(a.rbm.params["W"] - W0).max()
        return {"max_abs_W_step": float(step),
                "fused_vs_lean": float(np.abs(b.rbm.params["W"] - a.rbm.params["W"]).max()),
                "lean_vs_float64": float(np.abs(a.rbm.params["W"] - w64).max()),
                "fused_vs_float64": float(np.abs(b.rbm.params["W"] - w64).max()),
                "same_chain": bool(np.array_equal(a.state["chain"], b.state["chain"]))}

    checks = {f"momentum {m}, weight decay {l}": one_step_check(m, l)
              for m, l in ((0.0, 0.0), (0.0, 0.002), (0.9, 0.002))}
    for name, c in checks.items():
        print(f"3 steps, {name}: largest W step {c['max_abs_W_step']:.3g}; |fused - lean| "
              f"{c['fused_vs_lean']:.3g}, |lean - float64 twin| {c['lean_vs_float64']:.3g}, "
              f"|fused - float64 twin| {c['fused_vs_float64']:.3g}; same chain {c['same_chain']}")

    arms = {"lean": lean, "fused": lambda s: fused_step(s, False),
            "fused_all": lambda s: fused_step(s, True)}
    arms = {k: arms[k] for k in args.arms}
    states = {name: make() for name in arms}
    for name, fn in arms.items():           # JIT, buffers, BLAS pools
        for _ in range(5):
            fn(states[name])
    A = np.random.default_rng(1).random((2048, 2048), dtype=np.float32)
    C = np.empty_like(A)
    np.matmul(A, A, out=C)
    times = {name: [] for name in arms}
    rates = []
    names = list(arms)
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            fn, s = arms[name], states[name]
            t0 = clock()
            for _ in range(args.steps):
                fn(s)
            times[name].append((clock() - t0) / args.steps)
        t0 = clock()
        np.matmul(A, A, out=C)
        rates.append(2 * 2048 ** 3 / (clock() - t0) / 1e9)
    peak = statistics.median(rates)
    print(f"threads {args.threads}, clock {args.clock}, momentum {args.momentum}, weight decay "
          f"{args.weight_decay}, {args.rounds} rounds x {args.steps} steps; 2048^3 sgemm median "
          f"{peak:.1f} GFLOP/s")
    summary = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        summary[name] = {"ms_per_step": 1e3 * med, "gflops": STEP_FLOPS / med / 1e9,
                         "percent_of_peak": 100 * STEP_FLOPS / med / 1e9 / peak,
                         "round_ms": [1e3 * t for t in ts]}
        print(f"{name:<10} {1e3 * med:7.3f} ms a step  {STEP_FLOPS / med / 1e9:6.1f} GFLOP/s = "
              f"{summary[name]['percent_of_peak']:4.1f} % of peak   rounds "
              + " ".join(f"{1e3 * t:.2f}" for t in ts))
    if "lean" in times:
        for name in times:
            if name != "lean":
                wins = sum(a < b for a, b in zip(times[name], times["lean"]))
                print(f"{name} faster than lean in {wins} of {args.rounds} rounds; median "
                      f"ratio {statistics.median(a / b for a, b in zip(times[name], times['lean'])):.3f}")
    # the arms trained from one start on the same batches and keys: equal to rounding
    ref = states[names[0]].rbm.params
    diffs = {name: {k: float(np.max(np.abs(states[name].rbm.params[k] - ref[k]))) for k in ref}
             for name in names[1:]}
    for name, d in diffs.items():
        print(f"{name} vs {names[0]} after {5 + args.rounds * args.steps} steps, largest "
              f"|difference|: " + ", ".join(f"{k} {v:.3g}" for k, v in d.items()))

    # each GEMM of the step alone, at the step's shapes
    rng = np.random.default_rng(2)
    W = (0.01 * rng.standard_normal((784, 500))).astype(np.float32)
    h = (rng.random((100, 500)) < 0.5).astype(np.float32)
    v = (rng.random((200, 784)) < 0.3).astype(np.float32)
    p = rng.random((200, 500)).astype(np.float32)
    pre_v, P, G = np.empty((100, 784), np.float32), np.empty((200, 500), np.float32), \
        np.empty((784, 500), np.float32)
    vel = np.zeros_like(W)
    gemms = {
        "h@W.T (100x500x784), numpy": (lambda: np.matmul(h, W.T, out=pre_v), 2 * 100 * 500 * 784),
        "[v0;vk]@W (200x784x500), numpy": (lambda: np.matmul(v, W, out=P), 2 * 200 * 784 * 500),
        "[v0;vk].T@p (784x200x500), numpy": (lambda: np.matmul(v.T, p, out=G), 2 * 784 * 200 * 500),
        "same, scipy beta=0.9 c=velocity": (lambda: sgemm(-0.1, p.T, v.T, beta=0.9, c=vel.T,
                                                          overwrite_c=True, trans_b=True),
                                            2 * 784 * 200 * 500),
        "h@W.T (100x500x784), scipy": (lambda: sgemm(1.0, W.T, h.T, beta=0.0, c=pre_v.T,
                                                     overwrite_c=True, trans_a=True),
                                       2 * 100 * 500 * 784),
        "[v0;vk]@W (200x784x500), scipy": (lambda: sgemm(1.0, W.T, v.T, beta=0.0, c=P.T,
                                                         overwrite_c=True), 2 * 200 * 784 * 500),
    }
    alone = {}
    print(f"each GEMM alone (median of {args.rounds} x 50 calls, {args.clock} clock):")
    for name, (fn, flops) in gemms.items():
        for _ in range(10):
            fn()
        meds = []
        for _ in range(args.rounds):
            t0 = clock()
            for _ in range(50):
                fn()
            meds.append((clock() - t0) / 50)
        med = statistics.median(meds)
        alone[name] = {"ms": 1e3 * med, "gflops": flops / med / 1e9,
                       "percent_of_peak": 100 * flops / med / 1e9 / peak}
        print(f"  {name:<36} {1e3 * med:6.3f} ms  {flops / med / 1e9:6.1f} GFLOP/s = "
              f"{alone[name]['percent_of_peak']:4.1f} % of peak")
    three = sum(alone[k]["ms"] for k in list(gemms)[:3])
    print(f"  the step's three GEMMs alone (numpy): {three:.3f} ms = "
          f"{100 * STEP_FLOPS / (three / 1e3) / 1e9 / peak:.1f} % of peak; 75 % of peak is a "
          f"{1e3 * STEP_FLOPS / (0.75 * peak * 1e9):.3f} ms step")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "threads": threads, "clock": args.clock, "momentum": args.momentum,
        "weight_decay": args.weight_decay, "rounds": args.rounds, "steps": args.steps,
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "note": "one process, arms interleaved; taken under load unless stated",
        "gemm_peak_gflops_median": peak, "summary": summary, "differences": diffs,
        "one_step_checks": checks,
        "gemms_alone": alone, "gemm_rates": rates}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
