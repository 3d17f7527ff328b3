"""The fixed costs of the sparse layer's training step, beside its kernels (issue #11,
sitting 20: a work guide, not a speed figure).

    python bench/sparse_fixed_costs.py                          # 1 thread, thread clock, ~1 min
    python bench/sparse_fixed_costs.py --threads 2 --clock wall # the quiet machine

One 784→500 SparseDense at γ = ``--density``, batch 100, float32, C-ordered x and g (what
bench/sparse_speed.py times). In one process, interleaved over ``--rounds`` rounds of
``--iters`` calls each, 5th / 25th / 50th percentiles:

* ``layer step``: ``SparseDense.forward`` + ``backward`` (the whole step);
* ``direct kernels``: the same kernel calls with the same arguments, made directly (what
  the step would cost with no Python around the kernels but Numba's dispatch);
* ``python only …``: the step with every CSR kernel replaced by a no-op Python function —
  the layer's Python (``wrapped``: through base.py's call-order checks; ``unwrapped``:
  SparseDense's own methods; ``TrainingKernels``: its two methods alone), without
  Numba's dispatch;
* ``dispatch 2 calls``: two calls of no-op Numba functions taking the step's two
  kernels' argument types (9 and 14 arguments): Numba's dispatch alone;
* ``empty prange region`` / ``empty serial call``: a parallel build whose region does
  nothing but one store per block, against the serial build of the same function — what
  waking the thread pool costs (the step has ``regions per step`` of them at 2 threads:
  the fill of xᵀ and the row-split forward, the fill of gradᵀ and the column-split
  backward).

``--base REV``: the same ``python only`` rows for a git revision's package too (unpacked
as ``minidnn_base`` beside this tree's, as bench/sparse_step_ab.py does), interleaved with
this tree's: an A/B of the Python around the kernels.

Results: printed and written as JSON (``--out``, default
bench/results/sparse_fixed_costs.json).

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
from bench._common import RESULTS_DIR  # noqa: E402

#: parallel regions each padded training kernel opens when it runs on more than one block,
#: with a fill (FILL_TRANSPOSE / FILL_COPY) and without (FILL_NONE)
REGIONS = {"matmul_padded": (1, 1), "matmul_padded_rowsplit": (2, 1),
           "backward_padded": (1, 1), "backward_padded_colsplit": (2, 1),
           "backward_products": (2, 1)}


def python_only(csr, sparse, density: float, x, g, label: str):
    """The ``python only`` rows for one package (its csr and sparse modules)."""
    stub_layer = sparse.SparseDense(x.shape[1], g.shape[1], density=density, rng=0)
    stub_layer.forward(x, True)
    stub_layer.backward(g)
    stub_kern = stub_layer._kernels
    data, bias = stub_layer.params["data"], stub_layer.params["b"]
    # the stubbed layer's TrainingKernels calls no-op Python functions instead of the
    # kernels (the class reads its module's _KERNELS: swapped around each call)
    real = dict(csr._KERNELS)
    nothing = {name: (lambda *a: None, lambda *a: None) for name in real}
    fwd_inner = sparse.SparseDense.forward.__wrapped__
    bwd_inner = sparse.SparseDense.backward.__wrapped__

    def stubbed(fn):
        def run():
            csr._KERNELS.update(nothing)
            try:
                fn()
            finally:
                csr._KERNELS.update(real)
        return run

    def tk_only():
        _, xt = stub_kern.forward(data, bias, x)
        stub_kern.backward(data, g, xt, True, True, batch_major=True)

    return {f"{label}python only, wrapped": stubbed(lambda: (stub_layer.forward(x, True),
                                                             stub_layer.backward(g))),
            f"{label}python only, unwrapped": stubbed(lambda: (fwd_inner(stub_layer, x, True),
                                                               bwd_inner(stub_layer, g))),
            f"{label}python only, TrainingKernels": stubbed(tk_only)}


def candidates(density: float, threads: int, base=None):
    import numba
    import minidnn.kernels.csr as csr
    import minidnn.sparse as sparse
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
    layer.forward(x, True)
    layer.backward(g)
    build = 1 if threads > 1 else 0
    K = {name: pair[build] for name, pair in csr._KERNELS.items()}
    pad, gpad = kern._x_pad, kern._grad_pad
    out = np.empty((n_out, k), np.float32)
    gd, gb = np.empty(len(data), np.float32), np.empty(n_out, np.float32)
    dx = np.empty((n_in, k), np.float32)
    no_part, no_part_b = np.empty((0, len(data)), np.float32), np.empty((0, n_out), np.float32)
    T = csr.FILL_TRANSPOSE
    ip, ix, ti, tt, perm = kern.indptr, kern.indices, kern.t_indptr, kern.t_indices, kern.perm
    split = threads > 1 and kern.FORWARD_SPLIT == "rows" and kern.BACKWARD_SPLIT == "columns"
    regions = 0
    if threads > 1:
        regions = (REGIONS["matmul_padded_rowsplit" if kern.FORWARD_SPLIT == "rows"
                           else "matmul_padded"][0]
                   + REGIONS["backward_padded_colsplit" if kern.BACKWARD_SPLIT == "columns"
                             else "backward_padded"][0])

    def direct():
        if split:
            K["matmul_padded_rowsplit"](ip, ix, data, bias, x, pad, out, T, threads)
            K["backward_padded_colsplit"](ti, tt, perm, data, g, gpad, pad, k, zero, gd, gb, dx,
                                          T, threads)
        else:
            blocks = csr._sample_blocks(threads, k)
            K["matmul_padded"](ip, ix, data, bias, x, pad, out, T, blocks)
            part = kern._partials(blocks, np.float32) if blocks > 1 else (no_part, no_part_b)
            K["backward_padded"](ti, tt, perm, data, g, gpad, pad, k, zero, gd, gb, dx, *part,
                                 T, blocks)

    @numba.njit(cache=True)
    def nop9(a, b, c, d, e, f, g_, h, i):
        pass

    @numba.njit(cache=True)
    def nop14(a, b, c, d, e, f, g_, h, i, j, k_, l_, m, n):
        pass

    @numba.njit(cache=True, parallel=True)
    def empty_region(a, n):
        for c in numba.prange(n):
            a[c] = c

    @numba.njit(cache=True)
    def empty_serial(a, n):
        for c in range(n):
            a[c] = c

    small = np.zeros(8)

    def dispatch():
        nop9(ip, ix, data, bias, x, pad, out, T, threads)
        nop14(ti, tt, perm, data, g, gpad, pad, k, zero, gd, gb, dx, T, threads)

    real = dict(csr._KERNELS)
    nothing = {name: (lambda *a: None, lambda *a: None) for name in real}

    def swap_only():
        csr._KERNELS.update(nothing)
        csr._KERNELS.update(real)

    fns = {"layer step": lambda: (layer.forward(x, True), layer.backward(g)),
           "direct kernels": direct,
           **python_only(csr, sparse, density, x, g, ""),
           "(the stub's own swap)": swap_only,
           "dispatch 2 calls": dispatch,
           "empty prange region": lambda: empty_region(small, max(threads, 1)),
           "empty serial call": lambda: empty_serial(small, max(threads, 1))}
    if base is not None:
        import importlib
        fns.update(python_only(importlib.import_module(f"{base}.kernels.csr"),
                               importlib.import_module(f"{base}.sparse"), density, x, g,
                               "base: "))
    return fns, regions


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--density", type=float, default=0.04)
    p.add_argument("--rounds", type=int, default=200)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="numba threads")
    p.add_argument("--clock", choices=("thread", "wall"), default="thread")
    p.add_argument("--base", default=None, help="git revision: its Python rows too")
    p.add_argument("--out", default=str(RESULTS_DIR / "sparse_fixed_costs.json"))
    args = p.parse_args(argv)
    import numba
    numba.set_num_threads(args.threads)
    now = time.thread_time_ns if args.clock == "thread" else time.perf_counter_ns
    base = None
    if args.base:
        import tempfile
        from bench.sparse_step_ab import unpack_base
        tmp = tempfile.mkdtemp(prefix="sparse_fixed_costs_")
        args.base = unpack_base(args.base, tmp)
        sys.path.insert(0, tmp)
        base = "minidnn_base"
    fns, regions = candidates(args.density, args.threads, base)
    for f in fns.values():
        for _ in range(30):
            f()
    times = {name: [] for name in fns}
    names = list(fns)
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            f = fns[name]
            for _ in range(args.iters):
                t0 = now()
                f()
                times[name].append(now() - t0)
    result = {"density": args.density, "threads": args.threads, "clock": args.clock,
              "rounds": args.rounds, "iters": args.iters, "regions_per_step": regions,
              "base": args.base,
              "load_average": os.getloadavg(), "us": {}}
    for name, ts in times.items():
        q = {f"p{pc}": float(np.percentile(ts, pc)) / 1e3 for pc in (5, 25, 50)}
        result["us"][name] = q
        print(f"{name:30s} p5 {q['p5']:7.2f}  p25 {q['p25']:7.2f}  p50 {q['p50']:7.2f} µs",
              flush=True)
    print(f"parallel regions per step: {regions}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out} (load average {result['load_average']}; {args.clock} clock)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
