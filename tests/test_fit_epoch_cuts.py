"""Sitting 22's cuts to the part of a training step outside the sparse layer (issue #11):
fit's batch loop on one BLAS thread for a model whose BLAS products are all small, with
the same bits and the thread count restored; only such models."""
import numpy as np
import pytest

import minidnn as md
from minidnn import threads, training
from minidnn.optimizers import SGD
from minidnn.training import fit


def _sparse_net(seed=0):
    rng = np.random.default_rng(seed)
    return md.Sequential([md.Flatten(), md.SparseDense(64, 40, density=0.2, rng=rng),
                          md.Sigmoid(), md.Dense(40, 10, rng=rng)], seed=None)


def _data(n=300, m=64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, m), dtype=np.float32), rng.integers(0, 10, n)


def test_only_small_blas_picks_models_by_their_products():
    assert training._only_small_blas(_sparse_net(), 100)
    dense = md.Sequential([md.Dense(784, 500), md.Sigmoid(), md.Dense(500, 10)])
    assert not training._only_small_blas(dense, 100)        # 100·784·500 >= 2^23
    assert training._only_small_blas(dense, 10)             # 10·784·500 < 2^23
    conv = md.Sequential([md.Conv2D(1, 4, 3), md.Flatten(), md.Dense(4 * 26 * 26, 10)])
    assert not training._only_small_blas(conv, 1)           # a layer of another kind

    class OwnProducts(md.Dense):                            # its products: unknown
        def _weight_grad(self, x, grad):
            return x.T @ grad
    assert not training._only_small_blas(md.Sequential([OwnProducts(4, 3)]), 1)
    off = md.Sequential([md.Dense(5, 3)])
    off.layers[0].SERIAL_TRAINING_BELOW = 0                 # the layer's switch, off
    assert not training._only_small_blas(off, 1)


def _blas_threads():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    # NumPy's own BLAS (what threads.serial_blas_if_small switches; SciPy's may load later)
    return sorted((p["filepath"], p["num_threads"]) for p in threadpoolctl.threadpool_info()
                  if p["user_api"] == "blas" and "numpy" in p["filepath"])


def _fit_recording_blas(model, x, y, monkeypatch, **kwargs):
    pytest.importorskip("threadpoolctl")
    seen = []
    real_step = SGD.step

    def step(self, m):      # the BLAS NumPy calls (threads.serial_blas_if_small's)
        seen.append(max(get() for get, _ in threads._blas_thread_calls()))
        return real_step(self, m)
    monkeypatch.setattr(SGD, "step", step)
    fit(model, (x, y), epochs=2, batch_size=50, optimizer=SGD(0.1, momentum=0.9),
        progress=False, log=None, **kwargs)
    monkeypatch.setattr(SGD, "step", real_step)
    return seen


def test_fit_runs_the_batch_loop_of_a_sparse_net_on_one_blas_thread_with_the_same_bits(
        monkeypatch):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    x, y = _data()
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        before = _blas_threads()
        serial = _sparse_net()
        seen = _fit_recording_blas(serial, x, y, monkeypatch)
        assert seen and set(seen) == {1}
        assert _blas_threads() == before       # restored after the loop
        # the old path: BLAS's own count in the loop
        monkeypatch.setattr(training, "_batch_loop_blas",
                            lambda model, batch: training.serial_blas_if_small(1 << 62))
        threaded = _sparse_net()
        assert set(_fit_recording_blas(threaded, x, y, monkeypatch)) == {2}
    for (name, a), (_, b) in zip(serial.named_params(), threaded.named_params()):
        assert np.array_equal(a, b), name


def test_fit_leaves_the_blas_threads_of_a_net_with_large_products(monkeypatch):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    rng = np.random.default_rng(0)
    x, y = rng.random((100, 900), dtype=np.float32), rng.integers(0, 10, 100)
    model = md.Sequential([md.Dense(900, 200), md.Sigmoid(), md.Dense(200, 10)])
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        seen = _fit_recording_blas(model, x, y, monkeypatch)   # 50·900·200 >= 2^23
    assert set(seen) == {2}


def test_the_blas_thread_count_comes_back_after_a_divergence(monkeypatch):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    x, y = _data()
    x[0, 0] = 1e30                      # a loss of inf soon enough at this learning rate
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        before = _blas_threads()
        with pytest.raises(training.TrainingDiverged):
            fit(_sparse_net(), (x, y), epochs=1, batch_size=50,
                optimizer=SGD(1e3), progress=False, log=None, shuffle=False)
        assert _blas_threads() == before
