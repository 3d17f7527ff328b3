"""Sitting 20's RBM step: the lean one-thread path (``BernoulliRBM.LEAN_STEP``), the
two-thread σ passes (``SIGMA_SPLIT``), the one-call hidden pass and the keys drawn at
once. Each must give the general path's results bit for bit."""
import hashlib
import os
import threading

import numpy as np
import pytest

from minidnn.kernels.rbm_kernels import (draw_key, draw_keys, hidden_pass, hidden_pass_numpy,
                                         sigmoid_bernoulli, sigmoid_bias)
from minidnn.pretraining import BernoulliRBM, PretrainConfig
from minidnn.pretraining import rbm as rbm_module


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
    # split into row ranges (what the two threads of SIGMA_SPLIT each do): the same bits
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


@pytest.fixture(autouse=True)
def split_at_one_thread(monkeypatch):
    """The suite runs at one Numba thread, where SIGMA_SPLIT stays off; let it split."""
    monkeypatch.setattr(BernoulliRBM, "SIGMA_SPLIT_MIN_THREADS", 1)


def _fit(x, kw, lean, split, dtype=np.float32):
    old = BernoulliRBM.LEAN_STEP, BernoulliRBM.SIGMA_SPLIT
    BernoulliRBM.LEAN_STEP, BernoulliRBM.SIGMA_SPLIT = lean, split
    try:
        config = dict(epochs=2, lr=0.1, batch_size=16, k=1, monitor_size=0)
        config.update(kw)
        rbm = BernoulliRBM(x.shape[1], 13, rng=1, dtype=dtype)
        history = rbm.fit(x, PretrainConfig(**config), seed=4)
    finally:
        BernoulliRBM.LEAN_STEP, BernoulliRBM.SIGMA_SPLIT = old
    digest = hashlib.sha256(b"".join(rbm.params[k].tobytes() for k in sorted(rbm.params)))
    return digest.hexdigest(), [{k: v for k, v in r.items() if k != "seconds"} for r in history]


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    return (rng.random((40, 21)) < rng.random(21)).astype(np.float32)


@pytest.mark.parametrize("name", list(FITS))
def test_lean_and_split_steps_train_the_general_paths_rbm_bit_for_bit(data, name):
    general = _fit(data, FITS[name], lean=False, split=False)
    assert _fit(data, FITS[name], lean=True, split=False) == general
    assert _fit(data, FITS[name], lean=True, split=True) == general


def test_lean_step_in_float64_and_the_gaussian_fallback(data):
    assert _fit(data, FITS["pcd1"], True, True, np.float64) == \
        _fit(data, FITS["pcd1"], False, False, np.float64)
    rbm = BernoulliRBM(21, 5, visible="gaussian", rng=0)      # the general path
    rbm.fit(data - 0.5, PretrainConfig(epochs=1, batch_size=10, lr=0.01, monitor_size=0))
    assert all(np.isfinite(v).all() for v in rbm.params.values())


def test_lean_step_reuses_its_outputs_and_advances_a_non_contiguous_chain(data):
    rbm = BernoulliRBM(21, 13, rng=0)
    ref = BernoulliRBM(21, 13, rng=0)
    chain = np.asfortranarray((np.random.default_rng(0).random((16, 13)) < 0.5).astype(np.float32))
    ref_chain = chain.copy(order="F")
    old = BernoulliRBM.LEAN_STEP
    try:
        BernoulliRBM.LEAN_STEP = False
        ref.cd_gradients(data[:16], 1, np.random.default_rng(2), chain=ref_chain)
        BernoulliRBM.LEAN_STEP = True
        rbm.cd_gradients(data[:16], 1, np.random.default_rng(2), chain=chain)
        first = rbm.grads["hidden_bias"]
        rbm.cd_gradients(data[:16], 1, np.random.default_rng(5), chain=chain.copy(order="F"))
    finally:
        BernoulliRBM.LEAN_STEP = old
    assert rbm.grads["hidden_bias"] is first       # written in place, no new array a step
    assert np.array_equal(chain, ref_chain)


def test_side_worker_runs_the_job_on_its_thread_and_hands_back_errors():
    worker = rbm_module._SideWorker()
    assert worker.native_id is None                 # nothing started until first use
    assert worker.available()
    seen = []
    worker.run(lambda: seen.append(threading.get_native_id()), lambda: seen.append("main"))
    assert worker.native_id in seen and "main" in seen

    def fail():
        raise RuntimeError("side job failed")
    with pytest.raises(RuntimeError, match="side job failed"):
        worker.run(fail, lambda: None)
    out = []
    worker.run(lambda: out.append(1), lambda: out.append(2))     # still usable
    assert sorted(out) == [1, 2]


def test_side_worker_in_use_by_another_thread_runs_both_jobs_on_the_caller():
    worker = rbm_module._SideWorker()
    worker.available()
    worker._user.acquire()                          # another thread's step holds it
    try:
        where = []
        worker.run(lambda: where.append(threading.get_native_id()),
                   lambda: where.append(threading.get_native_id()))
        assert where == [threading.get_native_id()] * 2
    finally:
        worker._user.release()


def test_sigma_split_uses_the_helper_only_when_threads_allow(data, monkeypatch):
    rbm = BernoulliRBM(21, 13, rng=0)
    monkeypatch.setattr(BernoulliRBM, "SIGMA_SPLIT", True)
    assert rbm._sigma_split()
    monkeypatch.setattr(BernoulliRBM, "SIGMA_SPLIT_MIN_THREADS", 2)
    monkeypatch.setattr(BernoulliRBM, "SPLIT_THREADS", 1)
    assert not rbm._sigma_split()
    monkeypatch.setattr(BernoulliRBM, "SPLIT_THREADS", 2)
    assert rbm._sigma_split()
    # the helper really takes a share: its thread's CPU time grows during split fits
    if not os.path.exists("/proc/self/task"):
        pytest.skip("per-thread CPU time needs Linux's /proc")
    rbm_module._SIDE.available()
    tid = rbm_module._SIDE.native_id

    def cpu():
        with open(f"/proc/self/task/{tid}/schedstat") as f:
            return int(f.read().split()[0])
    before = cpu()
    _fit(np.tile(data, (5, 1)), FITS["pcd1"], lean=True, split=True)
    assert cpu() > before


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_starts_its_own_helper():
    worker = rbm_module._SideWorker()
    worker.available()
    pid = os.fork()
    if pid == 0:                                    # the child: no inherited helper thread
        import signal
        signal.alarm(30)                            # a hang ends the child, not the suite
        ok = worker.native_id is None
        out = []
        worker.run(lambda: out.append(1), lambda: out.append(2))
        os._exit(0 if ok and sorted(out) == [1, 2] else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
