"""SparseDense (SPEC technique 3): a fixed random CSR pattern trained on its nonzeros only."""
import h5py
import numpy as np
import pytest

import minidnn as md
from minidnn import io
from minidnn.pretraining import Autoencoder, PretrainConfig, StackedAutoencoder, load_pretrained
from minidnn.sparse import SparseDense, parse_densities, prune_to_density, random_pattern, sparsify

from .gradcheck import numerical_grad


def dense_of(layer):
    """W (in, out) of a SparseDense, for checks only (the layer never builds it)."""
    return layer.to_scipy().toarray().T


def pattern_of(layer):
    return layer.buffers["indptr"].copy(), layer.buffers["indices"].copy()


# -- the pattern and the values -------------------------------------------------------------

def test_bernoulli_pattern_keeps_each_weight_with_probability_density():
    layer = SparseDense(400, 300, density=0.05, rng=0)
    assert abs(layer.actual_density - 0.05) < 0.003          # 6,000 expected, sd ≈ 75
    counts = np.diff(layer.buffers["indptr"])
    assert counts.std() > 1                                   # Binomial, not constant


def test_per_unit_pattern_gives_every_output_unit_round_density_times_inputs():
    layer = SparseDense(784, 50, density=0.04, pattern="per_unit", rng=0)
    assert set(np.diff(layer.buffers["indptr"])) == {round(0.04 * 784)}


@pytest.mark.parametrize("init,variance", [("paper", lambda g, n: 1 / g),
                                           ("fan_in", lambda g, n: 1 / (g * n))])
def test_values_are_normal_with_the_documented_variance(init, variance):
    layer = SparseDense(500, 400, density=0.1, init=init, rng=1).cast(np.float64)
    data = layer.params["data"]
    assert abs(data.mean()) < 0.05 * np.sqrt(variance(0.1, 500))
    assert data.var() == pytest.approx(variance(0.1, 500), rel=0.05)


def test_the_same_seed_gives_the_same_pattern_and_values():
    a, b = SparseDense(50, 40, density=0.2, rng=7), SparseDense(50, 40, density=0.2, rng=7)
    for key in ("indptr", "indices"):
        np.testing.assert_array_equal(a.buffers[key], b.buffers[key])
    np.testing.assert_array_equal(a.params["data"], b.params["data"])
    c = SparseDense(50, 40, density=0.2, rng=8)
    assert not np.array_equal(a.buffers["indices"][:50], c.buffers["indices"][:50])


def test_random_pattern_is_sorted_csr():
    from minidnn.kernels.csr import check_csr
    indptr, indices = random_pattern(30, 20, 0.3, np.random.default_rng(0))
    check_csr(indptr, indices, np.zeros(len(indices)), (30, 20))


# -- the products --------------------------------------------------------------------------

