"""Integer matrix products for quantized layers."""
from __future__ import annotations

import numba
import numpy as np

# ======================================================================================
# Technique 2 (issue #10): integer codes × integer codes, int32 accumulation
# ======================================================================================
#
# A bit-mask quantized layer (``minidnn.quantization.ptq``) holds its weights as
# signed integer codes (int8 for B ≤ 8) and, on its integer path, quantizes its
# input to integer activation codes (int16). The product of the two code
# matrices is accumulated exactly in int32; the layer scales it once at the
# output. ``int_matmul`` is the Numba kernel, ``int_matmul_numpy`` its twin.


def int_matmul_bound(a_max: int, b_max: int, inner: int) -> int:
    """The largest |Σ_k a[i,k]·b[k,j]| possible: inner · a_max · b_max."""
    return int(inner) * int(a_max) * int(b_max)


def check_int32_accumulation(a_max: int, b_max: int, inner: int, what: str) -> None:
    """Raise ValueError when an int32 accumulator could overflow."""
    bound = int_matmul_bound(a_max, b_max, inner)
    if bound > np.iinfo(np.int32).max:
        raise ValueError(f"{what}: an int32 accumulator could overflow ({inner} products of "
                         f"|codes| up to {a_max} x {b_max} reach {bound} > 2^31 - 1); use "
                         f"fewer activation bits")


def int_matmul_numpy(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """C = A·B for integer A (M, K) and B (K, N), exact, returned as int32 (M, N).

    The twin of ``int_matmul``: products in int64, then cast; callers check
    with ``check_int32_accumulation`` that the sums fit int32."""
    return (a.astype(np.int64) @ b.astype(np.int64)).astype(np.int32)


@numba.njit(cache=True, nogil=True)
def int_matmul(a, b):
    """C = A·B for integer A (M, K) and B (K, N), accumulated in int32, shape (M, N).

    Row-by-row outer products (i, k, j order) so the inner loop runs along
    contiguous rows of B and C; a zero in A (a pruned or masked weight, a ReLU
    zero) skips its whole row of B."""
    M, K = a.shape
    N = b.shape[1]
    out = np.zeros((M, N), dtype=np.int32)
    for i in range(M):
        row = out[i]
        for k in range(K):
            aik = np.int32(a[i, k])
            if aik == 0:
                continue
            bk = b[k]
            for j in range(N):
                row[j] += aik * np.int32(bk[j])
    return out

# ====================================================================== end technique 2
