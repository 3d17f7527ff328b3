"""``kernels.workers``: the serial GIL-free builds and the split of a batch into ranges
of samples (the inference plan's split; the tests came from sitting 17's streamed
convolution, deleted in sitting 22)."""
import numpy as np
import pytest

from minidnn.kernels import workers
from minidnn.kernels.im2col import _im2row_kernel


def test_nogil_build_is_the_same_kernel():
    rng = np.random.default_rng(6)
    x_pad = rng.standard_normal((2, 7, 7, 3)).astype(np.float32)
    rows = [np.empty((2 * 5 * 5, 27), np.float32) for _ in range(2)]
    _im2row_kernel(x_pad, 3, 3, 1, 1, 5, 5, rows[0])
    workers.serial_nogil(_im2row_kernel)(x_pad, 3, 3, 1, 1, 5, 5, rows[1])
    np.testing.assert_array_equal(rows[0], rows[1])
    assert workers.serial_nogil(_im2row_kernel) is workers.serial_nogil(_im2row_kernel)


@pytest.mark.parametrize("N, parts", [(0, 2), (1, 2), (5, 2), (7, 3), (4, 1)])
def test_split_samples_covers_the_batch_in_order(N, parts):
    spans = workers.ranges(N, parts)
    assert spans[0][0] == 0 and spans[-1][1] == N
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    seen = workers.split_samples(lambda lo, hi, part: (part, list(range(lo, hi))), N, parts)
    assert [p for p, _ in seen] == list(range(len(spans)))
    assert sum((r for _, r in seen), []) == list(range(N))


# -- shared_matmul: one product's column blocks claimed by the threads (sitting 24) ------------

@pytest.mark.parametrize("M, K, N, threads", [
    (100, 784, 500, 2), (784, 100, 500, 2), (100, 500, 784, 2), (100, 784, 500, 3),
    (100, 500, 10, 2), (100, 500, 40, 2), (100, 784, 100, 4), (100, 784, 65, 2),
    (16, 784, 784, 3), (1, 784, 500, 2), (100, 784, 1, 2)])
def test_column_blocks_are_wide_and_big_multiples_of_16_covering_the_columns(M, K, N, threads):
    cuts = workers.column_blocks(M, K, N, threads)
    assert cuts[0] == 0 and cuts[-1] == N and cuts == sorted(set(cuts))
    assert len(cuts) - 1 <= max(1, workers.BLOCKS_PER_THREAD * threads)
    assert all(c % 16 == 0 for c in cuts[:-1])
    if len(cuts) > 2:           # split: no block so small that OpenBLAS changes kernel
        widths = [b - a for a, b in zip(cuts, cuts[1:])]
        assert min(widths) >= workers.MIN_BLOCK_COLUMNS
        assert M * K * min(widths) >= workers.MIN_BLOCK_MULTIPLY_ADDS


def _mlp_products(dtype):
    rng = np.random.default_rng(24)
    x = rng.random((100, 784), dtype=np.float64).astype(dtype)   # all positive: the case
    W = rng.standard_normal((784, 500)).astype(dtype)             # where OpenBLAS's own two
    g = rng.standard_normal((100, 500)).astype(dtype)             # threads' k split differs
    return [(x, W), (x.T, g), (g, W.T), (W, g.T)]


@pytest.mark.parametrize("threads", [2, 3])
def test_shared_matmul_is_the_one_thread_product_bit_for_bit(threads):
    pytest.importorskip("threadpoolctl")
    rng = np.random.default_rng(5)
    others = [(rng.random((M, K), dtype=np.float32), rng.standard_normal((K, N), np.float32))
              for M, K, N in ((16, 784, 784), (128, 1024, 1000), (256, 3072, 2000),
                              (100, 1024, 64), (1, 3072, 2000))]
    for a, b in _mlp_products(np.float32) + others:
        got = workers.shared_matmul(a, b, threads)
        assert got.dtype == np.float32 and got.flags.c_contiguous
        np.testing.assert_array_equal(got, workers.shared_matmul_numpy(a, b))


def test_shared_matmul_leaves_float64_to_blas():
    # dgemm's tail blocks differ from the one-thread product in the last bits: not cut
    a, b = _mlp_products(np.float64)[0]
    np.testing.assert_array_equal(workers.shared_matmul(a, b, 2), a @ b)


def test_shared_matmul_does_not_wait_for_a_helper_that_never_wakes(monkeypatch):
    # the point of claimed blocks: a helper without a core takes nothing, and the caller
    # does every block itself instead of waiting for it
    class Asleep:
        def __init__(self):
            self.task = None
            self.wake = type("NoWake", (), {"release": lambda self: None})()

    monkeypatch.setattr(workers, "_helpers", [])
    monkeypatch.setattr(workers, "_Helper", Asleep)
    a, b = _mlp_products(np.float32)[0]
    np.testing.assert_array_equal(workers.shared_matmul(a, b, 2),
                                  workers.shared_matmul_numpy(a, b))


def test_shared_matmul_raises_a_blocks_error_in_the_caller():
    a = np.ones((3, 4), np.float32)
    b = np.ones((5, 128), np.float32)          # inner sizes differ: every block fails
    with pytest.raises(ValueError):
        workers.shared_matmul(a, b, 2)


def test_shared_matmul_on_one_thread_or_one_block_is_the_plain_product():
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((6, 5)), rng.standard_normal((5, 20))
    np.testing.assert_array_equal(workers.shared_matmul(a, b, 2), a @ b)    # 20 < 2 blocks
    a, b = rng.standard_normal((6, 5)), rng.standard_normal((5, 256))
    np.testing.assert_array_equal(workers.shared_matmul(a, b, 1), a @ b)
