"""Several Numba builds of one Python kernel, each with its own on-disk cache.

Why this module exists: Numba's cache index is keyed by the function's
qualified name, its source file, the signature and the bytecode, not by the
compile options. ``numba.njit(cache=True)(f)`` and
``numba.njit(cache=True, parallel=True)(f)`` built from the same ``f``
therefore share one cache entry: whichever build was compiled first in a fresh
cache is loaded for both afterwards. Until sitting 19 that made every
two-thread run after a one-thread run (the test suite runs with
``NUMBA_NUM_THREADS=1``) execute the serial build of the implicit convolution
and of the CSR training kernels — all of a call's work on the calling thread
(found from per-thread CPU time, ``bench/implicit_conv_threads.py``).

``njit_variant(fn, suffix, **options)`` compiles a copy of ``fn`` named
``fn.__qualname__ + suffix``: the same code, globals, defaults and closure, so
the same results, under a name of its own and so a cache entry of its own.
Every module that builds one function more than one way goes through it.
"""
from __future__ import annotations

import types

import numba


def renamed_copy(fn, suffix: str):
    """``fn`` as a new function object named ``fn.__name__ + suffix`` (qualified
    name likewise); code, globals, defaults, closure, module and docstring shared."""
    copy = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + suffix,
                              fn.__defaults__, fn.__closure__)
    copy.__qualname__ = fn.__qualname__ + suffix
    copy.__module__ = fn.__module__
    copy.__doc__ = fn.__doc__
    copy.__kwdefaults__ = fn.__kwdefaults__
    return copy


def njit_variant(fn, suffix: str, **options):
    """``numba.njit(cache=True, **options)`` of ``fn`` renamed with ``suffix``
    (``fn`` is the Python function, or a Numba dispatcher whose ``py_func`` is
    used). Under ``NUMBA_DISABLE_JIT`` this is the renamed Python function."""
    py_func = getattr(fn, "py_func", fn)
    return numba.njit(cache=True, **options)(renamed_copy(py_func, suffix))
