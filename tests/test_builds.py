"""Every Numba build has a cache entry of its own (``minidnn.kernels.builds``).

Numba keys its on-disk cache by qualified name, file, signature and bytecode, not by
compile options: two builds of one function with different options (``parallel``,
``nogil``) shared an entry, and whichever was compiled first ran for both. Sitting 18's
two-thread CSR and implicit-convolution runs were serial because of it.
"""
import importlib
import json
import os
import pkgutil
import subprocess
import sys

import numba
import numpy as np
import pytest
from numba.core.registry import CPUDispatcher

import minidnn.kernels
from minidnn.kernels import csr
from minidnn.kernels.builds import njit_variant, renamed_copy

jit_disabled = pytest.mark.skipif(numba.config.DISABLE_JIT, reason="NUMBA_DISABLE_JIT")


def _sum_rows(x, out):
    for i in numba.prange(x.shape[0]):
        s = 0.0
        for j in range(x.shape[1]):
            s += x[i, j]
        out[i] = s


def test_renamed_copy_is_the_same_function_under_another_name():
    copy = renamed_copy(_sum_rows, "_serial")
    assert copy.__qualname__ == "_sum_rows_serial" and copy.__name__ == "_sum_rows_serial"
    assert copy.__code__ is _sum_rows.__code__ and copy.__module__ == _sum_rows.__module__
    x, a, b = np.arange(12.0).reshape(3, 4), np.empty(3), np.empty(3)
    _sum_rows(x, a)
    copy(x, b)
    np.testing.assert_array_equal(a, b)


@jit_disabled
def test_variants_have_their_own_cache_index_and_equal_results():
    serial = njit_variant(_sum_rows, "_serial")
    parallel = njit_variant(_sum_rows, "_parallel", parallel=True)
    assert parallel.targetoptions.get("parallel") and not serial.targetoptions.get("parallel")
    names = {b._cache._cache_file._index_name for b in (serial, parallel)}
    assert len(names) == 2
    x = np.random.default_rng(0).standard_normal((50, 7))
    a, b = np.empty(50), np.empty(50)
    serial(x, a)
    parallel(x, b)
    np.testing.assert_array_equal(a, b)


@jit_disabled
def test_csr_training_kernels_serial_and_parallel_builds_are_distinct():
    index_names = set()
    for name, (serial, parallel) in csr._KERNELS.items():
        assert serial is not parallel, name
        assert parallel.targetoptions.get("parallel"), name
        assert not serial.targetoptions.get("parallel"), name
        for build in (serial, parallel):
            index_names.add(build._cache._cache_file._index_name)
    assert len(index_names) == 2 * len(csr._KERNELS)


def _dispatchers(value, depth=0):
    if isinstance(value, CPUDispatcher):
        yield value
    elif depth < 3 and isinstance(value, dict):
        for v in value.values():
            yield from _dispatchers(v, depth + 1)
    elif depth < 3 and isinstance(value, (tuple, list)):
        for v in value:
            yield from _dispatchers(v, depth + 1)


@jit_disabled
def test_no_two_kernel_builds_with_different_options_share_a_name():
    """A scan of every module of minidnn.kernels (module-level dispatchers, and those
    in module-level dicts and tuples such as csr._KERNELS): one qualified name, one set
    of compile options — else the two builds would share an on-disk cache entry."""
    seen = {}
    for info in pkgutil.iter_modules(minidnn.kernels.__path__):
        module = importlib.import_module(f"minidnn.kernels.{info.name}")
        for value in list(vars(module).values()):
            for d in _dispatchers(value):
                key = (d.py_func.__module__, d.py_func.__qualname__)
                options = tuple(sorted((k, repr(v)) for k, v in d.targetoptions.items()))
                seen.setdefault(key, set()).add(options)
    clashes = {k: v for k, v in seen.items() if len(v) > 1}
    assert not clashes, clashes
    assert len(seen) > 50          # the scan found the kernels


_FRESH_CACHE_KERNEL = '''
import numba


def row_sums(x, out):
    for i in numba.prange(x.shape[0]):
        s = 0.0
        for j in range(x.shape[1]):
            s += x[i, j] * x[i, j]
        out[i] = s
'''

_FRESH_CACHE_CHILD = '''
import json, os, sys, time
import numba, numpy as np
numba.config.THREADING_LAYER = "workqueue"     # as minidnn.configure_threads sets it
from minidnn.kernels.builds import njit_variant
import fresh_cache_kernel
stage, path = sys.argv[1], sys.argv[2]
serial = njit_variant(fresh_cache_kernel.row_sums, "_serial")
parallel = njit_variant(fresh_cache_kernel.row_sums, "_parallel", parallel=True)
x = np.random.default_rng(0).standard_normal((64, 60000))
out = np.empty(64)
if stage == "serial":           # a one-thread run fills the fresh cache first
    numba.set_num_threads(1)
    serial(x, out)
    np.save(path, out)
    sys.exit(0)
numba.set_num_threads(2)
parallel(x, out)
def cpu():
    found = {}
    for tid in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{tid}/schedstat") as f:
            found[tid] = int(f.read().split()[0])
    return found
best = 0.0
for _ in range(3):
    before = cpu(); t0 = time.thread_time_ns(); parallel(x, out); own = time.thread_time_ns() - t0
    after = cpu()
    spent = [after[t] - before.get(t, after[t]) for t in after if t != str(os.getpid())]
    spent.append(own)      # (the calling thread's own schedstat lags: its exact clock)
    best = max(best, 1 - max(spent) / max(1, sum(spent)))
print(json.dumps({"share": best, "equal": bool(np.array_equal(out, np.load(path)))}))
'''


@jit_disabled
@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="needs Linux /proc")
def test_a_two_thread_run_after_a_one_thread_run_in_a_fresh_cache_runs_the_parallel_build(
        tmp_path):
    """Sitting 18's bug end to end: in a fresh Numba cache a one-thread run compiles and
    caches the serial build first; a later two-thread process must then run the parallel
    build on two threads (each a fair share of the CPU time), not load the serial one,
    and give the same sums. A small kernel of its own file stands for every kernel
    built through ``njit_variant`` (implicit_conv's ``_build``, csr's ``_KERNELS``...):
    that each module's builds have their own cache index is checked in-process
    (above, and in test_implicit_conv.py / test_conv3_20.py). Until sitting 21 this ran
    on the implicit convolution's kernels, ~70 s of compiling in the fresh cache."""
    (tmp_path / "fresh_cache_kernel.py").write_text(_FRESH_CACHE_KERNEL)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"), NUMBA_NUM_THREADS="2",
               PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    for stage in ("serial", "parallel"):
        done = subprocess.run([sys.executable, "-c", _FRESH_CACHE_CHILD, stage,
                               str(tmp_path / "ref.npy")], env=env, capture_output=True,
                              text=True, timeout=300, cwd=str(tmp_path))
        assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["equal"]
    # the threads other than the busiest did at least a quarter of the work (serial: ~0)
    assert got["share"] > 0.25, got
