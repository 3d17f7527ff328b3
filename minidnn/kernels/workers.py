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

import itertools
import threading

import numba
import numpy as np

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


# -- one BLAS product shared by claimed column blocks (sitting 24) --------------------------
# OpenBLAS splits a product over its threads in fixed shares, and its waiting threads
# spin. When another process wants the second core (the machine's "slow modes"), the
# share of the thread that lost its core waits a timeslice while the caller spins on the
# first core, so the kernel cannot move the late thread there: the MLP's 100×784×500
# product, 2 threads, took 0.42 ms at the median and 8-20 ms at the 99th percentile while
# other processes ran, where one thread took 0.8 ms throughout (bench/README.md, sitting 24).
# ``shared_matmul`` cuts the columns of the product into blocks that the calling thread
# and helper threads claim one at a time, each block a one-thread BLAS call, and the
# caller waits (blocked, not spinning) only for blocks a helper has claimed: a helper
# that has not woken yet takes nothing, and one that lost its core mid-block can be
# moved to the caller's idle core. Each block's sums are the one-thread product's
# (OpenBLAS's column loop does not change any element's order of terms), so the result
# is the one-thread product bit for bit; OpenBLAS's own two threads split k differently
# (784 = 392 + 392 against one thread's 400 + 384) and so differ in the last bits.
# Its cost: each product wakes a sleeping helper and then the caller (~75 µs a hand-over on
# this VM), so on a quiet machine it is slower than OpenBLAS's spinning threads; Dense uses
# it only when asked (``Dense.SHARE_TRAINING_PRODUCTS``).

#: column blocks a shared product is cut into per thread sharing it: a late thread then
#: holds up at most 1/(BLOCKS_PER_THREAD·threads) of the product
BLOCKS_PER_THREAD = 2
#: columns per block at least (blocks are multiples of 16 wide): OpenBLAS runs very narrow
#: products (here 4 columns) through another kernel, whose sums differ in the last bits
MIN_BLOCK_COLUMNS = 32
#: multiply-adds per block at least: OpenBLAS's SkylakeX sgemm takes products under 10⁶
#: multiply-adds down its small-matrix path, whose sums differ in the last bits too
MIN_BLOCK_MULTIPLY_ADDS = 1 << 20


def column_blocks(M: int, K: int, N: int, threads: int) -> list[int]:
    """The cuts [0, c1, ..., N] of ``shared_matmul``'s column blocks of an (M, K) @ (K, N)
    product: up to ``BLOCKS_PER_THREAD · threads`` blocks, each a multiple of 16 columns
    wide, at least ``MIN_BLOCK_COLUMNS`` wide and ``MIN_BLOCK_MULTIPLY_ADDS`` big (the last
    one takes the rest); [0, N] when the product is too small to cut."""
    blocks = max(1, min(BLOCKS_PER_THREAD * threads, N // MIN_BLOCK_COLUMNS,
                        M * K * N // MIN_BLOCK_MULTIPLY_ADDS))
    width = -(-N // blocks)
    width = -(-width // 16) * 16
    cuts = list(range(0, N, width)) + [N]
    if len(cuts) > 2 and (cuts[-1] - cuts[-2] < MIN_BLOCK_COLUMNS
                          or M * K * (cuts[-1] - cuts[-2]) < MIN_BLOCK_MULTIPLY_ADDS):
        del cuts[-2]                    # a small tail joins the block before it
    return cuts


class _SharedProduct:
    """out[:, cuts[i]:cuts[i+1]] = a @ b[:, cuts[i]:cuts[i+1]] for the blocks i that each
    thread claims (``work``); ``done`` is set by whichever thread finishes the last one."""

    def __init__(self, a, b, out, cuts):
        self.a, self.b, self.out, self.cuts = a, b, out, cuts
        self.claims = itertools.count()       # next() is atomic under the GIL
        self.finished = itertools.count(1)
        self.done = threading.Event()
        self.error = None

    def work(self):
        a, b, out, cuts = self.a, self.b, self.out, self.cuts
        blocks = len(cuts) - 1
        while True:
            i = next(self.claims)
            if i >= blocks:
                return
            lo, hi = cuts[i], cuts[i + 1]
            try:
                np.matmul(a, b[:, lo:hi], out=out[:, lo:hi])
            except BaseException as error:     # re-raised in the calling thread
                self.error = error
            if next(self.finished) == blocks:
                self.done.set()


class _Helper:
    """A daemon thread that, each time it is woken, works on the latest shared product
    (a product it wakes too late for has no blocks left: it goes back to sleep)."""

    def __init__(self):
        self.wake = threading.Semaphore(0)
        self.task = None
        threading.Thread(target=self._run, daemon=True, name="minidnn-product").start()

    def _run(self):
        while True:
            self.wake.acquire()
            task = self.task
            if task is not None:
                task.work()


_helpers: list = []


def shared_matmul(a: np.ndarray, b: np.ndarray, threads: int) -> np.ndarray:
    """a @ b (2-D float32) computed by the calling thread and ``threads − 1`` helper
    threads, which claim ``column_blocks`` one at a time, each a one-thread BLAS call (see
    above): the one-thread product's bits. Anything else (``threads <= 1``, one block,
    another dtype) is a plain a @ b on BLAS's own threads: float64 tail blocks were found to
    differ from the one-thread dgemm in the last bits (OpenBLAS 0.3.31, SkylakeX kernels)."""
    if threads <= 1 or a.ndim != 2 or b.ndim != 2 or a.dtype != np.float32 \
            or b.dtype != np.float32:
        return a @ b
    cuts = column_blocks(a.shape[0], a.shape[1], b.shape[1], threads)
    if len(cuts) <= 2:
        return a @ b
    out = np.empty((a.shape[0], b.shape[1]), dtype=np.float32)
    task = _SharedProduct(a, b, out, cuts)
    with _pool_lock:
        while len(_helpers) < threads - 1:
            _helpers.append(_Helper())
        helpers = _helpers[:threads - 1]
    with _one_blas_thread():
        for helper in helpers:
            helper.task = task
            helper.wake.release()
        task.work()
        task.done.wait()
    if task.error is not None:
        raise task.error
    return out


def shared_matmul_numpy(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The twin of ``shared_matmul``: a @ b on one BLAS thread."""
    with _one_blas_thread():
        return a @ b


__all__ = ["serial_nogil", "split_samples", "ranges", "shared_matmul", "column_blocks"]
