"""Stacks: autoencoder gradients, DBN → MLP, files, checkpoints and resume, the CLI."""
from __future__ import annotations

import argparse

import h5py
import numpy as np
import pytest

from minidnn import SGD, evaluate, fit, io
from minidnn.pretraining import (DBN, Autoencoder, BernoulliRBM, PretrainConfig,
                                 StackedAutoencoder, load_pretrained, mlp_from_pretrained)
from minidnn.pretraining.cli import add_pretrain_parser
from tests.gradcheck import numerical_grad


def binary_data(n=600, width=20, seed=0):
    """Two noisy binary prototypes plus labels saying which."""
    rng = np.random.default_rng(seed)
    prototypes = (rng.random((2, width)) < 0.5).astype(np.float32)
    labels = rng.integers(0, 2, n)
    x = np.abs(prototypes[labels] - (rng.random((n, width)) < 0.1)).astype(np.float32)
    return x, labels.astype(np.int64)


# -- autoencoders ---------------------------------------------------------------------------

@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("encoder,decoder", [("sigmoid", "sigmoid"), ("sigmoid", "identity"),
                                             ("identity", "sigmoid")])
def test_autoencoder_gradients_match_finite_differences(tied, encoder, decoder):
    rng = np.random.default_rng(0)
    ae = Autoencoder(7, 4, encoder=encoder, decoder=decoder, tied=tied, rng=1, dtype=np.float64)
    for key in ae.params:  # non-zero biases so every term is exercised
        ae.params[key] = ae.params[key] + 0.3 * rng.standard_normal(ae.params[key].shape)
    x = rng.random((5, 7))
    ae.loss_and_gradients(x)
    analytic = {k: v.copy() for k, v in ae.grads.items()}
    assert set(analytic) == set(ae.params)
    for key, param in ae.params.items():
        numeric = numerical_grad(lambda: ae.loss_and_gradients(x), param)
        np.testing.assert_allclose(analytic[key], numeric, rtol=1e-6, atol=1e-9,
                                   err_msg=f"{ae!r}: gradient of {key}")


@pytest.mark.parametrize("tied", [True, False])
def test_autoencoder_reconstruction_error_falls(tied):
    x, _ = binary_data()
    ae = Autoencoder(20, 8, tied=tied, rng=0)
    before = ae.reconstruction_error(x)
    history = ae.fit(x, epochs=15, lr=0.5, batch_size=20, seed=0)
    errors = [record["reconstruction_error"] for record in history]
    assert all(later < earlier for earlier, later in zip(errors, errors[1:])), errors
    # 10% of the bits are flipped noise, so ≈ 0.09 is the floor; the start is ≈ 0.26
    assert ae.reconstruction_error(x) < 0.4 * before


def test_weight_decay_applies_to_weights_not_biases():
    ae = Autoencoder(6, 3, tied=False, rng=0)
    assert set(ae.decay_params) == {"W", "W_decoder"}
    assert BernoulliRBM(6, 3).decay_params == ("W",)


# -- stacks become MLPs ------------------------------------------------------------------------

@pytest.mark.parametrize("make", [lambda: DBN([20, 12, 6], rng=0),
                                  lambda: StackedAutoencoder([20, 12, 6], rng=0)])
def test_stack_to_mlp_keeps_the_hidden_forward_pass_exactly(make):
    x, _ = binary_data(200)
    stack = make()
    stack.pretrain(x, PretrainConfig(epochs=2, batch_size=20))
    mlp = stack.to_mlp(n_classes=2, seed=0)
    hidden = x
    for layer in mlp.layers[:-1]:
        hidden = layer.forward(hidden)
    np.testing.assert_array_equal(hidden, stack.transform(x))
    assert mlp.forward(x).shape == (200, 2)
    assert [type(l).__name__ for l in mlp.layers] == ["Flatten"] + ["Dense", "Sigmoid"] * 2 + ["Dense"]


def test_pretrained_mlp_fine_tunes_with_the_engine():
    x, y = binary_data(400)
    dbn = DBN([20, 16], rng=0)
    dbn.pretrain(x, PretrainConfig(epochs=3, batch_size=20))
    mlp = dbn.to_mlp(2, seed=0)
    fit(mlp, (x, y), epochs=3, batch_size=20, optimizer=SGD(0.1), progress=False, log=None)
    assert evaluate(mlp, (x, y))["accuracy"] > 0.95


# -- files, checkpoints, resume -------------------------------------------------------------------

def test_save_load_round_trip(tmp_path):
    x, _ = binary_data(200)
    dbn = DBN([20, 10, 5], rng=0)
    dbn.pretrain(x, PretrainConfig(epochs=1, batch_size=50))
    dbn.save(tmp_path / "dbn.h5")
    again = load_pretrained(tmp_path / "dbn.h5")
    assert type(again) is DBN and again.layer_sizes == [20, 10, 5]
    for a, b in zip(dbn.units, again.units):
        assert a.get_config() == b.get_config()
        for key in a.params:
            np.testing.assert_array_equal(a.params[key], b.params[key])
    assert again.history == dbn.history
    with h5py.File(tmp_path / "dbn.h5") as h5:  # self-describing with plain h5py
        assert h5.attrs["kind"] == "DBN" and h5["units/1/params/W"].shape == (10, 5)

    ae = Autoencoder(20, 6, tied=False, decoder="identity", rng=2)
    ae.save(tmp_path / "ae.h5")
    ae2 = Autoencoder.load(tmp_path / "ae.h5")
    assert ae2.get_config() == ae.get_config()
    np.testing.assert_array_equal(ae2.params["W_decoder"], ae.params["W_decoder"])

    rbm = BernoulliRBM(20, 4, visible="gaussian", rng=3)
    rbm.save(tmp_path / "rbm.h5")
    assert BernoulliRBM.load(tmp_path / "rbm.h5").visible == "gaussian"
    mlp = mlp_from_pretrained(tmp_path / "dbn.h5", n_classes=3)
    np.testing.assert_array_equal(mlp.layers[3].params["W"], dbn.units[1].params["W"])


