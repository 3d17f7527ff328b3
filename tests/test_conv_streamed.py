"""The streamed channels-last convolution (``Conv2D._streamed_applies``) against the
whole-batch rows path it replaces, its gradients against finite differences, the
fall-backs, and the kernels it adds (``layout.unpad_to_nchw``, ``workers``)."""
import numba
import numpy as np
import pytest

from minidnn.kernels import layout, workers
from minidnn.kernels.im2col import _im2row_kernel
from minidnn.layers import Conv2D
from tests.gradcheck import check_layer_gradients


@pytest.fixture(autouse=True)
def _no_implicit_gemm(monkeypatch):
    """These tests hold the streamed path to the whole-batch rows path; the
    implicit-GEMM path (tests/test_implicit_conv.py) would take both sides."""
    monkeypatch.setattr(Conv2D, "IMPLICIT", False)

# (x shape, out channels, kernel, stride, padding): Cifar10_quick's conv2/conv3
# geometry scaled down, a valid conv, stride 2, a non-square window
CASES = [((3, 32, 8, 8), 32, 5, 1, 2), ((2, 32, 4, 4), 64, 5, 1, 2),
         ((3, 20, 7, 7), 6, 5, 1, 0), ((3, 8, 9, 9), 5, 3, 2, 1),
         ((2, 6, 6, 5), 4, (3, 2), 1, (1, 0))]


def _pair(shape, out_channels, kernel, stride, padding, dtype=np.float32, rows=256):
    """The same layer twice: streamed (small chunks) and the whole-batch path."""
    layers = []
    for streamed in (True, False):
        layer = Conv2D(shape[1], out_channels, kernel, stride=stride, padding=padding, rng=0)
        layer.CHANNELS_LAST_MIN = 0             # channels-last rows at any size
        layer.STREAMED = streamed
        layer.STREAM_ROWS = rows
        layers.append(layer.cast(dtype))
    assert layers[0]._streamed_applies() and not layers[1]._streamed_applies()
    return layers


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("rows", [1, 40, 10**6])       # one sample a chunk, a few, all
def test_streamed_training_step_equals_the_whole_batch_path(case, rows):
    shape, out_channels, kernel, stride, padding = case
    streamed, whole = _pair(shape, out_channels, kernel, stride, padding, rows=rows)
    rng = np.random.default_rng(0)
    for step in range(2):                        # reused buffers: fresh data each step
        x = rng.standard_normal(shape).astype(np.float32)
        y = streamed.forward(x, training=True)
        np.testing.assert_allclose(y, whole.forward(x, training=True), rtol=1e-5, atol=1e-5)
        grad = rng.standard_normal(y.shape).astype(np.float32)
        np.testing.assert_allclose(streamed.backward(grad), whole.backward(grad),
                                   rtol=1e-5, atol=1e-5)
        for key in ("W", "b"):
            np.testing.assert_allclose(streamed.grads[key], whole.grads[key], rtol=1e-5,
                                       atol=1e-4)
        streamed.backward_params(grad)           # the first layer's call: grads only
        np.testing.assert_allclose(streamed.grads["W"], whole.grads["W"], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(streamed.forward(x), whole.forward(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", [((2, 4, 5, 5), 3, 3, 1, 1), ((2, 3, 6, 6), 2, 3, 2, 1),
                                  ((3, 2, 4, 5), 2, (3, 2), 1, (1, 0))])
def test_streamed_gradients_match_finite_differences(case):
    shape, out_channels, kernel, stride, padding = case
    layer = _pair(shape, out_channels, kernel, stride, padding, np.float64, rows=20)[0]
    check_layer_gradients(layer, np.random.default_rng(1).standard_normal(shape),
                          np.random.default_rng(2))


def test_streamed_path_at_two_threads_equals_one_thread():
    """The batch split over worker threads (each with its own chunks and partial
    weight gradient) gives the one-thread result to float rounding."""
    before = numba.get_num_threads()
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("Numba allows one thread here")
    shape = (5, 16, 6, 6)
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape).astype(np.float32)
    grad = rng.standard_normal((5, 8, 6, 6)).astype(np.float32)
    results = []
    try:
        for threads in (1, 2):
            numba.set_num_threads(threads)
            layer = _pair(shape, 8, 3, 1, 1, rows=30)[0]
            y = layer.forward(x, training=True)
            results.append((y, layer.backward(grad), layer.grads["W"], layer.grads["b"]))
    finally:
        numba.set_num_threads(before)
    for one, two in zip(*results):
        np.testing.assert_allclose(one, two, rtol=1e-5, atol=1e-5)


