"""Dense's mid-sized training products run BLAS on one thread (the dispatch rule
``Dense.SERIAL_TRAINING_FROM`` <= batch·in·out < ``SERIAL_TRAINING_BELOW``):
the same gradients, the thread count restored, and only the plain products affected."""
import numpy as np
import pytest

from minidnn.layers import Dense
from minidnn.layers import dense as dense_module


def _step(layer, x, grad):
    layer.forward(x, training=True)
    dx = layer.backward(grad)
    return dx, layer.grads["W"].copy(), layer.grads["b"].copy()


@pytest.fixture
def calls(monkeypatch):
    seen = []
    real = dense_module.serial_blas_if_small

    def recording(multiply_adds):
        seen.append(multiply_adds)
        return real(multiply_adds)

    monkeypatch.setattr(dense_module, "serial_blas_if_small", recording)
    return seen


def _blas_threads(threadpoolctl) -> dict:
    return {info["filepath"]: info["num_threads"] for info in threadpoolctl.threadpool_info()
            if info["user_api"] == "blas"}


def test_small_backward_is_serial_with_the_same_gradients(calls):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((100, 1024)).astype(np.float32)
    grad = rng.standard_normal((100, 64)).astype(np.float32)
    layer = Dense(1024, 64, rng=0)
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        before = _blas_threads(threadpoolctl)
        serial = _step(layer, x, grad)
        assert calls and all(n == 0 for n in calls)        # 2^20 <= 100·1024·64 < 2^23
        after = _blas_threads(threadpoolctl)
        # thread counts restored (compared per library: the step may load another BLAS,
        # e.g. SciPy's OpenBLAS, whose arrival reorders threadpool_info's list)
        assert {path: after[path] for path in before} == before
        W = layer.params["W"]
        threaded = (grad @ W.T, x.T @ grad, grad.sum(axis=0))      # BLAS's own threads
    for a, b in zip(serial, threaded):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)   # float32 sums, other order


def test_large_small_and_own_products_keep_their_threads(calls):
    rng = np.random.default_rng(1)
    big = Dense(784, 500, rng=0)                             # 100·784·500 > 2^23
    _step(big, rng.standard_normal((100, 784)), rng.standard_normal((100, 500)))
    assert all(n > 1 << 40 for n in calls)   # no switch (none is made)
    calls.clear()
    small = Dense(500, 10, rng=0)                            # 100·500·10 < 2^20
    _step(small, rng.standard_normal((100, 500)), rng.standard_normal((100, 10)))
    assert all(n > 1 << 40 for n in calls)   # no switch (none is made)

    class OwnProducts(Dense):
        def _weight_grad(self, x, grad):
            return x.T @ grad

    calls.clear()
    own = OwnProducts(8, 4, rng=0)
    _step(own, rng.standard_normal((3, 8)), rng.standard_normal((3, 4)))
    assert all(n > 1 << 40 for n in calls)   # no switch (none is made)
