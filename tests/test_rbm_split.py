"""The CD/PCD step split by rows over worker threads (``BernoulliRBM._split_step``) and the
Bernoulli kernel's ``row_offset`` it relies on.

The split path must draw exactly the one-thread path's samples (same keys, same
counters per row), give its gradient to rounding, and stay seeded and resumable
bit for bit. The tests force the split with ``SPLIT_THREADS`` / ``SPLIT_MIN_ROWS``,
so they run it whatever the machine's thread count."""
import numpy as np
import pytest

from minidnn.kernels.rbm_kernels import (draw_key, sigmoid_bernoulli, sigmoid_bernoulli_numpy)
from minidnn.pretraining import DBN, BernoulliRBM, PretrainConfig


@pytest.fixture
def split(monkeypatch):
    """Force a split into ``parts`` threads for every BernoulliRBM."""
    def force(parts):
        monkeypatch.setattr(BernoulliRBM, "SPLIT_ROWS", True)
        monkeypatch.setattr(BernoulliRBM, "SPLIT_THREADS", parts)
        monkeypatch.setattr(BernoulliRBM, "SPLIT_MIN_ROWS", 1)
    return force


def rbm_pair(n_visible, n_hidden, dtype, parts):
    made = []
    for split in (False, True):
        rbm = BernoulliRBM(n_visible, n_hidden, rng=1, init_std=0.7, dtype=dtype)
        rbm.params["visible_bias"] = np.linspace(-1, 1, n_visible).astype(dtype)
        rbm.params["hidden_bias"] = np.linspace(0.5, -0.5, n_hidden).astype(dtype)
        rbm.SPLIT_ROWS, rbm.SPLIT_THREADS, rbm.SPLIT_MIN_ROWS = split, parts, 1
        made.append(rbm)
    return made


