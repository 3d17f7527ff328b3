"""Sitting 21 (#8, MLP inference at batch 100): the column split of a Dense product
over the threads (``InferencePlan.DENSE_COLUMNS``, ``inference._dense_columns``), the
bias/ReLU pass on a range of columns (``fused_inference.bias_act_columns``) held to
its NumPy twin, and the buffer kept between two Dense stages: infer == forward for
the MLP and LeNet at batch 1 and 100 with the switch on and off, and two calls never
share or overwrite each other's results."""
import numpy as np
import pytest

from minidnn import architectures
import minidnn.inference as inference
from minidnn.inference import InferencePlan
from minidnn.kernels import fused_inference as fused


# -- the kernel against its twin ------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("j0, j1", [(0, 37), (0, 16), (16, 37), (5, 6), (9, 9)])
def test_bias_act_columns_is_the_twin_bit_for_bit(dtype, relu, j0, j1):
    rng = np.random.default_rng(21)
    y = rng.standard_normal((7, 37)).astype(dtype)
    y[0, :] = np.nan
    y[1, :] = -0.0
    y[2, :] = np.inf
    bias = rng.standard_normal(37).astype(dtype)
    bias[3] = 0.0
    twin = fused.bias_act_columns_numpy(y, bias, j0, j1, relu)
    got = fused.bias_act_columns(y.copy(), bias, j0, j1, relu)
    np.testing.assert_array_equal(got, twin)
    assert np.array_equal(np.signbit(got), np.signbit(twin))      # ±0 as the twin
    # outside [j0, j1) nothing moves; inside it is bias_relu / Dense's += b
    np.testing.assert_array_equal(got[:, :j0], y[:, :j0])
    np.testing.assert_array_equal(got[:, j1:], y[:, j1:])
    whole = fused.bias_relu_numpy(y, bias) if relu else y + bias
    np.testing.assert_array_equal(got[:, j0:j1], whole[:, j0:j1])


def test_bias_act_columns_refuses_what_it_cannot_take():
    y = np.zeros((3, 8), np.float32)
    with pytest.raises(ValueError, match="C-contiguous 2-D"):
        fused.bias_act_columns(y.T, np.zeros(3, np.float32), 0, 3, True)
    with pytest.raises(ValueError, match="outside"):
        fused.bias_act_columns(y, np.zeros(8, np.float32), 4, 9, True)
    with pytest.raises(ValueError, match=r"bias of shape \(8,\)"):
        fused.bias_act_columns(y, np.zeros(7, np.float32), 0, 8, True)
    # a float64 bias on float32 y is cast, as Dense's += b does
    got = fused.bias_act_columns(y.copy(), np.full(8, 0.5), 0, 8, False)
    assert got.dtype == np.float32 and np.all(got == 0.5)


# -- the column split -------------------------------------------------------------------
@pytest.mark.parametrize("N, parts", [(500, 2), (500, 3), (10, 2), (64, 2), (1000, 7), (65, 2)])
def test_column_spans_cover_the_columns_on_aligned_cuts(N, parts):
    spans = inference._column_spans(N, parts)
    assert spans[0][0] == 0 and spans[-1][1] == N
    assert all(a < b for a, b in spans) and all(b == c for (_, b), (c, _) in zip(spans, spans[1:]))
    assert all(a % inference.DENSE_COLUMNS_ALIGN == 0 for a, _ in spans)
    assert len(spans) <= parts
    assert inference._column_spans(500, 2) == [(0, 256), (256, 500)]


@pytest.mark.parametrize("parts", [2, 3])
@pytest.mark.parametrize("relu, with_bias", [(True, True), (False, True), (True, False),
                                             (False, False)])
def test_dense_columns_equals_the_product(parts, relu, with_bias):
    rng = np.random.default_rng(22)
    x = rng.standard_normal((30, 70), dtype=np.float32)
    W = rng.standard_normal((70, 200), dtype=np.float32)
    b = rng.standard_normal(200, dtype=np.float32) if with_bias else None
    expected = x @ W
    if with_bias:
        expected = expected + b
    if relu:
        expected = np.maximum(expected, 0)
    y = np.full((30, 200), np.nan, np.float32)       # every column must be written
    got = inference._dense_columns(x, W, b, relu, y, parts)
    assert got is y
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


