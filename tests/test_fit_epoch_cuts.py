"""Sitting 22's cuts to the part of a training step outside the sparse layer (issue #11):
the training inputs' NaN / Inf check in the first epoch's gather (same error, same state
left, same bits on clean data) and the gather kernels' check and parallel build."""
import numpy as np
import pytest

import minidnn as md
from minidnn import training
from minidnn.optimizers import SGD
from minidnn.training import fit


def _sparse_net(seed=0):
    rng = np.random.default_rng(seed)
    return md.Sequential([md.Flatten(), md.SparseDense(64, 40, density=0.2, rng=rng),
                          md.Sigmoid(), md.Dense(40, 10, rng=rng)], seed=None)


def _data(n=300, m=64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, m), dtype=np.float32), rng.integers(0, 10, n)


# -- the training inputs' NaN / Inf check in the first epoch's gather ----------------------

def _params(model):
    return [a.copy() for _, a in model.named_params()]


def _dropout_net(seed=0):
    rng = np.random.default_rng(seed)
    return md.Sequential([md.Flatten(), md.SparseDense(64, 40, density=0.2, rng=rng),
                          md.Sigmoid(), md.Dropout(0.2), md.Dense(40, 10, rng=rng)], seed=None)


def _assert_refused_and_rolled_back(model, opt, x, y, first, drop_last, tmp_path):
    """fit on (x, y), whose sample ``first`` is the first holding a NaN / Inf, raises the
    ValueError naming it and leaves the layer arrays, the optimizer state and the dropout
    layer's Generator as they were, with no checkpoint written."""
    before, state = _params(model), opt.state_dict()
    rng_state = model.layers[3].rng.bit_generator.state
    checkpoint = tmp_path / "run.h5"
    with pytest.raises(ValueError, match=rf"training data contains NaN or Inf inputs "
                                         rf"\(first in sample {first}, x\[{first}\]\)"):
        fit(model, (x, y), epochs=3, batch_size=40, optimizer=opt, progress=False,
            log=None, drop_last=drop_last, checkpoint=checkpoint, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(before, _params(model)))
    after = opt.state_dict()
    assert after["steps"] == state["steps"] and after["epoch"] == state["epoch"]
    assert all(np.array_equal(after["velocity"][k], v) for k, v in state["velocity"].items())
    assert model.layers[3].rng.bit_generator.state == rng_state
    assert not checkpoint.exists()


@pytest.mark.parametrize("where", [0, 137, 299])
@pytest.mark.parametrize("drop_last", [False, True])
def test_a_sparse_net_refuses_nan_inputs_with_the_first_sample_and_its_state_untouched(
        where, drop_last, tmp_path):
    x, y = _data()
    other = where + 1 if where < 299 else where - 1
    x[where, 5], x[other, 1] = np.nan, np.inf
    first = min(where, other)
    model, opt = _dropout_net(), SGD(0.1, momentum=0.9)
    assert training._gathers_feature_major(model, x, None)     # the deferred check's path
    fit(model, _data(seed=1), epochs=1, batch_size=50, optimizer=opt, progress=False,
        log=None)                                               # a state to keep
    _assert_refused_and_rolled_back(model, opt, x, y, first, drop_last, tmp_path)


def test_rows_that_drop_last_leaves_out_of_the_first_epoch_are_checked():
    x, y = _data(n=95)
    x[93, 0] = np.inf                   # batch 10: 9 full batches, 5 rows left out
    order = np.random.default_rng(0).permutation(95)     # fit's first epoch, seed 0
    x[93], x[order[-1]] = x[order[-1]].copy(), x[93].copy()   # the bad row sits out
    bad = int(order[-1])
    with pytest.raises(ValueError, match=rf"first in sample {bad},"):
        fit(_sparse_net(), (x, y), epochs=1, batch_size=10, optimizer=SGD(0.1),
            progress=False, log=None, drop_last=True, seed=0)


def test_nan_inputs_are_refused_before_a_divergence_is_reported():
    x, y = _data()
    x[:150] *= 1e30                     # diverges in the first batches
    x[290, 0] = np.nan
    with pytest.raises(ValueError, match=r"first in sample 290,"):
        fit(_sparse_net(), (x, y), epochs=1, batch_size=50, optimizer=SGD(1e3),
            progress=False, log=None, shuffle=False)


