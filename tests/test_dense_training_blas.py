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


def test_small_backward_is_serial_with_the_same_gradients(calls):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((100, 1024)).astype(np.float32)
    grad = rng.standard_normal((100, 64)).astype(np.float32)
    layer = Dense(1024, 64, rng=0)
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        before = threadpoolctl.threadpool_info()
        serial = _step(layer, x, grad)
        assert calls and all(n == 0 for n in calls)        # 2^20 <= 100·1024·64 < 2^23
        assert threadpoolctl.threadpool_info() == before   # thread count restored
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


# -- sitting 24: the large training products are shared over claimed column blocks -----------

@pytest.fixture
def shared_calls(monkeypatch):
    seen = []
    real = dense_module.shared_matmul

    def recording(a, b, threads):
        seen.append((a.shape, b.shape, threads))
        return real(a, b, threads)

    monkeypatch.setattr(dense_module, "shared_matmul", recording)
    return seen


def _mlp_layer_step():
    rng = np.random.default_rng(24)
    layer = Dense(784, 500, rng=0)                           # 100·784·500 >= 2^23
    x = rng.random((100, 784), dtype=np.float32)
    grad = rng.standard_normal((100, 500)).astype(np.float32)
    return layer, x, grad


def test_sharing_is_off_by_default(shared_calls):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    layer, x, grad = _mlp_layer_step()
    assert Dense.SHARE_TRAINING_PRODUCTS is False
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        _step(layer, x, grad)
    assert shared_calls == []


def test_large_training_products_are_shared_with_the_one_thread_bits(shared_calls,
                                                                     monkeypatch):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    monkeypatch.setattr(Dense, "SHARE_TRAINING_PRODUCTS", True)
    layer, x, grad = _mlp_layer_step()
    with threadpoolctl.threadpool_limits(1, user_api="blas"):
        serial = _step(layer, x, grad)                       # one thread: nothing shared
        assert shared_calls == []
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        shared = _step(layer, x, grad)
        assert shared_calls == [((100, 784), (784, 500), 2),      # x W
                                ((784, 100), (100, 500), 2),      # xᵀ g
                                ((100, 500), (500, 784), 2)]      # g Wᵀ
        assert layer._share_threads == 1                     # restored after the nested use
        shared_calls.clear()
        layer.forward(x, training=False)                     # evaluation: BLAS's threads
        assert shared_calls == []
    for a, b in zip(serial, shared):
        np.testing.assert_array_equal(a, b)


def test_sharing_is_a_switch_and_skips_other_sizes_and_own_products(shared_calls,
                                                                            monkeypatch):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    layer, x, grad = _mlp_layer_step()
    rng = np.random.default_rng(2)

    class OwnProducts(Dense):
        def _weight_grad(self, x, grad):
            return x.T @ grad

    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        _step(layer, x, grad)                                # off (the default)
        monkeypatch.setattr(Dense, "SHARE_TRAINING_PRODUCTS", True)
        _step(Dense(1024, 64, rng=0), rng.random((100, 1024), dtype=np.float32),   # 2^20..2^23
              rng.random((100, 64), dtype=np.float32))
        _step(OwnProducts(784, 500, rng=0), x, grad)
    assert shared_calls == []
