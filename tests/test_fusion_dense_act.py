"""A fully connected layer fused with its activation (layers.fusion_dense, kernels.csr_fused):
the same bits as the two layers, each layer's state as if run alone, files unchanged."""
from __future__ import annotations

import numpy as np
import pytest

import minidnn as md
from minidnn import io
from minidnn.kernels import csr, csr_fused
from minidnn.layers import fusion
from minidnn.layers.fusion_dense import DenseActivation, SparseSigmoid
from minidnn.losses import SoftmaxCrossEntropy

SIMD = pytest.mark.skipif(not csr.SIMD_AVAILABLE, reason="the fused CSR kernels need AVX2 + FMA")


@pytest.fixture
def fuse():
    """Set FUSE_DENSE_ACTIVATION for a test, restored after."""
    before = fusion.FUSE_DENSE_ACTIVATION

    def set_(on):
        fusion.FUSE_DENSE_ACTIVATION = on
    yield set_
    fusion.FUSE_DENSE_ACTIVATION = before


def _sparse_net(first="sparse", act=md.Sigmoid, dtype="float32", density=0.05, n_in=60,
                n_hidden=40, bias=True, seed=0):
    rng = np.random.default_rng(seed)
    layer = (md.SparseDense(n_in, n_hidden, density=density, rng=rng, bias=bias)
             if first == "sparse" else md.Dense(n_in, n_hidden, rng=rng, bias=bias))
    return md.Sequential([md.Flatten(), layer, act(), md.Dense(n_hidden, 5, rng=rng)],
                         seed=None, dtype=dtype, input_shape=(n_in,))


def _data(n=37, n_in=60, seed=1, dtype=np.float32, order="C"):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, n_in)).astype(dtype)
    return (np.asfortranarray(x) if order == "F" else x), rng.integers(0, 5, n)


def _step(model, x, y, input_grad):
    out = model.forward(x, training=True)
    _, grad = SoftmaxCrossEntropy()(out, y)
    dx = model.backward(grad, input_grad=input_grad)
    return out, dx, {(l.name, k): np.array(v) for l in model.layers for k, v in l.grads.items()}


def _both(fuse, build, x, y, input_grad):
    results, plans = [], []
    for on in (True, False):
        fuse(on)
        model = build()
        results.append(_step(model, x, y, input_grad))
        plans.append([type(s).__name__ for _, s in model.plan()])
    return results, plans


def _assert_same(a, b, input_grad):
    np.testing.assert_array_equal(a[0], b[0])
    if input_grad:
        np.testing.assert_array_equal(a[1], b[1])
    else:
        assert a[1] is None and b[1] is None
    assert a[2].keys() == b[2].keys()
    for key in a[2]:
        np.testing.assert_array_equal(a[2][key], b[2][key], err_msg=str(key))


@pytest.mark.parametrize("input_grad", [False, True])
@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("bias", [True, False])
def test_sparse_sigmoid_pair_gives_the_two_layers_bits(fuse, input_grad, order, bias):
    x, y = _data(order=order)
    (fused, plain), (plan_on, plan_off) = _both(fuse, lambda: _sparse_net(bias=bias), x, y,
                                                input_grad)
    assert plan_on == ["Flatten", "SparseSigmoid", "Dense"]
    assert plan_off == ["Flatten", "SparseDense", "Sigmoid", "Dense"]
    _assert_same(fused, plain, input_grad)


@SIMD
def test_the_fused_sparse_kernels_run_and_batch_major_gradients_too(fuse):
    fuse(True)
    model = _sparse_net()
    x, y = _data()
    out = model.forward(x, training=True)
    pair = model.plan()[1][1]
    assert isinstance(pair, SparseSigmoid) and pair._fused
    # a C-ordered gradient (batch-major for the kernels) and a Fortran-ordered one
    g = np.random.default_rng(2).standard_normal(model.layers[2]._y.shape).astype(np.float32)
    sparse, sig = model.layers[1], model.layers[2]
    want = sparse.backward(sig.backward(g))                 # the layers by hand
    want_grads = {k: v.copy() for k, v in sparse.grads.items()}
    for grad in (g, np.asfortranarray(g)):
        got = pair.backward(grad)
        np.testing.assert_array_equal(got, want)
        for k in want_grads:
            np.testing.assert_array_equal(sparse.grads[k], want_grads[k])
    del out


@pytest.mark.parametrize("act", [md.Sigmoid, md.ReLU])
@pytest.mark.parametrize("input_grad", [False, True])
def test_dense_activation_pair_gives_the_two_layers_bits(fuse, act, input_grad):
    x, y = _data()
    (fused, plain), (plan_on, _) = _both(fuse, lambda: _sparse_net("dense", act), x, y,
                                         input_grad)
    assert plan_on == ["Flatten", "DenseActivation", "Dense"]
    _assert_same(fused, plain, input_grad)


def test_dense_relu_pair_in_float64_and_other_inputs_fall_back(fuse):
    x, y = _data(dtype=np.float64)
    (fused, plain), _ = _both(fuse, lambda: _sparse_net("dense", md.ReLU, dtype="float64"),
                              x, y, True)
    _assert_same(fused, plain, True)
    # float64 sparse + sigmoid: no fused kernel, the layers one by one, same numbers
    (fused, plain), _ = _both(fuse, lambda: _sparse_net(dtype="float64"), x, y, True)
    _assert_same(fused, plain, True)