def test_nan_inputs_are_refused_on_a_resume_with_no_epoch_left(tmp_path):
    x, y = _data()
    checkpoint = tmp_path / "run.h5"
    fit(_sparse_net(), (x, y), epochs=1, batch_size=50, optimizer=SGD(0.1), progress=False,
        log=None, checkpoint=checkpoint)
    x[7, 3] = -np.inf
    with pytest.raises(ValueError, match=r"first in sample 7,"):
        fit(_sparse_net(), (x, y), epochs=1, batch_size=50, optimizer=SGD(0.1),
            progress=False, log=None, checkpoint=checkpoint, resume=True)


def test_clean_data_train_the_same_bits_with_the_check_in_the_gather(monkeypatch):
    x, y = _data()
    runs = []
    for deferred in (True, False):
        if not deferred:        # the old path: the whole set checked first, plain gathers
            class UpFront:
                pending = False

                def __init__(self, model, optimizer, x):
                    training._refuse_nonfinite(x, "training data", "x", "inputs")

                def refuse(self):
                    pass
            monkeypatch.setattr(training, "_DeferredCheck", UpFront)
        model = _dropout_net()
        history = fit(model, (x, y), (x[:60], y[:60]), epochs=2, batch_size=40,
                      optimizer=SGD(0.1, momentum=0.9), progress=False, log=None, seed=5,
                      drop_last=True)
        runs.append((_params(model), history["train_loss"], history["val_loss"]))
    (a, la, va), (b, lb, vb) = runs
    assert la == lb and va == vb
    assert all(np.array_equal(p, q) for p, q in zip(a, b))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("tiles", [True, False])
