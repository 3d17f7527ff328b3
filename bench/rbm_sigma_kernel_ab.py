"""In-process A/B of the RBM σ kernels: sitting 18's one-row loops against this tree's
two-rows loops, on the shapes of a 784x500 CD step (100x784 and 100x500), 1 thread.

    python bench/rbm_sigma_kernel_ab.py [--rounds 21] [--calls 200]

Sitting 18's kernels are rebuilt here from its loop (the same scalar σ, uniforms and
Philox pass of ``minidnn.kernels.rbm_kernels``) and both are checked to give the same
bits before timing. Each call copies a fresh pre-activation block first (the kernels
work in place), so every figure includes one (100, cols) copy. Rounds alternate the
order; medians of CPU time per call (``time.process_time``: steadier under load).
Results: bench/results/rbm_sigma_kernel_ab.json (or --out).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numba
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from minidnn.kernels import rbm_kernels as rk  # noqa: E402
from minidnn.kernels.rbm_kernels import (WORDS_PER_PASS, _philox_fill_into, _sigmoid,  # noqa: E402
                                         _uniform)


@numba.njit(cache=False, error_model="numpy")
def one_row_sigmoid(pre, bias, scale):
    rows, cols = pre.shape
    for r in range(rows):
        for c in range(cols):
            pre[r, c] = _sigmoid(pre[r, c] + bias[c]) * scale


@numba.njit(cache=False, error_model="numpy")
def one_row_bernoulli(pre, bias, key, states, row_offset, scale):
    rows, cols = pre.shape
    one, zero = pre.dtype.type(1.0), pre.dtype.type(0.0)
    rows_per_pass = max(1, WORDS_PER_PASS // cols)
    most = 4 * ((rows_per_pass * cols) // 4 + 2)
    words = np.empty(most, dtype=np.uint32)
    lanes = np.empty((4, most // 4), dtype=np.uint32)
    for first_row in range(0, rows, rows_per_pass):
        last_row = min(rows, first_row + rows_per_pass)
        start = (row_offset + first_row) * cols
        first_block = start // 4
        n_blocks = ((row_offset + last_row) * cols + 3) // 4 - first_block
        _philox_fill_into(words[:4 * n_blocks], first_block, key, lanes)
        offset = start - 4 * first_block
        for r in range(first_row, last_row):
            row_words = words[offset + (r - first_row) * cols:offset + (r - first_row + 1) * cols]
            row, row_states = pre[r], states[r]
            for c in range(cols):
                p = _sigmoid(row[c] + bias[c])
                row[c] = p * scale
                row_states[c] = one if _uniform(row_words[c], p) < p else zero


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "rbm_sigma_kernel_ab.json")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    fns = {}
    for cols in (784, 500):
        pre = (rng.standard_normal((100, cols)) * 3).astype(np.float32)
        bias = rng.standard_normal(cols).astype(np.float32)
        states, work, key, scale = np.empty_like(pre), pre.copy(), rk.draw_key(rng), np.float32(0.01)
        a, b = pre.copy(), pre.copy()
        one_row_sigmoid(a, bias, scale), rk._sigmoid_bias_kernel(b, bias, scale)
        assert np.array_equal(a, b), "σ kernels differ"
        sa, sb = np.empty_like(pre), np.empty_like(pre)
        a, b = pre.copy(), pre.copy()
        one_row_bernoulli(a, bias, key, sa, 0, scale)
        rk._sigmoid_bernoulli_kernel(b, bias, key, sb, 0, scale)
        assert np.array_equal(a, b) and np.array_equal(sa, sb), "Bernoulli kernels differ"

        def fresh(pre=pre, work=work):
            work[...] = pre
        fns[f"copy 100x{cols}"] = fresh
        fns[f"sigma 100x{cols}, one row"] = lambda f=fresh, w=work, b=bias, s=scale: (
            f(), one_row_sigmoid(w, b, s))
        fns[f"sigma 100x{cols}, two rows"] = lambda f=fresh, w=work, b=bias, s=scale: (
            f(), rk._sigmoid_bias_kernel(w, b, s))
        fns[f"sigma+Bernoulli 100x{cols}, one row"] = lambda f=fresh, w=work, b=bias, s=scale, \
            st=states, k=key: (f(), one_row_bernoulli(w, b, k, st, 0, s))
        fns[f"sigma+Bernoulli 100x{cols}, two rows"] = lambda f=fresh, w=work, b=bias, s=scale, \
            st=states, k=key: (f(), rk._sigmoid_bernoulli_kernel(w, b, k, st, 0, s))
    for f in fns.values():
        f()
    times = {k: [] for k in fns}
    for r in range(args.rounds):
        for k, f in (list(fns.items()) if r % 2 else list(fns.items())[::-1]):
            t = time.process_time()
            for _ in range(args.calls):
                f()
            times[k].append((time.process_time() - t) / args.calls)
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in med.items():
        print(f"{k:36s} {1e6 * v:8.1f} us CPU per call")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"threads": numba.get_num_threads(), "rounds": args.rounds,
                                    "calls": args.calls,
                                    "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                    "note": "CPU seconds per call incl. one fresh copy; "
                                            "taken under load unless stated",
                                    "median_cpu_s_per_call": med}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