@SIMD
def test_fused_kernels_match_their_numpy_twins():
    rng = np.random.default_rng(3)
    for k, density in ((1, 0.3), (8, 0.0), (37, 0.1), (100, 1.0)):
        layer = md.SparseDense(50, 30, density=max(density, 1e-9), rng=rng)
        if density == 0.0:
            layer = md.SparseDense.from_csr(np.zeros(31, np.int32), np.zeros(0, np.int32),
                                            np.zeros(0, np.float32), 50, 30,
                                            bias=np.ones(30, np.float32))
        kernels, data = layer._kernels, layer.params["data"]
        bias = layer.params["b"]
        x = rng.standard_normal((k, 50)).astype(np.float32)
        y, xt = csr_fused.forward_sigmoid(kernels, data, bias, x, True)
        want = csr_fused.forward_sigmoid_numpy(layer.buffers["indptr"], layer.buffers["indices"],
                                               data, bias, x.T.copy())
        np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)
        g = rng.standard_normal((30, k)).astype(np.float32)
        for input_grad in (True, False):
            got = csr_fused.backward_sigmoid(kernels, data, y, g, xt, input_grad)
            ref = csr_fused.backward_sigmoid_numpy(layer.buffers["indptr"],
                                                   layer.buffers["indices"], data, y, g,
                                                   x.T.copy(), input_grad)
            for a, b in zip(got, ref):
                if b is None:
                    assert a is None
                    continue
                scale = 1e-5 * max(1.0, float(np.abs(b).max(initial=0)))
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=scale)


@pytest.mark.parametrize("activation", ["sigmoid", "relu"])
def test_bias_activation_matches_its_twin_and_the_layers(activation):
    rng = np.random.default_rng(4)
    a = rng.standard_normal((7, 13)).astype(np.float32) * 20
    a[0, :3] = [np.nan, -0.0, 100.0]
    b = rng.standard_normal(13).astype(np.float32)
    for bias in (b, None):
        got = csr_fused.bias_activation(a.copy(), bias, activation)
        plus = a + bias if bias is not None else a
        layer = md.Sigmoid() if activation == "sigmoid" else md.ReLU()
        np.testing.assert_array_equal(got, layer.forward(plus.copy()))
        np.testing.assert_allclose(got, csr_fused.bias_activation_numpy(a, bias, activation),
                                   rtol=2e-7, atol=2e-7)
    assert csr_fused.bias_activation(np.asfortranarray(a), b, activation) is None


@pytest.mark.parametrize("first", ["sparse", "dense"])
def test_each_layer_backward_by_hand_after_a_fused_forward(fuse, first):
    fuse(True)
    model = _sparse_net(first)
    x, _ = _data()
    model.forward(x, training=True)
    layer, act = model.layers[1], model.layers[2]
    g = np.random.default_rng(5).standard_normal(act._y.shape).astype(np.float32)
    d = act.backward(g)                       # the activation's own state is there
    dx = layer.backward(d)
    hand = {k: v.copy() for k, v in layer.grads.items()}
    fuse(False)
    ref = _sparse_net(first)
    ref.forward(x, training=True)
    np.testing.assert_array_equal(ref.layers[1].backward(ref.layers[2].backward(g)), dx)
    for k in hand:
        np.testing.assert_array_equal(ref.layers[1].grads[k], hand[k])
    with pytest.raises(ValueError, match="expects a gradient of shape"):
        act.backward(g[:-1])


def test_fit_is_the_same_bit_for_bit_and_files_unchanged(fuse, tmp_path):
    x, y = _data(n=250)
    weights, files = [], []
    for on in (True, False):
        fuse(on)
        for first in ("sparse", "dense"):
            model = _sparse_net(first)
            md.fit(model, (x, y), epochs=2, batch_size=50, optimizer=md.SGD(0.1, momentum=0.9),
                   progress=False, log=None)
            weights.append([p.copy() for _, p in model.named_params()])
            path = tmp_path / f"{first}_{on}.h5"
            io.save(model, path)
            loaded = io.load(path)
            np.testing.assert_array_equal(loaded.forward(x), model.forward(x))
            files.append((loaded.get_config(), [p.copy() for _, p in loaded.named_params()]))
    for a, b in ((0, 2), (1, 3)):
        for p, q in zip(weights[a], weights[b]):
            np.testing.assert_array_equal(p, q)
        assert files[a][0] == files[b][0]
        for p, q in zip(files[a][1], files[b][1]):
            np.testing.assert_array_equal(p, q)


def test_plan_is_kept_and_rebuilt_when_layers_or_switches_change(fuse):
    fuse(True)
    model = _sparse_net()
    plan = model.plan()
    assert model.plan() is plan
    fuse(False)
    assert [type(s).__name__ for _, s in model.plan()] == ["Flatten", "SparseDense", "Sigmoid",
                                                          "Dense"]
    fuse(True)
    model.layers[2] = md.ReLU(name="relu_2")      # no SparseDense → ReLU pair
    assert [type(s).__name__ for _, s in model.plan()] == ["Flatten", "SparseDense", "ReLU",
                                                          "Dense"]
    model.layers[1] = md.Dense(60, 40, rng=0, name="dense_1")
    assert isinstance(model.plan()[1][1], DenseActivation)
