"""What explicit-SIMD kernels may assume about Numba's target CPU.

Kernels written as LLVM IR through ``numba.extending.intrinsic`` (``ternary_lut``'s
``vpermps`` loop, ``csr``'s AVX2 row kernels) call x86 instructions by name, so they
may only be compiled when Numba's target has them. Numba compiles for the host CPU
unless ``NUMBA_CPU_NAME`` / ``NUMBA_CPU_FEATURES`` say otherwise (for example for a
cache shared between machines), so the check follows Numba's configuration, not
just the host. Under ``NUMBA_DISABLE_JIT`` there is no SIMD path at all: an
intrinsic has no Python fallback.
"""
from __future__ import annotations

import numba


def target_has(*features: str) -> bool:
    """Whether Numba compiles for a CPU with every one of ``features`` (LLVM's names,
    e.g. "avx2", "fma"); False under NUMBA_DISABLE_JIT or when it cannot be told."""
    if numba.config.DISABLE_JIT:
        return False
    configured = numba.config.CPU_FEATURES
    if configured:
        flags = str(configured).split(",")
        return all(f"+{f}" in flags for f in features)
    if numba.config.CPU_NAME not in (None, "host"):
        return False
    try:
        from llvmlite import binding
        host = binding.get_host_cpu_features()
        return all(bool(host.get(f, False)) for f in features)
    except Exception:          # no host feature query on this platform: no SIMD path
        return False


def avx2_target() -> bool:
    """Whether Numba compiles for a CPU with AVX2 (``ternary_lut``'s ``vpermps``)."""
    return target_has("avx2")


def avx2_fma_target() -> bool:
    """Whether Numba compiles for a CPU with AVX2 and FMA3 (``csr``'s 8-lane
    fused multiply-add row kernels: ``llvm.fma.v8f32`` is one ``vfmadd`` there)."""
    return target_has("avx2", "fma")