def test_gradients_match_finite_differences_and_live_on_the_pattern_only():
    rng = np.random.default_rng(0)
    layer = SparseDense(9, 6, density=0.4, rng=1).cast(np.float64)
    layer.params["b"] = rng.standard_normal(6)
    x = rng.standard_normal((5, 9))
    r = rng.standard_normal((5, 6))

    def loss():
        return float((layer.forward(x) * r).sum())

    layer.forward(x, training=True)
    dx = layer.backward(r)
    np.testing.assert_allclose(dx, numerical_grad(loss, x), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(layer.grads["data"], numerical_grad(loss, layer.params["data"]),
                               rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(layer.grads["b"], numerical_grad(loss, layer.params["b"]),
                               rtol=1e-6, atol=1e-8)
    # the gradient is one number per stored weight, equal to the dense gradient there;
    # the dense gradient elsewhere (xᵀ r off the pattern) has nowhere to go
    assert layer.grads["data"].shape == (layer.nnz,)
    pairs = layer.pattern_pairs()
    full = x.T @ r
    np.testing.assert_allclose(layer.grads["data"], full[pairs[:, 0], pairs[:, 1]], rtol=1e-12)
    assert layer.nnz < 9 * 6 and np.abs(full).min() > 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_density_one_equals_dense_with_the_same_weights(dtype):
    rng = np.random.default_rng(3)
    sparse = SparseDense(12, 7, density=1.0, rng=0).cast(dtype)
    assert sparse.nnz == 12 * 7
    dense = md.Dense(12, 7).cast(dtype)
    dense.set_weights(dense_of(sparse), rng.standard_normal(7))
    sparse.set_weights(dense_of(sparse), dense.params["b"])
    x = rng.standard_normal((10, 12)).astype(dtype)
    g = rng.standard_normal((10, 7)).astype(dtype)
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-12}
    np.testing.assert_allclose(sparse.forward(x, True), dense.forward(x, True), **tol)
    np.testing.assert_allclose(sparse.backward(g), dense.backward(g), **tol)
    np.testing.assert_allclose(sparse.grads["data"], dense.grads["W"].T.reshape(-1), **tol)
    np.testing.assert_allclose(sparse.grads["b"], dense.grads["b"], **tol)


def test_the_output_feeds_the_rest_of_a_network():
    model = md.Sequential([md.Flatten(), SparseDense(16, 8, density=0.3), md.ReLU(),
                           SparseDense(8, 8, density=0.5), md.Sigmoid(), md.Dense(8, 3)],
                          seed=0, input_shape=(16,))
    x = np.random.default_rng(0).random((4, 1, 4, 4)).astype(np.float32)
    out = model.forward(x, training=True)
    assert out.shape == (4, 3)
    model.backward(np.ones_like(out))
    assert model.layers[1].grads["data"].shape == (model.layers[1].nnz,)


def test_fused_training_path_equals_the_three_product_seam():
    # forward/backward/backward_params run csr_matmul(bias=...) and csr_backward; the
    # autoencoder uses the three products one by one: the two must agree, with and
    # without the input gradient, for C- and Fortran-ordered operands
    layer = SparseDense(30, 20, density=0.3, rng=1)
    layer.params["b"][:] = np.random.default_rng(2).standard_normal(20)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 30)).astype(np.float32)
    g = np.asfortranarray(rng.standard_normal((6, 20)).astype(np.float32))
    y = layer.forward(x, training=True)
    np.testing.assert_array_equal(y, layer._forward_product(x) + layer.params["b"])
    dx = layer.backward(g)
    grads = {k: v.copy() for k, v in layer.grads.items()}
    np.testing.assert_allclose(dx, layer._input_grad(g), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(grads["data"], layer._weight_grad(x, g), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(grads["b"], g.sum(axis=0), rtol=1e-6, atol=1e-6)
    layer.forward(x, training=True)
    assert layer.backward_params(np.ascontiguousarray(g)) is None
    np.testing.assert_allclose(layer.grads["data"], grads["data"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(layer.grads["b"], grads["b"], rtol=1e-6, atol=1e-6)
    no_bias = SparseDense(30, 20, density=0.3, bias=False, rng=1)
    np.testing.assert_array_equal(no_bias.forward(x), layer._forward_product(x))
    no_bias.backward(g)
    assert set(no_bias.grads) == {"data"}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch", [1, 7, 13])
def test_training_path_in_every_memory_order_equals_the_twins(dtype, batch):
    # a C-ordered x or grad is transposed inside the kernel call (into buffers reused
    # from step to step), a Fortran-ordered one is read in place: every combination,
    # batches that are not a multiple of the vector width, float32 and float64, and a
    # second step with new operands in the reused buffers, against the SciPy twins
    from minidnn.kernels.csr import csr_backward_numpy, csr_matmul_numpy
    layer = SparseDense(37, 21, density=0.3, rng=4).cast(dtype)
    layer.params["b"][:] = np.random.default_rng(5).standard_normal(21)
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-12}
    rng = np.random.default_rng(6)
    indptr, indices = layer.buffers["indptr"], layer.buffers["indices"]
    for step in range(2):
        for x_order in "CF":
            for g_order in "CF":
                x = np.asarray(rng.standard_normal((batch, 37)), dtype=dtype, order=x_order)
                g = np.asarray(rng.standard_normal((batch, 21)), dtype=dtype, order=g_order)
                data = layer.params["data"]
                y = layer.forward(x, training=True)
                assert y.dtype == dtype
                np.testing.assert_allclose(
                    y, csr_matmul_numpy(indptr, indices, data, x.T, layer.params["b"]).T, **tol)
                want = csr_backward_numpy(indptr, indices, data, g.T, x.T)
                dx = layer.backward(g)
                np.testing.assert_allclose(layer.grads["data"], want[0], **tol)
                np.testing.assert_allclose(layer.grads["b"], want[1], **tol)
                np.testing.assert_allclose(dx, want[2].T, **tol)
                layer.forward(x, training=True)
                layer.backward_params(g)
                np.testing.assert_allclose(layer.grads["data"], want[0], **tol)


def test_backward_refuses_a_gradient_of_the_wrong_shape():
    layer = SparseDense(10, 6, density=0.5, rng=0)
    layer.forward(np.zeros((4, 10), np.float32), training=True)
    with pytest.raises(ValueError, match=r"gradient of shape \(4, 6\)"):
        layer.backward(np.zeros((4, 5), np.float32))


# -- training -----------------------------------------------------------------------------

def _blobs(n=300, width=20, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    centres = rng.standard_normal((3, width)) * 2
    return (centres[y] + rng.standard_normal((n, width))).astype(np.float32), y


def test_training_never_adds_a_nonzero_and_momentum_and_decay_are_nnz_sized():
    x, y = _blobs()
    model = md.Sequential([SparseDense(20, 16, density=0.25), md.ReLU(), md.Dense(16, 3)],
                          seed=0, input_shape=(20,))
    sparse = model.layers[0]
    before = pattern_of(sparse)
    data_before = sparse.params["data"].copy()
    opt = md.SGD(0.05, momentum=0.9, weight_decay=1e-3)
    history = md.fit(model, (x, y), epochs=4, batch_size=30, optimizer=opt, progress=False,
                     log=None)
    after = pattern_of(sparse)
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_array_equal(before[1], after[1])
    assert not np.array_equal(data_before, sparse.params["data"])        # it did train
    velocity = opt.velocity[f"{sparse.name}/data"]
    assert velocity.shape == (sparse.nnz,) and set(opt.velocity) == {
        f"{sparse.name}/data", f"{sparse.name}/b", "dense_2/W", "dense_2/b"}
    assert sparse.decay_params == ("data",)
    assert history["train_loss"][-1] < history["train_loss"][0]
    assert md.evaluate(model, (x, y))["accuracy"] > 0.9


def test_weight_decay_alone_shrinks_the_nonzeros_and_nothing_else():
    layer = SparseDense(10, 5, density=0.5, rng=0)
    layer.forward(np.zeros((2, 10), np.float32), True)
    layer.backward(np.zeros((2, 5), np.float32))
    holder = type("Holder", (), {"layers": [layer]})()
    data = layer.params["data"].copy()
    md.SGD(lr=0.1, weight_decay=0.5).step(holder)
    np.testing.assert_allclose(layer.params["data"], data * (1 - 0.1 * 0.5), rtol=1e-6)


# -- files --------------------------------------------------------------------------------

def _saved(tmp_path, layer=None):
    model = md.Sequential([layer or SparseDense(30, 20, density=0.2, name="sparse"),
                           md.Sigmoid(), md.Dense(20, 3)], seed=0, input_shape=(30,))
    path = tmp_path / "sparse.h5"
    md.save(model, path)
    return model, path


def test_files_store_the_csr_arrays_and_round_trip_exactly(tmp_path):
    model, path = _saved(tmp_path)
    back = md.load(path)
    a, b = model.layers[0], back.layers[0]
    assert isinstance(b, SparseDense)
    for store in ("params", "buffers"):
        for key, value in getattr(a, store).items():
            assert getattr(b, store)[key].dtype == value.dtype
            np.testing.assert_array_equal(getattr(b, store)[key], value)
    x = np.random.default_rng(0).random((5, 30)).astype(np.float32)
    np.testing.assert_array_equal(back.predict(x), model.predict(x))
    with h5py.File(path) as h5:
        group = h5["layers/sparse"]
        assert set(group["params"]) == {"data", "b"} and set(group["buffers"]) == {"indptr",
                                                                                   "indices"}
        assert group["params/data"].shape == (a.nnz,) and group["buffers/indices"].dtype == np.int32
    assert a.storage_bytes() == a.nnz * 8 + 21 * 4 + 20 * 4


def test_summary_shows_density_nonzeros_and_bytes():
    model = md.Sequential([SparseDense(100, 50, density=0.1, rng=0, name="s")], seed=None)
    layer = model.layers[0]
    text = model.summary()
    assert f"density {layer.actual_density:.4g}" in text and f"{layer.nnz:,} nonzeros" in text
    assert f"{layer.storage_bytes():,}" in text


@pytest.mark.parametrize("corrupt,message", [
    (lambda g: g["buffers/indices"].__setitem__(0, 99), "out of range"),
    (lambda g: g["buffers/indices"].__setitem__(slice(0, 2), g["buffers/indices"][:2][::-1]),
     "not sorted"),
    (lambda g: g["buffers/indptr"].__setitem__(1, 10 ** 6), "non-decreasing|nonzeros"),
])
def test_a_corrupt_csr_file_is_refused_with_a_clear_error(tmp_path, corrupt, message):
    layer = SparseDense(30, 20, density=0.3, pattern="per_unit", rng=0, name="sparse")
    _, path = _saved(tmp_path, layer)
    with h5py.File(path, "a") as h5:
        corrupt(h5["layers/sparse"])
    with pytest.raises(io.ModelFileError, match=message):
        md.load(path)


def test_a_file_whose_data_does_not_match_nnz_is_refused(tmp_path):
    _, path = _saved(tmp_path)
    with h5py.File(path, "a") as h5:
        data = h5["layers/sparse/params/data"][()]
        del h5["layers/sparse/params/data"]
        h5["layers/sparse/params/data"] = data[:-1]
    with pytest.raises(io.ModelFileError, match="nonzeros, but indices has"):
        md.load(path)


# -- bad input ---------------------------------------------------------------------------------

@pytest.mark.parametrize("density", [0, -0.1, 1.5, "dense", float("nan")])
def test_density_outside_zero_one_is_refused(density):
    with pytest.raises(ValueError, match=r"density must be .*in \(0, 1\]"):
        SparseDense(10, 5, density=density)


def test_shapes_that_do_not_match_are_refused():
    layer = SparseDense(10, 5, density=0.5, rng=0)
    with pytest.raises(ValueError, match=r"expects input of shape \(batch, 10\), got \(3, 9\)"):
        layer.forward(np.zeros((3, 9), np.float32))
    with pytest.raises(ValueError, match=r"W must have shape \(10, 5\), got \(5, 10\)"):
        layer.set_weights(np.zeros((5, 10)))
    with pytest.raises(ValueError, match="pattern must be one of"):
        SparseDense(10, 5, pattern="diagonal")
    with pytest.raises(ValueError, match="init must be one of"):
        SparseDense(10, 5, init="glorot")


# -- pruning -----------------------------------------------------------------------------------

def test_prune_to_density_keeps_the_largest_weights_and_the_bias():
    dense = md.Dense(20, 10, rng=0)
    dense.params["b"][:] = np.arange(10)
    sparse = prune_to_density(dense, 0.1)
    assert sparse.nnz == 20 and sparse.name == dense.name
    W = dense.params["W"]
    kept = np.abs(dense_of(sparse)) > 0
    assert np.abs(W[kept]).min() >= np.abs(W[~kept]).max()
    np.testing.assert_array_equal(dense_of(sparse)[kept], W[kept])
    np.testing.assert_array_equal(sparse.params["b"], dense.params["b"])
    per_unit = prune_to_density(dense, 0.25, per_unit=True)
    assert set(np.diff(per_unit.buffers["indptr"])) == {5}
    with pytest.raises(ValueError, match="expects a Dense layer"):
        prune_to_density(sparse, 0.1)


# -- the autoencoder, sparse end to end -------------------------------------------------------

@pytest.mark.parametrize("encoder,decoder", [("sigmoid", "sigmoid"), ("identity", "sigmoid")])
def test_sparse_autoencoder_gradients_match_finite_differences(encoder, decoder):
    rng = np.random.default_rng(0)
    ae = Autoencoder(8, 5, encoder=encoder, decoder=decoder, rng=1, dtype=np.float64,
                     density=0.4)
    assert set(ae.params) == {"data", "hidden_bias", "visible_bias"}
    for key in ae.params:
        ae.params[key] = ae.params[key] + 0.3 * rng.standard_normal(ae.params[key].shape)
    x = rng.random((6, 8))
    ae.loss_and_gradients(x)
    analytic = {k: v.copy() for k, v in ae.grads.items()}
    for key, param in ae.params.items():
        numeric = numerical_grad(lambda: ae.loss_and_gradients(x), param)
        np.testing.assert_allclose(analytic[key], numeric, rtol=1e-6, atol=1e-9, err_msg=key)


def test_sparse_autoencoder_at_density_one_equals_the_dense_one():
    sparse = Autoencoder(9, 4, rng=0, dtype=np.float64, density=1.0)
    dense = Autoencoder(9, 4, rng=0, dtype=np.float64)
    dense.params["W"] = dense_of(sparse.layer)
    x = np.random.default_rng(1).random((7, 9))
    assert sparse.loss_and_gradients(x) == pytest.approx(dense.loss_and_gradients(x), rel=1e-12)
    np.testing.assert_allclose(sparse.grads["data"], dense.grads["W"].T.reshape(-1), rtol=1e-10)


def test_pretraining_runs_sparse_and_hands_its_pattern_to_the_mlp(tmp_path):
    x, y = _blobs(200, 20)
    x = (x - x.min()) / (x.max() - x.min())
    stack = StackedAutoencoder([20, 12], rng=0, density=0.3)
    unit = stack.units[0]
    before = pattern_of(unit.layer)
    start = unit.reconstruction_error(x)
    stack.pretrain(x, PretrainConfig(epochs=5, batch_size=20, lr=0.5), checkpoint=tmp_path / "p.h5")
    assert unit.reconstruction_error(x) < start
    np.testing.assert_array_equal(before[1], pattern_of(unit.layer)[1])
    mlp = stack.to_mlp(3, seed=0)
    first = mlp.layers[1]
    assert isinstance(first, SparseDense)
    np.testing.assert_array_equal(first.buffers["indices"], unit.layer.buffers["indices"])
    hidden = mlp.layers[2].forward(first.forward(x))
    np.testing.assert_array_equal(hidden, stack.transform(x))
    # the file keeps the pattern and comes back exactly
    again = load_pretrained(tmp_path / "p.h5")
    np.testing.assert_array_equal(again.units[0].layer.buffers["indices"],
                                  unit.layer.buffers["indices"])
    np.testing.assert_array_equal(again.units[0].params["data"], unit.params["data"])
    np.testing.assert_array_equal(again.transform(x), stack.transform(x))
    md.fit(mlp, (x, y), epochs=2, batch_size=20, optimizer=md.SGD(0.1, momentum=0.9),
           progress=False, log=None)
    np.testing.assert_array_equal(first.buffers["indices"], unit.layer.buffers["indices"])


def test_resumed_sparse_pretraining_equals_uninterrupted(tmp_path):
    x = np.random.default_rng(0).random((120, 16)).astype(np.float32)
    config = PretrainConfig(epochs=3, batch_size=20, momentum_switch_epoch=2)
    whole = StackedAutoencoder([16, 8, 6], rng=3, density=[0.3, 0.5])
    whole.pretrain(x, config, seed=5)

    class Stop(Exception):
        pass

    def stop(line):
        if line.startswith("autoencoder_1 epoch   1"):
            raise Stop
    first = StackedAutoencoder([16, 8, 6], rng=3, density=[0.3, 0.5])
    with pytest.raises(Stop):
        first.pretrain(x, config, seed=5, checkpoint=tmp_path / "ck.h5", log=stop)
    resumed = StackedAutoencoder([16, 8, 6], rng=3, density=[0.3, 0.5])
    resumed.pretrain(x, config, seed=5, checkpoint=tmp_path / "ck.h5", resume=True)
    for a, b in zip(whole.units, resumed.units):
        for key in a.params:
            np.testing.assert_array_equal(a.params[key], b.params[key], err_msg=key)


def test_a_sparse_autoencoder_must_be_tied():
    with pytest.raises(ValueError, match="needs tied weights"):
        Autoencoder(8, 4, tied=False, density=0.5)


# -- the command line ----------------------------------------------------------------------------

def test_parse_densities_reads_one_number_or_named_layers():
    assert parse_densities("0.04") == 0.04
    assert parse_densities("dense_1=0.04, dense_3=1") == {"dense_1": 0.04, "dense_3": 1.0}
    with pytest.raises(ValueError, match="density must be"):
        parse_densities("dense_1=2")
    with pytest.raises(ValueError, match="LAYER=γ pairs"):
        parse_densities("=0.3")


def test_sparsify_replaces_hidden_dense_layers_keeping_names():
    from minidnn import architectures
    model = architectures.build("mlp:20-16-8-3:relu", input_shape=(20,))
    sparsify(model, 0.25, seed=0)
    kinds = [(l.name, type(l).__name__) for l in model.layers if l.params]
    assert kinds == [("dense_1", "SparseDense"), ("dense_3", "SparseDense"), ("dense_5", "Dense")]
    model = architectures.build("mlp:20-16-8-3:relu", input_shape=(20,))
    sparsify(model, {"dense_5": 0.5})
    assert type(model.layer("dense_5")).__name__ == "SparseDense"
    with pytest.raises(ValueError, match="Dense layers of this model are"):
        sparsify(model, {"dense_9": 0.5})


def test_cli_trains_and_pretrains_sparse(tmp_path, capsys):
    from minidnn.cli import main
    out = tmp_path / "m.h5"
    assert main(["train", "--arch", "mlp:784-32-10:sigmoid", "--density", "0.05", "--epochs", "1",
                 "--quiet", "--out", str(out)]) == 0
    assert isinstance(md.load(out).layers[1], SparseDense)
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    assert "CSR float32, density" in capsys.readouterr().out
    ae = tmp_path / "ae.h5"
    assert main(["pretrain", "autoencoder", "--layers", "784-24", "--density", "0.05",
                 "--epochs", "1", "--limit", "200", "--no-progress", "-o", str(ae)]) == 0
    assert main(["train", "--init-from", str(ae), "--epochs", "1", "--quiet",
                 "--out", str(tmp_path / "ft.h5")]) == 0
    assert isinstance(md.load(tmp_path / "ft.h5").layers[1], SparseDense)
    assert main(["train", "--density", "1.5", "--quiet", "--out", str(out)]) == 1
    assert "density must be in (0, 1]" in capsys.readouterr().err


def test_resumed_sparse_training_equals_uninterrupted(tmp_path):
    x, y = _blobs(200)

    def net():
        return md.Sequential([SparseDense(20, 12, density=0.3), md.Sigmoid(), md.Dense(12, 3)],
                             seed=4, input_shape=(20,))

    def train(model, epochs, **kw):
        return md.fit(model, (x, y), epochs=epochs, batch_size=25, seed=2, progress=False,
                      log=None, optimizer=md.SGD(0.1, momentum=0.9, weight_decay=1e-3), **kw)
    whole = net()
    train(whole, 3)
    first = net()
    train(first, 1, checkpoint=tmp_path / "ck.h5")
    resumed = net()
    train(resumed, 3, checkpoint=tmp_path / "ck.h5", resume=True)
    for a, b in zip(whole.layers, resumed.layers):
        for key in a.params:
            np.testing.assert_array_equal(a.params[key], b.params[key], err_msg=key)


def test_nan_reaches_exactly_the_units_its_input_is_connected_to():
    # A stored zero is never multiplied, so a NaN in an input that no unit reads
    # cannot reach the output (as with SciPy's and PyTorch's CSR products); a NaN in
    # a connected input reaches every unit that reads it, and only those.
    layer = SparseDense(8, 6, density=0.3, rng=2).cast(np.float64)
    pairs = layer.pattern_pairs()
    connected = set(pairs[:, 0].tolist())
    x = np.ones((2, 8))
    for feature in range(8):
        poisoned = x.copy()
        poisoned[0, feature] = np.nan
        out = layer.forward(poisoned)
        readers = sorted(pairs[pairs[:, 0] == feature, 1].tolist())
        assert sorted(np.flatnonzero(np.isnan(out[0])).tolist()) == readers
        assert not np.isnan(out[1]).any()
    assert connected != set(range(8))        # the seed leaves some input unread


def test_sigmoid_after_a_sparse_layer_keeps_its_fortran_order_and_values():
    # the sparse layer's output is Fortran-ordered; Sigmoid works in that order (the
    # gradient it hands back transposes for free) and gives the C-order values
    layer = SparseDense(12, 9, density=0.4, rng=0)
    x = np.random.default_rng(1).standard_normal((5, 12)).astype(np.float32)
    h = layer.forward(x, training=True)
    assert h.flags.f_contiguous
    act_f, act_c = md.Sigmoid(), md.Sigmoid()
    y_f, y_c = act_f.forward(h, True), act_c.forward(np.ascontiguousarray(h), True)
    np.testing.assert_array_equal(y_f, y_c)
    assert y_f.flags.f_contiguous
    g = np.random.default_rng(2).standard_normal((5, 9)).astype(np.float32)
    d_f, d_c = act_f.backward(g), act_c.backward(g)
    assert d_f.flags.f_contiguous
    np.testing.assert_allclose(d_f, d_c, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(d_c, g * y_c * (1 - y_c), rtol=1e-6, atol=1e-7)
    assert np.shares_memory(layer._feature_major(d_f), d_f)
