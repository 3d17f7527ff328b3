"""The inference path (``minidnn.inference``, ``Sequential.infer``): each fused kernel
of ``kernels.fused_inference`` held to its NumPy twin (NaN, ±0 and odd sizes
included), and the plan held to the layers' own ``forward(training=False)`` on
LeNet, Cifar10_quick, MLPs and nets with layers it does not fuse, at one and two
threads (the batch split), in float32 and float64."""
import numba
import numpy as np
import pytest

import minidnn as md
from minidnn import architectures
from minidnn.inference import InferencePlan
from minidnn.kernels import fused_inference as fused
from minidnn.kernels.im2col import im2row_numpy, weight_rows
from minidnn.layers.pooling import maxpool_forward_numpy


# -- kernels against their twins ----------------------------------------------------
# (x shape, O, kernel, padding): LeNet's conv1, a padded 3-channel layer, a 3x3 window
# (no 4-channel blocks), channel counts with a remainder, odd output sizes (floor pool)
CONV_POOL_CASES = [((2, 1, 28, 28), 20, 5, 0), ((2, 3, 12, 12), 7, 5, 2),
                   ((3, 2, 9, 11), 5, 3, 1), ((1, 2, 10, 13), 6, 5, 0), ((2, 1, 6, 6), 2, 2, 0)]


@pytest.mark.parametrize("shape, O, k, pad", CONV_POOL_CASES)
@pytest.mark.parametrize("dtype, tol", [(np.float32, 2e-5), (np.float64, 1e-12)])
def test_conv_pool2x2_equals_the_twin(shape, O, k, pad, dtype, tol):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(dtype)
    W = rng.standard_normal((O, shape[1], k, k)).astype(dtype)
    b = rng.standard_normal(O).astype(dtype)
    twin = fused.conv_pool2x2_numpy(x, W, b, pad)
    x_pad = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out = np.full(twin.shape, np.nan, dtype)
    fused.conv_pool2x2(x_pad, W, b, out)
    np.testing.assert_allclose(out, twin, rtol=tol, atol=tol)
    # written through an NHWC buffer seen as NCHW (what the next convolution reads)
    nhwc = np.zeros((twin.shape[0], twin.shape[2] + 2, twin.shape[3] + 2, O), dtype)
    fused.conv_pool2x2(x_pad, W, b, nhwc[:, 1:-1, 1:-1, :].transpose(0, 3, 1, 2))
    np.testing.assert_allclose(nhwc[:, 1:-1, 1:-1, :].transpose(0, 3, 1, 2), twin,
                               rtol=tol, atol=tol)
    assert not nhwc[:, 0].any() and not nhwc[:, :, -1].any()       # the border stays 0


