"""Sitting 20's RBM step: the lean path (``BernoulliRBM._lean_step``, every Bernoulli
step), the one-call hidden pass and the keys drawn at once. Each must give the general
path's (``_general_step``'s) results bit for bit."""
import hashlib

import numpy as np
import pytest

from minidnn.kernels.rbm_kernels import (draw_key, draw_keys, hidden_pass, hidden_pass_numpy,
                                         sigmoid_bernoulli, sigmoid_bias)
from minidnn.pretraining import BernoulliRBM, PretrainConfig


def test_draw_keys_are_consecutive_draw_key_calls_and_leave_the_stream_where_they_would():
    a, b = np.random.default_rng(11), np.random.default_rng(11)
    keys = draw_keys(a, 5)
    assert keys.shape == (5, 4) and keys.dtype == np.uint32 and keys.flags.c_contiguous
    assert np.array_equal(keys, np.stack([draw_key(b) for _ in range(5)]))
    assert a.random() == b.random()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n, m", [(9, 9), (6, 11), (1, 4)])
def test_hidden_pass_is_the_two_kernel_calls_and_matches_its_twin(dtype, n, m):
    rng = np.random.default_rng(n * 31 + m)
    units = 37
    p = (3 * rng.standard_normal((n + m, units))).astype(dtype)
    bias = rng.standard_normal(units).astype(dtype)
    key = draw_key(rng)
    pos, neg = dtype(-1.0 / n), dtype(1.0 / m)
    ref = p.copy()
    sigmoid_bias(ref[:n], bias, scale=pos)
    _, ref_states = sigmoid_bernoulli(ref[n:], bias, key, scale=neg)
    got, states = p.copy(), np.empty((m, units), dtype)
    hidden_pass(got, bias, n, key, states, pos, neg)
    assert np.array_equal(got, ref) and np.array_equal(states, ref_states)
    # split into row ranges: the same bits
    split, split_states = p.copy(), np.empty((m, units), dtype)
    hidden_pass(split, bias, n, key, split_states, pos, neg, (n // 2, n), (m // 2, m))
    hidden_pass(split, bias, n, key, split_states, pos, neg, (0, n // 2), (0, m // 2))
    assert np.array_equal(split, ref) and np.array_equal(split_states, ref_states)
    p0, pk, twin_states = hidden_pass_numpy(p, bias, n, key, pos, neg)
    assert np.array_equal(twin_states, ref_states)
    tol = 2e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got[:n], p0, rtol=tol, atol=1e-30)
    np.testing.assert_allclose(got[n:], pk, rtol=tol, atol=1e-30)


def test_hidden_pass_says_what_it_expected():
    p = np.zeros((6, 4), np.float32)
    with pytest.raises(ValueError, match="states of shape"):
        hidden_pass(p, np.zeros(4, np.float32), 2, draw_key(np.random.default_rng(0)),
                    np.zeros((3, 4), np.float32), -0.5, 0.25)


FITS = {"pcd1": dict(persistent=True, momentum=0.5, final_momentum=0.9, weight_decay=1e-3),
        "pcd2": dict(persistent=True, k=2),
        "cd1": dict(persistent=False),
        "cd2_sampled": dict(persistent=False, k=2, sample_reconstruction=True),
        "cd3": dict(persistent=False, k=3),
        "pcd_batch_7": dict(persistent=True, batch_size=7)}   # 40 rows: a short last batch


def _fit(x, kw, lean, dtype=np.float32):
    """A fit through ``train_unit``; lean False: every step through ``_general_step``."""
    config = dict(epochs=2, lr=0.1, batch_size=16, k=1, monitor_size=0)
    config.update(kw)
    rbm = BernoulliRBM(x.shape[1], 13, rng=1, dtype=dtype)
    if not lean:
        rbm._lean_step = rbm._general_step
    history = rbm.fit(x, PretrainConfig(**config), seed=4)
    digest = hashlib.sha256(b"".join(rbm.params[k].tobytes() for k in sorted(rbm.params)))
    return digest.hexdigest(), [{k: v for k, v in r.items() if k != "seconds"} for r in history]


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    return (rng.random((40, 21)) < rng.random(21)).astype(np.float32)


@pytest.mark.parametrize("name", list(FITS))
def test_lean_step_trains_the_general_paths_rbm_bit_for_bit(data, name):
    assert _fit(data, FITS[name], lean=True) == _fit(data, FITS[name], lean=False)


def test_lean_step_in_float64_and_the_gaussian_fallback(data):
    assert _fit(data, FITS["pcd1"], True, np.float64) == \
        _fit(data, FITS["pcd1"], False, np.float64)
    rbm = BernoulliRBM(21, 5, visible="gaussian", rng=0)      # the general path
    rbm.fit(data - 0.5, PretrainConfig(epochs=1, batch_size=10, lr=0.01, monitor_size=0))
    assert all(np.isfinite(v).all() for v in rbm.params.values())


def test_lean_step_reuses_its_outputs_and_advances_a_non_contiguous_chain(data):
    rbm = BernoulliRBM(21, 13, rng=0)
    ref = BernoulliRBM(21, 13, rng=0)
    ref._lean_step = ref._general_step
    chain = np.asfortranarray((np.random.default_rng(0).random((16, 13)) < 0.5).astype(np.float32))
    ref_chain = chain.copy(order="F")
    ref.cd_gradients(data[:16], 1, np.random.default_rng(2), chain=ref_chain)
    rbm.cd_gradients(data[:16], 1, np.random.default_rng(2), chain=chain)
    first = rbm.grads["hidden_bias"]
    rbm.cd_gradients(data[:16], 1, np.random.default_rng(5), chain=chain.copy(order="F"))
    assert rbm.grads["hidden_bias"] is first       # written in place, no new array a step
    assert np.array_equal(chain, ref_chain)