def _count_column_splits(monkeypatch):
    calls = []
    split = inference._dense_columns

    def counted(x, W, b, relu, y, parts):
        calls.append((x.shape, W.shape, parts))
        return split(x, W, b, relu, y, parts)
    monkeypatch.setattr(inference, "_dense_columns", counted)
    return calls


MODELS = {"mlp": ("mlp:784-500-10:relu", (1, 28, 28)), "lenet": ("lenet", (1, 28, 28))}


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("columns", [True, False])
@pytest.mark.parametrize("threads", [1, 2])
def test_infer_equals_forward_at_batch_1_and_100(name, columns, threads, monkeypatch):
    spec, shape = MODELS[name]
    model = architectures.build(spec, input_shape=shape, seed=0)
    monkeypatch.setattr(inference, "numba_thread_count", lambda: threads)
    monkeypatch.setattr(InferencePlan, "DENSE_COLUMNS", columns)
    calls = _count_column_splits(monkeypatch)
    rng = np.random.default_rng(23)
    for N in (1, 100):
        x = rng.random((N,) + shape, dtype=np.float32)
        expected = model.forward(x, training=False)
        got = model.infer(x)
        assert got.shape == expected.shape and got.dtype == expected.dtype
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    # the split runs only where it should: the MLP at batch 100, at 2 threads, switch on
    # (LeNet's batch of 100 is split by samples; batch-1 products are under the minimum)
    if name == "mlp" and columns and threads == 2:
        assert calls == [((100, 784), (784, 500), 2)]
    else:
        assert calls == []


def test_kept_buffer_never_reaches_the_caller(monkeypatch):
    """Two calls with different inputs give different, correct results; the first
    result is not overwritten by the second, and no result shares memory with the
    buffers the plan keeps (the hidden layer's product is kept from call to call, in
    the column split only: the switch is off by default since sitting 21's quiet A/B)."""
    monkeypatch.setattr(inference, "numba_thread_count", lambda: 2)
    monkeypatch.setattr(InferencePlan, "DENSE_COLUMNS", True)
    model = architectures.build("mlp:784-500-10:relu", input_shape=(1, 28, 28), seed=0)
    rng = np.random.default_rng(24)
    xa, xb = (rng.random((100, 1, 28, 28), dtype=np.float32) for _ in range(2))
    ya = model.infer(xa)
    ya_copy = ya.copy()
    yb = model.infer(xb)
    np.testing.assert_array_equal(ya, ya_copy)                 # not overwritten
    assert not np.allclose(ya, yb)
    for x, y in ((xa, ya), (xb, yb)):
        expected = model.forward(x, training=False)
        np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    plan = model._inference_plan
    assert [getattr(s, "reuse_output", False) for s in plan.stages] == [False, True, False]
    kept = list(plan._scratch_for(0)._arrays.values())
    assert kept and all(not np.shares_memory(y, k) for y in (ya, yb) for k in kept)
    # the same buffer serves the next call (nothing is allocated for it again)
    before = [id(k) for k in kept]
    model.infer(xa)
    assert [id(k) for k in plan._scratch_for(0)._arrays.values()] == before
    np.testing.assert_allclose(model.infer(xa), ya_copy, rtol=1e-6, atol=1e-6)


def test_last_dense_stage_returns_a_fresh_array():
    model = architectures.build("mlp:784-64-10:relu", seed=0)
    x = np.random.default_rng(25).random((5, 784), dtype=np.float32)
    first, second = model.infer(x), model.infer(x)
    assert first is not second and not np.shares_memory(first, second)


def test_plan_with_an_unknown_layer_keeps_blas_threads(monkeypatch):
    """A layer the plan runs by its own forward may call BLAS itself: such a plan never
    takes the column split (nor one-thread BLAS around the call)."""
    import minidnn as md
    monkeypatch.setattr(inference, "numba_thread_count", lambda: 2)
    monkeypatch.setattr(InferencePlan, "DENSE_COLUMNS", True)   # off by default
    calls = _count_column_splits(monkeypatch)
    rng = np.random.default_rng(26)
    model = md.Sequential([md.Dense(784, 600, rng=rng), md.ReLU(), md.Dropout(0.5),
                           md.Dense(600, 10, rng=rng)], seed=0, input_shape=(784,))
    x = rng.random((100, 784), dtype=np.float32)
    expected = model.forward(x, training=False)
    np.testing.assert_allclose(model.infer(x), expected, rtol=1e-5, atol=1e-5)
    assert not model._inference_plan.thread_safe and calls == []