def test_conv_pool2x2_nan_pools_to_nan():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 1, 12, 12)).astype(np.float32)
    x[0, 0, 3, 4] = np.nan
    W = rng.standard_normal((4, 1, 5, 5)).astype(np.float32)
    b = np.zeros(4, np.float32)
    twin = fused.conv_pool2x2_numpy(x, W, b)
    out = np.empty_like(twin)
    fused.conv_pool2x2(x, W, b, out)
    assert np.isnan(twin).any()
    np.testing.assert_array_equal(np.isnan(out), np.isnan(twin))
    np.testing.assert_allclose(out[~np.isnan(out)], twin[~np.isnan(twin)], rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("N, OH, OW, O", [(2, 8, 8, 50), (3, 5, 7, 3), (1, 2, 2, 1)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_rows_pool2x2_equals_the_twin_bit_for_bit(N, OH, OW, O, with_bias):
    rng = np.random.default_rng(2)
    y_rows = rng.standard_normal((N * OH * OW, O)).astype(np.float32)
    y_rows[0, 0] = np.nan
    y_rows[-1, -1] = -0.0
    bias = rng.standard_normal(O).astype(np.float32) if with_bias else None
    twin = fused.rows_pool2x2_numpy(y_rows, N, OH, OW, bias)
    out = fused.rows_pool2x2(y_rows, N, OH, OW, bias)
    np.testing.assert_array_equal(out, twin)
    assert np.isnan(out[0, 0, 0, 0])
    # the max commutes with the bias: the same bits as pooling the biased output
    if with_bias:
        biased = (y_rows + bias).reshape(N, OH, OW, O).transpose(0, 3, 1, 2)
        np.testing.assert_array_equal(out, fused.maxpool2x2_values_numpy(biased))


@pytest.mark.parametrize("kernel, stride, padding, ceil", [
    (2, 2, 0, False), (3, 2, 0, True), (3, 2, 1, False), ((2, 3), (1, 2), (1, 1), True),
    (3, 1, 0, False)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_maxpool_values_equals_the_training_twin(kernel, stride, padding, ceil, dtype):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 9, 10)).astype(dtype)
    x[1, 2, 4, 4] = np.nan
    x[0, 1, 0, 0] = np.inf
    layer = md.MaxPool2D(kernel, stride, padding, ceil)
    geometry = layer._geometry(x.shape)
    twin = fused.maxpool_values_numpy(x, geometry)
    np.testing.assert_array_equal(fused.maxpool_values(x, geometry), twin)
    np.testing.assert_array_equal(twin, maxpool_forward_numpy(x, geometry)[0])
    np.testing.assert_array_equal(twin, layer.forward(x))      # and the training layer


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bias_relu_is_the_twin_bit_for_bit(dtype):
    rng = np.random.default_rng(4)
    y = rng.standard_normal((7, 13)).astype(dtype)
    y[0, :4] = [np.nan, -0.0, np.inf, -np.inf]
    bias = rng.standard_normal(13).astype(dtype)
    bias[1] = 0.0
    twin = fused.bias_relu_numpy(y, bias)
    got = fused.bias_relu(y.copy(), bias)
    np.testing.assert_array_equal(got, twin)
    assert np.isnan(got[0, 0]) and np.signbit(got).sum() == np.signbit(twin).sum()
    # and the layers: Dense's += b, then ReLU's kernel
    np.testing.assert_array_equal(got, md.ReLU().forward(y + bias))
    with pytest.raises(ValueError, match="C-contiguous 2-D"):
        fused.bias_relu(y.T, bias)


# -- the plan against the layers' forward -----------------------------------------------
def _models():
    rng = np.random.default_rng(5)
    yield "lenet", architectures.build("lenet", seed=0), (1, 28, 28)
    yield "cifar10-quick", architectures.build("cifar10-quick", seed=0), (3, 32, 32)
    yield "mlp relu", architectures.build("mlp:784-500-10:relu", seed=0), (784,)
    yield "mlp sigmoid", architectures.build("mlp:784-64-10:sigmoid", seed=0), (784,)
    # layers the plan does not fuse (run by their own forward), a padded channels-last
    # conv fed by the fused first layer, an odd size before a 2x2 ceil-mode pool
    yield "mixed", md.Sequential([
        md.Conv2D(1, 6, 3, padding=1, rng=rng), md.MaxPool2D(2),
        md.Conv2D(6, 16, 3, padding=1, rng=rng),
        md.MaxPool2D(2, ceil_mode=True), md.Flatten(), md.BatchNorm(256),
        md.Dropout(0.5), md.Dense(256, 12, rng=rng), md.Tanh(), md.Dense(12, 3, rng=rng)],
        seed=0, input_shape=(1, 14, 14)), (1, 14, 14)


@pytest.mark.parametrize("name, model, shape", list(_models()), ids=lambda v: v
                         if isinstance(v, str) else "")
@pytest.mark.parametrize("threads", [1, 2])
def test_infer_equals_forward(name, model, shape, threads, monkeypatch):
    import minidnn.inference as inference
    monkeypatch.setattr(numba, "get_num_threads", lambda: threads)      # the layers' kernels
    monkeypatch.setattr(md.kernels.implicit_conv, "_threads", lambda: threads)  # (and these)
    monkeypatch.setattr(inference, "numba_thread_count", lambda: threads)   # the plan's split
    rng = np.random.default_rng(6)
    for N in (1, 5, 33):
        x = rng.random((N,) + shape, dtype=np.float32)
        expected = model.forward(x, training=False)
        got = model.infer(x)
        assert got.shape == expected.shape and got.dtype == expected.dtype
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    plan = model._inference_plan
    assert plan.threads_for(33) == (min(threads, 8) if plan.thread_safe and plan.has_conv
                                    else 1)


def test_lenet_plan_fuses_what_it_should():
    plan = InferencePlan(architectures.build("lenet", seed=0).layers)
    kinds = [type(s).__name__ for s in plan.stages]
    assert kinds == ["_DirectConvStage", "_RowsConvStage", "_FlattenStage", "_DenseStage",
                     "_DenseStage"]
    assert plan.stages[0].pool is not None and plan.stages[1].pool is not None
    assert plan.stages[3].relu and not plan.stages[4].relu
    assert plan._targets[0] == (0, 0)          # conv1 writes conv2's NHWC input
    assert plan.thread_safe and plan.has_conv


def test_mixed_plan_runs_unknown_layers_by_their_forward():
    name, model, shape = list(_models())[-1]
    plan = InferencePlan(model.layers)
    kinds = [type(s).__name__ for s in plan.stages]
    assert kinds == ["_DirectConvStage", "_RowsConvStage", "_FlattenStage", "_LayerStage",
                     "_LayerStage", "_DenseStage", "_FunctionStage", "_DenseStage"]
    assert plan._targets[0] == (1, 1)            # the padded NHWC input of conv2
    assert not plan.thread_safe and plan.threads_for(100) == 1


def test_infer_float64_and_integer_input():
    model = architectures.build("lenet", seed=0, dtype="float64")
    x = np.random.default_rng(7).integers(0, 2, (3, 1, 28, 28))
    got = model.infer(x)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, model.forward(x, training=False), rtol=1e-10, atol=1e-12)


def test_infer_follows_the_parameters_and_the_layers():
    model = architectures.build("lenet", seed=0)
    x = np.random.default_rng(8).random((4, 1, 28, 28), dtype=np.float32)
    before = model.infer(x)
    plan = model._inference_plan
    model.layers[2].params["W"] *= 2            # in place, as SGD steps
    model.layers[5].params["b"] += 1
    np.testing.assert_allclose(model.infer(x), model.forward(x), rtol=1e-5, atol=1e-5)
    assert model._inference_plan is plan
    assert not np.allclose(model.infer(x), before)
    model.layers.append(md.ReLU())              # a new list of layers: a new plan
    assert np.all(model.infer(x) >= 0) and model._inference_plan is not plan


def test_infer_keeps_nothing_and_training_still_works():
    model = architectures.build("lenet", seed=0)
    x = np.random.default_rng(9).random((6, 1, 28, 28), dtype=np.float32)
    model.infer(x)
    for layer in model.layers:
        for cache in ("_x", "_rows", "_argmax", "_y", "_direct_x_pad"):
            assert getattr(layer, cache, None) is None, (layer, cache)
    out = model.forward(x, training=True)
    model.backward(np.ones_like(out) / out.size)
    assert all(np.isfinite(g).all() for layer in model.layers for g in layer.grads.values())
    np.testing.assert_allclose(model.infer(x), model.forward(x), rtol=1e-5, atol=1e-6)


def test_predict_runs_through_infer_in_batches():
    model = architectures.build("mlp:784-32-10:relu", seed=0)
    x = np.random.default_rng(10).random((25, 784), dtype=np.float32)
    np.testing.assert_allclose(model.predict(x, batch_size=7), model.forward(x),
                               rtol=1e-6, atol=1e-6)
    assert model.predict(x, batch_size=100).shape == (25, 10)


def test_infer_names_the_layer_on_a_wrong_shape():
    model = architectures.build("lenet", seed=0)
    with pytest.raises(ValueError, match=r"Conv2D\(1, 20, kernel_size=5\) expects input"):
        model.infer(np.zeros((2, 3, 28, 28), np.float32))
    mlp = architectures.build("mlp:784-32-10:relu", seed=0)
    with pytest.raises(ValueError, match=r"Dense\(784, 32\) expects input of shape"):
        mlp.infer(np.zeros((2, 100), np.float32))


def test_rows_stage_matches_im2row_product():
    """The chunked im2row + GEMM stage (no pool after it) against im2row_numpy · W_r."""
    rng = np.random.default_rng(11)
    conv = md.Conv2D(16, 8, 3, padding=1, rng=rng)
    conv.params["b"][:] = rng.standard_normal(8)
    plan = InferencePlan([conv])
    x = rng.standard_normal((11, 16, 6, 6)).astype(np.float32)
    rows = im2row_numpy(x, 3, 1, 1)
    expected = (rows @ weight_rows(conv.params["W"]) + conv.params["b"]).reshape(
        11, 6, 6, 8).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(plan(x), expected, rtol=1e-5, atol=1e-5)


def test_strided_and_unpooled_convolutions_take_the_unfused_kernels():
    """A stride-2 direct conv before a 2x2 pool, a channels-last conv without a pool, a
    direct conv before an odd-sized ceil-mode pool, and an average pool."""
    rng = np.random.default_rng(12)
    model = md.Sequential([
        md.Conv2D(2, 8, 3, stride=2, padding=1, rng=rng), md.MaxPool2D(2),
        md.Conv2D(8, 3, 3, padding=1, rng=rng), md.ReLU(),
        md.Conv2D(3, 16, 2, rng=rng), md.MaxPool2D(2, ceil_mode=True),
        md.AvgPool2D(2, ceil_mode=True), md.Flatten(), md.Dense(64, 4, rng=rng)],
        seed=0, input_shape=(2, 24, 24))
    for layer in model.layers:
        if "b" in layer.params:
            layer.params["b"][:] = rng.standard_normal(layer.params["b"].shape)
    kinds = [type(s).__name__ for s in InferencePlan(model.layers).stages]
    assert kinds == ["_DirectConvStage", "_RowsConvStage", "_ReLUStage", "_DirectConvStage",
                     "_AvgPoolStage", "_FlattenStage", "_DenseStage"]
    x = rng.standard_normal((9, 2, 24, 24)).astype(np.float32)
    np.testing.assert_allclose(model.infer(x), model.forward(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape, k, stride, pad", [((2, 20, 12, 12), 5, 1, 0),
                                                    ((3, 5, 9, 8), 3, 2, 1),
                                                    ((1, 3, 7, 9), (2, 3), (1, 2), (0, 1))])
def test_im2row_nhwc_equals_its_twin_and_im2row(shape, k, stride, pad):
    rng = np.random.default_rng(13)
    x = rng.standard_normal(shape).astype(np.float32)
    kh, kw = (k, k) if isinstance(k, int) else k
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    ph, pw = (pad, pad) if isinstance(pad, int) else pad
    x_pad = np.pad(x.transpose(0, 2, 3, 1), ((0, 0), (ph, ph), (pw, pw), (0, 0)))
    twin = fused.im2row_nhwc_numpy(x_pad, kh, kw, sh, sw)
    np.testing.assert_array_equal(fused.im2row_nhwc(x_pad, kh, kw, sh, sw), twin)
    np.testing.assert_array_equal(twin, im2row_numpy(x, (kh, kw), (sh, sw), (ph, pw)))


def test_only_conv_nets_split_the_batch_over_threads(monkeypatch):
    """The dispatch rule of ``InferencePlan.threads_for``: a dense-only net runs its
    products on BLAS's own threads (no split), a conv net splits from
    ``SPLIT_MIN_SAMPLES`` a thread on."""
    import minidnn.inference as inference
    monkeypatch.setattr(inference, "numba_thread_count", lambda: 2)
    mlp = architectures.build("mlp:784-64-10:relu", seed=0)
    assert InferencePlan(mlp.layers).threads_for(40) == 1
    lenet = InferencePlan(architectures.build("lenet", seed=0).layers)
    assert lenet.threads_for(40) == 2 and lenet.threads_for(7) == 1
