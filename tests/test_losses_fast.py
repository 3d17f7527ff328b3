"""The fast softmax cross-entropy (kernels.softmax_xent) against its NumPy twin: the four
passes (``softmax_cross_entropy_exact``, float64 training) bit for bit, the one-pass float32
kernel (``_fused_rows32``, float32 training since sitting 18) within a few ulps."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minidnn.kernels import softmax_xent
from minidnn.kernels.softmax_xent import _pairwise64
from minidnn.losses import SoftmaxCrossEntropy


def _both(logits, labels):
    loss = SoftmaxCrossEntropy()
    assert softmax_xent.applies(logits, labels)
    fast = softmax_xent.softmax_cross_entropy_exact(logits, labels)
    twin = loss._numpy(logits, labels)
    return fast, twin


def _same_bits(fast, twin):
    assert fast[0] == twin[0] or (np.isnan(fast[0]) and np.isnan(twin[0]))
    assert fast[1].dtype == twin[1].dtype and fast[1].shape == twin[1].shape
    assert np.array_equal(fast[1].view(np.uint8), twin[1].view(np.uint8)) or \
        np.array_equal(fast[1], twin[1], equal_nan=True)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 300), k=st.integers(1, 128), scale=st.sampled_from([0.01, 1.0, 30.0, 1e4]),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**31))
def test_fast_loss_equals_the_numpy_twin_bit_for_bit(n, k, scale, dtype, seed):
    rng = np.random.default_rng(seed)
    logits = (rng.normal(size=(n, k)) * scale).astype(dtype)
    labels = rng.integers(0, k, size=n)
    _same_bits(*_both(logits, labels))


def test_fast_loss_on_a_training_batch_and_on_int32_labels():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(100, 10)).astype(np.float32)
    for labels in (rng.integers(0, 10, 100), rng.integers(0, 10, 100).astype(np.int32)):
        _same_bits(*_both(logits, labels))


def test_fast_loss_with_nan_and_inf_logits_matches_the_twin():
    logits = np.zeros((4, 5), np.float32)
    logits[0, 2] = np.nan
    logits[1, 0] = np.inf
    logits[2, 3] = -np.inf
    logits[3] = [3e38, -3e38, 0, 1, 2]
    labels = np.array([2, 0, 3, 1])
    with np.errstate(all="ignore"):
        _same_bits(*_both(logits, labels))


def test_a_bad_label_still_gets_the_twins_error():
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        SoftmaxCrossEntropy()(np.zeros((2, 3), np.float32), np.array([0, 3]))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        SoftmaxCrossEntropy()(np.zeros((2, 3), np.float32), np.array([-1, 0]))


def test_other_inputs_take_the_twin():
    assert not softmax_xent.applies(np.zeros((2, 200), np.float32), np.array([0, 1]))
    assert not softmax_xent.applies(np.zeros((3, 2), np.float32).T, np.array([0, 1]))
    assert not softmax_xent.applies(np.zeros((2, 3), np.float32), np.zeros((2, 3)))


@pytest.mark.parametrize("n", [1, 7, 8, 9, 100, 128, 129, 1000, 8192, 8193, 20000])
def test_pairwise_sum_is_numpys(n):
    a = np.random.default_rng(n).normal(size=n).astype(np.float32)
    assert _pairwise64(a.astype(np.float64), 0, n) == a.astype(np.float64).sum() or n > 8192
    # the loss's float64 sum of a float32 array goes through 8192-element buffers
    picked = a.astype(np.float64)
    total = 0.0
    for start in range(0, n, 8192):
        total += _pairwise64(picked, start, min(8192, n - start))
    assert total == a.sum(dtype=np.float64)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 50), k=st.integers(1, 12), nan=st.booleans(), seed=st.integers(0, 2**31))
def test_count_correct_equals_numpy_argmax(n, k, nan, seed):
    from minidnn.kernels.softmax_xent import count_correct, count_correct_numpy
    rng = np.random.default_rng(seed)
    out = rng.integers(-2, 3, size=(n, k)).astype(np.float32)     # ties on purpose
    if nan:
        out[rng.random((n, k)) < 0.2] = np.nan
    labels = rng.integers(0, k, size=n)
    assert count_correct(out, labels) == count_correct_numpy(out, labels)
    assert count_correct(np.asfortranarray(out), labels) == count_correct_numpy(out, labels)


# -- the one-pass float32 kernel ----------------------------------------------------------

def _fused_and_twin(logits, labels):
    assert softmax_xent.applies(logits, labels) and softmax_xent.FUSED_FLOAT32
    return (softmax_xent.softmax_cross_entropy(logits, labels),
            SoftmaxCrossEntropy()._numpy(logits, labels))


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 300), k=st.integers(1, 128), scale=st.sampled_from([0.01, 1.0, 30.0, 1e4]),
       seed=st.integers(0, 2**31))
def test_fused_float32_loss_is_within_a_few_ulps_of_the_twin(n, k, scale, seed):
    """exp to ~2 ulps (Cephes' polynomial), the division by the row sum and by n: the
    gradient within 4e-7 of each softmax probability's scale (|g| <= 1/n), the loss
    within 1e-6 relative (plus 1e-7 for a loss near 0)."""
    rng = np.random.default_rng(seed)
    logits = (rng.normal(size=(n, k)) * scale).astype(np.float32)
    labels = rng.integers(0, k, size=n)
    (loss, grad), (loss_twin, grad_twin) = _fused_and_twin(logits, labels)
    assert grad.dtype == np.float32 and grad.shape == (n, k) and grad.flags.c_contiguous
    assert abs(loss - loss_twin) <= 1e-6 * abs(loss_twin) + 1e-7
    np.testing.assert_allclose(grad, grad_twin, rtol=0, atol=4e-7 / n)
    # every row of the gradient sums to 0 (probabilities sum to 1), as the twin's
    np.testing.assert_allclose(grad.sum(axis=1), 0, atol=2e-6 / n)


def test_fused_float32_loss_with_nan_inf_and_far_apart_logits():
    logits = np.zeros((5, 5), np.float32)
    logits[0, 2] = np.nan
    logits[1, 0] = np.inf
    logits[2, 3] = -np.inf
    logits[3] = [3e38, -3e38, 0, 1, 2]
    logits[4] = [0, -90, -100, -200, 1]        # probabilities under float32's normal range
    labels = np.array([2, 0, 3, 1, 4])
    with np.errstate(all="ignore"):
        (loss, grad), (loss_twin, grad_twin) = _fused_and_twin(logits, labels)
    assert np.isnan(loss) and np.isnan(loss_twin)
    assert np.array_equal(np.isnan(grad), np.isnan(grad_twin))
    finite = ~np.isnan(grad_twin)
    np.testing.assert_allclose(grad[finite], grad_twin[finite], rtol=0, atol=1e-7)
    # a lone -inf logit gives probability 0 and a loss of +inf (never NaN), as the twin
    with np.errstate(all="ignore"):
        (loss, grad), (loss_twin, _) = _fused_and_twin(logits[2:3], labels[2:3])
    assert loss == loss_twin == np.inf and grad[0, 3] == -1     # p = 0, minus the label


def test_fused_float32_loss_leaves_bad_labels_to_the_twins_error():
    assert softmax_xent.softmax_cross_entropy(np.zeros((2, 3), np.float32),
                                              np.array([0, 3])) is None
