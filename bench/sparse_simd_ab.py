"""A/B of the explicit-SIMD (AVX2 + FMA) float32 forward of the CSR kernels against the
portable one, interleaved in ONE process (issue #11 work guide, not a speed figure).

    python bench/sparse_simd_ab.py                    # ~1 min at 1 thread
    python bench/sparse_simd_ab.py --threads 2 --clock wall

The same SparseDense (784→500, batch 100, float32, same pattern and values) is timed
with ``minidnn.kernels.csr.SIMD_AVAILABLE`` switched on and off between calls (the
kernel choice reads it at every call), in rotating order over ``--rounds`` rounds of
``--iters`` calls each; the figure per candidate is the median over rounds of the
per-round 10th percentile (``bench/sparse_step_ab.py``'s protocol):

* ``step``: forward(x) + backward(g) from C-ordered x (100, 784) and g (100, 500), with
  dx (what bench/sparse_speed.py times);
* ``fwd``: the forward alone (the transpose of x inside the call, then the product);
* ``product``: the forward from a Fortran-ordered x (xᵀ C-ordered, as another sparse
  layer's output is): the product alone, no transpose.

The outputs of both are checked to agree (float32 rounding) before anything is timed.
Results: printed, and JSON at ``--out`` (default bench/results/sparse_simd_ab.json).

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
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._common import RESULTS_DIR  # noqa: E402
from bench.sparse_step_ab import p10_median  # noqa: E402


def candidates(density: float):
    import minidnn.kernels.csr as csr
    from minidnn.sparse import SparseDense
    rng = np.random.default_rng(1)
    x = rng.random((100, 784), dtype=np.float32)
    g = rng.standard_normal((100, 500)).astype(np.float32)
    x_f = np.asfortranarray(x)          # xᵀ C-ordered: the forward takes it as it is
    layer = SparseDense(784, 500, density=density, rng=0)

    def with_simd(on, f):
        def call():
            csr.SIMD_AVAILABLE = on
            return f()
        return call

    def step():
        return layer.forward(x, True), layer.backward(g)

    outs = {}
    for on in (True, False):
        csr.SIMD_AVAILABLE = on
        outs[on] = (layer.forward(x, True).copy(), layer.backward(g).copy(),
                    layer.grads["data"].copy())
    for a, b in zip(outs[True], outs[False]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    return {"simd step": with_simd(True, step), "portable step": with_simd(False, step),
            "simd fwd": with_simd(True, lambda: layer.forward(x, True)),
            "portable fwd": with_simd(False, lambda: layer.forward(x, True)),
            "simd product": with_simd(True, lambda: layer.forward(x_f, True)),
            "portable product": with_simd(False, lambda: layer.forward(x_f, True))}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--densities", default="0.04,0.01,0.16")
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--iters", type=int, default=60)
    p.add_argument("--threads", type=int, default=1, help="numba threads")
    p.add_argument("--clock", choices=("thread", "wall"), default="thread")
    p.add_argument("--out", default=str(RESULTS_DIR / "sparse_simd_ab.json"))
    args = p.parse_args(argv)
    import numba

    import minidnn.kernels.csr as csr
    if not csr.SIMD_AVAILABLE:
        sys.exit("this CPU (Numba's target) has no AVX2 + FMA: nothing to compare")
    numba.set_num_threads(args.threads)
    result = {"threads": args.threads, "clock": args.clock, "load_before": os.getloadavg(),
              "unit": "µs, median over rounds of the per-round 10th percentile", "by_density": {}}
    try:
        for density in map(float, args.densities.split(",")):
            times = p10_median(candidates(density), args.rounds, args.iters, args.clock)
            result["by_density"][str(density)] = times
            print(f"γ={density}: " + "  ".join(f"{k} {v:.0f}" for k, v in times.items())
                  + f"  → step ×{times['portable step'] / times['simd step']:.2f}, "
                  f"fwd ×{times['portable fwd'] / times['simd fwd']:.2f}, "
                  f"product ×{times['portable product'] / times['simd product']:.2f}",
                  flush=True)
    finally:
        csr.SIMD_AVAILABLE = csr.avx2_fma_target()
    result["load_after"] = os.getloadavg()
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out} (load {result['load_before']} → {result['load_after']})")


if __name__ == "__main__":
    main()