@pytest.mark.parametrize("cols", [784, 13, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_row_blocks_with_row_offset_draw_what_the_whole_call_draws(cols, dtype):
    rng = np.random.default_rng(cols)
    pre = (3 * rng.standard_normal((37, cols))).astype(dtype)
    bias = rng.standard_normal(cols).astype(dtype)
    key = draw_key(rng)
    p_whole, s_whole = sigmoid_bernoulli(pre.copy(), bias, key)
    for lo, hi in [(0, 5), (5, 6), (6, 23), (23, 37)]:
        block = pre[lo:hi].copy()
        states = np.empty_like(block)
        sigmoid_bernoulli(block, bias, key, states, row_offset=lo)
        assert np.array_equal(block, p_whole[lo:hi]) and np.array_equal(states, s_whole[lo:hi])
        p_twin, s_twin = sigmoid_bernoulli_numpy(pre[lo:hi], bias, key, row_offset=lo)
        assert np.array_equal(states, s_twin)
        np.testing.assert_allclose(block, p_twin, rtol=2e-6 if dtype == np.float32 else 1e-15)
    with pytest.raises(ValueError, match="row_offset"):
        sigmoid_bernoulli(pre.copy(), bias, key, row_offset=-1)


@pytest.mark.parametrize("parts", [2, 3])
@pytest.mark.parametrize("n,m,k", [(60, 60, 1), (23, 60, 1), (60, 60, 2), (31, 45, 3)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_split_pcd_equals_the_one_thread_pcd(parts, n, m, k, dtype):
    """Same chains after several steps (the samples are the one-thread path's) and the
    same gradient to rounding, with short batches (n < m) and k > 1."""
    one, split = rbm_pair(19, 11, dtype, parts)
    rng = np.random.default_rng(0)
    chain_one = (rng.random((m, 11)) < 0.5).astype(dtype)
    chain_split = chain_one.copy()
    rng_one, rng_split = np.random.default_rng(7), np.random.default_rng(7)
    tol = 1e-6 if dtype == np.float32 else 1e-13
    for _ in range(4):
        v0 = (rng.random((n, 19)) < 0.4).astype(dtype)
        assert one.cd_gradients(v0, k, rng_one, chain=chain_one) == {}
        assert split.cd_gradients(v0, k, rng_split, chain=chain_split) == {}
        np.testing.assert_array_equal(chain_split, chain_one)
        for key in one.grads:
            np.testing.assert_allclose(split.grads[key], one.grads[key], atol=tol, err_msg=key)
            assert split.grads[key].dtype == dtype
        # the key stream is consumed alike, so the next step's draws line up too
        assert rng_one.bit_generator.state == rng_split.bit_generator.state


@pytest.mark.parametrize("parts", [2, 3])
@pytest.mark.parametrize("k,sample_reconstruction", [(1, False), (1, True), (3, False)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_split_cd_equals_the_one_thread_cd(parts, k, sample_reconstruction, dtype):
    one, split = rbm_pair(19, 11, dtype, parts)
    rng = np.random.default_rng(0)
    rng_one, rng_split = np.random.default_rng(7), np.random.default_rng(7)
    tol = 1e-6 if dtype == np.float32 else 1e-13
    for n in (40, 37, 40):
        v0 = (rng.random((n, 19)) < 0.4).astype(dtype)
        a = one.cd_gradients(v0, k, rng_one, sample_reconstruction=sample_reconstruction)
        b = split.cd_gradients(v0, k, rng_split, sample_reconstruction=sample_reconstruction)
        assert b["reconstruction_error"] == pytest.approx(a["reconstruction_error"], rel=1e-5)
        for key in one.grads:
            np.testing.assert_allclose(split.grads[key], one.grads[key], atol=tol, err_msg=key)
        assert rng_one.bit_generator.state == rng_split.bit_generator.state


def test_split_pcd_equals_a_plain_numpy_pcd_step(split):
    """Written out with the NumPy twins (as test_rbm's check of the one-thread path)."""
    split(2)
    from minidnn.kernels.rbm_kernels import sigmoid_bias_numpy
    rbm = rbm_pair(9, 6, np.float64, 2)[1]
    W, b, c = (rbm.params[k] for k in ("W", "visible_bias", "hidden_bias"))
    rng = np.random.default_rng(0)
    v0 = (rng.random((5, 9)) < 0.4).astype(np.float64)
    chain = (rng.random((7, 6)) < 0.5).astype(np.float64)
    start = chain.copy()
    rbm.cd_gradients(v0, 1, np.random.default_rng(3), chain=chain)
    keys = np.random.default_rng(3)
    _, vk = sigmoid_bernoulli_numpy(start @ W.T, b, draw_key(keys))
    p0 = sigmoid_bias_numpy(v0 @ W, c)
    pk, next_chain = sigmoid_bernoulli_numpy(vk @ W, c, draw_key(keys))
    np.testing.assert_array_equal(chain, next_chain)
    np.testing.assert_allclose(rbm.grads["W"], -(v0.T @ p0 / 5 - vk.T @ pk / 7), atol=1e-13)
    np.testing.assert_allclose(rbm.grads["visible_bias"], -(v0.mean(0) - vk.mean(0)), atol=1e-13)
    np.testing.assert_allclose(rbm.grads["hidden_bias"], -(p0.mean(0) - pk.mean(0)), atol=1e-13)


def test_a_chain_of_another_dtype_or_layout_is_advanced_in_place(split):
    split(2)
    rbm = rbm_pair(9, 6, np.float32, 2)[1]
    chain = np.asfortranarray((np.random.default_rng(1).random((8, 6)) < 0.5).astype(np.float64))
    before = chain.copy()
    rbm.cd_gradients(np.ones((8, 9), np.float32), 1, np.random.default_rng(2), chain=chain)
    assert chain.dtype == np.float64 and not np.array_equal(chain, before)
    assert set(np.unique(chain)) <= {0.0, 1.0}


def test_gaussian_visible_units_keep_the_one_thread_path(split, monkeypatch):
    split(2)
    rbm = BernoulliRBM(9, 6, visible="gaussian", rng=0)
    assert rbm._split_parts(100, 100) == 1
    monkeypatch.setattr(BernoulliRBM, "_split_step", None)     # would fail if called
    rbm.cd_gradients(np.ones((8, 9)), 1, np.random.default_rng(2), chain=np.zeros((8, 6)))


def test_few_rows_do_not_split(monkeypatch):
    rbm = BernoulliRBM(9, 6, rng=0)
    rbm.SPLIT_ROWS, rbm.SPLIT_THREADS, rbm.SPLIT_MIN_ROWS = True, 2, 16   # split opted into
    assert rbm._split_parts(31, 100) == 1 and rbm._split_parts(32, 32) == 2
    assert rbm._split_parts(100, 100) == 2
    rbm.SPLIT_ROWS = False
    assert rbm._split_parts(100, 100) == 1


def test_an_error_in_a_worker_part_is_raised_not_a_broken_barrier(split, monkeypatch):
    split(2)
    rbm = BernoulliRBM(9, 6, rng=0)
    import minidnn.pretraining.rbm as rbm_module
    real = rbm_module.sigmoid_bernoulli

    def failing(pre, bias, key, states=None, row_offset=0, scale=1.0):
        if row_offset > 0:
            raise RuntimeError("part 1 failed")
        return real(pre, bias, key, states, row_offset, scale)
    monkeypatch.setattr(rbm_module, "sigmoid_bernoulli", failing)
    with pytest.raises(RuntimeError, match="part 1 failed"):
        rbm.cd_gradients(np.ones((8, 9), np.float32), 1, np.random.default_rng(2),
                         chain=np.zeros((8, 6), np.float32))


def test_an_interrupt_at_the_barrier_does_not_leave_a_worker_waiting(split, monkeypatch):
    """Ctrl-C while the calling thread waits at the barrier: the worker must be released
    (it would wait forever, and the step with it; here a 20 s timeout stands in)."""
    import threading
    import time
    split(2)

    class InterruptedBarrier(threading.Barrier):
        def wait(self, timeout=None):
            if threading.current_thread() is threading.main_thread():
                raise KeyboardInterrupt
            return super().wait(timeout=20)
    monkeypatch.setattr(threading, "Barrier", InterruptedBarrier)
    rbm = BernoulliRBM(9, 6, rng=0)
    start = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        rbm.cd_gradients(np.ones((8, 9), np.float32), 1, np.random.default_rng(2),
                         chain=np.zeros((8, 6), np.float32))
    assert time.perf_counter() - start < 10


@pytest.mark.parametrize("persistent", [True, False])
def test_split_training_is_seeded_and_resumes_bit_for_bit(split, tmp_path, monkeypatch, persistent):
    split(2)
    calls = []
    real = BernoulliRBM._split_step
    monkeypatch.setattr(BernoulliRBM, "_split_step",
                        lambda self, *a: calls.append(1) or real(self, *a))
    x = (np.random.default_rng(0).random((120, 20)) < 0.3).astype(np.float32)
    config = PretrainConfig(epochs=3, batch_size=30, persistent=persistent, momentum_switch_epoch=2)
    whole = DBN([20, 12, 6], rng=4)
    whole.pretrain(x, config, seed=5)
    again = DBN([20, 12, 6], rng=4)
    again.pretrain(x, config, seed=5)
    path = tmp_path / "ck.h5"
    first = DBN([20, 12, 6], rng=4)

    class Stop(Exception):
        pass

    def stop_at(line):
        if line.startswith("rbm_0 epoch   2"):
            raise Stop
    with pytest.raises(Stop):
        first.pretrain(x, config, seed=5, checkpoint=path, log=stop_at)
    resumed = DBN([20, 12, 6], rng=4)
    resumed.pretrain(x, config, seed=5, checkpoint=path, resume=True)
    for a, b, c in zip(whole.units, again.units, resumed.units):
        for key in a.params:
            np.testing.assert_array_equal(a.params[key], b.params[key], err_msg=key)
            np.testing.assert_array_equal(a.params[key], c.params[key], err_msg=key)
    assert calls      # the split path ran


# -- the SGD step on the same threads --------------------------------------------------------

@pytest.mark.parametrize("parts", [2, 3])
@pytest.mark.parametrize("momentum,weight_decay,form", [(0.0, 0.0, "caffe"), (0.9, 0.002, "caffe"),
                                                        (0.5, 0.0, "pytorch"), (0.0, 0.01, "caffe")])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_split_sgd_step_equals_the_twin_bit_for_bit(parts, momentum, weight_decay, form, dtype,
                                                    monkeypatch):
    from minidnn.kernels import sgd_update
    monkeypatch.setattr(sgd_update, "SPLIT_MIN_ELEMENTS", 1)
    rng = np.random.default_rng(parts)
    w = rng.standard_normal((37, 29)).astype(dtype)
    g = rng.standard_normal((37, 29)).astype(dtype)
    v = rng.standard_normal((37, 29)).astype(dtype) if momentum else None
    w_ref, v_ref = w.copy(), None if v is None else v.copy()
    sgd_update.sgd_update_numpy(w_ref, g, v_ref, 0.1, momentum, weight_decay, form)
    sgd_update.sgd_update_unchecked(w, g, v, 0.1, momentum, weight_decay, form, parts)
    assert np.array_equal(w, w_ref)
    if v is not None:
        assert np.array_equal(v, v_ref)


def test_the_optimizer_splits_the_rbm_weights_step_as_the_cd_step(split, monkeypatch):
    from types import SimpleNamespace
    from minidnn.kernels import sgd_update
    from minidnn.optimizers import SGD
    calls = []
    real = sgd_update._split_update
    monkeypatch.setattr(sgd_update, "SPLIT_MIN_ELEMENTS", 1)
    monkeypatch.setattr(sgd_update, "_split_update",
                        lambda w, g, v, args, parts: calls.append((w.size, parts)) or
                        real(w, g, v, args, parts))
    split(2)
    holder = SimpleNamespace(layers=[BernoulliRBM(9, 6, rng=0)])
    rbm = holder.layers[0]
    v0 = np.ones((8, 9), np.float32)
    rbm.cd_gradients(v0, 1, np.random.default_rng(2), chain=np.zeros((8, 6), np.float32))
    SGD(0.1, momentum=0.9).step(holder)
    assert calls == [(54, 2)]               # W only; the biases on one thread
    split(1)
    rbm.cd_gradients(v0, 1, np.random.default_rng(2), chain=np.zeros((8, 6), np.float32))
    SGD(0.1).step(holder)
    assert calls == [(54, 2)]


@pytest.mark.parametrize("persistent", [True, False])
@pytest.mark.parametrize("x_dtype", [np.float32, np.float64])
def test_train_rows_gathers_in_the_threads_and_equals_train_batch(split, persistent, x_dtype):
    """train_unit hands an RBM the rows' indices (``train_rows``); the split step's threads
    gather them, with the bits of ``train_batch(x[idx])``."""
    split(2)
    x = (np.random.default_rng(0).random((90, 19)) < 0.3).astype(x_dtype)
    idx = np.sort(np.random.default_rng(1).permutation(90)[:40])
    config = PretrainConfig(batch_size=40, persistent=persistent)
    results = []
    for use_rows in (False, True):
        rbm = rbm_pair(19, 11, np.float32, 2)[1]
        rng = np.random.default_rng(3)
        state = rbm.new_train_state(x, config, rng)
        for _ in range(3):
            stats = rbm.train_rows(x, idx, rng, config, state) if use_rows else \
                rbm.train_batch(x[idx], rng, config, state)
        results.append((stats, {k: g.copy() for k, g in rbm.grads.items()}, state.get("chain")))
    (stats_a, grads_a, chain_a), (stats_b, grads_b, chain_b) = results
    assert stats_a == stats_b
    for key in grads_a:
        assert np.array_equal(grads_a[key], grads_b[key]), key
    if persistent:
        assert np.array_equal(chain_a, chain_b)