def test_subclasses_and_channels_first_layers_keep_their_paths():
    class _Codes(Conv2D):
        def _weight_rows(self):
            return self.weight_matrix(np.round(self.params["W"] * 4) / 4)
    assert not Conv2D(32, 32, 5, padding=2)._streamed_applies()      # off by default
    conv2, codes = Conv2D(32, 32, 5, padding=2), _Codes(32, 32, 5, padding=2)
    conv2.STREAMED = codes.STREAMED = True
    assert conv2._streamed_applies()                                  # Cifar10_quick conv2
    assert not codes._streamed_applies()
    assert not Conv2D(3, 32, 5, padding=2)._streamed_applies()        # channels first
    layer = Conv2D(32, 8, 3, padding=1)
    layer.STREAMED = False
    assert not layer._streamed_applies()
    x = np.zeros((2, 32, 5, 5), np.float32)
    layer.forward(x, training=True)
    assert layer._rows is not None and layer._stream_x_pad is None


def test_after_an_evaluation_forward_backward_refuses():
    layer = Conv2D(16, 4, 3, padding=1, rng=0)
    x = np.random.default_rng(4).standard_normal((2, 16, 5, 5)).astype(np.float32)
    layer.forward(x, training=True)
    layer.forward(x)
    with pytest.raises(RuntimeError, match="training=True"):
        layer.backward(np.ones((2, 4, 5, 5), np.float32))


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 5, 7), (3, 8, 4, 6)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_unpad_kernel_and_its_nogil_build_equal_the_twin(shape, dtype):
    rng = np.random.default_rng(5)
    N, C, H, W = shape
    for ph, pw in ((0, 0), (2, 1)):
        x_pad = rng.standard_normal((N, H + 2 * ph, W + 2 * pw, C)).astype(dtype)
        expected = layout.unpad_to_nchw_numpy(x_pad, ph, pw)
        for kernel in (layout._unpad_to_nchw_kernel,
                       workers.serial_nogil(layout._unpad_to_nchw_kernel)):
            out = np.empty((N, C, H, W), dtype)
            kernel(x_pad, ph, pw, out)
            np.testing.assert_array_equal(out, expected)
    big = rng.standard_normal((40, 20, 20, 32)).astype(np.float32)     # over PARALLEL_MIN
    np.testing.assert_array_equal(layout.unpad_to_nchw(big, 2, 2),
                                  layout.unpad_to_nchw_numpy(big, 2, 2))


def test_nogil_build_is_the_same_kernel():
    rng = np.random.default_rng(6)
    x_pad = rng.standard_normal((2, 7, 7, 3)).astype(np.float32)
    rows = [np.empty((2 * 5 * 5, 27), np.float32) for _ in range(2)]
    _im2row_kernel(x_pad, 3, 3, 1, 1, 5, 5, rows[0])
    workers.serial_nogil(_im2row_kernel)(x_pad, 3, 3, 1, 1, 5, 5, rows[1])
    np.testing.assert_array_equal(rows[0], rows[1])
    assert workers.serial_nogil(_im2row_kernel) is workers.serial_nogil(_im2row_kernel)


@pytest.mark.parametrize("N, parts", [(0, 2), (1, 2), (5, 2), (7, 3), (4, 1)])
def test_split_samples_covers_the_batch_in_order(N, parts):
    spans = workers.ranges(N, parts)
    assert spans[0][0] == 0 and spans[-1][1] == N
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    seen = workers.split_samples(lambda lo, hi, part: (part, list(range(lo, hi))), N, parts)
    assert [p for p, _ in seen] == list(range(len(spans)))
    assert sum((r for _, r in seen), []) == list(range(N))
