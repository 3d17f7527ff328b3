"""Where one RBM 784x500 PCD-1 step's time goes: each part timed alone, in one process.

    python bench/rbm_step_parts.py [--threads 1] [--repeats 7] [--steps 100]

The parts of ``BernoulliRBM.cd_gradients`` (persistent chain, batch 100) plus the
fit loop's minibatch gather and the SGD step, each run ``--steps`` times on the
arrays a real step uses (a 784x500 RBM after a few steps of training on MNIST):

* GEMMs: ``h @ Wᵀ`` (100x500x784), ``[v0; vk] @ W`` (200x784x500), ``[v0; vk]ᵀ [p0; pk]``
  (784x200x500), the two bias GEMVs;
* non-GEMM: σ + Bernoulli of the visible layer (100x784, Philox uniforms), σ of p0
  and σ + Bernoulli of pk (100x500), both storing the statistics' row weights −1/n
  and 1/m (``scale``; sitting 18 scaled them in two more passes), the key draws, the
  minibatch gather (sorted index and ``np.take`` into the [v0; vk] buffer; sitting 18
  copied ``x[idx]`` into it), the fused SGD step on W and the biases;
* the whole step (``train_batch`` + ``SGD.step`` + the gather) on the path of
  sitting 17 (``SPLIT_ROWS = False``: the products on multi-threaded BLAS, the σ
  kernels on one thread), whose parts the list above is, so "rest" = whole − parts
  is the Python glue; and the whole step on this tree's default path, the rows
  split over the threads (``BernoulliRBM._split_step``, the same as the other at
  one thread), whose parts run inside the worker threads and are not timed apart;
  and (sitting 20) the whole step with ``SIGMA_SPLIT = True``: the lean step's σ
  passes on the caller and one helper thread, the products still on BLAS's threads.
  The whole step runs ``BernoulliRBM.LEAN_STEP``'s path (the default).

Rounds run the parts in rotation; medians of the rounds (wall and CPU seconds per
step) are reported, each as a share of the whole step, with the 2048^3 GEMM rate of
the same rounds. Taken on a loaded machine this is a guide to shares, not a speed
figure. ``--variant`` picks the code path where this tree has more than one.
Results: bench/results/rbm_step_parts.json (or --out).
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
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "rbm_step_parts.json")
    args = parser.parse_args(argv)

    import minidnn
    threads = minidnn.configure_threads(args.threads)
    from minidnn import data
    from minidnn.kernels.rbm_kernels import draw_key, sigmoid_bernoulli, sigmoid_bias
    from minidnn.optimizers import SGD
    from minidnn.pretraining import BernoulliRBM, PretrainConfig

    x = np.ascontiguousarray(data.load("mnist", progress=False).train.x.reshape(-1, 784))[:args.images]
    config = PretrainConfig(epochs=1, lr=0.1, momentum=0.0, final_momentum=0.0, weight_decay=0.0,
                            batch_size=100, k=1, persistent=True, monitor_size=0)
    rbm = BernoulliRBM(784, 500, rng=0)
    rbm.init_from_data(x)
    rng = np.random.default_rng(0)
    opt = SGD(config.lr)
    holder = SimpleNamespace(layers=[rbm])
    state = rbm.new_train_state(x, config, rng)
    order = rng.permutation(len(x))
    cursor = [0]

    def whole(split=False, sigma_split=False):
        rbm.SPLIT_ROWS = split
        rbm.SIGMA_SPLIT = sigma_split       # sitting 20: the lean step's σ passes on 2 threads
        b = cursor[0] % (len(x) // 100)
        cursor[0] += 1
        rbm.train_rows(x, np.sort(order[b * 100:(b + 1) * 100]), rng, config, state)
        opt.step(holder)

    for _ in range(20):     # JIT, caches, a trained-looking W
        whole()
        whole(split=True)
        whole(sigma_split=True)
    W, b, c = rbm.params["W"], rbm.params["visible_bias"], rbm.params["hidden_bias"]
    buf = rbm._cd_buffers(100, 100)
    h = state["chain"]
    g = rbm.grads["W"]
    pos, neg = np.float32(-0.01), np.float32(0.01)
    key = draw_key(rng)
    p_scratch = buf.p.copy()
    # the products write into scratch of the same shapes: writing the step's own buffers
    # (raw pre-activations into p, then vᵀ·that into the gradient the SGD part applies)
    # made W overflow within a few rounds
    pre_v_out, p_out, g_out = np.empty_like(buf.pre_v), np.empty_like(buf.p), np.empty_like(g)
    pre_v_scratch = buf.pre_v.copy()
    h_scratch = h.copy()

    def gather():
        b = cursor[0] % (len(x) // 100)
        cursor[0] += 1
        np.take(x, np.sort(order[b * 100:(b + 1) * 100]), axis=0, out=buf.v[:100])

    def visible_sample():
        pre_v_scratch[...] = buf.pre_v          # the kernel works in place: fresh input each time
        sigmoid_bernoulli(pre_v_scratch, b, key, buf.v[100:])

    def hidden_sigmoids():
        p_scratch[...] = buf.p
        sigmoid_bias(p_scratch[:100], c, scale=pos)
        sigmoid_bernoulli(p_scratch[100:], c, key, h_scratch, scale=neg)

    def copy_only():                            # what the two fresh-input copies cost
        pre_v_scratch[...] = buf.pre_v
        p_scratch[...] = buf.p

    def keys():
        draw_key(rng)
        draw_key(rng)

    parts = {
        "gemm h@W.T (100x500x784)": lambda: np.matmul(h, W.T, out=pre_v_out),
        "gemm [v0;vk]@W (200x784x500)": lambda: np.matmul(buf.v, W, out=p_out),
        "gemm [v0;vk].T@[p0;pk] (784x200x500)": lambda: np.matmul(buf.v.T, buf.p, out=g_out),
        "bias GEMVs": lambda: (buf.row_scale(pos, neg) @ buf.v, buf.ones @ buf.p),
        "sigma+Bernoulli visible (100x784)": visible_sample,
        "sigma p0 + sigma+Bernoulli pk (2x100x500)": hidden_sigmoids,
        "key draws": keys,
        "gather minibatch (sort, np.take)": gather,
        "SGD step": lambda: opt.step(holder),
        "_copies (subtracted from the sigma parts)": copy_only,
    }
    sigma_key = "whole step, sigma passes on two threads"
    timers = {"whole step": whole, **parts, "whole step, rows split over the threads":
              lambda: whole(split=True), sigma_key: lambda: whole(sigma_split=True)}

    def timed(fn):
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(args.steps):
            fn()
        return (time.perf_counter() - t0) / args.steps, (time.process_time() - c0) / args.steps

    A = np.random.default_rng(1).random((2048, 2048), dtype=np.float32)
    C = np.empty_like(A)
    wall = {k: [] for k in timers}
    cpu = {k: [] for k in timers}
    rates = []
    names = list(timers)
    for r in range(args.repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            w, cp = timed(timers[name])
            wall[name].append(w)
            cpu[name].append(cp)
        np.matmul(A, A, out=C)
        t0 = time.perf_counter()
        np.matmul(A, A, out=C)
        rates.append(2 * 2048 ** 3 / (time.perf_counter() - t0) / 1e9)
    med_wall = {k: statistics.median(v) for k, v in wall.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    copies = "_copies (subtracted from the sigma parts)"
    for k in ("sigma+Bernoulli visible (100x784)", "sigma p0 + sigma+Bernoulli pk (2x100x500)"):
        share = 0.5 if k.startswith("sigma+") else 0.5
        med_wall[k] -= share * med_wall[copies]
        med_cpu[k] -= share * med_cpu[copies]
    del med_wall[copies], med_cpu[copies]
    split_key = "whole step, rows split over the threads"
    split_wall, split_cpu = med_wall.pop(split_key), med_cpu.pop(split_key)
    sigma_wall, sigma_cpu = med_wall.pop(sigma_key), med_cpu.pop(sigma_key)
    parts_sum_wall = sum(v for k, v in med_wall.items() if k != "whole step")
    parts_sum_cpu = sum(v for k, v in med_cpu.items() if k != "whole step")
    med_wall["rest (Python glue)"] = med_wall["whole step"] - parts_sum_wall
    med_cpu["rest (Python glue)"] = med_cpu["whole step"] - parts_sum_cpu
    flops = 5 * 2 * 784 * 500 * 100
    gemm_keys = [k for k in med_wall if k.startswith("gemm")]
    print(f"threads {args.threads}, {args.steps} steps x {args.repeats} rounds; medians per step")
    for k in med_wall:
        print(f"{k:<44} {1e3 * med_wall[k]:7.3f} ms wall {100 * med_wall[k] / med_wall['whole step']:5.1f} %"
              f"   {1e3 * med_cpu[k]:7.3f} ms CPU {100 * med_cpu[k] / med_cpu['whole step']:5.1f} %")
    med_wall[split_key], med_cpu[split_key] = split_wall, split_cpu
    print(f"{split_key:<44} {1e3 * split_wall:7.3f} ms wall {100 * split_wall / med_wall['whole step']:5.1f} %"
          f"   {1e3 * split_cpu:7.3f} ms CPU {100 * split_cpu / med_cpu['whole step']:5.1f} %"
          f"  ({flops / split_wall / 1e9:.1f} GFLOP/s)")
    med_wall[sigma_key], med_cpu[sigma_key] = sigma_wall, sigma_cpu
    print(f"{sigma_key:<44} {1e3 * sigma_wall:7.3f} ms wall {100 * sigma_wall / med_wall['whole step']:5.1f} %"
          f"   {1e3 * sigma_cpu:7.3f} ms CPU {100 * sigma_cpu / med_cpu['whole step']:5.1f} %"
          f"  ({flops / sigma_wall / 1e9:.1f} GFLOP/s)")
    gemm_wall = sum(med_wall[k] for k in gemm_keys)
    peak = statistics.median(rates)
    print(f"GEMMs alone {flops / gemm_wall / 1e9:.1f} GFLOP/s, whole step {flops / med_wall['whole step'] / 1e9:.1f}"
          f" GFLOP/s; 2048^3 rate {peak:.1f} GFLOP/s (GEMMs {100 * flops / gemm_wall / 1e9 / peak:.0f} %,"
          f" step {100 * flops / med_wall['whole step'] / 1e9 / peak:.0f} % of it)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "threads": threads, "steps": args.steps, "repeats": args.repeats,
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "note": "in-process, parts in rotation; taken under load unless stated",
        "gemm_peak_gflops_median": peak, "median_wall_s_per_step": med_wall,
        "median_cpu_s_per_step": med_cpu}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
