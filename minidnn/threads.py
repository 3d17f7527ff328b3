"""How minidnn shares the cores between its Numba kernels and BLAS: one explicit call.

Importing minidnn changes nothing in the host process (no environment
variable, no thread pool, no Numba setting). A program that wants minidnn's
thread set-up asks for it once, before training:

>>> import minidnn
>>> minidnn.configure_threads(2)          # the `minidnn` command does this for non-sparse nets
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
* Except for sparse nets: the sparse layer's step is four parallel regions of tens
  of µs, and the workqueue pool's wake-up + join costs about 100 µs a region
  against about 5 µs for libgomp's (bench/region_wakeup.py, sitting 21, first
  read under load). ``numba_layer_for(model)``
  says "omp" for a model with CSR layers; the ``minidnn`` command picks the layer so,
  from its arguments, before the model is built (``cli_thread_options``:
  ``--numba-layer auto``). ``configure_threads(n, numba_layer="omp",
  wait_policy=..., spin_count=...)`` also sets libgomp's idle-thread policy, which is
  process-wide (OMP_WAIT_POLICY / GOMP_SPINCOUNT in os.environ, read by libgomp when it
  loads), so it is never done unless asked.

Everything is optional: with no call, minidnn runs with the host's defaults.

Small products run BLAS on one thread (``serial_blas_if_small``): OpenBLAS
splits a GEMM over its threads from M·N·K > 262,144 on, so LeNet's batch-1
conv2 product (64 × 500 × 50, ~70 us) wakes a second thread, which costs more
than it saves and, on a busy machine, waits for a core (batch-1 forward under
load, 2 threads: 24 ms with BLAS at 2 threads, 2.9 ms with it at 1). PyTorch
keeps such small operations on one thread likewise (its grain size).
"""
from __future__ import annotations

import numbers
import os

_blas_limits = None     # the threadpoolctl controller, kept alive


#: Numba threading layers configure_threads may pick (TBB needs libtbb, absent here)
NUMBA_LAYERS = ("workqueue", "omp", "tbb")
#: libgomp wait policies (OMP_WAIT_POLICY): what an idle OpenMP thread does
WAIT_POLICIES = ("active", "passive")


def _libgomp_loaded() -> bool:
    """Whether GNU libgomp is mapped into this process (it reads OMP_WAIT_POLICY and
    GOMP_SPINCOUNT once, when it is loaded)."""
    try:
        with open("/proc/self/maps") as maps:
            return any("libgomp" in line for line in maps)
    except OSError:         # no /proc: assume the worst, so that nothing is set silently
        return True


def _set_openmp_env(var: str, value: str) -> None:
    """``os.environ[var] = value`` while libgomp is not loaded yet; a no-op when it is
    already that value; a RuntimeError saying what to do otherwise."""
    if os.environ.get(var) == value:
        return
    if _libgomp_loaded():
        raise RuntimeError(
            f"configure_threads cannot set {var}={value}: libgomp (GNU OpenMP) is already "
            f"loaded in this process (Numba's omp pool has started, or torch/scikit-learn "
            f"loaded it) and reads {var} only when it loads; call configure_threads before "
            f"any parallel kernel runs, or start Python with {var}={value} in its environment "
            f"(now {var}={os.environ.get(var)!r})")
    os.environ[var] = value


def configure_threads(n: int | None = None, numba_layer: str | None = "workqueue",
                      wait_policy: str | None = None,
                      spin_count: int | None = None) -> dict:
    """Cap BLAS, OpenMP and Numba at ``n`` threads and pick Numba's threading
    layer; returns what was set. Default n: $OMP_NUM_THREADS when the user set
    it, else the cores this process may use.

    ``numba_layer``: "workqueue" (the default: idle threads block, never spin),
    "omp" (GNU libgomp), "tbb", or None (Numba's own choice). It takes effect only
    before Numba's first parallel kernel; after that the running layer is kept and
    reported (``report["numba_layer"]``), so a second call is harmless.

    ``wait_policy`` ("active" | "passive" | None) and ``spin_count`` (an int >= 0 or
    None) are for the omp layer only, and PROCESS-WIDE: they set ``OMP_WAIT_POLICY``
    and ``GOMP_SPINCOUNT`` in ``os.environ``, which libgomp reads once, when it is
    loaded — so they bind every OpenMP user of this process that shares libgomp
    (scikit-learn, torch built on libgomp) and every child process that inherits
    the environment, not only Numba. "active" keeps idle threads spinning between
    parallel regions (no wake-up, but a spinning thread holds a core that BLAS or
    another process may need); "passive" puts them to sleep at once; ``spin_count``
    sets how many spin iterations an idle thread waits before it sleeps (libgomp's
    default with no policy: 300,000). They must be given before libgomp loads (before
    the first parallel kernel on the omp layer, and before torch/scikit-learn load
    it); otherwise a RuntimeError says so, unless the environment already holds the
    same value (then the call is a no-op, so it may be repeated). None leaves the
    variable as the host has it. See bench/region_wakeup.py for what each costs here.
    """
    global _blas_limits
    import numba

    if numba_layer is not None and numba_layer not in NUMBA_LAYERS:
        raise ValueError(f"configure_threads: numba_layer must be one of {NUMBA_LAYERS} "
                         f"or None, got {numba_layer!r}")
    if wait_policy is not None and wait_policy not in WAIT_POLICIES:
        raise ValueError(f"configure_threads: wait_policy must be one of {WAIT_POLICIES} "
                         f"or None, got {wait_policy!r}")
    if spin_count is not None and (isinstance(spin_count, bool) or not isinstance(
            spin_count, numbers.Integral) or spin_count < 0):
        raise ValueError(f"configure_threads: spin_count must be an int >= 0 or None, "
                         f"got {spin_count!r}")
    if (wait_policy is not None or spin_count is not None) and numba_layer not in ("omp", None):
        raise ValueError(f"configure_threads: wait_policy / spin_count set libgomp's idle "
                         f"threads and need numba_layer='omp' (or None), got "
                         f"numba_layer={numba_layer!r}")
    if n is None and os.environ.get("OMP_NUM_THREADS", "").isdigit():
        n = int(os.environ["OMP_NUM_THREADS"])
    if n is None:
        n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    n = int(n)
    if n < 1:
        raise ValueError(f"configure_threads needs n >= 1, got {n}")
    report = {"threads": n}
    # the environment first, before anything below can load libgomp
    if wait_policy is not None:
        _set_openmp_env("OMP_WAIT_POLICY", wait_policy.upper())
        report["wait_policy"] = wait_policy
    if spin_count is not None:
        _set_openmp_env("GOMP_SPINCOUNT", str(int(spin_count)))
        report["spin_count"] = int(spin_count)
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