def test_checked_gather_names_the_first_bad_position(dtype, tiles, monkeypatch):
    from minidnn.kernels import gather
    monkeypatch.setattr(gather, "TILES", tiles and gather.SIMD_AVAILABLE)
    rng = np.random.default_rng(0)
    for n, m in ((1, 1), (7, 3), (8, 9), (13, 17), (40, 64)):
        x = rng.random((60, m)).astype(dtype) * np.finfo(dtype).max   # large, finite
        idx = rng.permutation(60)[:n]
        out, bad = gather.gather_feature_major_checked(x, idx)
        assert bad == -1
        np.testing.assert_array_equal(out, x[idx])
        for value in (np.nan, np.inf, -np.inf):
            for pos in sorted({0, n // 2, n - 1}):
                z = x.copy()
                z[idx[pos], m - 1] = value
                z[idx[n - 1], 0] = value
                out, bad = gather.gather_feature_major_checked(z, idx)
                assert bad == pos
                np.testing.assert_array_equal(out, z[idx])
                assert gather.gather_feature_major_checked(z, idx, finite=False)[1] == -1


# -- sitting 23: the same check in the row gather of every other net ------------------------

def _dense_net(seed=0):
    rng = np.random.default_rng(seed)
    return md.Sequential([md.Flatten(), md.Dense(64, 40, rng=rng), md.Sigmoid(),
                          md.Dropout(0.2), md.Dense(40, 10, rng=rng)], seed=None)


def _conv_net(seed=0):
    rng = np.random.default_rng(seed)
    return md.Sequential([md.Conv2D(1, 3, 3, rng=rng), md.ReLU(), md.Flatten(),
                          md.Dropout(0.2), md.Dense(3 * 6 * 6, 10, rng=rng)], seed=None)


_NETS = {"dense": (_dense_net, (64,)), "conv": (_conv_net, (1, 8, 8))}


@pytest.mark.parametrize("net", sorted(_NETS))
@pytest.mark.parametrize("where", [0, 137, 299])
@pytest.mark.parametrize("drop_last", [False, True])
def test_a_dense_or_conv_net_refuses_nan_inputs_with_the_first_sample_and_its_state_untouched(
        net, where, drop_last, tmp_path):
    build, shape = _NETS[net]
    x, y = _data()
    x = x.reshape((len(x),) + shape)
    other = where + 1 if where < 299 else where - 1
    x.reshape(len(x), -1)[where, 5] = np.nan
    x.reshape(len(x), -1)[other, 1] = np.inf
    first = min(where, other)
    model, opt = build(), SGD(0.1, momentum=0.9)
    assert not training._gathers_feature_major(model, x, None)
    assert training._checks_in_gather(x, None, None)            # the deferred check's path
    clean = _data(seed=1)
    fit(model, (clean[0].reshape(x.shape), clean[1]), epochs=1, batch_size=50,
        optimizer=opt, progress=False, log=None)                # a state to keep
    _assert_refused_and_rolled_back(model, opt, x, y, first, drop_last, tmp_path)


def test_rows_that_drop_last_leaves_out_of_a_dense_nets_first_epoch_are_checked():
    x, y = _data(n=95)
    order = np.random.default_rng(0).permutation(95)     # fit's first epoch, seed 0
    bad = int(order[-1])                                   # sits out of batch 10
    x[bad, 0] = np.inf
    with pytest.raises(ValueError, match=rf"first in sample {bad},"):
        fit(_dense_net(), (x, y), epochs=1, batch_size=10, optimizer=SGD(0.1),
            progress=False, log=None, drop_last=True, seed=0)


def test_nan_inputs_of_a_dense_net_are_refused_before_a_divergence_is_reported():
    x, y = _data()
    x[:150] *= 1e30
    x[290, 0] = np.nan
    with pytest.raises(ValueError, match=r"first in sample 290,"):
        fit(_dense_net(), (x, y), epochs=1, batch_size=50, optimizer=SGD(1e3),
            progress=False, log=None, shuffle=False)


def test_nan_inputs_of_a_dense_net_are_refused_on_a_resume_with_no_epoch_left(tmp_path):
    x, y = _data()
    checkpoint = tmp_path / "run.h5"
    fit(_dense_net(), (x, y), epochs=1, batch_size=50, optimizer=SGD(0.1), progress=False,
        log=None, checkpoint=checkpoint)
    x[7, 3] = -np.inf
    with pytest.raises(ValueError, match=r"first in sample 7,"):
        fit(_dense_net(), (x, y), epochs=1, batch_size=50, optimizer=SGD(0.1),
            progress=False, log=None, checkpoint=checkpoint, resume=True)


def test_nan_inputs_are_refused_up_front_with_a_transform_or_a_strided_x():
    x, y = _data()
    x[11, 0] = np.nan
    seen = []

    def transform(xb, rng):
        seen.append(1)
        return xb
    assert not training._checks_in_gather(x, None, transform)
    assert not training._checks_in_gather(np.asfortranarray(x), None, None)
    for data, kwargs in (((x, y), {"transform": transform}),
                         ((np.asfortranarray(x), y), {})):
        with pytest.raises(ValueError, match=r"first in sample 11,"):
            fit(_dense_net(), data, epochs=1, batch_size=50, optimizer=SGD(0.1),
                progress=False, log=None, **kwargs)
    assert not seen                     # refused before the starting loss's transform


@pytest.mark.parametrize("net", sorted(_NETS))
def test_a_dense_or_conv_net_trains_the_same_bits_with_the_row_gather(net, monkeypatch):
    build, shape = _NETS[net]
    x, y = _data()
    x = x.reshape((len(x),) + shape)
    runs = []
    for kernel in (True, False):
        if not kernel:          # the old path: the whole set checked first, then x[idx]
            monkeypatch.setattr(training.gather, "rows_apply", lambda x: False)
        model = build()
        history = fit(model, (x, y), (x[:60], y[:60]), epochs=2, batch_size=40,
                      optimizer=SGD(0.1, momentum=0.9), progress=False, log=None, seed=5)
        runs.append((_params(model), history["train_loss"], history["val_loss"]))
    (a, la, va), (b, lb, vb) = runs
    assert la == lb and va == vb
    assert all(np.array_equal(p, q) for p, q in zip(a, b))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_row_gather_equals_its_twin_and_names_the_first_bad_position(dtype):
    from minidnn.kernels import gather
    rng = np.random.default_rng(0)
    for n, shape in ((1, (1,)), (3, ()), (7, (3,)), (8, (2, 3, 3)), (13, (17,)), (40, (64,))):
        x = rng.random((60,) + shape).astype(dtype) * np.finfo(dtype).max   # large, finite
        idx = rng.permutation(60)[:n]
        out, bad = gather.gather_rows_checked(x, idx)
        assert bad == -1 and out.flags.c_contiguous and out.dtype == x.dtype
        np.testing.assert_array_equal(out, gather.gather_rows_numpy(x, idx))
        for value in (np.nan, np.inf, -np.inf):
            for pos in sorted({0, n // 2, n - 1}):
                z = x.copy()
                flat = z.reshape(60, -1)
                flat[idx[pos], -1] = value
                flat[idx[n - 1], 0] = value
                out, bad = gather.gather_rows_checked(z, idx)
                assert bad == pos
                np.testing.assert_array_equal(out, gather.gather_rows_numpy(z, idx))
                assert gather.gather_rows_checked(z, idx, finite=False)[1] == -1