class Interrupt(Exception):
    pass


def interrupt_at(text):
    def log(line):
        if line.startswith(text):
            raise Interrupt(line)
    return log


@pytest.mark.parametrize("make,config", [
    (lambda: DBN([20, 12, 6], rng=4), PretrainConfig(epochs=3, batch_size=30, persistent=True,
                                                      momentum_switch_epoch=2)),
    (lambda: DBN([20, 12, 6], rng=4), PretrainConfig(epochs=3, batch_size=30, k=2)),
    (lambda: StackedAutoencoder([20, 12, 6], tied=False, rng=4),
     PretrainConfig(epochs=3, batch_size=30, momentum_switch_epoch=2))])
@pytest.mark.parametrize("where", ["rbm_0 epoch   2", "rbm_1 epoch   1", "rbm_1 epoch   3"])
def test_resumed_pretraining_equals_uninterrupted(tmp_path, make, config, where):
    x, _ = binary_data(300)
    where = where.replace("rbm", make().unit_prefix)
    whole = make()
    whole.pretrain(x, config, seed=5)

    path = tmp_path / "ck.h5"
    first = make()
    with pytest.raises(Interrupt):
        first.pretrain(x, config, seed=5, checkpoint=path, log=interrupt_at(where))
    with pytest.raises(ValueError, match="unfinished pretraining checkpoint"):
        mlp_from_pretrained(path, 2)
    resumed = make()
    resumed.pretrain(x, config, seed=5, checkpoint=path, resume=True)
    for a, b in zip(whole.units, resumed.units):
        for key in a.params:
            np.testing.assert_array_equal(a.params[key], b.params[key], err_msg=key)
    assert [[r["epoch"] for r in h] for h in resumed.history] == [[1, 2, 3], [1, 2, 3]]
    assert load_pretrained(path).layer_sizes == [20, 12, 6]
    mlp_from_pretrained(path, 2)  # finished now


def test_resume_refuses_a_checkpoint_of_another_architecture(tmp_path):
    x, _ = binary_data(100)
    DBN([20, 8], rng=0).pretrain(x, PretrainConfig(epochs=1), checkpoint=tmp_path / "a.h5")
    with pytest.raises(ValueError, match="not DBN\\(20-9\\)"):
        DBN([20, 9], rng=0).pretrain(x, PretrainConfig(epochs=1), checkpoint=tmp_path / "a.h5",
                                     resume=True)


def test_foreign_and_damaged_files_raise_clear_errors(tmp_path):
    from minidnn import Dense, Sequential, save
    save(Sequential([Dense(3, 2)]), tmp_path / "model.h5")
    with pytest.raises(io.ModelFileError, match="not a minidnn pretrained stack"):
        load_pretrained(tmp_path / "model.h5")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match="not a readable HDF5 file"):
        load_pretrained(tmp_path / "junk.h5")
    DBN([6, 3], rng=0).save(tmp_path / "dbn.h5")
    with h5py.File(tmp_path / "dbn.h5", "a") as h5:
        del h5["units/0/params/W"]
    with pytest.raises(ValueError, match="unit 0 has params"):
        load_pretrained(tmp_path / "dbn.h5")


def test_bad_stack_inputs_raise_value_errors():
    with pytest.raises(ValueError, match="layer sizes must look like"):
        DBN("784-x-10")
    with pytest.raises(ValueError, match="at least two positive layer sizes"):
        StackedAutoencoder([784])
    with pytest.raises(ValueError, match=r"expects training data of shape \(batch, 20\)"):
        DBN([20, 5]).pretrain(np.zeros((4, 21)), PretrainConfig(epochs=1))
    x = np.zeros((4, 20), np.float32)
    x[0, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or Inf"):
        StackedAutoencoder([20, 5]).pretrain(x, PretrainConfig(epochs=1))
    with pytest.raises(ValueError, match="encoder must be one of"):
        Autoencoder(4, 2, encoder="relu")
    with pytest.raises(ValueError, match=r"expects input of shape \(batch, 4\)"):
        Autoencoder(4, 2).encode(np.zeros((3, 5)))


# -- CLI ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind,extra", [("rbm", ["--k", "2"]), ("autoencoder", ["--untied"])])
def test_cli_pretrains_and_resumes(tmp_path, kind, extra, capsys):
    parser = argparse.ArgumentParser(prog="minidnn")
    add_pretrain_parser(parser.add_subparsers(dest="command"))
    out = tmp_path / f"{kind}.h5"
    argv = ["pretrain", kind, "--layers", "784-16-8", "--dataset", "embedded", "--limit", "300",
            "--epochs", "2", "--batch-size", "50", "--no-progress", "-o", str(out), *extra]
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    mlp = mlp_from_pretrained(out, 10)
    assert mlp.forward(np.zeros((2, 784), np.float32)).shape == (2, 10)
    args = parser.parse_args(argv + ["--resume"])
    assert args.func(args) == 0  # already finished: nothing left to train
    assert "resumed from" in capsys.readouterr().out
