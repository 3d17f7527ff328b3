"""How minidnn shares the cores between its Numba kernels and BLAS: one explicit call.

Importing minidnn changes nothing in the host process (no environment
variable, no thread pool, no Numba setting). A program that wants minidnn's
thread set-up asks for it once, before training:

>>> import minidnn
>>> minidnn.configure_threads(2)          # the `minidnn` command does this
{'threads': 2, 'blas': ..., 'numba_threads': 2, 'numba_layer': 'workqueue'}

What it sets, and why:

* BLAS (OpenBLAS/MKL) and any OpenMP pool: at most ``n`` threads, through
  threadpoolctl (process-wide, at run time, without environment variables).
* Numba's parallel kernels (im2row/row2im, pooling): ``numba.set_num_threads(n)``.
* Numba's threading layer: ``workqueue``. Numba's default on Linux is its
  OpenMP layer (GNU libgomp), whose idle threads SPIN after each parallel
  kernel (libgomp's default wait policy); on 2 cores they then steal the
  cores the next BLAS call needs (a LeNet step measured 55 ms instead of
  21 ms). The old fix was ``OMP_WAIT_POLICY=PASSIVE`` in ``os.environ`` on
  import, which also made every OpenMP program started from the process
  (PyTorch workers) sleep between operations. The workqueue layer's idle
  threads block instead of spinning, and it touches nobody else's OpenMP.
  The layer can be chosen only before Numba first runs a parallel kernel;
  after that the current one is kept and reported.

Everything is optional: with no call, minidnn runs with the host's defaults.

Small products run BLAS on one thread (``serial_blas_if_small``): OpenBLAS
splits a GEMM over its threads from M·N·K > 262,144 on, so LeNet's batch-1
conv2 product (64 × 500 × 50, ~70 us) wakes a second thread, which costs more
than it saves and, on a busy machine, waits for a core (batch-1 forward under
load, 2 threads: 24 ms with BLAS at 2 threads, 2.9 ms with it at 1). PyTorch
keeps such small operations on one thread likewise (its grain size).
"""
from __future__ import annotations

import os

_blas_limits = None     # the threadpoolctl controller, kept alive


def configure_threads(n: int | None = None, numba_layer: str | None = "workqueue") -> dict:
    """Cap BLAS, OpenMP and Numba at ``n`` threads and pick Numba's threading
    layer; returns what was set. Default n: $OMP_NUM_THREADS when the user set
    it, else the cores this process may use."""
    global _blas_limits
    import numba

    if n is None and os.environ.get("OMP_NUM_THREADS", "").isdigit():
        n = int(os.environ["OMP_NUM_THREADS"])
    if n is None:
        n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    n = int(n)
    if n < 1:
        raise ValueError(f"configure_threads needs n >= 1, got {n}")
    report = {"threads": n}
    try:
        from threadpoolctl import threadpool_limits
        # SciPy ships its own OpenBLAS, loaded only when scipy.linalg/sparse is first
        # imported; threadpoolctl caps the libraries loaded now, so load it first.
        import scipy.linalg  # noqa: F401
        _blas_limits = threadpool_limits(limits=n)
        from threadpoolctl import threadpool_info
        report["blas"] = [(p["internal_api"], p["num_threads"]) for p in threadpool_info()]
    except ImportError:     # threadpoolctl absent: BLAS keeps its own setting
        report["blas"] = "unchanged (threadpoolctl not installed)"
    if numba_layer is not None:
        # before set_num_threads, which starts Numba's threads (and so fixes the layer)
        from numba.np.ufunc import parallel as numba_parallel
        if not getattr(numba_parallel, "_is_initialized", True):
            numba.config.THREADING_LAYER = numba_layer
    numba_threads = min(n, numba.config.NUMBA_NUM_THREADS)
    numba.set_num_threads(numba_threads)
    report["numba_threads"] = numba_threads
    report["numba_layer"] = numba.threading_layer()
    return report


#: products with fewer multiply-adds (M·N·K) than this run BLAS on one thread
SERIAL_BLAS_BELOW = 1 << 22
_blas_threads = None    # [(get, set)] of the BLAS libraries NumPy calls, found on first use


def _blas_thread_calls():
    global _blas_threads
    if _blas_threads is None:
        _blas_threads = []
        try:
            from threadpoolctl import ThreadpoolController
            blas = [lib for lib in ThreadpoolController().lib_controllers
                    if lib.user_api == "blas"]
            own = [lib for lib in blas if "numpy" in lib.filepath]   # NumPy's own wheel copy
            _blas_threads = [(lib.get_num_threads, lib.set_num_threads) for lib in own or blas]
        except Exception:   # threadpoolctl absent or unable to read a library: leave BLAS be
            _blas_threads = []
    return _blas_threads


class serial_blas_if_small:
    """``with serial_blas_if_small(m * n * k):`` runs the BLAS calls inside on
    one thread when the product is smaller than ``SERIAL_BLAS_BELOW``
    multiply-adds, and restores the thread count after (a few microseconds;
    nothing is done when BLAS already runs on one thread)."""

    def __init__(self, multiply_adds: int):
        self.small = multiply_adds < SERIAL_BLAS_BELOW
        self.restore = []

    def __enter__(self):
        if self.small:
            for get, set_ in _blas_thread_calls():
                before = get()
                if before is not None and before > 1:
                    set_(1)
                    self.restore.append((set_, before))
        return self

    def __exit__(self, *exc):
        for set_, before in self.restore:
            set_(before)
        self.restore = []
        return False


_numba_thread_count = None     # found on first use: importing starts no threads


def numba_thread_count() -> int:
    """``numba.get_num_threads()`` (this thread's Numba thread count) in ~1 µs instead
    of ~4–9: the public call takes the threading layer's launch locks every time, and
    the sparse layer's kernel choice (``kernels.csr._kernel``) asks twice a training
    step. Once the layer is up, its C entry point answers alone (as
    ``kernels.im2col._thread_count`` does); the public call where a Numba version
    lacks it."""
    global _numba_thread_count
    if _numba_thread_count is None:
        import numba
        try:
            from numba.np.ufunc import parallel
            parallel._launch_threads()               # what numba.get_num_threads does first
            _numba_thread_count = parallel._get_num_threads
        except (ImportError, AttributeError):
            # looked up on every call, so that a test's monkeypatch of it comes and goes
            def _numba_thread_count():
                return numba.get_num_threads()
    return _numba_thread_count()
