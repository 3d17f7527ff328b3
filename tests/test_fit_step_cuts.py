"""Sitting 18's cuts to the non-sparse-kernel part of a training step (issue #11): the data
check's kernel against its twin, Dense's input gradient in its input's memory order, the
SGD step's cached scalars following every change of the hyperparameters, and a seeded
sparse run still the same bit for bit on every run and across a resume."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minidnn as md
from minidnn import architectures
from minidnn.kernels import finite
from minidnn.optimizers import SGD, StepLR
from minidnn.training import fit


# -- kernels/finite.py -------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 300), shape=st.sampled_from([(), (7,), (3, 5), (2, 3, 4)]),
       dtype=st.sampled_from([np.float32, np.float64]),
       bad=st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from([np.nan, np.inf, -np.inf])),
                    max_size=3),
       seed=st.integers(0, 2**31))
def test_first_nonfinite_row_equals_its_twin(n, shape, dtype, bad, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n,) + shape) * 1e30).astype(dtype)   # large but finite
    x.reshape(-1)[: min(3, x.size)] = [np.finfo(dtype).max, -0.0, np.finfo(dtype).tiny / 4][
        : min(3, x.size)]
    for where, value in bad:
        x.reshape(-1)[where % x.size] = value
    assert finite.first_nonfinite_row(x) == finite.first_nonfinite_row_numpy(x)


def test_first_nonfinite_row_on_fortran_and_empty_arrays_takes_the_twin():
    x = np.asfortranarray(np.ones((6, 4), np.float32))
    x[4, 2] = np.nan
    assert finite.first_nonfinite_row(x) == 4
    assert finite.first_nonfinite_row(np.zeros((5, 0), np.float32)) == -1
    assert finite.first_nonfinite_row(np.zeros(0, np.float32)) == -1


def test_fit_names_the_first_sample_with_a_nan():
    x = np.ones((50, 6), np.float32)
    x[37, 1] = np.inf
    x[41, 0] = np.nan
    model = md.Sequential([md.Dense(6, 2)])
    with pytest.raises(ValueError, match=r"first in sample 37, x\[37\]"):
        fit(model, (x, np.zeros(50, np.int64)), epochs=1, batch_size=10,
            optimizer=SGD(0.1), progress=False, log=None)


# -- Dense._input_grad ---------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dense_input_grad_comes_back_in_the_order_of_its_input(dtype):
    """A Fortran-ordered input (a sigmoid after a sparse layer) gets a Fortran-ordered dx,
    equal to g Wᵀ up to the order of the k-term sums; a C-ordered one the same bits as
    before (g @ W.T)."""
    rng = np.random.default_rng(0)
    layer = md.Dense(50, 7, rng=rng).cast(dtype)
    x = rng.standard_normal((30, 50)).astype(dtype)
    g = rng.standard_normal((30, 7)).astype(dtype)
    W = layer.params["W"]
    layer.forward(np.asfortranarray(x), training=True)
    dx = layer.backward(g)
    assert dx.flags.f_contiguous and not dx.flags.c_contiguous
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(dx, g @ W.T, rtol=0, atol=8 * eps * (np.abs(g) @ np.abs(W).T).max())
    layer.forward(x, training=True)
    dx = layer.backward(g)
    assert dx.flags.c_contiguous and np.array_equal(dx, g @ W.T)


def test_sigmoid_after_a_sparse_layer_gets_a_gradient_in_its_order():
    rng = np.random.default_rng(1)
    model = md.Sequential([md.SparseDense(20, 16, density=0.3, rng=rng), md.Sigmoid(),
                           md.Dense(16, 4, rng=rng)], seed=None)
    out = model.forward(rng.standard_normal((8, 20)).astype(np.float32), training=True)
    h = model.layers[1]._y
    dh = model.layers[2].backward(np.ones_like(out))
    assert h.flags.f_contiguous and dh.flags.f_contiguous


# -- SGD's prepared steps ------------------------------------------------------------------

class UnfusedSGD(SGD):
    """SGD on the unfused path (a subclass with its own ``_step_delta`` is never fused)."""

    def _step_delta(self, key, layer, pname, grad, hyper):
        return super()._step_delta(key, layer, pname, grad, hyper)


def _small_data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((90, 12)).astype(np.float32), rng.integers(0, 3, 90)


def test_cached_step_scalars_follow_every_change_of_the_hyperparameters():
    """lr, momentum and weight decay changed on the optimizer between fits, a per-layer
    override and a step schedule: the fused (cached) step equals the unfused one bit for
    bit, weights and velocities."""
    x, y = _small_data()
    runs = []
    for cls in (SGD, UnfusedSGD):
        model = architectures.mlp([12, 10, 3], seed=4)
        opt = cls(0.05, 0.9, 0.001, schedule=StepLR(1, 0.5),
                  per_layer={model.layers[-1].name: {"lr": 0.02}})
        fit(model, (x, y), epochs=2, batch_size=30, optimizer=opt, progress=False, log=None)
        opt.lr, opt.momentum, opt.weight_decay = 0.01, 0.5, 0.0
        fit(model, (x, y), epochs=1, batch_size=30, optimizer=opt, progress=False, log=None)
        runs.append((model, opt))
    (a, fa), (b, fb) = runs
    for la, lb in zip(a.layers, b.layers):
        for name in la.params:
            assert np.array_equal(la.params[name], lb.params[name]), (la.name, name)
    assert fa.velocity.keys() == fb.velocity.keys()
    for key in fa.velocity:
        assert np.array_equal(fa.velocity[key], fb.velocity[key]), key


def test_a_velocity_loaded_into_the_optimizer_is_the_one_stepped():
    """load_state_dict replaces the velocity arrays: the cached step must not hold the
    old ones."""
    x, y = _small_data()
    model = architectures.mlp([12, 10, 3], seed=4)
    opt = SGD(0.05, 0.9)
    fit(model, (x, y), epochs=1, batch_size=30, optimizer=opt, progress=False, log=None)
    state = opt.state_dict()
    opt.load_state_dict(state)
    before = {k: v.copy() for k, v in opt.velocity.items()}
    fit(model, (x, y), epochs=1, batch_size=30, optimizer=opt, progress=False, log=None)
    assert all(not np.array_equal(opt.velocity[k], before[k]) for k in before)
    assert all(not np.array_equal(state["velocity"][k], opt.velocity[k]) for k in before)


# -- the sparse 784-500-10 step as a whole, scaled down ----------------------------------------

def _sparse_run(tmp_path=None, epochs=3, resume=False):
    rng = np.random.default_rng(0)
    data = np.random.default_rng(1)
    x = data.random((300, 64)).astype(np.float32)
    y = data.integers(0, 10, 300)
    model = md.Sequential([md.Flatten(), md.SparseDense(64, 40, density=0.1, rng=rng),
                           md.Sigmoid(), md.Dense(40, 10, rng=rng)], seed=None,
                          input_shape=(64,))
    opt = SGD(0.2, momentum=0.9, weight_decay=1e-4)
    history = fit(model, (x, y), (x[:100], y[:100]), epochs=epochs, batch_size=50,
                  optimizer=opt, seed=3, progress=False, log=None,
                  checkpoint=None if tmp_path is None else str(tmp_path / "ck.h5"),
                  resume=resume)
    return model, opt, [{k: v for k, v in r.items() if k != "seconds"} for r in history.epochs]


def _same(run_a, run_b):
    (ma, oa, ha), (mb, ob, hb) = run_a, run_b
    assert ha == hb
    for la, lb in zip(ma.layers, mb.layers):
        for name in la.params:
            assert np.array_equal(la.params[name], lb.params[name]), (la.name, name)
    for key in oa.velocity:
        assert np.array_equal(oa.velocity[key], ob.velocity[key]), key


def test_seeded_sparse_training_is_the_same_bits_on_every_run_and_across_a_resume(tmp_path):
    straight = _sparse_run()
    _same(straight, _sparse_run())
    _sparse_run(tmp_path, epochs=2)
    _same(straight, _sparse_run(tmp_path, epochs=3, resume=True))


def test_first_nonfinite_row_in_parallel_equals_the_twin(monkeypatch):
    """The parallel build (large arrays, several Numba threads) finds the first bad row,
    also when a later range holds one too and when only the last row is bad."""
    import numba
    monkeypatch.setattr(finite, "PARALLEL_MIN_VALUES", 1)
    x = np.ones((103, 9), np.float32)
    assert finite._first_nonfinite_row_parallel(x, 8) == -1
    for bad in ([102], [5, 90], [40, 41, 13], [0]):
        y = x.copy()
        for row in bad:
            y[row, row % 9] = np.nan
        assert finite._first_nonfinite_row_parallel(y, 8) == min(bad)
        assert finite.first_nonfinite_row(y) == finite.first_nonfinite_row_numpy(y) == min(bad)
    assert numba.get_num_threads() >= 1
