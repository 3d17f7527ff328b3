"""Kernel-level A/B of the sparse layer's training products: sitting 18's padded float32
kernels against the kernels they replace, interleaved in ONE process (issue #11 work
guide, not a speed figure).

    python bench/sparse_kernel_ab.py                     # 1 thread, thread clock, ~1 min
    python bench/sparse_kernel_ab.py --threads 2 --clock wall

One 784→500 SparseDense at batch 100 (float32, the same pattern and values for all),
and for each product the two kernels on the same operands (outputs checked to agree
within float32 rounding before anything is timed):

* ``fwd+T``: the forward from a batch-major x, the transpose inside: the old
  ``matmul_batch_major_simd`` (scalar 8 × 8 tiles, then the masked AVX2 row kernel, two
  parallel regions) against ``matmul_padded`` with FILL_TRANSPOSE (register tiles into
  the padded buffer, prefetching row kernel, one region split by samples);
* ``fwd``: the product alone (xᵀ already feature-major): ``matmul_simd`` against
  ``matmul_padded`` with FILL_NONE;
* ``bwd+T``, ``bwd``, ``bwd_params``: the fused backward with dx from a batch-major grad
  (transpose inside), from a feature-major one, and without dx (a first layer):
  ``backward(_batch_major)`` against ``backward_padded``;
* ``transpose x``: ``transpose`` (scalar tiles) against ``_transpose_samples_padded``.

Sitting 19 added single rows (no "old"):

* ``product …``: each product of the step alone on operands already in the padded
  buffers — A·x, Aᵀ·g (1 thread), dW + db, and the fused dx + dW + db — with the bytes it
  must move (``product_bytes``: a 416-byte dense row per stored entry, the CSR stream, the
  output) and the rate that makes at p5;
* ``split products bwd(+T)`` (2 threads): the backward split by product
  (``TrainingKernels.BACKWARD_SPLIT = "products"``) — compare with ``new bwd(+T)``;
* ``step samples|products|rows+products|rows+columns|serial``: the layer's whole step
  (forward + backward from C-ordered x and g, as bench/sparse_speed.py times it) under
  ``TrainingKernels``' work-split switches: both products split by samples (the default),
  the backward by product, the forward by output rows and the backward by product or by
  A's columns, or every kernel serial (``THREADS = 1``); ``step_params samples|
  rows+columns|serial``: forward + backward_params (a first layer, as in the epoch).
  At ``--threads 2 --clock wall`` on the quiet machine these decide the switches.

For every ``step`` row the CPU time each thread ran per call is printed too
(``/proc/self/task/*/schedstat``, read outside the timed calls): how evenly the threads
share the step, fair even on a loaded machine. The per-thread CPU counts a spinning
thread's wait as CPU: under libgomp's default wait policy (threads spin a while after
each region) read it from a run with ``OMP_WAIT_POLICY=PASSIVE`` in the environment, or
``--layer workqueue`` (``minidnn.configure_threads``: threads block; its larger parallel
threshold runs the forward serial). (Sitting 21's ``work 2 blocks …`` and ``step
private|aligned …`` arms went with their switches in sitting 22.)

Sitting 22, ``--lanes``: only the padded kernels on 16-lane vectors (this tree's default
where Numba's target has AVX-512F) against the same kernels on 8 (``_LANES = 8``: what
they were until sitting 22, and what CPUs without AVX-512 run), both from this tree's
csr.py (the 8-lane copy is compiled from it into a temporary folder, ``lanes8_module``):
``lanes8|lanes16 fwd``, ``fwd+T``, ``bwd``, ``bwd+T``, ``bwd_params`` (serial builds,
one block, as above) and ``lanes8|lanes16 step`` / ``step_params``: the layer's whole
step through a ``TrainingKernels`` of either module (the tree's default splits). The
outputs of both are checked against each other within float32 rounding first. The
quiet decision of sitting 22 (16 lanes by default):

    python bench/sparse_kernel_ab.py --lanes --threads 2 --clock wall --rounds 300
    python bench/sparse_kernel_ab.py --lanes --rounds 300      # 1 thread, thread clock

Calls rotate over the candidates ``--iters`` at a time for ``--rounds`` rounds; the
5th, 25th and 50th percentiles of all calls are printed and written as JSON (``--out``).
``--clock thread`` (default) leaves out the waits for a core on a loaded machine: right
at one thread; at two use ``--clock wall``.

Threads: only ``numba.set_num_threads(--threads)``, NOT ``minidnn.configure_threads``:
Numba keeps its default threading layer (OpenMP, i.e. libgomp, whose idle threads spin,
where Numba has it; the CLI picks ``workqueue``) and BLAS keeps what the environment
gives it (OPENBLAS_NUM_THREADS, else every core), so its 2-thread figures are that
set-up's, not the CLI's.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._common import RESULTS_DIR, thread_cpu_ns  # noqa: E402


def candidates(density: float, threads: int):
    import minidnn.kernels.csr as csr
    from minidnn.sparse import SparseDense
    if not csr.SIMD_AVAILABLE:
        raise SystemExit("the padded kernels need AVX2 + FMA (csr.SIMD_AVAILABLE is False)")
    rng = np.random.default_rng(1)
    k, n_in, n_out = 100, 784, 500
    x = rng.random((k, n_in), dtype=np.float32)
    g = rng.standard_normal((k, n_out)).astype(np.float32)
    layer = SparseDense(n_in, n_out, density=density, rng=0)
    kern = layer._kernels
    data, bias, zero = layer.params["data"], layer.params["b"], np.float32(0)
    build = 1 if threads > 1 else 0
    K = {name: pair[build] for name, pair in csr._KERNELS.items()}
    blocks = threads if threads > 1 else 1
    sblocks = csr._sample_blocks(blocks, k)
    xt, gt = np.ascontiguousarray(x.T), np.ascontiguousarray(g.T)
    x_pad, g_pad = csr.padded_buffer(n_in, k), csr.padded_buffer(n_out, k)
    x_pad[:, :k], g_pad[:, :k] = xt, gt
    x_fill = csr.padded_buffer(n_in, k)
    xt_out = np.empty((n_in, k), np.float32)
    g_scratch = np.empty((n_out, k), np.float32)
    out_old, out_new = np.empty((n_out, k), np.float32), np.empty((n_out, k), np.float32)
    nnz = len(data)
    gd_old, gd_new = np.empty(nnz, np.float32), np.empty(nnz, np.float32)
    gb_old, gb_new = np.empty(n_out, np.float32), np.empty(n_out, np.float32)
    dx_old, dx_new = np.empty((n_in, k), np.float32), np.empty((n_in, k), np.float32)
    no_dx = np.empty((0, k), np.float32)
    part = np.empty((sblocks - 1, nnz), np.float32)
    part_b = np.empty((sblocks - 1, n_out), np.float32)
    ti, tt, perm = kern.t_indptr, kern.t_indices, kern.perm
    ip, ix = kern.indptr, kern.indices
    T, N, C = csr.FILL_TRANSPOSE, csr.FILL_NONE, csr.FILL_COPY
    pairs = {
        "fwd+T": (lambda: K["matmul_batch_major_simd"](ip, ix, data, bias, zero, x, xt_out,
                                                       out_old, blocks),
                  lambda: K["matmul_padded"](ip, ix, data, bias, x, x_fill, out_new, T,
                                             sblocks)),
        "fwd": (lambda: K["matmul_simd"](ip, ix, data, bias, zero, xt, out_old, blocks),
                lambda: K["matmul_padded"](ip, ix, data, bias, x, x_pad, out_new, N, sblocks)),
        "fwd copy": (lambda: K["matmul_simd"](ip, ix, data, bias, zero, xt, out_old, blocks),
                     lambda: K["matmul_padded"](ip, ix, data, bias, xt, x_fill, out_new, C,
                                                sblocks)),
        "bwd+T": (lambda: K["backward_batch_major"](ti, tt, perm, data, g, g_scratch, xt, zero,
                                                    gd_old, gb_old, dx_old, blocks),
                  lambda: K["backward_padded"](ti, tt, perm, data, g, g_pad, x_pad, k, zero,
                                               gd_new, gb_new, dx_new, part, part_b, T,
                                               sblocks)),
        "bwd": (lambda: K["backward"](ti, tt, perm, data, gt, xt, zero, gd_old, gb_old, dx_old,
                                      blocks),
                lambda: K["backward_padded"](ti, tt, perm, data, g, g_pad, x_pad, k, zero,
                                             gd_new, gb_new, dx_new, part, part_b, N, sblocks)),
        "bwd_params": (lambda: K["backward"](ti, tt, perm, data, gt, xt, zero, gd_old, gb_old,
                                             no_dx, blocks),
                       lambda: K["backward_padded"](ti, tt, perm, data, g, g_pad, x_pad, k,
                                                    zero, gd_new, gb_new, no_dx, part, part_b,
                                                    N, sblocks)),
        "transpose x": (lambda: K["transpose"](x, xt_out, blocks),
                        lambda: csr._transpose_samples_padded(x, x_fill, 0, k)),
    }
    for name, (old, new) in pairs.items():          # same numbers, or the times are moot
        old()
        new()
        if name.startswith("fwd"):
            np.testing.assert_allclose(out_new, out_old, rtol=1e-4, atol=1e-4, err_msg=name)
        elif name.startswith("bwd"):
            np.testing.assert_allclose(gd_new, gd_old, rtol=1e-4, atol=1e-4, err_msg=name)
            np.testing.assert_allclose(gb_new, gb_old, rtol=1e-4, atol=1e-4, err_msg=name)
            if name != "bwd_params":
                np.testing.assert_allclose(dx_new, dx_old, rtol=1e-4, atol=1e-4, err_msg=name)
        else:
            np.testing.assert_array_equal(x_fill[:, :k], xt_out)
    fns = {}
    for name, (old, new) in pairs.items():
        fns[f"old {name}"], fns[f"new {name}"] = old, new
    # each product alone (the padded kernels, operands already in the padded buffers), for
    # the per-product figures: µs and the bytes each must move (``product_bytes``)
    g_full, x_full = g_pad.reshape(-1), x_pad.reshape(-1)
    dx_p = np.empty((n_in, k), np.float32)
    fns["product A·x (fwd)"] = lambda: K["matmul_padded"](ip, ix, data, bias, x, x_pad, out_new,
                                                          N, sblocks)
    if sblocks == 1:
        fns["product Aᵀ·g (dx)"] = lambda: csr._input_grad_padded_share(ti, tt, perm, data, g_pad,
                                                                        dx_p, 0, k)
    fns["product dW+db"] = lambda: K["backward_padded"](ti, tt, perm, data, g, g_pad, x_pad, k,
                                                        zero, gd_new, gb_new, no_dx, part, part_b,
                                                        N, sblocks)
    fns["product dx+dW+db"] = lambda: K["backward_padded"](ti, tt, perm, data, g, g_pad, x_pad,
                                                           k, zero, gd_new, gb_new, dx_new, part,
                                                           part_b, N, sblocks)
    if sblocks == 2:     # the 2-thread backward split by product (BACKWARD_SPLIT="products")
        gd_s, gb_s, dx_s = np.empty(nnz, np.float32), np.empty(n_out, np.float32), \
            np.empty((n_in, k), np.float32)
        K["backward_products"](ti, tt, perm, data, g, g_pad, x_pad, k, zero, gd_s, gb_s, dx_s,
                               N, 2)
        K["backward_padded"](ti, tt, perm, data, g, g_pad, x_pad, k, zero, gd_new, gb_new,
                             dx_new, part, part_b, N, 2)
        np.testing.assert_array_equal(dx_s, dx_new)
        np.testing.assert_allclose(gd_s, gd_new, rtol=1e-4, atol=1e-4)
        fns["split products bwd"] = lambda: K["backward_products"](
            ti, tt, perm, data, g, g_pad, x_pad, k, zero, gd_s, gb_s, dx_s, N, 2)
        fns["split products bwd+T"] = lambda: K["backward_products"](
            ti, tt, perm, data, g, g_pad, x_pad, k, zero, gd_s, gb_s, dx_s, T, 2)
    if sblocks >= 2:     # the row / column splits of the same products
        out_r = np.empty((n_out, k), np.float32)
        gd_c, gb_c, dx_c = np.empty(nnz, np.float32), np.empty(n_out, np.float32), \
            np.empty((n_in, k), np.float32)
        fns["split rows fwd+T"] = lambda: K["matmul_padded_rowsplit"](
            ip, ix, data, bias, x, x_fill, out_r, T, blocks)
        fns["split columns bwd+T"] = lambda: K["backward_padded_colsplit"](
            ti, tt, perm, data, g, g_pad, x_pad, k, zero, gd_c, gb_c, dx_c, T, blocks)
        fns["split columns bwd_params"] = lambda: K["backward_padded_colsplit"](
            ti, tt, perm, data, g, g_pad, x_pad, k, zero, gd_c, gb_c, no_dx, N, blocks)
    del g_full, x_full
    # the layer's whole training step (SparseDense.forward + backward from C-ordered x and
    # g, what bench/sparse_speed.py times), and the first-layer step (forward +
    # backward_params), under the work-split switches of TrainingKernels: sitting 18's
    # default (split by samples), the backward split by product, and the serial kernels
    # (THREADS = 1) — set on the layer's own TrainingKernels before each call
    # (THREADS, BACKWARD_SPLIT, FORWARD_SPLIT)
    variants = {"samples": (None, "samples", "samples"),
                "products": (None, "products", "samples"),
                "rows+products": (None, "products", "rows"),
                "rows+columns": (None, "columns", "rows"),
                "serial": (1, "samples", "samples")}

    def step(variant, params_only=False):
        threads_cap, split, forward_split = variants[variant]

        def run():
            kern.THREADS, kern.BACKWARD_SPLIT, kern.FORWARD_SPLIT = threads_cap, split, \
                forward_split
            layer.forward(x, True)
            if params_only:
                layer.backward_params(g)
            else:
                layer.backward(g)
        return run
    for variant in variants:
        fns[f"step {variant}"] = step(variant)
    for variant in ("samples", "rows+columns", "serial"):
        fns[f"step_params {variant}"] = step(variant, True)
    step("rows+columns")()                      # the default switches again
    return fns


def lanes8_module():
    """This tree's csr.py with ``_LANES = 8`` (the padded kernels on 8-lane vectors), as
    the module ``minidnn.kernels._csr_lanes8``, from a copy in a temporary folder (kept
    while the source is the same, so Numba's cache there stays valid)."""
    import importlib.util
    import tempfile
    import minidnn.kernels.csr as csr
    src = Path(csr.__file__).read_text()
    line = '_LANES = 16 if target_has("avx512f") else 8'
    if line not in src:
        raise SystemExit("csr.py has no _LANES line to replace")
    folder = Path(tempfile.gettempdir()) / f"minidnn_csr_lanes8_{os.getuid()}"
    folder.mkdir(exist_ok=True)
    path = folder / "_csr_lanes8.py"
    text = src.replace(line, "_LANES = 8")
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    spec = importlib.util.spec_from_file_location("minidnn.kernels._csr_lanes8", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def lanes_candidates(density: float, threads: int):
    """``--lanes``: the padded kernels and the layer step on 8- against 16-lane vectors."""
    import minidnn.kernels.csr as csr
    from minidnn.sparse import SparseDense
    c8 = lanes8_module()
    if csr._LANES != 16:
        print("note: Numba's target has no AVX-512F; both arms run 8 lanes", flush=True)
    rng = np.random.default_rng(1)
    k, n_in, n_out = 100, 784, 500
    x = rng.random((k, n_in), dtype=np.float32)
    g = rng.standard_normal((k, n_out)).astype(np.float32)
    layers = {"lanes16": SparseDense(n_in, n_out, density=density, rng=0),
              "lanes8": SparseDense(n_in, n_out, density=density, rng=0)}
    kern = layers["lanes16"]._kernels
    k8 = layers["lanes8"]._kernels = c8.TrainingKernels(
        kern.indptr.view(np.int32), kern.indices.view(np.int32),
        (kern.t_indptr.view(np.int32), kern.t_indices.view(np.int32), kern.perm.view(np.int32)),
        n_in)
    data, bias, zero = layers["lanes16"].params["data"], layers["lanes16"].params["b"], \
        np.float32(0)
    ip, ix, ti, tt, perm = kern.indptr, kern.indices, kern.t_indptr, kern.t_indices, kern.perm
    nnz = len(data)
    fns, outputs = {}, {}
    for name, m in (("lanes8", c8), ("lanes16", csr)):
        S = {n: pair[0] for n, pair in m._KERNELS.items()}
        xp, gp = m.padded_buffer(n_in, k), m.padded_buffer(n_out, k)
        xp[:, :k], gp[:, :k] = x.T, g.T
        xf, gf = m.padded_buffer(n_in, k), m.padded_buffer(n_out, k)
        out = np.empty((n_out, k), np.float32)
        gd, gb = np.empty(nnz, np.float32), np.empty(n_out, np.float32)
        dx, no_dx = np.empty((n_in, k), np.float32), np.empty((0, k), np.float32)
        part, part_b = np.empty((0, nnz), np.float32), np.empty((0, n_out), np.float32)
        T, N = m.FILL_TRANSPOSE, m.FILL_NONE

        def add(what, f):
            fns[f"{name} {what}"] = f
        add("fwd", lambda S=S, xp=xp, out=out: S["matmul_padded"](ip, ix, data, bias, x, xp,
                                                                  out, N, 1))
        add("fwd+T", lambda S=S, xf=xf, out=out: S["matmul_padded"](ip, ix, data, bias, x, xf,
                                                                    out, T, 1))
        add("bwd", lambda S=S, gp=gp, xp=xp, gd=gd, gb=gb, dx=dx, part=part, part_b=part_b:
            S["backward_padded"](ti, tt, perm, data, g, gp, xp, k, zero, gd, gb, dx, part,
                                 part_b, N, 1))
        add("bwd+T", lambda S=S, gf=gf, xp=xp, gd=gd, gb=gb, dx=dx, part=part, part_b=part_b:
            S["backward_padded"](ti, tt, perm, data, g, gf, xp, k, zero, gd, gb, dx, part,
                                 part_b, T, 1))
        add("bwd_params", lambda S=S, gp=gp, xp=xp, gd=gd, gb=gb, part=part, part_b=part_b:
            S["backward_padded"](ti, tt, perm, data, g, gp, xp, k, zero, gd, gb, no_dx, part,
                                 part_b, N, 1))
        layer = layers[name]

        def step(layer=layer, params_only=False):
            def run():
                layer.forward(x, True)
                if params_only:
                    layer.backward_params(g)
                else:
                    layer.backward(g)
            return run
        add("step", step())
        add("step_params", step(params_only=True))
        fns[f"{name} fwd"]()
        fns[f"{name} bwd"]()
        y = np.array(layer.forward(x, True))
        outputs[name] = (out.copy(), gd.copy(), gb.copy(), dx.copy(), y,
                         np.array(layer.backward(g)), layer.grads["data"].copy())
    for a, b in zip(outputs["lanes8"], outputs["lanes16"]):   # the same numbers, or moot
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4)
    assert k8._x_pad.shape[1] == 104 and kern._x_pad.shape[1] == csr.padded_width(k)
    return fns


def product_bytes(density: float):
    """Bytes each product of the 784→500, batch-100 step must move through the cache
    hierarchy at least once per call, by what it reads per stored entry: its dense row of
    ld = 104 floats (the padded row) — nnz · 416 B — plus the CSR stream (8 B an entry)
    and its own output. The dense operand (xᵀ 326 kB, gradᵀ 208 kB padded) does not fit
    the 32 kB L1, so the rows come from L2 once per entry."""
    from minidnn.sparse import SparseDense
    layer = SparseDense(784, 500, density=density, rng=0)
    nnz, row = layer.nnz, 104 * 4
    csr_stream = nnz * 8
    return {"product A·x (fwd)": nnz * row + csr_stream + 500 * 100 * 4,
            "product Aᵀ·g (dx)": nnz * row + csr_stream + nnz * 4 + 784 * 100 * 4,
            "product dW+db": nnz * row + 784 * row + csr_stream + nnz * 4,
            "product dx+dW+db": nnz * row + 784 * row + csr_stream + nnz * 8 + 784 * 100 * 4}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--density", type=float, default=0.04)
    p.add_argument("--rounds", type=int, default=200)
    p.add_argument("--iters", type=int, default=4)
    p.add_argument("--threads", type=int, default=1, help="numba threads")
    p.add_argument("--clock", choices=("thread", "wall"), default="thread")
    p.add_argument("--layer", choices=("default", "workqueue"), default="default",
                   help="workqueue: minidnn.configure_threads (blocking threads) first")
    p.add_argument("--lanes", action="store_true",
                   help="sitting 22: only the 8- against 16-lane padded kernels and steps")
    p.add_argument("--out", default=None,
                   help="default bench/results/sparse_kernel_ab.json (--lanes: "
                        "sparse_kernel_ab_lanes.json)")
    args = p.parse_args(argv)
    import numba
    if args.layer == "workqueue":
        import minidnn
        minidnn.configure_threads(args.threads)
    numba.set_num_threads(args.threads)
    now = time.thread_time_ns if args.clock == "thread" else time.perf_counter_ns
    if args.out is None:
        args.out = str(RESULTS_DIR / ("sparse_kernel_ab_lanes.json" if args.lanes
                                      else "sparse_kernel_ab.json"))
    fns = (lanes_candidates if args.lanes else candidates)(args.density, args.threads)
    for f in fns.values():
        for _ in range(20):
            f()
    times = {name: [] for name in fns}
    names = list(fns)
    # per-thread CPU time of the whole-step rows (read outside the timed calls): how the
    # two threads share the work, a fair measure even on a loaded machine
    cpu = {name: {} for name in names if name.startswith("step") or " step" in name}
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            f = fns[name]
            before = thread_cpu_ns() if name in cpu else None
            for _ in range(args.iters):
                t0 = now()
                f()
                times[name].append(now() - t0)
            if before is not None:
                after = thread_cpu_ns()
                for tid, ns in after.items():
                    cpu[name][tid] = cpu[name].get(tid, 0) + ns - before.get(tid, ns)
    result = {"density": args.density, "threads": args.threads, "clock": args.clock,
              "rounds": args.rounds, "iters": args.iters, "load_average": os.getloadavg(),
              "us": {}}
    moved = product_bytes(args.density)
    result["bytes"] = moved
    for name, ts in times.items():
        q = {f"p{pc}": float(np.percentile(ts, pc)) / 1e3 for pc in (5, 25, 50)}
        result["us"][name] = q
        rate = (f"  {moved[name] / q['p5'] / 1e3:5.1f} GB/s at p5 ({moved[name] / 1e6:.2f} MB)"
                if name in moved else "")
        print(f"{name:26s} p5 {q['p5']:7.1f}  p25 {q['p25']:7.1f}  p50 {q['p50']:7.1f} µs{rate}",
              flush=True)
    calls = args.rounds * args.iters
    result["thread_cpu_us_per_call"] = {}
    for name, per in cpu.items():
        busy = sorted((ns / calls / 1e3 for ns in per.values() if ns > 0), reverse=True)
        result["thread_cpu_us_per_call"][name] = busy
        shown = " ".join(f"{b:6.1f}" for b in busy[:3])
        print(f"{name:26s} CPU µs a call by thread: {shown}  (total {sum(busy):6.1f})",
              flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out} (load average {result['load_average']}; {args.clock} clock)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
