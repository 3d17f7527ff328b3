"""Every Numba build has a cache entry of its own (``minidnn.kernels.builds``).

Numba keys its on-disk cache by qualified name, file, signature and bytecode, not by
compile options: two builds of one function with different options (``parallel``,
``nogil``) shared an entry, and whichever was compiled first ran for both. Sitting 18's
two-thread CSR and implicit-convolution runs were serial because of it.
"""
import importlib
import pkgutil

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
