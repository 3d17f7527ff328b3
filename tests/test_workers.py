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
