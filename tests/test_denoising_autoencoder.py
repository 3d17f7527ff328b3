"""Denoising autoencoders (PretrainConfig.corruption, Vincent et al. 2008): masking noise on
the encoder's input, the clean x as the target, dense and sparse (SPEC technique 3) W."""
from __future__ import annotations

import numpy as np
import pytest

from minidnn.pretraining import Autoencoder, PretrainConfig, StackedAutoencoder
from tests.gradcheck import numerical_grad
from tests.test_dbn_autoencoder import Interrupt, binary_data, interrupt_at


def make_unit(kind, rng=1):
    if kind == "sparse":
        return Autoencoder(12, 5, rng=rng, dtype=np.float64, density=0.5)
    return Autoencoder(12, 5, tied=kind == "dense-tied", rng=rng, dtype=np.float64)


@pytest.mark.parametrize("kind", ["dense-tied", "dense-untied", "sparse"])
def test_gradient_against_a_clean_target_matches_finite_differences(kind):
    rng = np.random.default_rng(0)
    ae = make_unit(kind)
    for key in ae.params:
        ae.params[key] = ae.params[key] + 0.3 * rng.standard_normal(ae.params[key].shape)
    x = rng.random((6, 12))
    corrupted = x * (rng.random(x.shape) >= 0.4)
    ae.loss_and_gradients(corrupted, target=x)
    analytic = {k: v.copy() for k, v in ae.grads.items()}
    for key, param in ae.params.items():
        numeric = numerical_grad(lambda: ae.loss_and_gradients(corrupted, target=x), param)
        np.testing.assert_allclose(analytic[key], numeric, rtol=1e-6, atol=1e-9,
                                   err_msg=f"{ae!r}: gradient of {key}")
    # the target matters: against the corrupted input itself the gradient differs
    ae.loss_and_gradients(corrupted)
    assert not np.allclose(ae.grads["visible_bias"], analytic["visible_bias"])


@pytest.mark.parametrize("kind", ["dense-tied", "sparse"])
def test_train_batch_masks_the_input_with_the_given_rng_and_keeps_the_clean_target(kind):
    x = np.random.default_rng(3).random((8, 12))
    ae, reference = make_unit(kind), make_unit(kind)
    config = PretrainConfig(corruption=0.3)
    stats = ae.train_batch(x, np.random.default_rng(7), config, {})
    keep = np.random.default_rng(7).random(x.shape) >= 0.3
    assert 0 < keep.mean() < 1
    loss = reference.loss_and_gradients(x * keep, target=x)
    assert stats["loss"] == pytest.approx(loss, rel=1e-12)
    for key in ae.grads:
        np.testing.assert_array_equal(ae.grads[key], reference.grads[key], err_msg=key)


def test_no_corruption_draws_nothing_so_plain_runs_keep_their_bits():
    x = np.random.default_rng(3).random((8, 12))
    ae, reference = make_unit("sparse"), make_unit("sparse")
    rng = np.random.default_rng(7)
    before = rng.bit_generator.state
    ae.train_batch(x, rng, PretrainConfig(corruption=0.0), {})
    assert rng.bit_generator.state == before
    reference.loss_and_gradients(x)
    for key in ae.grads:
        np.testing.assert_array_equal(ae.grads[key], reference.grads[key], err_msg=key)


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan")])
def test_corruption_outside_zero_one_is_refused(bad):
    with pytest.raises(ValueError, match="corruption must be in"):
        PretrainConfig(corruption=bad)


def test_denoising_autoencoder_learns_to_reconstruct_the_clean_input():
    x, _ = binary_data()
    ae = Autoencoder(20, 8, rng=0)
    before = ae.reconstruction_error(x)
    history = ae.fit(x, epochs=15, lr=0.5, batch_size=20, seed=0, corruption=0.3)
    assert ae.reconstruction_error(x) < 0.5 * before, history[-1]


def test_resumed_denoising_pretraining_equals_uninterrupted(tmp_path):
    x, _ = binary_data(300)
    config = PretrainConfig(epochs=3, batch_size=30, momentum_switch_epoch=2, corruption=0.25)
    make = lambda: StackedAutoencoder([20, 12], rng=4, density=0.5)   # noqa: E731
    whole = make()
    whole.pretrain(x, config, seed=5)
    path = tmp_path / "ck.h5"
    with pytest.raises(Interrupt):
        make().pretrain(x, config, seed=5, checkpoint=path,
                        log=interrupt_at("autoencoder_0 epoch   2"))
    resumed = make()
    resumed.pretrain(x, config, seed=5, checkpoint=path, resume=True)
    for key in whole.units[0].params:
        np.testing.assert_array_equal(whole.units[0].params[key], resumed.units[0].params[key],
                                      err_msg=key)


def test_cli_pretrain_autoencoder_corruption_reaches_the_config(tmp_path):
    import argparse
    import json

    import h5py

    from minidnn.pretraining.cli import add_pretrain_parser
    parser = argparse.ArgumentParser(prog="minidnn")
    add_pretrain_parser(parser.add_subparsers(dest="command"))
    out = tmp_path / "dae.h5"
    args = parser.parse_args(["pretrain", "autoencoder", "--layers", "784-16", "--dataset",
                              "embedded", "--limit", "200", "--epochs", "1", "--batch-size", "50",
                              "--no-progress", "--corruption", "0.3", "-o", str(out)])
    assert args.func(args) == 0
    with h5py.File(out, "r") as h5:
        assert [c["corruption"] for c in json.loads(h5.attrs["pretrain"])] == [0.3]