#: the layer ``numba_layer_for`` / the command's ``--numba-layer auto`` give a net with
#: sparse CSR layers (sitting 21; the switch the quiet run keeps or turns back to
#: "workqueue": bench/quiet_bench.sh, sparse_speed.py's minidnn vs minidnn_workqueue and
#: --epoch-workqueue). Under load, spinning omp threads were measured far slower than
#: workqueue's (a 2-thread sparse step of 64 ms against 2.5 ms, load ~10).
SPARSE_NUMBA_LAYER = "omp"


def numba_layer_for(model) -> str:
    """The threading layer for a model whose training is about to start: "omp" when a
    layer holds a fixed sparse CSR weight (SparseDense: the step is a few Numba kernels,
    each a parallel region of tens of µs, and the workqueue pool's wake-up + join costs
    ~100 µs a region against ~5 µs for libgomp's; bench/region_wakeup.py), else
    "workqueue" (dense and convolutional nets, whose heavy work is BLAS: libgomp's idle
    threads spin for milliseconds after each Numba kernel and take the cores OpenBLAS
    needs; LeNet 55 against 21 ms a step). Give it to
    ``configure_threads(n, numba_layer=numba_layer_for(model))`` before the first
    parallel kernel runs."""
    layers = getattr(model, "layers", model)
    return SPARSE_NUMBA_LAYER if any("indptr" in getattr(layer, "buffers", {})
                                     for layer in layers) else "workqueue"


def _file_holds_csr(path) -> bool:
    """Whether an HDF5 model / pretraining file stores a CSR weight (an ``indptr``)."""
    if not isinstance(path, str) or not os.path.isfile(path):
        return False
    try:
        import h5py
        found = []
        with h5py.File(path, "r") as h5:
            h5.visit(lambda name: found.append(True) if name.endswith("indptr") else None)
        return bool(found)
    except Exception:       # not HDF5, unreadable: the command itself will say so
        return False


def add_thread_options(parser) -> None:
    """``--numba-layer`` and ``--omp-wait-policy`` for every ``minidnn`` command."""
    parser.add_argument("--numba-layer", choices=("auto",) + NUMBA_LAYERS, default="auto",
                        help="Numba's threading layer (default auto: omp when the model has "
                             "sparse CSR layers, whose small kernels need libgomp's fast "
                             "wake-up, else workqueue, whose idle threads leave the cores to "
                             "BLAS); see minidnn.configure_threads")
    parser.add_argument("--omp-wait-policy", choices=WAIT_POLICIES, default=None,
                        help="with the omp layer: OMP_WAIT_POLICY for this process and its "
                             "children (active: idle threads spin; passive: they sleep at "
                             "once). Default: libgomp's own (spin a few ms, then sleep)")
    parser.add_argument("--omp-spin-count", type=int, default=None, metavar="N",
                        help="with the omp layer: GOMP_SPINCOUNT for this process and its "
                             "children (spin iterations before an idle thread sleeps; "
                             "3000 is some tens of µs here: bench/region_wakeup.py)")


def cli_thread_options(args) -> dict:
    """``configure_threads`` keyword arguments for a ``minidnn`` command, chosen before
    the model is built (the layer is fixed at the first parallel kernel): the layer
    ``--numba-layer`` names, or for ``auto`` "omp" when the run trains or runs sparse
    CSR layers (``--density`` given, or a ``model`` / ``--init-from`` file storing CSR
    arrays) and "workqueue" otherwise; ``--omp-wait-policy`` / ``--omp-spin-count`` as
    given (with ``auto``, either picks "omp")."""
    layer = getattr(args, "numba_layer", "auto") or "auto"
    libgomp_options = {"wait_policy": getattr(args, "omp_wait_policy", None),
                       "spin_count": getattr(args, "omp_spin_count", None)}
    libgomp_options = {k: v for k, v in libgomp_options.items() if v is not None}
    if layer == "auto" and libgomp_options:
        layer = "omp"                     # a libgomp wait setting asks for libgomp
    if layer == "auto":
        sparse = getattr(args, "density", None) is not None or any(
            _file_holds_csr(getattr(args, name, None)) for name in ("model", "init_from"))
        layer = SPARSE_NUMBA_LAYER if sparse else "workqueue"
    return {"numba_layer": layer, **libgomp_options}


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
