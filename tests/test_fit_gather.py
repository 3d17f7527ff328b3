"""fit's feature-major minibatch gather (kernels.gather) for a sparse first layer."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minidnn as md
from minidnn import architectures
from minidnn import training
from minidnn.kernels.gather import gather_feature_major, gather_feature_major_numpy


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 40), m=st.integers(1, 30), batch=st.integers(0, 40),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**31))
def test_gather_equals_its_twin(n, m, batch, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, m)).astype(dtype)
    idx = rng.integers(0, n, size=batch)
    got = gather_feature_major(x, idx)
    assert got.flags.f_contiguous and got.dtype == x.dtype
    np.testing.assert_array_equal(got, gather_feature_major_numpy(x, idx))


def test_gather_refuses_rows_out_of_range():
    with pytest.raises(IndexError, match=r"\[0, 3\)"):
        gather_feature_major(np.zeros((3, 2), np.float32), np.array([0, 3]))


def _sparse_net(seed=0):
    rng = np.random.default_rng(seed)
    return md.Sequential([md.Flatten(), md.SparseDense(20, 16, density=0.3, rng=rng),
                          md.Sigmoid(), md.Dense(16, 3, rng=rng)], seed=None,
                         input_shape=(20,))


def test_fit_gathers_feature_major_for_a_sparse_first_layer_with_the_same_bits(monkeypatch):
    rng = np.random.default_rng(1)
    x = rng.random((90, 20), dtype=np.float32)
    y = rng.integers(0, 3, 90)
    assert training._gathers_feature_major(_sparse_net(), x, None)
    assert not training._gathers_feature_major(_sparse_net(), x.astype(np.float64), None)
    assert not training._gathers_feature_major(_sparse_net(), x, lambda xb, r: xb)
    assert not training._gathers_feature_major(architectures.mlp([20, 8, 3]), x, None)
    runs = []
    for fortran in (True, False):
        monkeypatch.setattr(md.SparseDense, "fortran_input", fortran)
        model = _sparse_net()
        orders = []
        forward = model.layers[1].forward

        def spy(xb, training=False, _f=forward, _o=orders):
            if training:                # evaluation passes take contiguous slices
                # feature-major: unit-stride columns (the layer's padded input buffer
                # when it has one, whose rows are padded to whole vectors)
                _o.append(bool(xb.strides[0] == xb.itemsize and not xb.flags.c_contiguous))
            return _f(xb, training)
        model.layers[1].forward = spy
        history = md.fit(model, (x, y), epochs=2, batch_size=32, optimizer=md.SGD(0.5, 0.9),
                         seed=4, progress=False, log=None)
        runs.append((model, history, orders))
    (fast, h_fast, o_fast), (plain, h_plain, o_plain) = runs
    assert all(o_fast) and not any(o_plain)     # training batches took each path
    assert h_fast["train_loss"] == h_plain["train_loss"]
    for a, b in zip(fast.layers, plain.layers):
        for name in a.params:
            assert np.array_equal(a.params[name], b.params[name]), (a.name, name)


def test_gather_writes_into_a_layers_input_buffer_and_the_layer_reads_it_in_place():
    """fit's gather lands in the sparse layer's padded xᵀ buffer (Layer.input_buffer);
    the forward over it, also through a Flatten's view, equals the forward of a copy."""
    rng = np.random.default_rng(3)
    x = rng.random((50, 20), dtype=np.float32)
    idx = rng.permutation(50)[:13]
    layer = md.SparseDense(20, 16, density=0.3, rng=rng).cast(np.float32)
    buffer = layer.input_buffer(13)
    if buffer is None:
        pytest.skip("no padded training kernels on this CPU")
    got = gather_feature_major(x, idx, check=False, out=buffer)
    assert got is buffer
    np.testing.assert_array_equal(got, x[idx])
    via_flatten = md.Flatten().forward(got)
    out = layer.forward(via_flatten, training=True).copy()
    layer.backward_params(np.ones_like(out))
    grads = {k: v.copy() for k, v in layer.grads.items()}
    other = md.SparseDense(20, 16, density=0.3, rng=0).cast(np.float32)
    other.load_state(*layer.state_for_file())
    np.testing.assert_array_equal(other.forward(np.ascontiguousarray(x[idx]), training=True), out)
    other.backward_params(np.ones_like(out))
    for k in grads:
        np.testing.assert_array_equal(other.grads[k], grads[k])
    with pytest.raises(ValueError, match="unit-stride"):
        gather_feature_major(x, idx, out=np.empty((13, 20), np.float32))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 60), m=st.integers(1, 40), batch=st.integers(0, 40),
       extra=st.integers(0, 9), tiles=st.booleans(), seed=st.integers(0, 2**31))
def test_both_gather_kernels_equal_the_twin_into_a_padded_out(n, m, batch, extra, tiles,
                                                              seed):
    """The register-tile and the scalar kernel, into a new array and into a (batch, m)
    view whose transpose's rows are padded (a padded buffer's, stride > batch)."""
    from minidnn.kernels import gather
    saved, gather.TILES = gather.TILES, tiles and gather.SIMD_AVAILABLE
    try:
        _check_gathers(n, m, batch, extra, seed)
    finally:
        gather.TILES = saved


def _check_gathers(n, m, batch, extra, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, m)).astype(np.float32)
    idx = rng.integers(0, n, size=batch)
    np.testing.assert_array_equal(gather_feature_major(x, idx), gather_feature_major_numpy(x, idx))
    padded = np.full((m, batch + extra), np.nan, np.float32)
    out = padded[:, :batch].T
    assert gather_feature_major(x, idx, out=out) is out
    np.testing.assert_array_equal(out, gather_feature_major_numpy(x, idx))
    assert np.isnan(padded[:, batch:]).all()        # the pad lanes are never written
