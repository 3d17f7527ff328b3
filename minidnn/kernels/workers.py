"""One pool of worker threads for per-sample work that mixes Numba kernels and BLAS.

Why: at two threads a convolution step that calls parallel Numba kernels and
multi-threaded BLAS in turn runs two thread pools on two cores. OpenBLAS's
idle workers spin for a while after every call, Numba's workqueue workers
wait for a core, and each hands work over a hundred times a step: in a
one-process A/B at two threads (CPU time, under load) Cifar10_quick's conv2
took 145 ms of CPU for 115 ms of work, and with chunked products (many small
calls) 1000 ms. The streamed convolution (``layers.conv.Conv2D``) splits the
batch instead: each worker thread takes a contiguous range of samples and runs
everything on it itself, Numba kernels in their serial, GIL-free build
(``serial_nogil``) and BLAS on one thread, so no pool hands work to another
and idle threads block instead of spinning.

``split_samples(work, N, threads)`` calls ``work(lo, hi, part)`` for
``threads`` contiguous ranges [lo, hi) of range(N) (``part`` numbers them
0, 1, ...), in the calling thread when ``threads == 1`` and otherwise on the
pool, with every BLAS library NumPy uses capped at one thread meanwhile; it
returns the list of results in part order. The pool starts on first use
(importing starts no thread) and its threads are daemons.
"""
from __future__ import annotations

import threading

import numba

from .builds import njit_variant

_pool = None
_pool_lock = threading.Lock()
_nogil_builds = {}


def serial_nogil(kernel):
    """The Numba ``kernel`` compiled without ``parallel=True`` and with
    ``nogil=True`` (same Python source, its own name and on-disk cache), so
    several Python threads can run it at once. Built on first use."""
    build = _nogil_builds.get(kernel)
    if build is None:
        fastmath = kernel.targetoptions.get("fastmath", False)
        build = _nogil_builds[kernel] = njit_variant(kernel, "_nogil", nogil=True,
                                                     fastmath=fastmath)
    return build


def _get_pool():
    global _pool
    with _pool_lock:
        if _pool is None:
            from concurrent.futures import ThreadPoolExecutor
            _pool = ThreadPoolExecutor(max_workers=64, thread_name_prefix="minidnn-worker")
        return _pool


def _one_blas_thread():
    """Every BLAS library NumPy calls on one thread inside (restored after):
    ``threads.serial_blas_if_small`` with a product that always counts as small."""
    from ..threads import serial_blas_if_small
    return serial_blas_if_small(0)


def ranges(N: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous ranges covering range(N), sizes differing by at most one
    (empty ones dropped)."""
    parts = max(1, min(int(parts), N)) if N > 0 else 1
    base, extra = divmod(N, parts)
    out, lo = [], 0
    for p in range(parts):
        hi = lo + base + (1 if p < extra else 0)
        out.append((lo, hi))
        lo = hi
    return [r for r in out if r[1] > r[0]] or [(0, 0)]


def split_samples(work, N: int, threads: int) -> list:
    """[work(lo, hi, part) for each range of ``ranges(N, threads)``], run in parallel."""
    spans = ranges(N, threads)
    if len(spans) == 1:
        return [work(spans[0][0], spans[0][1], 0)]
    pool = _get_pool()
    with _one_blas_thread():
        futures = [pool.submit(work, lo, hi, part) for part, (lo, hi) in enumerate(spans[1:], 1)]
        first = work(spans[0][0], spans[0][1], 0)        # the calling thread takes a part too
        return [first] + [f.result() for f in futures]


__all__ = ["serial_nogil", "split_samples", "ranges"]
