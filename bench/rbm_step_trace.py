"""Where one RBM 784x500 PCD-1 step's time goes *inside the step*: every operation of the
real step timed in place, beside the same operation repeated alone, in one process.

    python bench/rbm_step_trace.py --threads 2 --rounds 7 --steps 100     # quiet, ~40 s
    python bench/rbm_step_trace.py --threads 1 --rounds 5 --steps 50      # under load

``bench/rbm_step_parts.py`` (deleted in sitting 22) timed each part alone and called
"rest" what the whole step took beyond their sum (sitting 20, quiet, 2 threads: 0.97 ms of 4.86). This script
closes that gap. It replays the fit loop's PCD-1 step (``train_unit`` → ``train_rows``
→ ``_lean_step`` → ``SGD.step``) as the same calls on the same buffers in the same
order, with a ``perf_counter`` between every two of them, and checks that the replay
ends with bit-identical parameters to the real step. Per operation it reports:

* ``in step``: its median time inside the traced step;
* ``alone``: the same call repeated back to back (warm caches, BLAS's threads awake);
* ``in step - alone``: what the step's context adds to it;

and for the whole step: the real (untraced) step, the traced one, and "glue" = the
real step minus the traced operations (the Python between them: the wrapper checks,
buffer look-ups, the optimizer's bookkeeping). Per-thread CPU of the traced rounds
(``/proc/self/task/*/schedstat``): the calling thread and the others (OpenBLAS's
workers) against wall time, to show whether the second core works or spins while
the σ kernels run on the first. Rounds rotate the three timers (real, traced, alone)
and one 2048^3 sgemm gives the GEMM peak of the same run. Results:
bench/results/rbm_step_trace.json (or --out).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench._common import thread_cpu_ns  # noqa: E402

OPS = ("sort idx", "cd_gradients prologue", "gather (gather_rows)", "key draw",
       "gemm h@W.T (100x500x784)", "sigma+Bernoulli visible (100x784)",
       "gemm [v0;vk]@W (200x784x500)", "hidden pass (sigma p0, sigma+Bernoulli pk)",
       "bias GEMVs", "gemm [v0;vk].T@[p0;pk] (784x200x500)", "SGD step")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="cpu: process CPU time (time.process_time) for every timer, "
                             "steadier under load at 1 thread; at 2 threads it adds BLAS's "
                             "spinning worker")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "rbm_step_trace.json")
    args = parser.parse_args(argv)

    import minidnn
    threads = minidnn.configure_threads(args.threads)
    CLOCK = time.perf_counter if args.clock == "wall" else time.process_time
    from minidnn import data
    from minidnn.kernels.rbm_kernels import (_bernoulli_states_kernel, _hidden_pass_kernel,
                                             draw_keys)
    from minidnn.kernels.gather import gather_rows_into as gather_rows
    from minidnn.optimizers import SGD
    from minidnn.pretraining import BernoulliRBM, PretrainConfig

    x = np.ascontiguousarray(data.load("mnist", progress=False).train.x.reshape(-1, 784))[:args.images]
    config = PretrainConfig(epochs=1, lr=0.1, momentum=0.0, final_momentum=0.0, weight_decay=0.0,
                            batch_size=100, k=1, persistent=True, monitor_size=0)
    n_batches = len(x) // 100

    def make():
        rbm = BernoulliRBM(784, 500, rng=0)
        rbm.init_from_data(x)
        rng = np.random.default_rng(0)
        opt = SGD(config.lr)
        return SimpleNamespace(rbm=rbm, rng=rng, opt=opt, holder=SimpleNamespace(layers=[rbm]),
                               state=rbm.new_train_state(x, config, rng),
                               order=rng.permutation(len(x)), cursor=0)

    def real_step(s):
        """train_unit's loop body, as it is."""
        b = s.cursor % n_batches
        s.cursor += 1
        idx = np.sort(s.order[b * 100:(b + 1) * 100])
        stats = s.rbm.train_rows(x, idx, s.rng, config, s.state)
        for key, value in stats.items():
            pass
        s.opt.step(s.holder)

    def traced_step(s, acc):
        """The same calls as real_step for PCD-1 on the lean path, timed one by one."""
        clock = CLOCK
        rbm = s.rbm
        t0 = clock()
        b = s.cursor % n_batches
        s.cursor += 1
        idx = np.sort(s.order[b * 100:(b + 1) * 100])
        t1 = clock()
        W, bv, c = rbm.params["W"], rbm.params["visible_bias"], rbm.params["hidden_bias"]
        buf = rbm._lean_buffers(100, 100)
        lean = buf.lean
        h = s.state["chain"]
        grad_W = rbm.grads["W"]
        t2 = clock()
        gather_rows(x, idx, buf.v[:100])
        t3 = clock()
        keys = draw_keys(s.rng, 2)
        t4 = clock()
        np.matmul(h, W.T, out=buf.pre_v)
        t5 = clock()
        _bernoulli_states_kernel(buf.pre_v, bv, keys[0], buf.v[100:], 0)
        t6 = clock()
        np.matmul(buf.v, W, out=buf.p)
        t7 = clock()
        _hidden_pass_kernel(buf.p, c, 100, keys[1], h, lean.pos, lean.neg, 0, 100, 0, 100)
        t8 = clock()
        rbm.grads["visible_bias"] = np.matmul(lean.weights, buf.v, out=lean.grad_b)
        rbm.grads["hidden_bias"] = np.matmul(buf.ones, buf.p, out=lean.grad_c)
        t9 = clock()
        np.matmul(buf.v.T, buf.p, out=grad_W)
        t10 = clock()
        s.opt.step(s.holder)
        t11 = clock()
        ts = (t0, t1, t2, t3, t4, t5, t6, t7, t8, t9, t10, t11)
        for i, name in enumerate(OPS):
            acc[name] += ts[i + 1] - ts[i]

    # the replay is the real step: same parameters, chain and Generator after 30 steps
    a, b_ = make(), make()
    for _ in range(30):
        real_step(a)
        traced_step(b_, {name: 0.0 for name in OPS})
    same = all(np.array_equal(a.rbm.params[k], b_.rbm.params[k]) for k in a.rbm.params) \
        and np.array_equal(a.state["chain"], b_.state["chain"]) \
        and a.rng.bit_generator.state == b_.rng.bit_generator.state
    print("traced replay = real step, bit for bit" if same else "traced replay DIFFERS")
    if not same:
        return 1

    s = make()
    for _ in range(20):
        real_step(s)
    buf = s.rbm._lean_buffers(100, 100)
    lean = buf.lean
    W, bv, c = s.rbm.params["W"], s.rbm.params["visible_bias"], s.rbm.params["hidden_bias"]
    h = s.state["chain"]
    keys = draw_keys(np.random.default_rng(5), 2)
    # the lone calls write scratch of the step's shapes (the in-place kernels get a fresh
    # copy of their input each time; the copy is timed and subtracted)
    pre_v, p, g = buf.pre_v.copy(), buf.p.copy(), np.empty_like(W)
    v_scr, h_scr = np.empty((100, 784), np.float32), h.copy()
    order = s.order

    def copy_pre_v():
        pre_v[...] = buf.pre_v

    def copy_p():
        p[...] = buf.p

    alone = {
        "sort idx": lambda: np.sort(order[:100]),
        "gather (gather_rows)": lambda: gather_rows(x, np.sort(order[:100]), v_scr),
        "key draw": lambda: draw_keys(s.rng, 2),
        "gemm h@W.T (100x500x784)": lambda: np.matmul(h, W.T, out=pre_v),
        "sigma+Bernoulli visible (100x784)": lambda: (
            copy_pre_v(), _bernoulli_states_kernel(pre_v, bv, keys[0], v_scr, 0)),
        "gemm [v0;vk]@W (200x784x500)": lambda: np.matmul(buf.v, W, out=p),
        "hidden pass (sigma p0, sigma+Bernoulli pk)": lambda: (
            copy_p(), _hidden_pass_kernel(p, c, 100, keys[1], h_scr, lean.pos, lean.neg,
                                          0, 100, 0, 100)),
        "gemm [v0;vk].T@[p0;pk] (784x200x500)": lambda: np.matmul(buf.v.T, buf.p, out=g),
        "bias GEMVs": lambda: (np.matmul(lean.weights, buf.v, out=lean.grad_b),
                               np.matmul(buf.ones, buf.p, out=lean.grad_c)),
        "SGD step": lambda: s.opt.step(s.holder),
        "_copy pre_v": copy_pre_v, "_copy p": copy_p,
    }

    def time_alone(fn):
        fn()
        t0 = CLOCK()
        for _ in range(args.steps):
            fn()
        return (CLOCK() - t0) / args.steps

    A = np.random.default_rng(1).random((2048, 2048), dtype=np.float32)
    C = np.empty_like(A)
    np.matmul(A, A, out=C)
    me = str(threading.get_native_id())      # thread_cpu_ns's keys are str tids
    real_times, traced_times, rates, cpu_main, cpu_other, cpu_wall = [], [], [], [], [], []
    in_step = {name: [] for name in OPS}
    lone = {name: [] for name in alone}
    timers = ("real", "traced", "alone")
    for r in range(args.rounds):
        for which in timers[r % 3:] + timers[:r % 3]:
            if which == "real":
                t0 = CLOCK()
                for _ in range(args.steps):
                    real_step(s)
                real_times.append((CLOCK() - t0) / args.steps)
            elif which == "traced":
                acc = {name: 0.0 for name in OPS}
                c0 = thread_cpu_ns()
                t0, w0 = CLOCK(), time.perf_counter()
                for _ in range(args.steps):
                    traced_step(s, acc)
                traced_times.append((CLOCK() - t0) / args.steps)
                wall = time.perf_counter() - w0
                c1 = thread_cpu_ns()
                for name in OPS:
                    in_step[name].append(acc[name] / args.steps)
                main_ns = c1.get(me, 0) - c0.get(me, 0)
                other_ns = sum(v - c0.get(t, 0) for t, v in c1.items() if t != me)
                cpu_main.append(main_ns / 1e9 / args.steps)
                cpu_other.append(other_ns / 1e9 / args.steps)
                cpu_wall.append(wall / args.steps)
            else:
                for name, fn in alone.items():
                    lone[name].append(time_alone(fn))
        t0 = time.perf_counter()
        np.matmul(A, A, out=C)
        rates.append(2 * 2048 ** 3 / (time.perf_counter() - t0) / 1e9)

    med = statistics.median
    lone_med = {k: med(v) for k, v in lone.items()}
    lone_med["sigma+Bernoulli visible (100x784)"] -= lone_med.pop("_copy pre_v")
    lone_med["hidden pass (sigma p0, sigma+Bernoulli pk)"] -= lone_med.pop("_copy p")
    lone_med["gather (gather_rows)"] -= lone_med["sort idx"]
    in_med = {k: med(v) for k, v in in_step.items()}
    real, traced = med(real_times), med(traced_times)
    peak = med(rates)
    flops = 5 * 2 * 784 * 500 * 100
    ops_sum = sum(in_med.values())
    rows = {}
    print(f"threads {args.threads}, {args.steps} steps x {args.rounds} rounds, {args.clock} clock; "
          f"medians per step (ms)")
    print(f"{'operation':<46} {'in step':>8} {'alone':>8} {'diff':>8}")
    for name in OPS:
        lo = lone_med.get(name)
        rows[name] = {"in_step_s": in_med[name], "alone_s": lo}
        print(f"{name:<46} {1e3 * in_med[name]:8.3f} "
              + (f"{1e3 * lo:8.3f} {1e3 * (in_med[name] - lo):8.3f}" if lo is not None
                 else f"{'':>8} {'':>8}"))
    gemms = [k for k in OPS if k.startswith("gemm")]
    gemm_in, gemm_alone = sum(in_med[k] for k in gemms), sum(lone_med[k] for k in gemms)
    print(f"{'sum of operations':<46} {1e3 * ops_sum:8.3f}")
    print(f"{'traced step (timer calls included)':<46} {1e3 * traced:8.3f}")
    print(f"{'real step':<46} {1e3 * real:8.3f}   ({flops / real / 1e9:.1f} GFLOP/s, "
          f"{100 * flops / real / 1e9 / peak:.0f} % of the 2048^3 rate {peak:.1f})")
    print(f"{'glue = real - sum of operations':<46} {1e3 * (real - ops_sum):8.3f}")
    # the same per round (the real and traced timers of one round run back to back), then
    # the median: a difference of medians moves with every slow round of either timer
    glue_rounds = [r_ - sum(in_step[k][i] for k in OPS) for i, r_ in enumerate(real_times)]
    print(f"{'glue, median of the rounds':<46} {1e3 * med(glue_rounds):8.3f}   (rounds "
          + " ".join(f"{1e3 * g:.2f}" for g in glue_rounds) + ")")
    print(f"GEMMs in step {1e3 * gemm_in:.3f} ms ({flops / gemm_in / 1e9:.1f} GFLOP/s), alone "
          f"{1e3 * gemm_alone:.3f} ms ({flops / gemm_alone / 1e9:.1f} GFLOP/s)")
    print(f"traced rounds per step: wall {1e3 * med(cpu_wall):.3f} ms, CPU calling thread "
          f"{1e3 * med(cpu_main):.3f} ms, other threads {1e3 * med(cpu_other):.3f} ms")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "threads": threads, "steps": args.steps, "rounds": args.rounds, "clock": args.clock,
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "note": "one process, timers interleaved; taken under load unless stated",
        "gemm_peak_gflops_median": peak, "replay_bit_identical": same,
        "real_step_s": real, "traced_step_s": traced, "operations": rows,
        "glue_s": real - ops_sum, "glue_rounds_s": glue_rounds,
        "glue_median_of_rounds_s": med(glue_rounds),
        "cpu_per_step_s": {"wall": med(cpu_wall), "calling_thread": med(cpu_main),
                           "other_threads": med(cpu_other)},
        "raw": {"real": real_times, "traced": traced_times, "in_step": in_step, "alone": lone,
                "gemm_rates": rates}}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
